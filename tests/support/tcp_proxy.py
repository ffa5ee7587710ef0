"""A TCP forwarder that a test can cut and restore: a database (or any server) that
stops answering without being stopped, for outage tests over real sockets. It can
also hold what clients send and deliver it late: what a partition does to the bytes
of a connection that survives it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Listens on 127.0.0.1 (``port``) and forwards to ``target``. :meth:`cut` closes
    every open connection and refuses new ones until :meth:`restore`. :meth:`hold`
    keeps what clients send from the target until :meth:`release`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self._flowing = threading.Event()  # clear while held
        self._flowing.set()
        self._gap_s = 0.0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def hold(self) -> None:
        """Keep what clients send in the proxy (as unacknowledged segments wait in the
        sender's TCP queue through a partition); answers still flow back."""
        self._flowing.clear()

    def release(self, gap_s: float = 0.0) -> None:
        """Deliver what was held: bytes the client sent together arrive together, and
        bytes it sent later (more than 0.1 s after) arrive ``gap_s`` later, as
        retransmissions arrive an RTO apart -- a request, and the cancellation its
        client sent at its deadline, reach the target separately."""
        self._gap_s = gap_s
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
        self._thread.join(timeout=2)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    continue
                try:
                    server = socket.create_connection(self.target, timeout=2)
                except OSError:
                    client.close()
                    continue
                self._open.update((client, server))
            for a, b, held in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, held), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, held: bool) -> None:
        pending: list[tuple[float, bytes]] = []  # (when it came, what) while held
        if held:
            src.settimeout(0.05)  # to deliver what was held soon after a release
        try:
            while True:
                try:
                    data: bytes | None = src.recv(65536)
                except TimeoutError:
                    data = None
                if data == b"":
                    break
                if held and not self._flowing.is_set():
                    if data:
                        pending.append((time.monotonic(), data))
                    continue
                if pending:
                    self._deliver(pending, dst)
                    pending = []
                if data:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                for sock in (src, dst):
                    if sock in self._open:
                        self._open.discard(sock)
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                        sock.close()

    def _deliver(self, pending: list[tuple[float, bytes]], dst: socket.socket) -> None:
        last = pending[0][0]
        for when, data in pending:
            if when - last > 0.1:
                time.sleep(self._gap_s)
            last = when
            dst.sendall(data)
