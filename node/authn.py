"""Users without a certificate: passwords hashed with a memory-hard KDF, and the
short-lived signed tokens a password buys (docs/security.md#passwords-and-tokens).

A password is kept only as ``scrypt$<log2 n>$<r>$<p>$<salt>$<hash>`` (hashlib.scrypt,
n = 2^15, r = 8, p = 1: 32 MiB and tens of milliseconds per guess, a fresh 16-byte
salt per password), in the policy document under ``/tadpole/auth/`` — which only root
may read. ``tadpole auth login`` (gRPC ``Auth/Authenticate``, HTTP
``POST /api/v1/auth/token``) checks one and answers a JWT (RFC 7519, PyJWT, HS256):
``sub`` the user, ``aud`` ``tadpole``, ``iat``/``exp`` (``auth_token_ttl_s``, 10 minutes
by default). Every node derives the same signing key from the cluster secret, so any
node checks a token any node issued, without a round trip. A client presents it as
``authorization: Bearer <token>``; it names the user exactly as a certificate
``client/<user>`` does, and the roles decide from there.

Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Final

import jwt

__all__ = [
    "AUDIENCE",
    "TOKEN_TTL_S",
    "TokenError",
    "Tokens",
    "hash_password",
    "looks_like_token",
    "verify_password",
]

AUDIENCE: Final = "tadpole"
TOKEN_TTL_S: Final = 600.0
CLOCK_SKEW_S: Final = 300.0  # how far ahead of this node's clock another node's may run
_N_LOG2, _R, _P = 15, 8, 1
_MAXMEM: Final = 64 << 20  # scrypt needs 128 * r * n = 32 MiB at these parameters
MAX_PASSWORD_BYTES: Final = 1024


class TokenError(Exception):
    """A token that does not name a user now; the message says why (never the token)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``password`` (a fresh random salt unless given)."""
    raw = password.encode()
    if not raw or len(raw) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password is 1 to {MAX_PASSWORD_BYTES} bytes")
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(raw, salt=salt, n=1 << _N_LOG2, r=_R, p=_P, maxmem=_MAXMEM)
    return f"scrypt${_N_LOG2}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def check_hash(stored: str) -> None:
    """ValueError unless ``stored`` is a hash this module makes (the policy's check)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt$... password hash")
    n_log2, r, p = (int(x) for x in parts[1:4])
    if not (10 <= n_log2 <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    base64.b64decode(parts[4], validate=True)
    base64.b64decode(parts[5], validate=True)


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` is the one ``stored`` was made from. With no stored hash
    (no such user) the same work is done against a dummy, so a caller cannot tell
    users from non-users by the time it takes."""
    raw = password.encode()[: MAX_PASSWORD_BYTES + 1]
    try:
        _, n_log2, r, p, salt, digest = (stored or _DUMMY).split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            raw or b"\0",
            salt=base64.b64decode(salt),
            n=1 << int(n_log2),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return stored is not None and bool(raw) and hmac.compare_digest(got, expected)


_DUMMY: Final = "scrypt$15$8$1$" + _b64(b"\0" * 16) + "$" + _b64(b"\0" * 64)


def looks_like_token(credential: str) -> bool:
    """A JWT has three dot-separated parts; the operator token is hex without dots."""
    return credential.count(".") == 2


@dataclass(frozen=True)
class Tokens:
    """Issue and check tokens under the key derived from the cluster secret."""

    key: bytes
    ttl_s: float = TOKEN_TTL_S

    @classmethod
    def from_secret(cls, secret: bytes, ttl_s: float = TOKEN_TTL_S) -> Tokens:
        return cls(hmac.new(secret, b"tadpole auth token v1", hashlib.sha256).digest(), ttl_s)

    def issue(self, user: str, now: float) -> tuple[str, float]:
        """A token naming ``user`` and when it expires (unix seconds)."""
        expires = now + self.ttl_s
        claims = {"sub": user, "aud": AUDIENCE, "iat": int(now), "exp": int(expires)}
        return jwt.encode(claims, self.key, algorithm="HS256"), float(int(expires))

    def user(self, token: str, now: float) -> str:
        """The user ``token`` names, or TokenError (expired, not signed by this
        cluster, malformed) — checked against ``now``, with no leeway."""
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=["HS256"],  # never what the token's header asks for
                audience=AUDIENCE,
                # Times are checked below against the clock passed in, not PyJWT's.
                options={
                    "require": ["sub", "exp", "iat", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"the token is not valid here ({type(exc).__name__})") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenError("the token names no user")
        if not isinstance(claims["exp"], int) or claims["exp"] <= now:
            raise TokenError("the token has expired: log in again (tadpole auth login)")
        if not isinstance(claims["iat"], int) or claims["iat"] > now + CLOCK_SKEW_S:
            raise TokenError("the token was issued in the future (a node's clock is off?)")
        return str(claims["sub"])
