"""Encryption at rest: AES-256-GCM under a keyring of key-encryption keys.

The model is envelope encryption, as in Kubernetes' ``EncryptionConfiguration`` and
most KMS designs:

* A **keyring** holds the operator's key-encryption keys (KEKs), 32 random bytes
  each. The first one (the *primary*) encrypts; every one decrypts. Rotating means
  putting a new key first; the old ones stay until nothing is encrypted under them.
* Bulk data is encrypted under **data keys** (DEKs): fresh random AES-256 keys, each
  stored beside the data it protects *wrapped* (AES-GCM-encrypted) by a KEK. A data
  key serves one file or one store session and is retired after
  :data:`DATA_KEY_USES` encryptions, so no key ever comes near the 2^32 random-nonce
  limit of NIST SP 800-38D, however long a KEK lives.
* Every encrypted thing names the KEK under which it (or its data key) was sealed by
  a 4-byte **fingerprint** of the key (not its name: renaming a key in the file
  changes nothing on disk, and a key with the wrong bytes under the right name is
  caught as unknown rather than failing as corruption).
* Everything is authenticated, with associated data that binds a ciphertext to where
  it belongs (a store row's tier and key, a file's role): a flipped byte, a
  ciphertext moved to another row, a truncated stream are each refused
  (:class:`TamperedError`), never decoded.

Nothing here does I/O beyond :meth:`Keyring.from_file`; callers decide where the
bytes go. Formats (all integers big-endian):

    wrapped data key   fingerprint(4) | nonce(12) | AES-GCM(KEK, key)(32+16)   = 64 bytes
    sealed blob        b"TPSEAL01" | fingerprint(4) | nonce(12) | AES-GCM(KEK, data)
    data-key record    nonce(12) | AES-GCM(DEK, data)
    sealed stream      frames of AES-GCM(DEK, 64 KiB of plaintext), the last one
                       shorter (maybe empty); frame i's nonce is i as 11 bytes then
                       1 if it is the last frame else 0 (the STREAM construction, as
                       in age): frames can be neither reordered nor dropped, nor the
                       stream cut at a frame boundary.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DATA_KEY_USES",
    "ENV_KEYS",
    "FRAME_BYTES",
    "WRAPPED_BYTES",
    "AtRestError",
    "DataKey",
    "Key",
    "Keyring",
    "KeyringError",
    "SealedReader",
    "SealedWriter",
    "TamperedError",
    "UnknownKeyError",
    "fingerprint",
    "generate_line",
    "is_sealed_blob",
    "sealed_blob_key",
    "sealed_stream_bytes",
]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
FINGERPRINT_BYTES: Final = 4
WRAPPED_BYTES: Final = FINGERPRINT_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES
# A data key encrypts at most this many records with random nonces (SP 800-38D allows
# 2^32 per key; half of that leaves the collision chance below 2^-34).
DATA_KEY_USES: Final = 1 << 31
FRAME_BYTES: Final = 64 * 1024
SEALED_MAGIC: Final = b"TPSEAL01"
# The keyring may come from the environment instead of a file (same format).
ENV_KEYS: Final = "TADPOLE_ENCRYPTION_KEYS"

_WRAP_AAD: Final = b"tadpole data key v1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AtRestError(Exception):
    """Root of the errors of encryption at rest."""


class KeyringError(AtRestError):
    """The keyring (file or environment) is missing, malformed or inconsistent."""


class UnknownKeyError(AtRestError):
    """Data is encrypted under a key that is not in the keyring."""


class TamperedError(AtRestError):
    """Authentication failed: the bytes were changed, moved, cut or never written by
    this keyring. Nothing of them was decoded."""


def fingerprint(secret: bytes) -> bytes:
    """The 4-byte id under which data names the key ``secret``."""
    return hashlib.sha256(b"tadpole at-rest key v1\0" + secret).digest()[:FINGERPRINT_BYTES]


@dataclass(frozen=True, slots=True)
class Key:
    """One key-encryption key: a name for people, 32 secret bytes."""

    name: str
    secret: bytes = field(repr=False)

    @property
    def fingerprint(self) -> bytes:
        return fingerprint(self.secret)

    @property
    def id(self) -> str:
        """``name`` and fingerprint, as messages show a key: ``k2 (3fa2c1d0)``."""
        return f"{self.name} ({self.fingerprint.hex()})"


def generate_line(name: str) -> str:
    """A new keyring line: ``name:base64(32 random bytes)``."""
    if not _NAME.match(name):
        raise KeyringError(f"key name {name!r}: use letters, digits, '.', '_' or '-'")
    return f"{name}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


class _Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


class DataKey:
    """A data key: encrypts records with random nonces (:meth:`encrypt`) or one sealed
    stream with counter nonces (:class:`SealedWriter`; then nothing else). ``wrapped``
    is what is stored to get it back (:meth:`Keyring.unwrap`). Thread-safe."""

    def __init__(self, key: bytes, wrapped: bytes) -> None:
        self._aead: _Aead = AESGCM(key)
        self.wrapped = wrapped
        self.kek_fingerprint = wrapped[:FINGERPRINT_BYTES]
        self._uses = 0
        self._lock = threading.Lock()

    @property
    def uses(self) -> int:
        return self._uses

    @property
    def exhausted(self) -> bool:
        """Whether this key has made its :data:`DATA_KEY_USES` encryptions."""
        return self._uses >= DATA_KEY_USES

    def count_uses(self, n: int) -> None:
        """Account for ``n`` encryptions made by an earlier process (a reopened file)."""
        with self._lock:
            self._uses += n

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """``nonce | ciphertext | tag``, bound to ``aad``."""
        with self._lock:
            self._uses += 1
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, record: bytes, aad: bytes, *, what: str = "record") -> bytes:
        if len(record) < NONCE_BYTES + TAG_BYTES:
            raise TamperedError(f"{what}: {len(record)} bytes is too short to be encrypted")
        try:
            return self._aead.decrypt(record[:NONCE_BYTES], record[NONCE_BYTES:], aad)
        except InvalidTag:
            raise TamperedError(f"{what}: authentication failed (changed or misplaced)") from None

    def frame(self, index: int, last: bool, data: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(_frame_nonce(index, last), data, aad)

    def unframe(self, index: int, last: bool, data: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(_frame_nonce(index, last), data, aad)


def _frame_nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(NONCE_BYTES - 1, "big") + (b"\x01" if last else b"\x00")


class Keyring:
    """The operator's key-encryption keys; the first encrypts, all decrypt.

    Text format (a file, or :data:`ENV_KEYS`): one ``name:base64-of-32-bytes`` per
    line (or comma-separated), ``#`` starts a comment. Names and key bytes must be
    unique."""

    def __init__(self, keys: Iterable[Key], source: str = "keyring") -> None:
        self.keys = tuple(keys)
        self.source = source
        if not self.keys:
            raise KeyringError(f"{source}: holds no key")
        self._by_fp: dict[bytes, tuple[Key, _Aead]] = {}
        names: set[str] = set()
        for key in self.keys:
            if len(key.secret) != KEY_BYTES:
                raise KeyringError(
                    f"{source}: key {key.name!r} is {len(key.secret)} bytes, not {KEY_BYTES}"
                )
            if key.name in names:
                raise KeyringError(f"{source}: key name {key.name!r} appears twice")
            if key.fingerprint in self._by_fp:
                raise KeyringError(f"{source}: key {key.name!r} repeats an earlier key's bytes")
            names.add(key.name)
            self._by_fp[key.fingerprint] = (key, AESGCM(key.secret))

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        keys = []
        for n, raw in enumerate(text.replace(",", "\n").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, b64 = line.partition(":")
            name, b64 = name.strip(), b64.strip()
            if not sep or not _NAME.match(name):
                raise KeyringError(f"{source}: entry {n} is not 'name:base64-key'")
            try:
                secret = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"{source}: key {name!r} is not valid base64") from None
            keys.append(Key(name, secret))
        return cls(keys, source)

    @classmethod
    def from_file(cls, path: str) -> Keyring:
        try:
            with open(path, encoding="utf-8") as f:
                return cls.parse(f.read(), path)
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyringError(f"{path}: cannot read the keyring: {exc}") from exc

    @property
    def primary(self) -> Key:
        return self.keys[0]

    def key(self, fp: bytes) -> Key:
        return self._lookup(fp)[0]

    def has(self, fp: bytes) -> bool:
        return fp in self._by_fp

    def describe(self, fp: bytes) -> str:
        """How messages name the key with fingerprint ``fp``, known or not."""
        found = self._by_fp.get(fp)
        return found[0].id if found else fp.hex()

    def _lookup(self, fp: bytes) -> tuple[Key, _Aead]:
        try:
            return self._by_fp[fp]
        except KeyError:
            known = ", ".join(k.id for k in self.keys)
            raise UnknownKeyError(
                f"encrypted under key {fp.hex()}, which is not in {self.source} (it holds {known})"
            ) from None

    # -- data keys ---------------------------------------------------------------

    def new_data_key(self) -> DataKey:
        """A fresh data key, wrapped by the primary key."""
        secret = secrets.token_bytes(KEY_BYTES)
        fp = self.primary.fingerprint
        nonce = os.urandom(NONCE_BYTES)
        wrapped = fp + nonce + self._by_fp[fp][1].encrypt(nonce, secret, _WRAP_AAD)
        return DataKey(secret, wrapped)

    def unwrap(self, wrapped: bytes, *, what: str = "data key") -> DataKey:
        if len(wrapped) != WRAPPED_BYTES:
            raise TamperedError(f"{what}: {len(wrapped)} bytes, a wrapped key has {WRAPPED_BYTES}")
        fp, nonce = (
            wrapped[:FINGERPRINT_BYTES],
            wrapped[FINGERPRINT_BYTES : -(KEY_BYTES + TAG_BYTES)],
        )
        try:
            _, aead = self._lookup(fp)
        except UnknownKeyError as exc:
            raise UnknownKeyError(f"{what}: {exc}") from None
        try:
            secret = aead.decrypt(nonce, wrapped[FINGERPRINT_BYTES + NONCE_BYTES :], _WRAP_AAD)
        except InvalidTag:
            raise TamperedError(
                f"{what}: does not open under key {self.describe(fp)} (changed, or the key's"
                " bytes differ from the ones that wrapped it)"
            ) from None
        return DataKey(secret, wrapped)

    # -- small blobs sealed directly under a key-encryption key -------------------

    def seal(self, data: bytes, aad: bytes) -> bytes:
        """For small, rarely rewritten data (the Raft term/vote file): ``data``
        encrypted directly under the primary key."""
        fp = self.primary.fingerprint
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_MAGIC + fp + nonce + self._by_fp[fp][1].encrypt(nonce, data, aad)

    def unseal(self, blob: bytes, aad: bytes, *, what: str = "sealed data") -> bytes:
        head = len(SEALED_MAGIC) + FINGERPRINT_BYTES + NONCE_BYTES
        if not is_sealed_blob(blob) or len(blob) < head + TAG_BYTES:
            raise TamperedError(f"{what}: not sealed data")
        fp = blob[len(SEALED_MAGIC) : len(SEALED_MAGIC) + FINGERPRINT_BYTES]
        try:
            _, aead = self._lookup(fp)
        except UnknownKeyError as exc:
            raise UnknownKeyError(f"{what}: {exc}") from None
        try:
            return aead.decrypt(blob[head - NONCE_BYTES : head], blob[head:], aad)
        except InvalidTag:
            raise TamperedError(f"{what}: authentication failed (changed or misplaced)") from None


def is_sealed_blob(blob: bytes) -> bool:
    return blob[: len(SEALED_MAGIC)] == SEALED_MAGIC


def sealed_blob_key(blob: bytes) -> bytes:
    """The fingerprint of the key that sealed ``blob``."""
    return blob[len(SEALED_MAGIC) : len(SEALED_MAGIC) + FINGERPRINT_BYTES]


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class SealedWriter:
    """Encrypts everything written to it as one sealed stream into ``sink``;
    :meth:`close` writes the last frame (required: a stream without it does not
    open). ``data_key`` must be fresh and used for this stream only."""

    def __init__(self, sink: _Sink, data_key: DataKey, aad: bytes) -> None:
        self._sink = sink
        self._key = data_key
        self._aad = aad
        self._buffer = bytearray()
        self._index = 0
        self._closed = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) > FRAME_BYTES:
            self._emit(bytes(self._buffer[:FRAME_BYTES]), last=False)
            del self._buffer[:FRAME_BYTES]
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._emit(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._closed = True

    def _emit(self, plain: bytes, *, last: bool) -> None:
        self._sink.write(self._key.frame(self._index, last, plain, self._aad))
        self._index += 1


def sealed_stream_bytes(plaintext_bytes: int) -> int:
    """The length of the sealed stream of ``plaintext_bytes`` bytes."""
    frames = max(1, -(-plaintext_bytes // FRAME_BYTES))
    return plaintext_bytes + frames * TAG_BYTES


class _Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class SealedReader:
    """Reads the plaintext of a sealed stream of ``length`` bytes from ``source``
    (file-like ``read``); every frame is authenticated before any of it is returned.
    TamperedError (naming ``what``) for changed, reordered or cut streams."""

    def __init__(
        self, source: _Source, length: int, data_key: DataKey, aad: bytes, *, what: str
    ) -> None:
        self._source = source
        self._left = length
        self._key = data_key
        self._aad = aad
        self._what = what
        self._index = 0
        self._plain = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self._plain:
                if self._done:
                    break
                self._next_frame()
                continue
            take = len(self._plain) if n < 0 else min(n - len(out), len(self._plain))
            out += self._plain[:take]
            self._plain = self._plain[take:]
        return bytes(out)

    def _next_frame(self) -> None:
        size = min(self._left, FRAME_BYTES + TAG_BYTES)
        data = self._source.read(size)
        if len(data) != size or size < TAG_BYTES:
            raise TamperedError(f"{self._what}: sealed stream cut short at frame {self._index}")
        self._left -= size
        last = self._left == 0
        try:
            self._plain = self._key.unframe(self._index, last, data, self._aad)
        except InvalidTag:
            raise TamperedError(
                f"{self._what}: frame {self._index} fails authentication (changed, reordered"
                " or cut)"
            ) from None
        self._index += 1
        self._done = last
