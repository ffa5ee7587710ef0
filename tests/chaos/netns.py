"""Network namespaces for chaos runs: one per node, joined by a bridge.

Layout for a run tagged ``T`` (``T`` = the runner's pid in base 36, so leftovers
of a crashed run are recognisable and a live run is never touched)::

    host ns                 tpc-T-hub ns                  tpc-T-n1 ns
    tpcTh 10.77.K.254 ──veth── vh ─┐                      eth0 10.77.K.11
                                   br0 ── v1 ──veth────── (nft table inet tpchaos)
                                   ├───── v2 ──veth────── tpc-T-n2 ns, eth0 .12
                                   └───── v3 ──veth────── tpc-T-n3 ns, eth0 .13

The host end (``tpcTh``) lets the runner's clients reach every node directly; its
connected route for ``10.77.K.0/24`` is the only change to the host's network, and
it disappears with the interface. ``K`` is the first of 10.77.0-255 not already
routed on the host, so concurrent runs do not collide.

Faults are nftables rules in each node namespace's ``inet tpchaos`` table (input
hook only; packets are dropped where they arrive). Nothing here touches a host
interface or route that this module did not create.

Every method shells out to ``ip``/``nft`` and raises ``NetError`` on failure.
Requires root; :func:`available` says whether this process can use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

PREFIX = "tpc-"
HOST_IF_PREFIX = "tpc"
NODE_PORT = 7101
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class NetError(RuntimeError):
    """An ``ip`` or ``nft`` command failed."""


def _b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _BASE36[r] + out
        if n == 0:
            return out


def available() -> tuple[bool, str]:
    """(usable, reason if not): root, ``ip`` and ``nft`` present, netns creatable."""
    if os.geteuid() != 0:
        return False, "not root: network namespaces and nftables need CAP_NET_ADMIN"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` not installed (as root: make system-deps)"
    return True, ""


def _run(*argv: str, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input_text)
    if check and proc.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers() -> list[str]:
    """Delete namespaces and host links of chaos runs whose runner pid is gone."""
    removed: list[str] = []
    for line in _run("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}([0-9a-z]+)-.*", name)
        if m and not _pid_alive(int(m.group(1), 36)):
            for pid in _run("ip", "netns", "pids", name, check=False).split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)  # a crashed run's nodes
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    for line in _run("ip", "-o", "link", "show", check=False).splitlines():
        m = re.match(rf"\d+: ({HOST_IF_PREFIX}([0-9a-z]+)h)[@:]", line)
        if m and not _pid_alive(int(m.group(2), 36)):
            _run("ip", "link", "del", m.group(1), check=False)
            removed.append(m.group(1))
    return removed


def _free_subnet() -> int:
    routes = _run("ip", "-4", "route", "show", "table", "all", check=False)
    addrs = _run("ip", "-4", "-o", "addr", "show", check=False)
    for k in range(256):
        if f"10.77.{k}." not in routes and f"10.77.{k}." not in addrs:
            return k
    raise NetError("no free 10.77.K.0/24 subnet on this host")


@dataclass
class Netns:
    """The namespaces and links of one run. Use as a context manager, or call
    :meth:`create` and (always) :meth:`destroy`."""

    node_ids: list[str]
    tag: str = field(default_factory=lambda: _b36(os.getpid()))
    subnet: int = -1
    created: bool = False

    @property
    def hub(self) -> str:
        return f"{PREFIX}{self.tag}-hub"

    @property
    def host_if(self) -> str:
        return f"{HOST_IF_PREFIX}{self.tag}h"

    def ns(self, node_id: str) -> str:
        return f"{PREFIX}{self.tag}-{node_id}"

    def ip(self, node_id: str) -> str:
        return f"10.77.{self.subnet}.{11 + self.node_ids.index(node_id)}"

    @property
    def client_ip(self) -> str:
        return f"10.77.{self.subnet}.254"

    def address(self, node_id: str) -> str:
        return f"{self.ip(node_id)}:{NODE_PORT}"

    def create(self) -> None:
        cleanup_leftovers()
        self.subnet = _free_subnet()
        self.created = True  # from here on destroy() has something to undo
        hub = self.hub
        _run("ip", "netns", "add", hub)
        _run("ip", "-n", hub, "link", "set", "lo", "up")
        _run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", hub, "link", "set", "br0", "up")
        for i, node_id in enumerate(self.node_ids, 1):
            ns = self.ns(node_id)
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", hub, "link", "add", f"v{i}", "type", "veth",
                 "peer", "name", "eth0", "netns", ns)  # fmt: skip
            _run("ip", "-n", hub, "link", "set", f"v{i}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.ip(node_id)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", input_text=_ns_table(ns))
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "vh", "netns", hub)
        _run("ip", "-n", hub, "link", "set", "vh", "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.client_ip}/24", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")

    def destroy(self) -> None:
        if not self.created:
            return
        with contextlib.suppress(NetError):
            _run("ip", "link", "del", self.host_if, check=False)
        for node_id in self.node_ids:
            _run("ip", "netns", "del", self.ns(node_id), check=False)
        _run("ip", "netns", "del", self.hub, check=False)
        self.created = False

    def __enter__(self) -> Netns:
        self.create()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.destroy()

    # -- faults --------------------------------------------------------------

    def exec_prefix(self, node_id: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(node_id)]

    def block(
        self, pairs: list[tuple[str, str]], *, client_from: tuple[str, ...] | list[str] = ()
    ) -> None:
        """Drop every RPC ``src -> dst`` for each ``(src, dst)`` (one way: the
        reverse RPC direction still works; a two-way cut lists both pairs), and
        every client RPC to the nodes in ``client_from``."""
        rules: dict[str, list[str]] = {}
        for src, dst in pairs:
            rules.setdefault(dst, []).append(f"ip saddr {self.ip(src)} tcp dport {NODE_PORT} drop")
        for dst in client_from:
            rules.setdefault(dst, []).append(
                f"ip saddr {self.client_ip} tcp dport {NODE_PORT} drop"
            )
        for dst, lines in rules.items():
            self._add_rules(dst, lines)

    def drop_random(self, percent: int, nodes: list[str] | None = None) -> None:
        """Drop ``percent``% of all peer packets arriving at ``nodes`` (default all):
        TCP retransmits them, so RPCs see delay (>= 200 ms RTO) as well as loss."""
        peers = " , ".join(self.ip(n) for n in self.node_ids)
        for node_id in nodes or self.node_ids:
            self._add_rules(
                node_id, [f"ip saddr {{ {peers} }} numgen random mod 100 < {percent} drop"]
            )

    def heal(self) -> None:
        for node_id in self.node_ids:
            _run("ip", "netns", "exec", self.ns(node_id), "nft", "flush", "chain", "inet",
                 "tpchaos", "input")  # fmt: skip

    def rules(self, node_id: str) -> str:
        return _run("ip", "netns", "exec", self.ns(node_id), "nft", "list", "table", "inet",
                    "tpchaos")  # fmt: skip

    def _add_rules(self, node_id: str, lines: list[str]) -> None:
        script = "".join(f"add rule inet tpchaos input {line}\n" for line in lines)
        _run("ip", "netns", "exec", self.ns(node_id), "nft", "-f", "-", input_text=script)


def _ns_table(ns: str) -> str:
    return (
        f"# for {ns}\n"
        "table inet tpchaos {\n"
        "  chain input { type filter hook input priority 0; policy accept; }\n"
        "}\n"
    )
