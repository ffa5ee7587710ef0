"""Sealing a chunk for storage: zstd (level 3), then age encryption to recipients.

The stored bytes are a plain age file (binary format) holding a zstd frame, so
``age -d -i key.txt chunk | zstd -d`` opens one with the stock tools. age
authenticates every 64 KiB of payload, so a flipped or missing byte fails the
decryption instead of decoding to something else; the chunk's id (SHA-256 of the
plaintext) is checked after that as well.

Recipients are age X25519 public keys (``age1...``) or SSH public keys
(``ssh-ed25519 ...``, ``ssh-rsa ...``); identities are the matching private keys,
read from identity files in age's format (``AGE-SECRET-KEY-1...`` lines, ``#``
comments) or OpenSSH private key files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import pyrage
import zstandard

ZSTD_LEVEL: Final = 3


class SealError(ValueError):
    """Bad keys, or stored bytes that do not open with them."""


def parse_recipient(text: str) -> Any:
    text = text.strip()
    try:
        if text.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(text)
        if text.startswith("ssh-"):
            return pyrage.ssh.Recipient.from_str(text)
    except Exception as exc:  # pyrage raises its own RecipientError / ValueError
        raise SealError(f"recipient {_short(text)}: not a valid key ({exc})") from exc
    raise SealError(
        f"recipient {_short(text)}: expected an age public key (age1...) or an SSH public key"
    )


def recipients_from_lines(lines: Iterable[str]) -> list[str]:
    """Recipient strings from a recipients file (one a line, ``#`` comments)."""
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def load_identities(path: str) -> list[Any]:
    """The private keys in ``path``: an age identity file or an OpenSSH private key."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise SealError(f"identity file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SealError(f"identity file {path}: not a text file") from exc
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        try:
            return [pyrage.ssh.Identity.from_buffer(text.encode())]
        except Exception:
            raise SealError(f"identity file {path}: unreadable SSH private key") from None
    found: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            # The line may be a secret key with a typo: never echo it.
            raise SealError(f"identity file {path}, line {number}: not an age secret key") from None
    if not found:
        raise SealError(f"identity file {path}: holds no key")
    return found


def seal(plaintext: bytes, recipients: Sequence[Any]) -> bytes:
    if not recipients:
        raise SealError("no recipient: a backup must be encrypted to at least one key")
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(plaintext)
    return bytes(pyrage.encrypt(compressed, list(recipients)))


def unseal(stored: bytes, identities: Sequence[Any], *, max_size: int) -> bytes:
    """The plaintext of sealed bytes; SealError if the keys do not open them, they are
    damaged, or they inflate beyond ``max_size`` (the size the manifest recorded)."""
    try:
        compressed = pyrage.decrypt(stored, list(identities))
    except Exception as exc:
        raise SealError(f"does not decrypt with the given identity, or is damaged ({exc})") from exc
    try:
        declared = zstandard.frame_content_size(compressed)
        if declared > max_size:
            raise SealError(f"inflates to {declared} bytes, more than the {max_size} recorded")
        plaintext = bytes(
            zstandard.ZstdDecompressor().decompress(compressed, max_output_size=max(max_size, 1))
        )
    except zstandard.ZstdError as exc:
        raise SealError(f"decrypted, but the zstd frame is damaged ({exc})") from exc
    if len(plaintext) > max_size:
        raise SealError(f"inflates to {len(plaintext)} bytes, more than the {max_size} recorded")
    return plaintext


def generate_identity() -> tuple[str, str]:
    """A new age X25519 key pair: (secret key line, public recipient)."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def _short(text: str) -> str:
    return repr(text[:16] + "..." if len(text) > 16 else text)
