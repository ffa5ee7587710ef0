"""A local cluster of real node processes, for ``make cluster`` and the tests.

``python -m node.dev.cluster start --base-port 7100 --dir .cluster n1 n2 n3``
starts one background process per id (gRPC on base-port + 1, + 2, ...), data
in ``<dir>/<id>/data``, pid in ``<dir>/<id>/node.pid``, log in
``<dir>/<id>/node.log``, a fresh cluster secret in ``<dir>/cluster.secret`` and the
operator credential derived from it in ``<dir>/operator.token`` (0600 both), and,
unless ``--no-encrypt``, a keyring in ``<dir>/at-rest.keys`` (0600) that turns on
encryption at rest;
waits for a leader; prints the membership table. ``stop`` sends SIGTERM and
waits. The :class:`LocalCluster` class is the same machinery for tests.
"""

from __future__ import annotations

import functools
import json
import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import click
import grpc

from consensus.atrest import generate_line
from node.certs import create_ca, issue, pkcs12_bundle
from node.client import Client
from node.config import operator_token_for
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.tls import TlsFiles, sync_channel


def exit_on_sigterm() -> None:
    """Make SIGTERM end this process as Ctrl-C does, through its ``finally`` blocks (the
    main thread raises SystemExit). A script that starts a :class:`LocalCluster` stops
    its nodes there, and the nodes run in sessions of their own: killed with Python's
    default SIGTERM, such a script left them running, idle but holding their ports and
    some CPU, under whatever was measured next."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _ports_free(host: str, base: int, count: int) -> bool:
    for port in range(base + 1, base + count + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_base_port(count: int, host: str = "127.0.0.1") -> int:
    """A base port whose next ``count`` ports are free now (tests, drills)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000, 10)
        if _ports_free(host, base, count):
            return base
    raise RuntimeError("no free loopback port range")


@dataclass
class LocalCluster:
    """N node processes on loopback. Used by ``make cluster`` and by tests."""

    root: str
    node_ids: list[str]
    base_port: int
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    # Prometheus /metrics + /healthz on metrics_base_port + 1, + 2, ... (None = off).
    metrics_base_port: int | None = None
    # Encryption at rest, with the keyring <root>/at-rest.keys (made if missing).
    encrypt: bool = False
    # Mutual TLS on every port: a throw-away CA and certificates in <root>/tls/ (made
    # if missing): ca.pem, <id>.pem/.key per node, cli.pem/.key for clients. The nodes
    # then require a client certificate; the helpers below present cli's.
    tls: bool = True
    # Environment the nodes get on top of this process's (e.g. TADPOLE_* settings).
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def addresses(self) -> dict[str, str]:
        return {nid: f"{self.host}:{self.base_port + i + 1}" for i, nid in enumerate(self.node_ids)}

    def metrics_address(self, node_id: str) -> str | None:
        if self.metrics_base_port is None:
            return None
        return f"{self.host}:{self.metrics_base_port + self.node_ids.index(node_id) + 1}"

    @property
    def endpoints(self) -> str:
        return ",".join(self.addresses.values())

    def node_dir(self, node_id: str) -> str:
        return os.path.join(self.root, node_id)

    def data_dir(self, node_id: str) -> str:
        return os.path.join(self.node_dir(node_id), "data")

    def pid_file(self, node_id: str) -> str:
        return os.path.join(self.node_dir(node_id), "node.pid")

    def log_file(self, node_id: str) -> str:
        return os.path.join(self.node_dir(node_id), "node.log")

    @property
    def secret_file(self) -> str:
        return os.path.join(self.root, "cluster.secret")

    @property
    def token_file(self) -> str:
        """The operator credential (``tadpole --token-file``), derived from the secret."""
        return os.path.join(self.root, "operator.token")

    @property
    def keyring_file(self) -> str:
        """The encryption-at-rest keyring every node reads (when ``encrypt``)."""
        return os.path.join(self.root, "at-rest.keys")

    @property
    def tls_dir(self) -> str:
        return os.path.join(self.root, "tls")

    def client_tls(self) -> TlsFiles | None:
        """What a client of this cluster presents (None: plaintext)."""
        if not self.tls:
            return None
        return TlsFiles(
            os.path.join(self.tls_dir, "ca.pem"),
            os.path.join(self.tls_dir, "cli.pem"),
            os.path.join(self.tls_dir, "cli.key"),
        )

    def client_credentials(self) -> grpc.ChannelCredentials | None:
        """For ``Client(..., credentials=)``."""
        tls = self.client_tls()
        return None if tls is None else tls.channel_credentials()

    # What a client of this cluster uses, TLS or not as the cluster runs (tests, drills).

    def client(self, *node_ids: str, **kwargs: Any) -> Client:
        """A :class:`Client` of ``node_ids`` (default: all) with this cluster's credentials."""
        addresses = [self.addresses[n] for n in node_ids or self.node_ids]
        return Client(addresses, credentials=self.client_credentials(), **kwargs)

    def channel(self, node_id: str) -> grpc.Channel:
        """A gRPC channel to ``node_id`` (TLS with the client certificate, if the cluster's)."""
        return sync_channel(self.addresses[node_id], self.client_tls())

    def http_url(self, node_id: str, path: str = "") -> str:
        """The URL of ``path`` on ``node_id``'s HTTP listener (https when the cluster runs TLS)."""
        return f"{'https' if self.tls else 'http'}://{self.metrics_address(node_id)}{path}"

    def http_context(self) -> ssl.SSLContext | None:
        """The SSL context of an HTTPS client of this cluster (None: plaintext)."""
        tls = self.client_tls()
        return None if tls is None else tls.client_context()

    def cli_flags(self) -> list[str]:
        """The ``tadpole`` flags presenting this cluster's client certificate (none: plaintext)."""
        return _tls_flags(self.client_tls())

    def _tls_args(self, node_id: str) -> list[str]:
        if not self.tls:
            return []
        path = functools.partial(os.path.join, self.tls_dir)
        return [
            *("--set", f"tls_cert_file={path(node_id + '.pem')}"),
            *("--set", f"tls_key_file={path(node_id + '.key')}"),
            *("--set", f"tls_ca_file={path('ca.pem')}"),
        ]

    def _make_certificates(self) -> None:
        if not os.path.exists(os.path.join(self.tls_dir, "ca.pem")):
            create_ca(self.tls_dir)
        for node_id in self.node_ids:
            if not os.path.exists(os.path.join(self.tls_dir, f"{node_id}.pem")):
                # the address clients dial (a subclass may move it), then loopback's names
                listen = self.addresses[node_id].rsplit(":", 1)[0]
                hosts = tuple(dict.fromkeys((listen, self.host, "localhost")))
                issue(self.tls_dir, self.tls_dir, node_id, node_id=node_id, hosts=hosts)
        if not os.path.exists(os.path.join(self.tls_dir, "cli.pem")):
            issue(self.tls_dir, self.tls_dir, "cli", client="cli")
        self._write_client_bundles()

    def _write_client_bundles(self) -> None:
        """The CLI's certificate for other clients: ``curlrc`` (``curl -K``) and
        ``cli.p12`` (a browser imports it, with ``ca.pem`` as an authority, to open the
        console), both 0600, with absolute paths so they work from any directory."""
        tls = self.client_tls()
        assert tls is not None
        files = (("cacert", tls.ca), ("cert", tls.cert), ("key", tls.key))
        lines = [f'{name} = "{os.path.abspath(path)}"' for name, path in files]
        _write_private(os.path.join(self.tls_dir, "curlrc"), ("\n".join(lines) + "\n").encode())
        _write_private(os.path.join(self.tls_dir, "cli.p12"), pkcs12_bundle(tls.cert, tls.key))

    def prepare(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        if self.tls:
            self._make_certificates()
        if self.encrypt and not os.path.exists(self.keyring_file):
            fd = os.open(self.keyring_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(generate_line("dev1") + "\n")
        if not os.path.exists(self.secret_file):
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        with open(self.secret_file, "rb") as f:
            token = operator_token_for(f.read().strip())
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        with open(os.path.join(self.root, "cluster.json"), "w") as f:
            http = {n: a for n in self.node_ids if (a := self.metrics_address(n))}
            doc = {"nodes": self.addresses, "http": http, "encrypt": self.encrypt, "tls": self.tls}
            json.dump(doc, f, indent=2)

    def command(self, node_id: str) -> list[str]:
        addrs = self.addresses
        peers = ",".join(f"{p}={a}" for p, a in addrs.items() if p != node_id)
        return [
            sys.executable,
            "-m",
            "node.main",
            "--id",
            node_id,
            "--listen",
            addrs[node_id],
            "--peers",
            peers,
            "--data-dir",
            self.data_dir(node_id),
            "--cluster-secret-file",
            self.secret_file,
            "--pid-file",
            self.pid_file(node_id),
            *(["--http-listen", m] if (m := self.metrics_address(node_id)) else []),
            *(["--encryption-key-file", self.keyring_file] if self.encrypt else []),
            *self._tls_args(node_id),
            *self.extra_args,
        ]

    def start_node(self, node_id: str) -> int:
        """Start one node in the background (its own session); return its pid."""
        os.makedirs(self.node_dir(node_id), exist_ok=True)
        pid = read_pid(self.pid_file(node_id))
        if pid is not None and pid_alive(pid):
            return pid
        log = open(self.log_file(node_id), "ab")  # noqa: SIM115 (owned by the child)
        proc = subprocess.Popen(
            self.command(node_id),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=os.getcwd(),
            env={**os.environ, **self.env} if self.env else None,
        )
        log.close()
        self.procs[node_id] = proc
        with open(self.pid_file(node_id), "w") as f:
            f.write(f"{proc.pid}\n")
        return proc.pid

    def start(self) -> None:
        self.prepare()
        for node_id in self.node_ids:
            self.start_node(node_id)

    def pid(self, node_id: str) -> int | None:
        proc = self.procs.get(node_id)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        pid = read_pid(self.pid_file(node_id))
        return pid if pid is not None and pid_alive(pid) else None

    def signal_node(self, node_id: str, sig: int) -> None:
        pid = self.pid(node_id)
        if pid is not None:
            os.kill(pid, sig)

    def kill(self, node_id: str) -> None:
        """SIGKILL, and reap it."""
        self.signal_node(node_id, signal.SIGKILL)
        self._wait_dead(node_id, 10.0)

    def stop_node(self, node_id: str, timeout: float = 10.0) -> bool:
        """SIGTERM, wait, SIGKILL as a last resort. Returns True if it exited in time."""
        pid = self.pid(node_id)
        if pid is None:
            return True
        os.kill(pid, signal.SIGTERM)
        if self._wait_dead(node_id, timeout):
            return True
        os.kill(pid, signal.SIGKILL)
        self._wait_dead(node_id, 5.0)
        return False

    def _wait_dead(self, node_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        proc = self.procs.get(node_id)
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    self.procs.pop(node_id, None)
                    return True
            else:
                pid = read_pid(self.pid_file(node_id))
                if pid is None or not pid_alive(pid):
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        for node_id in self.node_ids:
            self.stop_node(node_id)

    def status(self, node_id: str, timeout: float = 0.5) -> pb.StatusResponse | None:
        with self.channel(node_id) as channel:
            try:
                status: pb.StatusResponse = pb_grpc.ClusterStub(channel).Status(
                    pb.StatusRequest(), timeout=timeout
                )
            except grpc.RpcError:
                return None
            return status

    def leader(self, among: list[str] | None = None, *, all_up: bool = False) -> str | None:
        """The leader every live node in ``among`` agrees on, if any (with
        ``all_up``, only if every node in ``among`` answers)."""
        views = {}
        for node_id in among or self.node_ids:
            st = self.status(node_id)
            if st is not None:
                views[node_id] = st
            elif all_up:
                return None
        leaders = {st.header.leader_id for st in views.values()}
        if len(leaders) == 1:
            (leader,) = leaders
            if leader and leader in views and views[leader].raft_role == "leader":
                return leader
        return None

    def wait_leader(
        self, timeout: float = 30.0, among: list[str] | None = None, *, all_up: bool = False
    ) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(among, all_up=all_up)
            # With all_up, also every node serving client calls (it has read the access
            # policy from the leader: node/api/authz.py answers UNAVAILABLE until then).
            if leader and (not all_up or all(map(self._serving, among or self.node_ids))):
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout} s")

    def _serving(self, node_id: str) -> bool:
        with self.channel(node_id) as channel:
            try:
                # a client call that reads no tier (so no operation metric counts it)
                pb_grpc.TiersStub(channel).Status(pb.TierStatusRequest(), timeout=0.5)
            except grpc.RpcError as exc:
                code = exc.code()
                return bool(code != grpc.StatusCode.UNAVAILABLE)
            return True


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def prometheus_config(root: str, rules: str, interval: str = "5s") -> str:
    """A Prometheus configuration scraping every node of the cluster in ``root`` (over
    HTTPS with the CLI's certificate when it runs TLS) with the alert rules ``rules``:
    ``deploy/prometheus/prometheus.yml`` made for this cluster's ports and files."""
    with open(os.path.join(root, "cluster.json")) as f:
        doc = json.load(f)
    targets = ", ".join(json.dumps(a) for a in (doc.get("http") or {}).values())
    lines = [
        "# Written by `make monitor` for the cluster in " + os.path.abspath(root),
        "global:",
        f"  evaluation_interval: {interval}",
        "rule_files:",
        f"  - {json.dumps(os.path.abspath(rules))}",
        "scrape_configs:",
        "  - job_name: tadpole",
        f"    scrape_interval: {interval}",
    ]
    if doc.get("tls"):
        tls = os.path.abspath(os.path.join(root, "tls"))
        lines += [
            "    scheme: https",
            "    tls_config:",
            f"      ca_file: {json.dumps(os.path.join(tls, 'ca.pem'))}",
            f"      cert_file: {json.dumps(os.path.join(tls, 'cli.pem'))}",
            f"      key_file: {json.dumps(os.path.join(tls, 'cli.key'))}",
        ]
    lines += ["    static_configs:", f"      - targets: [{targets}]"]
    return "\n".join(lines) + "\n"


def _tls_flags(tls: TlsFiles | None) -> list[str]:
    """The CLI's flags for ``tls``."""
    if tls is None:
        return []
    return ["--ca-file", tls.ca, "--cert-file", tls.cert, "--key-file", tls.key]


def _load(root: str) -> LocalCluster:
    with open(os.path.join(root, "cluster.json")) as f:
        doc = json.load(f)
    nodes: dict[str, str] = doc["nodes"]
    ids = list(nodes)
    first_port = int(next(iter(nodes.values())).rsplit(":", 1)[1])
    return LocalCluster(
        root, ids, first_port - 1, encrypt=bool(doc.get("encrypt")), tls=bool(doc.get("tls"))
    )


@click.group()
def main() -> None:
    """Start, stop and locate a local cluster."""


@main.command()
@click.option("--base-port", type=int, default=7100, show_default=True)
@click.option(
    "--metrics-base-port",
    type=int,
    default=None,
    help="Prometheus /metrics on this + 1, + 2, ... (default: base port + 100).",
)
@click.option("--dir", "root", default=".cluster", show_default=True)
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--encrypt/--no-encrypt", default=True, show_default=True,
              help="Encryption at rest with the keyring DIR/at-rest.keys.")  # fmt: skip
@click.option("--tls/--no-tls", default=True, show_default=True,
              help="Mutual TLS on every port, with a throw-away CA in DIR/tls/.")  # fmt: skip
@click.argument("node_ids", nargs=-1)
def start(
    base_port: int,
    metrics_base_port: int | None,
    root: str,
    timeout: float,
    encrypt: bool,
    tls: bool,
    node_ids: tuple[str, ...],
) -> None:
    """Start NODE_IDS (default n1 n2 n3) in the background and wait for a leader."""
    metrics_base = base_port + 100 if metrics_base_port is None else metrics_base_port
    cluster = LocalCluster(
        root,
        list(node_ids or ("n1", "n2", "n3")),
        base_port,
        metrics_base_port=metrics_base,
        encrypt=encrypt,
        tls=tls,
    )
    cluster.start()
    for node_id in cluster.node_ids:
        click.echo(
            f"{node_id}: pid {cluster.pid(node_id)}  grpc {cluster.addresses[node_id]}  "
            f"http {'https' if tls else 'http'}://{cluster.metrics_address(node_id)}  "
            f"log {cluster.log_file(node_id)}"
        )
    try:
        leader = cluster.wait_leader(timeout, all_up=True)
    except TimeoutError:
        click.echo(f"error: no leader elected within {timeout:.0f} s; see the logs above", err=True)
        sys.exit(1)
    click.echo(f"leader: {leader}\n")
    if tls:
        click.echo(
            f"mutual TLS: the CLI finds its certificate in {cluster.tls_dir}/ by itself; "
            f"curl -K {cluster.tls_dir}/curlrc https://...\n"
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "--endpoints",
            cluster.endpoints,
            *_tls_flags(cluster.client_tls()),
            "members",
        ],
        check=False,
    )


@main.command()
@click.option("--dir", "root", default=".cluster", show_default=True)
def stop(root: str) -> None:
    """Stop every node of the cluster in DIR (SIGTERM, then wait)."""
    if not os.path.exists(os.path.join(root, "cluster.json")):
        click.echo(f"no cluster in {root}")
        return
    cluster = _load(root)
    for node_id in cluster.node_ids:
        pid = cluster.pid(node_id)
        if pid is None:
            click.echo(f"{node_id}: not running")
            continue
        clean = cluster.stop_node(node_id)
        click.echo(f"{node_id}: stopped (pid {pid}{'' if clean else ', had to SIGKILL'})")


@main.command()
@click.option("--dir", "root", default=".cluster", show_default=True)
@click.option("--rules", default="deploy/prometheus/rules.yml", show_default=True)
def prometheus(root: str, rules: str) -> None:
    """Print a Prometheus configuration scraping the cluster in DIR (make monitor)."""
    click.echo(prometheus_config(root, rules), nl=False)


@main.command()
@click.option("--dir", "root", default=".cluster", show_default=True)
def console(root: str) -> None:
    """Print where the web console of the cluster in DIR is served."""
    with open(os.path.join(root, "cluster.json")) as f:
        doc = json.load(f)
    http = list((doc.get("http") or {}).values())
    if not http:
        click.echo("no HTTP listener: the console needs one (--metrics-base-port)")
        return
    scheme = "https" if doc.get("tls") else "http"
    click.echo(f"Console    {scheme}://{http[0]}/ui (every node serves one: {', '.join(http[1:])})")
    if doc.get("tls"):
        tls = os.path.join(root, "tls")
        click.echo(
            f"           a browser opens it with {tls}/cli.p12 imported (its certificates) "
            f"and {tls}/ca.pem trusted (authorities)"
        )


@main.command()
@click.option("--dir", "root", default=".cluster", show_default=True)
def endpoints(root: str) -> None:
    """Print the cluster's endpoints, comma-separated."""
    click.echo(_load(root).endpoints)


if __name__ == "__main__":
    main()
