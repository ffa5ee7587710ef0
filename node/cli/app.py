"""``tadpole``: the operator CLI.

    tadpole [--endpoints HOST:PORT,...] [--timeout S] COMMAND ...

Commands: ``members``, ``status``, ``put``, ``get``, ``del``, ``range``, ``cas``,
``watch``, ``leader transfer``; ``tier add|set-add|set-remove|put|append|map-set|get|
scan|status`` for the CRDT tiers; ``mesh create|get|set|join|leave|delete|members|of|
neighbours`` for mesh documents; ``node`` (run a node) is added by :mod:`node.main`
when it is importable.

Output: results on stdout (``get`` and ``tier get`` print the value alone, ``mesh``
commands the stored document as JSON), diagnostics on stderr (which replicas took a
mesh write, whether a listing was cut).
Exit codes: 0 success; 1 a remote or runtime failure (unavailable, key or mesh not
found, mesh already exists, compare failed, outcome unknown); 2 a usage error or an
invalid argument. An expected
error is one line, ``error: <what>``, never a traceback.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, NoReturn, TypeVar, cast

import click

from node.client import (
    DEFAULT_ENDPOINTS,
    Client,
    DocResult,
    EventType,
    GraphQueryKind,
    KeyValue,
    Member,
    NodeStatus,
    TierConsistency,
    TierNodeStatus,
    TierReplicaStatus,
    TierUpdateResult,
    TierValue,
    parse_endpoints,
)
from node.client.errors import InvalidArgument, TadpoleError
from node.tls import TlsError, TlsFiles, dev_cluster_tls

__all__ = ["cli"]

EXIT_FAILURE = 1
EXIT_USAGE = 2

# Counts and revisions travel as int64: a larger number is a usage error, not a crash.
INT64 = click.IntRange(min=0, max=2**63 - 1)
INT64_SIGNED = click.IntRange(min=-(2**63), max=2**63 - 1)


class _Group(click.Group):
    """The root group: every failure ends as one ``error: ...`` line and an exit code.

    Click's own usage errors, arguments that are not valid UTF-8 (keys and values are
    UTF-8 strings on the wire), aborts and — as a last resort — an unexpected exception
    (a bug) are all reported this way; no traceback reaches the user.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, Callable[[], click.Command]] = {}

    def add_lazy_command(self, name: str, load: Callable[[], click.Command]) -> None:
        """Register ``name``, whose command ``load()`` returns, imported when first used."""
        self._lazy[name] = load

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        load = self._lazy.pop(cmd_name, None)
        if load is not None:
            self.add_command(load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(args) if args is not None else sys.argv[1:]
        code = self._run(argv, prog_name, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self, argv: list[str], prog_name: str | None, complete_var: str | None, **extra: Any
    ) -> int:
        for i, arg in enumerate(argv, 1):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                _error(f"argument {i} ({shown!r}) is not valid UTF-8")
                return EXIT_USAGE
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            return EXIT_USAGE
        except click.ClickException as exc:
            _error(exc.format_message())
            return exc.exit_code
        except click.Abort:
            _error("aborted")
            return EXIT_FAILURE
        except Exception as exc:  # a bug: still one line, and say so
            _error(
                f"unexpected {type(exc).__name__}: {exc} (this is a bug in tadpole; "
                "please report it with the command that caused it)"
            )
            return EXIT_FAILURE
        return result if isinstance(result, int) else 0


F = TypeVar("F", bound=Callable[..., Any])


# -- plumbing ------------------------------------------------------------------------


class _Settings:
    def __init__(
        self,
        endpoints: list[str],
        timeout_s: float,
        token: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.token = token
        self.tls = tls  # None: plaintext
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            try:
                credentials = None if self.tls is None else self.tls.channel_credentials()
            except TlsError as exc:
                _fail(str(exc), EXIT_USAGE)
            self._client = Client(
                self.endpoints, timeout=self.timeout_s, token=self.token, credentials=credentials
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so an error is
    always exactly one line whatever the user typed into it."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _error(message: str) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    _error(message)
    raise click.exceptions.Exit(code)


def write_new_private_file(path: str, text: str, what: str) -> None:
    """Create ``path`` (mode 0600) holding ``text``; never replaces an existing file (a
    key written over is a key lost). Fails the command, naming the file, if it cannot."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _fail(f"{path}: already exists; not overwriting {what}", EXIT_USAGE)
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}", EXIT_USAGE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _handle_errors(func: F) -> F:
    """Turn an expected TadpoleError into one stderr line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InvalidArgument as exc:
            _fail(str(exc), EXIT_USAGE)
        except TadpoleError as exc:
            _fail(str(exc), EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


def _settings() -> _Settings:
    settings = click.get_current_context().find_object(_Settings)
    assert settings is not None, "commands run under the tadpole group"
    return settings


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="backslashreplace")


def _kv_json(kv: KeyValue) -> dict[str, Any]:
    try:
        value, encoding = kv.value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(kv.value).decode("ascii"), "base64"
    return {
        "key": kv.key,
        "value": value,
        "value_encoding": encoding,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to width; numbers right-aligned, text left-aligned; None is "-"
    (and does not make a column of numbers text)."""
    cells = [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        any(r[i] is not None for r in rows)
        and all(r[i] is None or isinstance(r[i], int | float) for r in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _heard(seconds: float) -> str:
    if seconds < 0:
        return "never"
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _member_json(m: Member) -> dict[str, Any]:
    return {
        "id": m.id,
        "address": m.address,
        "raft_role": m.raft_role,
        "term": m.term,
        "commit_index": m.commit_index,
        "applied_index": m.applied_index,
        "status": m.status,
        "is_leader": m.is_leader,
        "is_self": m.is_self,
        "match_index": m.match_index,
        "last_heard_s": m.last_heard_s,
        "gossip_status": m.gossip_status,
        "incarnation": m.incarnation,
        "gossip_last_heard_s": m.gossip_last_heard_s,
        "tiers": list(m.tiers),
    }


def _status_json(s: NodeStatus) -> dict[str, Any]:
    return {
        "id": s.id,
        "raft_role": s.raft_role,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "log_entries": s.log_entries,
        "keys": s.keys,
        "has_quorum": s.has_quorum,
        "leader_id": s.leader_id,
        "revision": s.revision,
        "version": s.version,
        "uptime_s": s.uptime_s,
        "data_dir": s.data_dir,
        "system_backend": s.system_backend,
        "tiers": _tier_status_json(TierNodeStatus(s.id, s.tiers))["tiers"],
    }


def _endpoints_option(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    try:
        return parse_endpoints(value)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc)) from exc


# -- commands ------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--endpoints",
    default=",".join(DEFAULT_ENDPOINTS),
    show_default=True,
    envvar="TADPOLE_ENDPOINTS",
    callback=_endpoints_option,
    help="Comma-separated gRPC endpoints HOST:PORT (env TADPOLE_ENDPOINTS).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Deadline in seconds per command, retries included.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    envvar="TADPOLE_TOKEN_FILE",
    default=None,
    help="File holding the operator token, needed by `leader transfer` "
    "(`make cluster` writes .cluster/operator.token; env TADPOLE_TOKEN_FILE).",
)
@click.option("--ca-file", envvar="TADPOLE_CA_FILE", default=None, metavar="PEM",
              help="Speak TLS, trusting this CA (env TADPOLE_CA_FILE; default for a"
              " `make cluster` with TLS: .cluster/tls/ca.pem).")  # fmt: skip
@click.option("--cert-file", envvar="TADPOLE_CERT_FILE", default=None, metavar="PEM",
              help="Client certificate to present (env TADPOLE_CERT_FILE).")  # fmt: skip
@click.option("--key-file", envvar="TADPOLE_KEY_FILE", default=None, metavar="PEM",
              help="Its private key (env TADPOLE_KEY_FILE).")  # fmt: skip
@click.option("--insecure", is_flag=True, default=False,
              help="Speak plaintext, even to the dev cluster (one started with"
              " `make cluster TLS=0`); a TLS cluster refuses it.")  # fmt: skip
@click.pass_context
def cli(
    ctx: click.Context,
    endpoints: list[str],
    timeout: float,
    token_file: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    insecure: bool,
) -> None:
    """Operate a Tadpole State cluster."""
    if insecure and (ca_file or cert_file):
        _fail("--insecure speaks plaintext: leave out --ca-file and --cert-file", EXIT_USAGE)
    if bool(cert_file) != bool(key_file):
        _fail("--cert-file and --key-file go together", EXIT_USAGE)
    if cert_file and not ca_file:
        _fail("a client certificate needs --ca-file (the CA that signed the servers)", EXIT_USAGE)
    tls = (
        None
        if insecure
        else TlsFiles(ca_file, cert_file or "", key_file or "")
        if ca_file
        else dev_cluster_tls(endpoints)
    )
    token = None
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"--token-file: {exc}", EXIT_USAGE)
    settings = _Settings(endpoints, timeout, token, tls)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


_WATCH = click.option(
    "--watch",
    "every",
    type=click.FloatRange(min=0.2),
    default=None,
    metavar="SECONDS",
    help="Redraw every SECONDS until Ctrl-C (a failed refresh is shown, not fatal).",
)


def _watch(render: Callable[[], str], every: float) -> None:
    """Redraw ``render()`` every ``every`` seconds until interrupted. On a terminal the
    screen is cleared first; a refresh that fails shows its error and the loop goes on
    (the cluster being down is exactly what an operator watches for)."""
    clear = sys.stdout.isatty()
    try:
        while True:
            try:
                text = render()
            except Exception as exc:  # shown in place of the table, not raised
                text = f"error: {exc}"
            if clear:
                click.echo("\x1b[H\x1b[2J", nl=False)
            stamp = time.strftime("%H:%M:%S")
            click.echo(f"every {every:g} s, {stamp} (Ctrl-C to stop)\n{text}")
            time.sleep(every)
    except KeyboardInterrupt:
        click.echo()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_WATCH
@_handle_errors
def members(as_json: bool, every: float | None) -> None:
    """List cluster members: Raft view (leader marked *) and gossip view (SWIM status,
    incarnation, when last heard) of the node that answered."""
    if every is not None:
        if as_json:
            _fail("--watch draws a table; it does not combine with --json", EXIT_USAGE)
        _watch(_members_table, every)
        return
    if as_json:
        result = _settings().client().members()
        click.echo(json.dumps([_member_json(m) for m in result], indent=2))
        return
    click.echo(_members_table())


def _members_table() -> str:
    rows = [
        [
            "*" if m.is_leader else "",
            m.id,
            m.address,
            m.raft_role,
            m.term,
            m.commit_index,
            m.applied_index,
            m.status,
            m.gossip_status or "-",
            m.incarnation if m.gossip_status else "",
            _heard(m.gossip_last_heard_s) if m.gossip_status else "",
        ]
        for m in _settings().client().members()
    ]
    headers = ["", "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "STATUS"]
    headers += ["GOSSIP", "INC", "HEARD"]
    return _table(headers, rows)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_WATCH
@_handle_errors
def status(as_json: bool, every: float | None) -> None:
    """Ask every endpoint for its status (exit 1 if none answers)."""
    if every is not None:
        if as_json:
            _fail("--watch draws a table; it does not combine with --json", EXIT_USAGE)
        _watch(_status_screen, every)
        return
    results = _settings().client().status_all()
    if as_json:
        out = [
            {"endpoint": r.endpoint, "ok": r.status is not None}
            | (_status_json(r.status) if r.status else {"error": str(r.error)})
            for r in results
        ]
        click.echo(json.dumps(out, indent=2))
    else:
        text, errors = _status_text(results)
        click.echo(text)
        for line in errors:
            click.echo(line, err=True)
    if all(r.status is None for r in results):
        _fail(f"no endpoint answered ({len(results)} tried)")


def _status_screen() -> str:
    text, errors = _status_text()
    return "\n".join([text, *errors])


def _status_text(results: list[Any] | None = None) -> tuple[str, list[str]]:
    """The status table (and the tier summary) and one line per endpoint that failed."""
    if results is None:
        results = _settings().client().status_all()
    headers = ["ENDPOINT", "ID", "ROLE", "TERM", "COMMIT", "APPLIED", "KEYS", "QUORUM"]
    headers += ["LEADER", "VERSION"]
    rows: list[list[object]] = []
    errors: list[str] = []
    for r in results:
        s = r.status
        if s is None:
            rows.append([r.endpoint, "-", "unreachable", "", "", "", "", "", "", ""])
            errors.append(f"{r.endpoint}: {r.error}")
            continue
        rows.append(
            [
                r.endpoint,
                s.id,
                s.raft_role,
                s.term,
                s.commit_index,
                s.applied_index,
                s.keys,
                "yes" if s.has_quorum else "no",
                s.leader_id or "-",
                s.version,
            ]
        )
    text = _table(headers, rows)
    backup = _backup_line([r.status for r in results if r.status is not None])
    if backup:
        text += "\n" + backup
    ledger = _ledger_line(any(r.status is not None for r in results))
    if ledger:
        text += "\n" + ledger
    tiers = _tier_summary([r.status for r in results if r.status is not None])
    if tiers:
        text += "\n\n" + tiers
    return text, errors


def _ledger_line(reachable: bool) -> str:
    """The ledger exporter as the leader reports it ("" when it can't be asked)."""
    if not reachable:
        return ""
    try:
        ex = _settings().client().ledger("ExportStatus", timeout=2.0)
    except TadpoleError:
        return ""
    line = f"ledger: lag {ex['lag_s']:.1f} s, cursor revision {ex['cursor']}, {ex['database']}"
    if ex["last_error"]:
        line += f"; failing: {_one_line(ex['last_error'])}"
    return line


def _backup_line(statuses: list[NodeStatus]) -> str:
    """The scheduled backups as the leader knows them (it runs them and reads their
    state linearizably; a follower's copy may be a round behind), else as the freshest
    answering node does ("" when no node schedules backups)."""
    known = [s for s in statuses if s.backup_age_s is not None or s.backup_error]
    if not known:
        return ""

    def rank(s: NodeStatus) -> tuple[bool, float]:
        return s.raft_role != "leader", s.backup_age_s if s.backup_age_s is not None else 1e18

    s = min(known, key=rank)
    if s.backup_age_s is None:
        line = "last backup: none yet"
    else:
        line = f"last backup: {s.backup_id}, {_age(s.backup_age_s)} ago"
    if s.backup_error:
        line += f"; last attempt failed: {s.backup_error}"
    return line


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _tier_summary(statuses: list[NodeStatus]) -> str:
    """CRDT-tier replication across the answering nodes: copies per node,
    under-replicated keys and pending hints summed, the oldest hint (replica lag)."""
    if not any(s.tiers for s in statuses):
        return ""
    ids = [s.id for s in statuses]
    headers = ["TIER", "RF", *[f"KEYS@{i}" for i in ids], "UNDER-REPLICATED", "HINTS"]
    headers += ["REPLICA-LAG"]
    names = list(dict.fromkeys(t.tier for s in statuses for t in s.tiers))
    rows: list[list[object]] = []
    for name in names:
        per: dict[str, TierReplicaStatus] = {}
        for st in statuses:
            for t in st.tiers:
                if t.tier == name:
                    per[st.id] = t
        found = list(per.values())
        hints = sum(t.hints_pending for t in found)
        lag = max((t.oldest_hint_age_s for t in found if t.hints_pending), default=0.0)
        rows.append(
            [
                name,
                max(t.rf for t in found),
                *[per[i].local_keys if i in per else "-" for i in ids],
                sum(t.under_replicated for t in found),
                hints,
                _sync_age(lag) if hints else "-",
            ]
        )
    return _table(headers, rows)


@cli.command()
@click.option(
    "--every",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between frames.",
)
@click.option(
    "--count",
    "frames",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop after N frames (default: until Ctrl-C).",
)
@_handle_errors
def top(every: float, frames: int | None) -> None:
    """One screen of every node's load, refreshed: calls/s, p50/p99 latency, CPU, memory,
    Raft apply lag, hints, replica lag and under-replicated keys; then the busiest
    methods. The first frame covers the time since each node started, the next ones
    the last interval."""
    from node.cli.top import run  # rich is loaded only for this command

    run(lambda: _settings().client().status_all(), every, frames)


@cli.command()
@click.argument("key")
@click.argument("value")
@_handle_errors
def put(key: str, value: str) -> None:
    """Set KEY to VALUE."""
    result = _settings().client().put(key, value)
    click.echo(f"OK revision={result.revision}")


@cli.command()
@click.argument("key")
@click.option(
    "--serializable", is_flag=True, help="Read the local state of one node (fast, maybe stale)."
)
@_handle_errors
def get(key: str, serializable: bool) -> None:
    """Print KEY's value alone (exit 1 if the key does not exist)."""
    kv = _settings().client().get(key, serializable=serializable)
    if kv is None:
        _fail(f"key not found: {key}")
    click.echo(kv.value)


@cli.command(name="del")
@click.argument("key", required=False)
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@click.option("--all-keys", is_flag=True, help="Delete every key of the system tier (give no KEY).")
@_handle_errors
def delete(key: str | None, prefix: bool, all_keys: bool) -> None:
    """Delete KEY (or every key under it; or, with --all-keys alone, every key)."""
    if all_keys:
        if key is not None or prefix:
            raise click.UsageError("--all-keys takes no KEY and no --prefix")
        deleted = _settings().client().delete_all()
    elif not key:
        raise click.UsageError("give a KEY (an empty prefix never means every key: use --all-keys)")
    else:
        deleted = _settings().client().delete(key, prefix=prefix)
    click.echo(f"OK deleted={deleted}")


@cli.command(name="range")
@click.argument("prefix")
@click.option("--limit", type=INT64, default=0, help="At most N keys (0 = all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option("--serializable", is_flag=True, help="Read the local state of one node.")
@_handle_errors
def range_(prefix: str, limit: int, as_json: bool, serializable: bool) -> None:
    """List keys starting with PREFIX, one `KEY<TAB>VALUE` line each."""
    result = _settings().client().range(prefix, limit=limit, serializable=serializable)
    if as_json:
        doc = {
            "revision": result.revision,
            "count": result.count,
            "more": result.more,
            "kvs": [_kv_json(kv) for kv in result.kvs],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    for kv in result.kvs:
        click.echo(f"{kv.key}\t{_text(kv.value)}")
    if result.more:
        click.echo(f"({len(result.kvs)} of {result.count} keys shown)", err=True)


@cli.command()
@click.argument("key")
@click.argument("new")
@click.option("--expect-value", help="Swap only if KEY currently holds this value.")
@click.option(
    "--expect-revision",
    type=INT64,
    help="Swap only if KEY was last changed at this revision (0 = KEY absent).",
)
@_handle_errors
def cas(key: str, new: str, expect_value: str | None, expect_revision: int | None) -> None:
    """Compare-and-swap: set KEY to NEW if the expectation holds (exit 1 if not)."""
    if (expect_value is None) == (expect_revision is None):
        raise click.UsageError("give exactly one of --expect-value, --expect-revision")
    swapped = (
        _settings()
        .client()
        .cas(key, new_value=new, expected_value=expect_value, expected_mod_revision=expect_revision)
    )
    if not swapped:
        _fail(f"compare failed: {key} does not match the expectation; nothing changed")
    click.echo("OK")


@cli.command()
@click.argument("key", required=False)
@click.option("--prefix", "prefix", metavar="P", help="Watch every key starting with P.")
@click.option(
    "--start-revision",
    type=INT64,
    default=0,
    help="Replay changes from this revision (0 = only new changes).",
)
@_handle_errors
def watch(key: str | None, prefix: str | None, start_revision: int) -> None:
    """Print one line per change to KEY (or under --prefix P) until Ctrl-C."""
    if (key is None) == (prefix is None):
        raise click.UsageError("give exactly one of KEY, --prefix P")
    target = key if key is not None else prefix
    assert target is not None
    stream = (
        _settings().client().watch(target, prefix=prefix is not None, start_revision=start_revision)
    )
    try:
        for event in stream:
            if event.type is EventType.PUT:
                line = f"PUT {event.kv.key}={_text(event.kv.value)} rev={event.revision}"
            else:
                line = f"DELETE {event.kv.key} rev={event.revision}"
            click.echo(line)
    except KeyboardInterrupt:
        pass
    finally:
        stream.close()


@cli.group()
def leader() -> None:
    """Leadership operations."""


@leader.command()
@click.argument("node", required=False, default="")
@_handle_errors
def transfer(node: str) -> None:
    """Hand leadership to NODE (omit for the most caught-up follower). Needs the
    operator token (--token-file)."""
    new_leader = _settings().client().transfer_leadership(node)
    click.echo(f"OK leader={new_leader}")


# -- CRDT tiers ------------------------------------------------------------------------


def _json_arg(text: str, what: str) -> Any:
    """A JSON command-line argument; bad JSON is an invalid argument (exit 2)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from exc


def _shown(value: TierValue) -> str:
    # An event log grows without bound: an append reports its length, not its entries.
    if value.type == "eventlog" and isinstance(value.value, list):
        return f"{value.type}=<{len(value.value)} entries>"
    return f"{value.type}={json.dumps(value.value, separators=(',', ':'))}"


def _updated(result: TierUpdateResult) -> None:
    line = f"OK {_shown(result.value)} replicas={','.join(result.replicas) or '-'}"
    if result.hinted:
        line += f" hinted={','.join(result.hinted)}"
    click.echo(line)


def _sync_age(seconds: float) -> str:
    if seconds < 0:
        return "never"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _tier_status_json(s: TierNodeStatus) -> dict[str, Any]:
    return {
        "member_id": s.member_id,
        "tiers": [
            {
                "tier": t.tier,
                "rf": t.rf,
                "local_keys": t.local_keys,
                "under_replicated": t.under_replicated,
                "hints_pending": t.hints_pending,
                "last_sync_age_s": t.last_sync_age_s,
                "oldest_hint_age_s": t.oldest_hint_age_s,
                "divergent": t.divergent,
            }
            for t in s.tiers
        ],
    }


_CONSISTENCY = click.Choice(["one", "quorum", "all"], case_sensitive=False)


@cli.group()
def tier() -> None:
    """The eventually consistent CRDT tiers (population, agent, mesh, metrics).

    Updates are not idempotent: a failed `add` is retried only when nothing was
    applied. Values are JSON."""


# ``add KEY -3``: let a negative amount through as an argument, not an unknown option.
@tier.command(context_settings={"ignore_unknown_options": True})
@click.argument("tier_name", metavar="TIER")
@click.argument("key")
@click.argument("amount", type=INT64_SIGNED)
@_handle_errors
def add(tier_name: str, key: str, amount: int) -> None:
    """Add AMOUNT (may be negative) to the counter at KEY."""
    _updated(_settings().client().counter_add(tier_name, key, amount))


@tier.command(name="set-add")
@click.argument("tier_name", metavar="TIER")
@click.argument("key")
@click.argument("elements", metavar="ELEM...", nargs=-1, required=True)
@_handle_errors
def set_add(tier_name: str, key: str, elements: tuple[str, ...]) -> None:
    """Add ELEMs (strings) to the set at KEY."""
    _updated(_settings().client().set_add(tier_name, key, *elements))


@tier.command(name="set-remove")
@click.argument("tier_name", metavar="TIER")
@click.argument("key")
@click.argument("elements", metavar="ELEM...", nargs=-1, required=True)
@_handle_errors
def set_remove(tier_name: str, key: str, elements: tuple[str, ...]) -> None:
    """Remove ELEMs from the set at KEY (a concurrent add wins)."""
    _updated(_settings().client().set_remove(tier_name, key, *elements))


@tier.command(name="put")
@click.argument("tier_name", metavar="TIER")
@click.argument("key")
@click.argument("value", metavar="JSON")
@_handle_errors
def tier_put(tier_name: str, key: str, value: str) -> None:
    """Set the register at KEY to the JSON value (last writer wins)."""
    _updated(_settings().client().register_set(tier_name, key, _json_arg(value, "JSON")))


@tier.command()
@click.argument("tier_name", metavar="TIER")
@click.argument("key")
@click.argument("payload", metavar="JSON")
@click.option("--entry-id", default="", help="Dedup key: an id already in the log is skipped.")
@_handle_errors
def append(tier_name: str, key: str, payload: str, entry_id: str) -> None:
    """Append the JSON payload to the event log at KEY."""
    doc = _json_arg(payload, "JSON")
    _updated(_settings().client().log_append(tier_name, key, doc, entry_id))


@tier.command(name="map-set")
@click.argument("tier_name", metavar="TIER")
@click.argument("key")
@click.argument("field")
@click.argument("value", metavar="JSON")
@_handle_errors
def map_set(tier_name: str, key: str, field: str, value: str) -> None:
    """Set FIELD of the map at KEY to the JSON value (last writer wins)."""
    _updated(_settings().client().map_set(tier_name, key, field, _json_arg(value, "JSON")))


@tier.command(name="get")
@click.argument("tier_name", metavar="TIER")
@click.argument("key")
@click.option("--consistency", type=_CONSISTENCY, help="Owners to consult (default: the tier's).")
@click.option("--json", "as_json", is_flag=True, help="Print type, value, replicas, repaired.")
@_handle_errors
def tier_get(tier_name: str, key: str, consistency: str | None, as_json: bool) -> None:
    """Print KEY's value as JSON alone (exit 1 if no owner has the key)."""
    level = cast("TierConsistency | None", consistency.lower() if consistency else None)
    result = _settings().client().tier_read(tier_name, key, consistency=level)
    if result.value is None:
        _fail(f"key not found: {tier_name}/{key}")
    if as_json:
        doc = {
            "type": result.value.type,
            "value": result.value.value,
            "replicas": list(result.replicas),
            "repaired": result.repaired,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(json.dumps(result.value.value))


@tier.command()
@click.argument("tier_name", metavar="TIER")
@click.argument("prefix", required=False, default="")
@click.option("--limit", type=INT64, default=0, help="At most N keys (0 = all).")
@click.option("--start-after", default="", help="Only keys after this one (to page).")
@_handle_errors
def scan(tier_name: str, prefix: str, limit: int, start_after: str) -> None:
    """List the keys of TIER starting with PREFIX, one per line."""
    keys, more = (
        _settings().client().tier_scan(tier_name, prefix, limit=limit, start_after=start_after)
    )
    for key in keys:
        click.echo(key)
    if more:
        after = keys[-1] if keys else start_after
        click.echo(f"(more keys: --start-after {after})", err=True)


@tier.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_handle_errors
def tier_status(as_json: bool) -> None:
    """Replica health per tier, asked of every endpoint (exit 1 if none answers)."""
    results = _settings().client().tier_status_all()
    if as_json:
        out = [
            {"endpoint": r.endpoint, "ok": r.status is not None}
            | (_tier_status_json(r.status) if r.status else {"error": str(r.error)})
            for r in results
        ]
        click.echo(json.dumps(out, indent=2))
    else:
        headers = ["TIER", "RF", "LOCAL-KEYS", "UNDER-REPLICATED", "HINTS-PENDING"]
        headers += ["OLDEST-HINT", "LAST-SYNC", "DIVERGENT"]
        sections: list[str] = []
        for r in results:
            s = r.status
            if s is None:
                sections.append(f"{r.endpoint}: unreachable")
                click.echo(f"{r.endpoint}: {r.error}", err=True)
                continue
            rows = [
                [
                    t.tier,
                    t.rf,
                    t.local_keys,
                    t.under_replicated,
                    t.hints_pending,
                    _sync_age(t.oldest_hint_age_s) if t.hints_pending else "-",
                    _sync_age(t.last_sync_age_s),
                    t.divergent,
                ]
                for t in s.tiers
            ]
            sections.append(f"{s.member_id or '?'} ({r.endpoint})\n{_table(headers, rows)}")
        click.echo("\n\n".join(sections))
    if all(r.status is None for r in results):
        raise click.exceptions.Exit(EXIT_FAILURE)


# -- agent documents ---------------------------------------------------------------------

AGENT_TIER = "agent"


@cli.group()
def agent() -> None:
    """Agent documents (causal): create, get, patch (RFC 7396), capability edits.

    Writes print the stored document on stdout and its causal token on stderr
    (`token: {...}`); pass it back with --token to never see older state."""


def _token_option(func: Any) -> Any:
    return click.option(
        "--token",
        "token",
        default=None,
        metavar="JSON",
        help="Causal token from an earlier call, e.g. '{\"n1\": 3}'.",
    )(func)


def _token(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    value = _json_arg(text, "--token")
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        raise InvalidArgument('--token must be a JSON object of node id -> count, e.g. {"n1": 3}')
    return {str(k): int(v) for k, v in value.items()}


def _agent_written(result: DocResult) -> None:
    _written(result)
    click.echo(f"token: {json.dumps(result.causal_token, sort_keys=True)}", err=True)


@agent.command(name="create")
@click.argument("source", type=click.File("r"), metavar="FILE")
@_handle_errors
def agent_create(source: IO[str]) -> None:
    """Create an agent from the JSON document in FILE (- = stdin); its id is
    identity.agent_id."""
    doc = _json_arg(source.read(), "the document")
    identity = doc.get("identity") if isinstance(doc, dict) else None
    agent_id = identity.get("agent_id") if isinstance(identity, dict) else None
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidArgument("identity.agent_id: missing; an agent document names its id there")
    _agent_written(_settings().client().doc_create(AGENT_TIER, agent_id, doc))


@agent.command(name="get")
@click.argument("agent_id")
@_token_option
@_handle_errors
def agent_get(agent_id: str, token: str | None) -> None:
    """Print the agent document as JSON alone (exit 1 if there is none)."""
    result = _settings().client().doc_get(AGENT_TIER, agent_id, causal_token=_token(token))
    if result is None:
        _fail(f"agent not found: {agent_id}")
    _print_doc(result.doc)
    click.echo(f"token: {json.dumps(result.causal_token, sort_keys=True)}", err=True)


@agent.command(name="patch")
@click.argument("agent_id")
@click.argument("patch", metavar="JSON")
@_token_option
@_handle_errors
def agent_patch(agent_id: str, patch: str, token: str | None) -> None:
    """Apply a JSON merge patch (null removes a field), e.g.
    '{"performance_state": {"rubric_scores": [0.9]}}'."""
    result = (
        _settings()
        .client()
        .doc_put(AGENT_TIER, agent_id, _json_arg(patch, "JSON"), causal_token=_token(token))
    )
    _agent_written(result)


@agent.command(name="capability-add")
@click.argument("agent_id")
@click.argument("amounts", nargs=-1, required=True, metavar="DIM=AMOUNT...")
@_token_option
@_handle_errors
def agent_capability_add(agent_id: str, amounts: tuple[str, ...], token: str | None) -> None:
    """Add to capability-vector dimensions (0-255), e.g. 3=0.25 200=-1; concurrent
    edits commute."""
    parsed: dict[int, float] = {}
    for item in amounts:
        dim, sep, amount = item.partition("=")
        try:
            parsed[int(dim)] = float(amount)
        except ValueError:
            raise InvalidArgument(f"{item!r} is not DIM=AMOUNT (e.g. 3=0.25)") from None
        if not sep:
            raise InvalidArgument(f"{item!r} is not DIM=AMOUNT (e.g. 3=0.25)")
    result = _settings().client().capability_add(agent_id, parsed, causal_token=_token(token))
    _agent_written(result)


# -- mesh documents ----------------------------------------------------------------------

MESH_TIER = "mesh"


def _print_doc(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))


def _replicas_note(result: DocResult) -> None:
    """Which owners took a write, on stderr, so stdout stays one JSON document."""
    note = f"(replicas: {','.join(result.replicas) or '-'}"
    if result.hinted:
        note += f"; hinted: {','.join(result.hinted)}"
    click.echo(note + ")", err=True)


def _written(result: DocResult) -> None:
    _print_doc(result.doc)
    _replicas_note(result)


def _mesh_id_of(doc: Any) -> str:
    topology = doc.get("topology") if isinstance(doc, dict) else None
    mesh_id = topology.get("mesh_id") if isinstance(topology, dict) else None
    if not isinstance(mesh_id, str) or not mesh_id:
        raise InvalidArgument("topology.mesh_id: missing; a mesh document names its id there")
    return mesh_id


def _list_ids(ids: Iterable[str], more: bool, last: str) -> None:
    for item in ids:
        click.echo(item)
    if more:
        click.echo(f"(more: --start-after {last})", err=True)


def _graph(kind: GraphQueryKind, node_id: str, limit: int, start_after: str) -> None:
    """One id per line: every one (paged underneath) when ``limit`` is 0, else one page
    and a note on stderr when it was cut."""
    client = _settings().client()
    if limit == 0:
        _list_ids(client.graph_scan(kind, node_id, start_after=start_after), False, "")
        return
    ids, more = client.graph_query(kind, node_id, limit=limit, start_after=start_after)
    _list_ids(ids, more, ids[-1] if ids else start_after)


def _paging(func: F) -> F:
    """``--limit`` and ``--start-after`` for a listing command."""
    after = click.option("--start-after", default="", help="Only ids after this one (to page).")
    limit = click.option("--limit", type=INT64, default=0, help="At most N ids (0 = all).")
    return limit(after(func))


@cli.group()
def mesh() -> None:
    """Mesh documents (mesh tier): topology, performance data, capability fusion.

    Documents are JSON objects validated by the server; mesh and agent ids are
    lowercase uuid4s. Writes are not idempotent: a failed one is retried only when
    nothing was applied."""


@mesh.command(name="create")
@click.argument("source", metavar="FILE|-", type=click.File("r", encoding="utf-8"))
@_handle_errors
def mesh_create(source: IO[str]) -> None:
    """Create a mesh from the JSON document in FILE (- = stdin); its id is
    topology.mesh_id. Prints the stored document (exit 1 if the mesh exists)."""
    doc = _json_arg(source.read(), "the document")
    _written(_settings().client().doc_create(MESH_TIER, _mesh_id_of(doc), doc))


@mesh.command(name="get")
@click.argument("mesh_id")
@click.option("--consistency", type=_CONSISTENCY, help="Owners to consult (default: the tier's).")
@_handle_errors
def mesh_get(mesh_id: str, consistency: str | None) -> None:
    """Print the mesh document as JSON alone (exit 1 if there is no such mesh)."""
    level = cast("TierConsistency | None", consistency.lower() if consistency else None)
    result = _settings().client().doc_get(MESH_TIER, mesh_id, consistency=level)
    if result is None:
        _fail(f"mesh not found: {mesh_id}")
    _print_doc(result.doc)


@mesh.command(name="set")
@click.argument("mesh_id")
@click.argument("fields", metavar="JSON")
@_handle_errors
def mesh_set(mesh_id: str, fields: str) -> None:
    """Replace the fields given in JSON, e.g.
    '{"performance_data": {"emergence_indicators": [0.4]}}'. Prints the stored document."""
    _written(_settings().client().doc_put(MESH_TIER, mesh_id, _json_arg(fields, "JSON")))


@mesh.command(name="join")
@click.argument("mesh_id")
@click.argument("agents", metavar="AGENT...", nargs=-1, required=True)
@_handle_errors
def mesh_join(mesh_id: str, agents: tuple[str, ...]) -> None:
    """Add AGENTs to the mesh. Prints the stored document."""
    _written(_settings().client().mesh_members(mesh_id, add=agents))


@mesh.command(name="leave")
@click.argument("mesh_id")
@click.argument("agents", metavar="AGENT...", nargs=-1, required=True)
@_handle_errors
def mesh_leave(mesh_id: str, agents: tuple[str, ...]) -> None:
    """Remove AGENTs from the mesh (a concurrent join wins). Prints the stored document."""
    _written(_settings().client().mesh_members(mesh_id, remove=agents))


@mesh.command(name="delete")
@click.argument("mesh_id")
@_handle_errors
def mesh_delete(mesh_id: str) -> None:
    """Delete the mesh (exit 1 if there is no such mesh)."""
    result = _settings().client().doc_delete(MESH_TIER, mesh_id)
    click.echo(f"OK deleted {mesh_id}")
    _replicas_note(result)


@mesh.command(name="members")
@click.argument("mesh_id")
@_paging
@_handle_errors
def mesh_members(mesh_id: str, limit: int, start_after: str) -> None:
    """List the mesh's member agents, one per line."""
    _graph("members_of_mesh", mesh_id, limit, start_after)


@mesh.command(name="of")
@click.argument("agent_id")
@_paging
@_handle_errors
def mesh_of(agent_id: str, limit: int, start_after: str) -> None:
    """List the meshes AGENT_ID is a member of, one per line."""
    _graph("meshes_of_agent", agent_id, limit, start_after)


@mesh.command(name="neighbours")
@click.argument("agent_id")
@_paging
@_handle_errors
def mesh_neighbours(agent_id: str, limit: int, start_after: str) -> None:
    """List the agents sharing at least one mesh with AGENT_ID, one per line."""
    _graph("neighbours", agent_id, limit, start_after)
