"""Passwords and login tokens (node/authn.py), who a request comes from
(node/api/authz.Identify), and the login's refusals (node/api/login.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jwt
import pytest

from node.api.authz import Caller, Identify
from node.api.login import Login
from node.authn import (
    TokenError,
    Tokens,
    check_hash,
    hash_password,
    looks_like_token,
    verify_password,
)
from node.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from node.rbac import Policy, PolicyError

SECRET = b"0123456789abcdef" * 4
NOW = 1_800_000_000.0


def test_a_password_checks_against_its_hash_and_nothing_else() -> None:
    stored = hash_password("correct horse")
    check_hash(stored)
    assert stored.startswith("scrypt$15$8$1$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)
    assert not verify_password("correct horse", None)  # no such user
    assert hash_password("correct horse") != stored  # a fresh salt each time
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    assert not verify_password("correct horse", tampered)
    for bad in ("", "plain", "scrypt$15$8$1$!!$AA==", "scrypt$40$8$1$AA==$AA=="):
        with pytest.raises(ValueError):
            check_hash(bad)
    with pytest.raises(ValueError, match="1 to 1024 bytes"):
        hash_password("")


def test_a_token_names_its_user_until_it_expires() -> None:
    tokens = Tokens.from_secret(SECRET, ttl_s=600)
    token, expires = tokens.issue("erin", NOW)
    assert looks_like_token(token) and expires == NOW + 600
    assert tokens.user(token, NOW + 599) == "erin"
    with pytest.raises(TokenError, match="expired"):
        tokens.user(token, NOW + 600)


def _forge(claims: dict[str, Any], key: bytes, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def test_only_this_clusters_tokens_for_tadpole_pass() -> None:
    tokens = Tokens.from_secret(SECRET)
    good = {"sub": "erin", "aud": "tadpole", "iat": int(NOW), "exp": int(NOW) + 60}
    other = Tokens.from_secret(b"another cluster's secret")
    forged = [
        _forge(good, other.key),  # another cluster's key
        _forge({**good, "aud": "elsewhere"}, tokens.key),
        _forge({k: v for k, v in good.items() if k != "exp"}, tokens.key),
        _forge({**good, "sub": ""}, tokens.key),
        _forge({**good, "iat": int(NOW) + 3600}, tokens.key),  # issued an hour ahead
        "a.b.c",
    ]
    # alg "none": a header asking not to be checked, with no signature
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(good).encode()).rstrip(b"=")
    forged.append(f"{header.decode()}.{body.decode()}.")
    for token in forged:
        with pytest.raises(TokenError):
            tokens.user(token, NOW)
    assert tokens.user(_forge(good, tokens.key), NOW) == "erin"


def test_identify_root_nodes_tokens_and_certificates() -> None:
    tokens = Tokens.from_secret(SECRET)
    identify = Identify("op-token", frozenset({"n1"}), tokens)
    token, _ = tokens.issue("erin", NOW)
    assert identify(None, "Bearer op-token", NOW) == Caller("operator", None, True)
    assert identify("client/cli", f"Bearer {token}", NOW) == Caller("token/erin", "erin", False)
    assert identify("node/n1", None, NOW).trusted
    assert identify("node/n9", None, NOW) == Caller("node/n9", None, False)  # not a peer
    assert identify("client/alice", "Bearer not-the-operator", NOW).user == "alice"
    with pytest.raises(TokenError, match="expired"):
        identify("client/alice", f"Bearer {token}", NOW + 10_000)
    with pytest.raises(TokenError, match="no cluster secret"):
        Identify("", frozenset(), None)(None, f"Bearer {token}", NOW)


def test_the_policy_keeps_password_hashes_and_refuses_anything_else() -> None:
    stored = hash_password("pw")
    policy = Policy.parse(json.dumps({"enabled": True, "passwords": {"erin": stored}}))
    assert policy.passwords == {"erin": stored}
    assert Policy.parse(policy.to_json()) == policy
    with pytest.raises(PolicyError, match="user 'erin': password"):
        Policy.parse(json.dumps({"passwords": {"erin": "hunter2"}}))


class _Cache:
    def __init__(self, policy: Policy | None) -> None:
        self.policy = policy

    def get(self) -> Policy | None:
        return self.policy


def _login(tls: bool = True, tokens: Tokens | None = None, policy: Policy | None = None) -> Login:
    stored = {"erin": hash_password("pw")}
    cache: Any = _Cache(policy or Policy(True, {}, {}, stored))
    return Login(cache, tokens or Tokens.from_secret(SECRET), tls, None, clock=lambda: NOW)


def test_a_login_answers_a_token_or_says_what_is_wrong() -> None:
    token, expires = asyncio.run(_login().token("erin", "pw", "client/cli", "ipv4:1.2.3.4:5"))
    assert Tokens.from_secret(SECRET).user(token, NOW) == "erin" and expires == NOW + 600
    for user, password in (("erin", "wrong"), ("nobody", "pw")):
        with pytest.raises(Unauthenticated, match=r"^wrong user or password$"):
            asyncio.run(_login().token(user, password, "anonymous", ""))
    with pytest.raises(InvalidArgument, match="user"):
        asyncio.run(_login().token("er/in", "pw", "anonymous", ""))
    with pytest.raises(InvalidArgument, match="password"):
        asyncio.run(_login().token("erin", 7, "anonymous", ""))
    with pytest.raises(FailedPrecondition, match="needs TLS"):
        asyncio.run(_login(tls=False).token("erin", "pw", "anonymous", ""))
    # a lone surrogate (valid JSON, no UTF-8): a 400 naming the field, not a 500
    with pytest.raises(InvalidArgument, match="password: 1 to 1024 bytes of UTF-8"):
        asyncio.run(_login().token("erin", "\ud800", "anonymous", ""))


def test_the_client_never_sends_a_password_in_clear() -> None:
    from node.client import Client
    from node.client.errors import InvalidArgument as ClientInvalidArgument

    plaintext = Client(["127.0.0.1:1"])  # refused before any connection
    with plaintext, pytest.raises(ClientInvalidArgument, match="needs TLS"):
        plaintext.authenticate("erin", "pw")
