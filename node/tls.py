"""TLS for the gRPC and HTTP ports: credentials from files, reloaded when they change.

A node with ``tls_cert_file``, ``tls_key_file`` and ``tls_ca_file`` serves TLS only
(1.2 or newer) on both ports, and dials its peers over TLS presenting its own
certificate. Peer calls need a client certificate signed by the cluster CA whose name
is ``node/<id>`` of a configured peer (``node/certs.py``); client calls need one
(any name the CA signed) when ``client_cert_auth`` is on.

Reload: the server asks for its certificate again at every new connection
(``grpc.dynamic_ssl_server_credentials``; for HTTP the SSL context's chain is
reloaded in place); when the files' modification times changed, the new pair is
used from then on, existing connections keep theirs. A pair that does not load (a
key written before its certificate) is skipped and the old one kept. Client
channels cannot change certificates, so peers and clients open new channels to pick
up a rotated client certificate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = [
    "Renewal",
    "TlsError",
    "TlsFiles",
    "aio_channel",
    "close_later",
    "dev_cluster_tls",
    "peer_common_name",
    "sync_channel",
]

log = logging.getLogger(__name__)


class TlsError(Exception):
    """TLS files missing or unreadable."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one party: the CA that signs everybody, its own certificate
    and private key (``cert``/``key`` empty: a client with no certificate)."""

    ca: str
    cert: str = ""
    key: str = ""

    def _read(self, path: str, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise TlsError(f"{what} {path}: {exc.strerror or exc}") from exc

    def ca_bytes(self) -> bytes:
        return self._read(self.ca, "CA file")

    def pair(self) -> tuple[bytes, bytes]:
        """(private key, certificate chain) PEM."""
        return self._read(self.key, "key file"), self._read(self.cert, "certificate file")

    def stamp(self) -> tuple[float, ...]:
        try:
            return tuple(os.stat(p).st_mtime_ns for p in (self.ca, self.cert, self.key) if p)
        except OSError:
            return ()

    # -- gRPC -------------------------------------------------------------------------

    def channel_credentials(self) -> grpc.ChannelCredentials:
        if self.cert:
            key, chain = self.pair()
            return grpc.ssl_channel_credentials(self.ca_bytes(), key, chain)
        return grpc.ssl_channel_credentials(self.ca_bytes())

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that pick up new certificate files (and CA) at the next
        handshake. Client certificates are always required: peers share the port and
        must be told apart by theirs."""
        lock = threading.Lock()
        seen = [self.stamp()]

        def config() -> Any:
            key, chain = self.pair()
            try:  # a key that does not match its certificate (one rewritten, not the other)
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(f"{self.cert}, {self.key}: {exc}") from exc
            return grpc.ssl_server_certificate_configuration([(key, chain)], self.ca_bytes())

        def fetch() -> Any:
            with lock:
                stamp = self.stamp()
                if not stamp or stamp == seen[0]:
                    return None
                try:
                    fresh = config()
                except TlsError as exc:
                    log.warning("TLS files changed but do not load (kept the old ones): %s", exc)
                    return None
                seen[0] = stamp
                log.info("TLS: certificate %s reloaded", self.cert)
                return fresh

        return grpc.dynamic_ssl_server_credentials(
            config(), fetch, require_client_authentication=True
        )

    # -- HTTP ---------------------------------------------------------------------------

    def server_context(self, *, require_client_auth: bool) -> _ReloadingContext:
        return _ReloadingContext(self, require_client_auth)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


class _ReloadingContext:
    """An SSL server context (TLS 1.2+, client certificates verified against the CA)
    whose certificate is reloaded in place when the files change (``maybe_reload``,
    called before each accepted connection is used and by the node's timer)."""

    def __init__(self, files: TlsFiles, require_client_auth: bool) -> None:
        self._files = files
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_auth else ssl.CERT_OPTIONAL
        try:
            ctx.load_verify_locations(files.ca)
            ctx.load_cert_chain(files.cert, files.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"TLS files {files.cert}, {files.key}, {files.ca}: {exc}") from exc
        self.context = ctx
        self._stamp = files.stamp()
        self._lock = threading.Lock()

    def maybe_reload(self) -> bool:
        with self._lock:
            stamp = self._files.stamp()
            if not stamp or stamp == self._stamp:
                return False
            try:
                self.context.load_cert_chain(self._files.cert, self._files.key)
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS files changed but do not load (kept the old ones): %s", exc)
                return False
            self._stamp = stamp
            log.info("TLS (HTTP): certificate %s reloaded", self._files.cert)
            return True


def peer_common_name(context: Any) -> str | None:
    """The subject common name of the certificate the caller presented (None: no TLS,
    or no certificate)."""
    try:
        auth = context.auth_context()
    except Exception:  # an in-process fake context
        return None
    names = auth.get("x509_common_name") or []
    if not names:
        return None
    name = names[0]
    return name.decode() if isinstance(name, bytes) else str(name)


# Every node certificate carries the DNS name ``<id>.node.tadpole`` (node/certs.py). A
# node dialling a peer it knows by id checks the server's certificate for that name,
# not just for the address it dialled: every node's certificate may name the same
# address (one host, or an address learned from gossip), none names another's id.
NODE_DOMAIN = "node.tadpole"


def server_name_for(node_id: str) -> str:
    return f"{node_id}.{NODE_DOMAIN}"


def _options(
    options: list[tuple[str, Any]] | None, tls: TlsFiles | None, server_name: str
) -> list[tuple[str, Any]]:
    out = list(options or ())
    if tls is not None and server_name:
        out.append(("grpc.ssl_target_name_override", server_name))
    return out


def aio_channel(
    address: str,
    tls: TlsFiles | None,
    options: list[tuple[str, Any]] | None = None,
    *,
    server_name: str = "",
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``address``: TLS with ``tls``'s certificate (and the
    server's certificate checked for ``server_name`` instead of the address, if given),
    or plaintext when ``tls`` is None."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(
        address, tls.channel_credentials(), options=_options(options, tls, server_name)
    )


def sync_channel(
    address: str,
    tls: TlsFiles | None,
    options: list[tuple[str, Any]] | None = None,
    *,
    server_name: str = "",
) -> grpc.Channel:
    """:func:`aio_channel` for blocking code."""
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(
        address, tls.channel_credentials(), options=_options(options, tls, server_name)
    )


class Renewal:
    """Whether this node's TLS files changed since the channels that present them were
    opened: client channels cannot change certificates, so their owners reopen them
    when :meth:`due` says so. Looks at the files at most every ``every_s``."""

    def __init__(
        self,
        tls: TlsFiles | None,
        *,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tls = tls
        self._every_s = every_s
        self._clock = clock
        self._stamp = tls.stamp() if tls is not None else ()
        self._checked = clock()

    def due(self) -> bool:
        """True once per change of the files (the caller then reopens its channels)."""
        if self._tls is None:
            return False
        now = self._clock()
        if now - self._checked < self._every_s:
            return False
        self._checked = now
        stamp = self._tls.stamp()
        if not stamp or stamp == self._stamp:
            return False
        self._stamp = stamp
        log.info("TLS: %s changed; reopening client channels", self._tls.cert)
        return True


_closing: set[asyncio.Task[None]] = set()


def close_later(channels: Iterable[grpc.aio.Channel], grace_s: float) -> None:
    """Close ``channels`` (replaced ones) once the calls in flight on them end, at most
    ``grace_s`` from now, without waiting here. From the event loop."""
    loop = asyncio.get_running_loop()
    for channel in channels:
        task = loop.create_task(channel.close(grace=grace_s))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


def dev_cluster_tls(endpoints: Iterable[str], root: str = ".cluster") -> TlsFiles | None:
    """The CLI's TLS files of the dev cluster in ``root`` (``make cluster``), when it runs
    TLS and ``endpoints`` are its nodes (any other cluster gets no certificate by
    default); None otherwise."""
    try:
        with open(os.path.join(root, "cluster.json"), encoding="utf-8") as f:
            doc = json.load(f)
        if not doc.get("tls") or not set(endpoints) <= set(doc["nodes"].values()):
            return None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    tls_dir = os.path.join(root, "tls")
    return TlsFiles(
        os.path.join(tls_dir, "ca.pem"),
        os.path.join(tls_dir, "cli.pem"),
        os.path.join(tls_dir, "cli.key"),
    )
