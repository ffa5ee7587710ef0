"""Node configuration: one frozen dataclass, loaded from defaults < TOML < env < flags.

Every field is documented here and in ``docs/configuration.md``. Environment
variables are ``TADPOLE_<FIELD>`` for node fields and ``TADPOLE_RAFT_<FIELD>``
for Raft fields; the TOML file has node fields at top level and Raft fields
in a ``[raft]`` table. Flags win over everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consensus.atrest import Keyring, KeyringError
from consensus.raft.backend import RaftConfig
from node.authn import Tokens
from node.ratelimit import TokenBuckets
from node.tls import TlsFiles

ENV_PREFIX = "TADPOLE_"


class ConfigError(ValueError):
    """A setting is missing, malformed or inconsistent with another."""


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    # This node's id; unique in the cluster, [A-Za-z0-9_.-]{1,64}.
    node_id: str = "n1"
    # host:port the gRPC server binds (client API and peer traffic share it).
    listen: str = "127.0.0.1:7101"
    # host:port other nodes and clients use to reach this node ("" = listen).
    advertise: str = ""
    # The other voting members: {id: "host:port"}. Empty = single-node cluster.
    peers: Mapping[str, str] = field(default_factory=dict)
    # Where the journal, term/vote file and snapshots live ("" = ./data/<node_id>).
    data_dir: str = ""
    # File holding the shared cluster secret that authenticates peer traffic.
    # Required when peers are configured (env TADPOLE_CLUSTER_SECRET may give
    # the secret itself instead).
    cluster_secret_file: str = ""
    cluster_secret: str = field(default="", repr=False)
    # Encryption at rest (AES-256-GCM) of the Raft journal, term/vote file and
    # snapshots and of the tier store's values: a keyring file of "name:base64 key"
    # lines, the first key encrypting and all decrypting (docs/security.md). Off when
    # empty. Env TADPOLE_ENCRYPTION_KEYS may give the keyring itself instead.
    encryption_key_file: str = ""
    encryption_keys: str = field(default="", repr=False)
    # TLS (docs/security.md#tls): PEM files of this node's certificate (named
    # node/<id>, SANs for its addresses), its private key (0600) and the cluster CA.
    # All three or none; with them the gRPC and HTTP ports serve TLS 1.2+ only, and
    # peers are called over mutual TLS.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    # With TLS: HTTP clients too must present a certificate the cluster CA signed. (On
    # the gRPC port every caller must: peers share it and are told apart by theirs.)
    client_cert_auth: bool = True
    # Requests per second each client may make (a client: its TLS certificate's name,
    # else its address), on both ports; over it: RESOURCE_EXHAUSTED / 429. 0 = off.
    client_rate_limit: float = 0.0
    # Bursts a client may make above its rate (0 = the rate, at least 1).
    client_rate_burst: float = 0.0
    # Web pages (scheme://host[:port]) besides the node's own that may open its
    # WebSocket endpoints; a browser's WebSocket from any other page is refused (403).
    http_allowed_origins: tuple[str, ...] = ()
    # A change stream (SSE, WebSocket) whose socket takes no bytes for this long is
    # disconnected, seconds; one that falls behind the history first is told where
    # to resume (410) instead.
    http_stream_write_timeout_s: float = 10.0
    # Copy the audit trail into the system tier's event log, /tadpole/audit/<node>
    # (docs/security.md#audit): at most one write a second per node.
    audit_to_event_log: bool = True
    # How long a token bought with a password (tadpole auth login) names its user, in
    # seconds (docs/security.md#passwords-and-tokens).
    auth_token_ttl_s: float = 600.0
    # Largest value accepted, in bytes (default 1 MiB). Larger requests get
    # INVALID_ARGUMENT. Raft entries carry whole values, so this bounds the
    # size of one log entry.
    max_value_bytes: int = 1 << 20
    # How long the server waits for a proposal to commit before answering
    # "outcome unknown" (a client deadline, if shorter, wins). Seconds.
    request_timeout_s: float = 10.0
    # System-tier backend: "raft" (the node's own Raft group) or "etcd" (an
    # external etcd v3 cluster at etcd_endpoints; the node's Raft group is not
    # started). etcd trades an extra network hop per request for etcd's
    # maturity and operational tooling.
    system_backend: str = "raft"
    # etcd client endpoints, host:port (flag form "h1:2379,h2:2379"). Required
    # with system_backend = "etcd"; tried in order, the next on failure.
    etcd_endpoints: tuple[str, ...] = ()
    # Every etcd key this node writes lives under this prefix, so one etcd
    # cluster can serve several Tadpole clusters (give each its own prefix).
    etcd_prefix: str = "/tadpole/system/"
    # Python's GIL switch interval for the node process, seconds. The event
    # loop and the Raft tick thread hand work to each other on every commit;
    # a shorter interval shortens each hand-off (latency) at some cost in
    # context switches (throughput). Python's default is 0.005.
    gil_switch_interval_s: float = 0.0005
    # Allocations between two young garbage collections (Python's threshold0 is 700).
    # Each collection promotes what is alive at that moment, so at 700 the objects of
    # requests in flight reach the oldest generation and make full collections --
    # which stop the whole node for 100+ ms once it holds 100k keys -- come every few
    # seconds on a busy leader; a young collection of 20,000 objects took 5-25 ms on a
    # busy 2-core host (docs/design.md, "Garbage collection"). 0 keeps Python's default.
    gc_young_threshold: int = 20_000
    # host:port of the HTTP listener: the JSON API (/state, /api/v1, /graphql), the
    # /ui console, Prometheus /metrics and /healthz ("" = off). Like the gRPC client
    # port it has no authentication yet: bind it where only trusted clients reach.
    http_listen: str = ""
    # The relational ledger's database (docs/ledger.md), a SQLAlchemy URL:
    # postgresql+psycopg://user:password@host/db or sqlite:///path. Empty: env
    # ADAPTIVE_DATABASE_URL (the spec's name), else an embedded SQLite file,
    # <data_dir>/ledger.db, kept by whichever node leads.
    ledger_url: str = field(default="", repr=False)
    # Exported outbox events are kept this long (seconds), so a ledger rebuilt from an
    # empty database replays them; 0 = keep them all.
    ledger_retain_s: float = 7 * 86_400.0
    # How often population logs are compacted under their retention policies
    # (detailed -> day summaries -> expiry; archives for archival subspaces),
    # seconds. Compaction is idempotent within a UTC day, so hourly is plenty.
    retention_interval_s: float = 3600.0
    # Backups the cluster runs itself, on its leader (node/backup/schedule.py,
    # docs/backup.md): the repository directory ("" = off) -- shared storage every node
    # mounts at the same path -- and the age recipients to encrypt to (public keys,
    # comma-separated).
    backup_repo: str = ""
    backup_recipients: str = ""
    # An incremental backup this often, and a full one (nothing reused) this often, s.
    backup_interval_s: float = 3600.0
    backup_full_interval_s: float = 86400.0
    # Prune the repository to the retention schedule after each scheduled backup.
    backup_prune: bool = True
    # The system tier's changes are archived into the repository for point-in-time
    # recovery, a segment at least this often (seconds) while there are changes.
    backup_wal_seal_s: float = 10.0
    # The background scrubber (node/replication/scrub.py): a pass every this many
    # seconds (0 = off) re-reads the Raft journal and snapshot (checksums) and every
    # CRDT value (against its digest; a bad one is repaired from the other owners),
    # reading at most scrub_bytes_per_s.
    scrub_interval_s: float = 21600.0
    scrub_bytes_per_s: float = 8.0 * (1 << 20)
    # Python logging level for the node process.
    log_level: str = "INFO"
    raft: RaftConfig = field(default_factory=RaftConfig)

    def __post_init__(self) -> None:
        if not _valid_id(self.node_id):
            raise ConfigError(f"node_id {self.node_id!r}: use 1-64 of [A-Za-z0-9_.-]")
        _check_address("listen", self.listen)
        if self.advertise:
            _check_address("advertise", self.advertise)
        if self.http_listen:
            _check_address("http_listen", self.http_listen)
        for peer_id, address in self.peers.items():
            if not _valid_id(peer_id):
                raise ConfigError(f"peers: id {peer_id!r}: use 1-64 of [A-Za-z0-9_.-]")
            if peer_id == self.node_id:
                raise ConfigError(f"peers: {peer_id!r} is this node's own id")
            _check_address(f"peers.{peer_id}", address)
        if self.peers and not self.secret():
            raise ConfigError(
                "peers are configured but there is no cluster secret: set "
                "cluster_secret_file (--cluster-secret-file) or TADPOLE_CLUSTER_SECRET; "
                "peer traffic is never accepted unauthenticated"
            )
        self.keyring()  # a bad keyring stops the node here, before anything is opened
        tls = (self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        if any(tls) and not all(tls):
            raise ConfigError(
                "TLS needs all of tls_cert_file, tls_key_file and tls_ca_file (or none)"
            )
        if self.tls_key_file:
            try:
                st = os.stat(self.tls_key_file)
            except OSError as exc:
                raise ConfigError(f"tls_key_file: {exc}") from exc
            refuse_readable_by_others("tls_key_file", self.tls_key_file, st)
        if self.client_rate_limit < 0 or self.client_rate_burst < 0:
            raise ConfigError("client_rate_limit and client_rate_burst must be >= 0")
        if not 0 < self.auth_token_ttl_s <= 86400:
            raise ConfigError("auth_token_ttl_s must be within (0, 86400] seconds")
        if self.max_value_bytes < 1 or self.max_value_bytes > 64 << 20:
            raise ConfigError("max_value_bytes must be between 1 and 64 MiB")
        if self.retention_interval_s <= 0:
            raise ConfigError("retention_interval_s must be positive")
        if self.request_timeout_s <= 0:
            raise ConfigError("request_timeout_s must be positive")
        if not 0 < self.http_stream_write_timeout_s <= 3600:
            raise ConfigError("http_stream_write_timeout_s must be within (0, 3600] seconds")
        if not 0 <= self.gc_young_threshold <= 10_000_000:
            raise ConfigError("gc_young_threshold must be between 0 and 10,000,000")
        if self.system_backend not in ("raft", "etcd"):
            raise ConfigError(f"system_backend {self.system_backend!r}: supported: raft, etcd")
        if self.system_backend == "etcd" and not self.etcd_endpoints:
            raise ConfigError(
                "system_backend = etcd needs etcd_endpoints (--etcd-endpoints HOST:PORT,...)"
            )
        for i, endpoint in enumerate(self.etcd_endpoints):
            _check_address(f"etcd_endpoints[{i}]", endpoint)
        for origin in self.http_allowed_origins:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ConfigError(
                    f"http_allowed_origins: {origin!r} is not an origin (scheme://host[:port])"
                )
        if not self.etcd_prefix.startswith("/") or not self.etcd_prefix.endswith("/"):
            raise ConfigError(f"etcd_prefix {self.etcd_prefix!r}: must start and end with '/'")
        if self.scrub_interval_s < 0 or self.scrub_bytes_per_s <= 0:
            raise ConfigError("scrub_interval_s must be >= 0 and scrub_bytes_per_s positive")
        if self.backup_wal_seal_s <= 0:
            raise ConfigError("backup_wal_seal_s must be positive")
        if self.backup_interval_s <= 0 or self.backup_full_interval_s <= 0:
            raise ConfigError("backup_interval_s and backup_full_interval_s must be positive")
        if self.backup_repo:
            if self.system_backend != "raft":
                raise ConfigError(
                    "backup_repo: scheduled backups need system_backend = raft (back up etcd "
                    "with etcdctl snapshot save)"
                )
            if not self.backup_recipient_list:
                raise ConfigError(
                    "backup_repo is set but backup_recipients is empty: backups are always "
                    "encrypted; give age public keys (age1...), comma-separated"
                )
            for recipient in self.backup_recipient_list:
                if recipient.upper().startswith("AGE-SECRET-KEY"):
                    raise ConfigError(
                        "backup_recipients: that is a private key; give its public key "
                        "(age1..., printed by tadpole backup keygen)"
                    )
                if not recipient.startswith(("age1", "ssh-")):
                    raise ConfigError(
                        f"backup_recipients: {recipient[:12]!r}... is not an age (age1...) or "
                        "SSH public key"
                    )

    @property
    def backup_recipient_list(self) -> list[str]:
        return [r.strip() for r in self.backup_recipients.split(",") if r.strip()]

    @property
    def address(self) -> str:
        return self.advertise or self.listen

    @property
    def data_path(self) -> str:
        return self.data_dir or os.path.join("data", self.node_id)

    def ledger_database(self) -> tuple[str, bool]:
        """(the ledger's database URL, whether it is the embedded default)."""
        url = self.ledger_url or os.environ.get("ADAPTIVE_DATABASE_URL", "")
        if url:
            return url, False
        return "sqlite:///" + os.path.abspath(os.path.join(self.data_path, "ledger.db")), True

    def secret(self) -> bytes:
        if self.cluster_secret:
            secret = self.cluster_secret.encode()
        elif self.cluster_secret_file:
            try:
                with open(self.cluster_secret_file, "rb") as f:
                    refuse_readable_by_others(
                        "cluster_secret_file", self.cluster_secret_file, os.fstat(f.fileno())
                    )
                    secret = f.read().strip()
            except OSError as exc:
                raise ConfigError(f"cluster_secret_file: {exc}") from exc
        else:
            return b""
        if len(secret) < 16:
            raise ConfigError("cluster secret must be at least 16 bytes")
        return secret

    def keyring(self) -> Keyring | None:
        """The encryption-at-rest keyring, or None when encryption at rest is off. Read
        again on every call (``tadpole keys rotate`` reloads it)."""
        try:
            if self.encryption_keys:
                return Keyring.parse(self.encryption_keys, "TADPOLE_ENCRYPTION_KEYS")
            if not self.encryption_key_file:
                return None
            path = self.encryption_key_file
            try:
                with open(path, encoding="utf-8") as f:
                    refuse_readable_by_others("encryption_key_file", path, os.fstat(f.fileno()))
                    text = f.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"encryption_key_file: {exc}") from exc
            return Keyring.parse(text, path)
        except KeyringError as exc:
            raise ConfigError(f"encryption at rest: {exc}") from exc

    def rate_limits(self) -> TokenBuckets | None:
        """The per-client token buckets, or None when rate limits are off."""
        if self.client_rate_limit <= 0:
            return None
        burst = self.client_rate_burst or self.client_rate_limit
        return TokenBuckets(self.client_rate_limit, max(1.0, burst))

    def tls(self) -> TlsFiles | None:
        """This node's TLS files, or None when it serves plaintext."""
        if not self.tls_cert_file:
            return None
        return TlsFiles(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)

    def peer_token(self) -> str:
        """The credential peers present: an HMAC of the secret, so the secret
        itself never travels."""
        secret = self.secret()
        if not secret:
            return ""
        return hmac.new(secret, b"tadpole-peer-v1", hashlib.sha256).hexdigest()

    def operator_token(self) -> str:
        """The credential operator calls (leadership transfer) must carry."""
        return operator_token_for(self.secret())

    def tokens(self) -> Tokens | None:
        """What issues and checks login tokens: keyed by the cluster secret, so every
        node of the cluster checks every node's (None without a secret)."""
        secret = self.secret()
        return Tokens.from_secret(secret, self.auth_token_ttl_s) if secret else None


def secret_file_problem(mode: int, owner: int, me: int) -> str:
    """Why a file holding a secret is not private enough ("" if it is), the rule
    PostgreSQL applies to its key file: owned by this process's user, no access for
    group or others (0600 or less); owned by root while this process is not root,
    group read at most (0640 or less: a Kubernetes secret volume, group = fsGroup);
    owned by anybody else, refused."""
    bits = stat.S_IMODE(mode)
    if owner == me:
        if bits & 0o077:
            return f"mode {bits:04o} lets other users at it; it must be 0600 or less"
        return ""
    if owner == 0:
        if bits & 0o037:
            return f"mode {bits:04o} (owned by root) must be 0640 or less"
        return ""
    return f"it is owned by uid {owner}, neither this process's user ({me}) nor root"


def refuse_readable_by_others(setting: str, path: str, st: os.stat_result) -> None:
    """ConfigError if the file ``path`` (of ``setting``) holding a secret is not
    private (:func:`secret_file_problem`). Never names the secret itself."""
    problem = secret_file_problem(st.st_mode, st.st_uid, os.geteuid())
    if problem:
        raise ConfigError(
            f"{setting} {path}: {problem} (chmod 600 {path}); a node does not start with "
            "a secret other users can read"
        )


def operator_token_for(secret: bytes) -> str:
    """The operator credential of a cluster with this secret: another HMAC of it (a
    peer's credential does not pass for an operator's, nor the other way round).
    Empty without a secret, and then no operator call is accepted."""
    if not secret:
        return ""
    return hmac.new(secret, b"tadpole-operator-v1", hashlib.sha256).hexdigest()


_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _valid_id(node_id: str) -> bool:
    return 0 < len(node_id) <= 64 and all(c in _ID_CHARS for c in node_id)


def _check_address(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: {value!r} is not host:port")


def parse_peers(text: str) -> dict[str, str]:
    """``"n2=127.0.0.1:7102,n3=127.0.0.1:7103"`` -> ``{"n2": ..., "n3": ...}``."""
    peers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        peer_id, sep, address = item.partition("=")
        if not sep or not peer_id or not address:
            raise ConfigError(f"peers: {item!r} is not id=host:port")
        peers[peer_id] = address
    return peers


def _coerce(name: str, raw: Any, target: Any) -> Any:
    if name == "peers":
        return parse_peers(raw) if isinstance(raw, str) else dict(raw)
    if name in ("etcd_endpoints", "http_allowed_origins"):
        items = raw.split(",") if isinstance(raw, str) else raw
        return tuple(str(item).strip() for item in items if str(item).strip())
    kind = type(target)
    try:
        if kind is bool:
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
        if kind in (int, float, str):
            return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {raw!r} is not a valid {kind.__name__}") from exc
    return raw


def load_config(
    *,
    toml_path: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Build a NodeConfig from defaults, a TOML file, environment, then flags."""
    env = os.environ if env is None else env
    node_fields = {f.name: f for f in dataclasses.fields(NodeConfig) if f.name != "raft"}
    raft_fields = {f.name: f for f in dataclasses.fields(RaftConfig)}
    raft_defaults = RaftConfig()
    node_values: dict[str, Any] = {}
    raft_values: dict[str, Any] = {}

    def default_of(fields: dict[str, dataclasses.Field[Any]], name: str) -> Any:
        f = fields[name]
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return None

    if toml_path:
        try:
            with open(toml_path, "rb") as fh:
                doc = tomllib.load(fh)
                if "cluster_secret" in doc or "encryption_keys" in doc:  # secrets in the file
                    refuse_readable_by_others("config file", toml_path, os.fstat(fh.fileno()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{toml_path}: {exc}") from exc
        for key, value in doc.items():
            if key == "raft":
                if not isinstance(value, dict):
                    raise ConfigError(f"{toml_path}: [raft] must be a table")
                for rkey, rvalue in value.items():
                    if rkey not in raft_fields:
                        raise ConfigError(f"{toml_path}: unknown setting raft.{rkey}")
                    raft_values[rkey] = _coerce(rkey, rvalue, getattr(raft_defaults, rkey))
            elif key in node_fields:
                node_values[key] = _coerce(key, value, default_of(node_fields, key))
            else:
                raise ConfigError(f"{toml_path}: unknown setting {key}")
    for name in node_fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            node_values[name] = _coerce(name, raw, default_of(node_fields, name))
    for name in raft_fields:
        raw = env.get(ENV_PREFIX + "RAFT_" + name.upper())
        if raw is not None:
            raft_values[name] = _coerce(name, raw, getattr(raft_defaults, name))
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name.startswith("raft."):
            rname = name[5:]
            if rname not in raft_fields:
                raise ConfigError(f"unknown setting {name}")
            raft_values[rname] = _coerce(rname, value, getattr(raft_defaults, rname))
        elif name in node_fields:
            node_values[name] = _coerce(name, value, default_of(node_fields, name))
        else:
            raise ConfigError(f"unknown setting {name}")
    try:
        raft = RaftConfig(**raft_values)
    except ValueError as exc:
        raise ConfigError(f"raft: {exc}") from exc
    return NodeConfig(**node_values, raft=raft)
