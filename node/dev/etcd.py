"""Local etcd members on loopback, for the etcd-backend tests and ``make bench``.

:class:`LocalEtcd` starts ``n`` etcd processes (each in its own session, data
in ``<root>/<name>``, log in ``<root>/<name>.log``) as one new cluster on the
ports it is given, waits until a leader answers, and stops or kills members
on request. It needs the ``etcd`` binary (Debian/Ubuntu: ``apt-get install
etcd-server``); :func:`find_etcd` looks on ``PATH`` and in ``/usr/bin``.

etcd fsyncs its WAL before acknowledging, as in production; nothing here
turns that off.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

import grpc
from aetcd import rpc

INSTALL_HINT = "install etcd (Debian/Ubuntu: apt-get install etcd-server)"


def find_etcd() -> str | None:
    """Path of the etcd binary, or None."""
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


@dataclass
class LocalEtcd:
    """``members`` etcd processes; member i serves clients on
    ``base_port + 2i + 1`` and peers on ``base_port + 2i + 2``."""

    root: str
    base_port: int
    members: int = 1
    binary: str = field(default_factory=lambda: find_etcd() or "etcd")
    host: str = "127.0.0.1"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f"etcd{i + 1}" for i in range(self.members)]

    def client_port(self, name: str) -> int:
        return self.base_port + 2 * self.names.index(name) + 1

    def peer_port(self, name: str) -> int:
        return self.base_port + 2 * self.names.index(name) + 2

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.host}:{self.client_port(n)}" for n in self.names]

    def command(self, name: str) -> list[str]:
        cluster = ",".join(f"{n}=http://{self.host}:{self.peer_port(n)}" for n in self.names)
        client = f"http://{self.host}:{self.client_port(name)}"
        peer = f"http://{self.host}:{self.peer_port(name)}"
        return [
            self.binary,
            "--name",
            name,
            "--data-dir",
            os.path.join(self.root, name),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            f"tadpole-{self.base_port}",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]

    def start_member(self, name: str) -> int:
        os.makedirs(self.root, exist_ok=True)
        log = open(os.path.join(self.root, f"{name}.log"), "ab")  # noqa: SIM115 (child owns it)
        proc = subprocess.Popen(
            self.command(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc.pid

    def start(self, timeout: float = 30.0) -> None:
        for name in self.names:
            self.start_member(name)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0, among: list[str] | None = None) -> None:
        """Until a member in ``among`` (default all) reports a leader and
        answers a linearizable read."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name in among or self.names:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}; see {self.root}/{name}.log"
                    )
                address = f"{self.host}:{self.client_port(name)}"
                with grpc.insecure_channel(address) as channel:
                    try:
                        st = rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=1)
                        if st.leader:
                            rpc.KVStub(channel).Range(rpc.RangeRequest(key=b"\0"), timeout=2)
                            return
                    except grpc.RpcError as exc:
                        last = f"{address}: {exc.code()}"
            time.sleep(0.1)
        raise TimeoutError(f"etcd not ready within {timeout} s ({last})")

    def pid(self, name: str) -> int | None:
        proc = self.procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def leader(self) -> str | None:
        """Name of the member that currently leads, by asking each."""
        for name in self.names:
            if self.pid(name) is None:
                continue
            with grpc.insecure_channel(f"{self.host}:{self.client_port(name)}") as channel:
                try:
                    st = rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=1)
                except grpc.RpcError:
                    continue
                if st.leader and st.leader == st.header.member_id:
                    return name
        return None

    def kill(self, name: str) -> None:
        """SIGKILL one member and reap it."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        """SIGTERM every member, SIGKILL any that does not exit in 10 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self.procs.pop(name, None)
