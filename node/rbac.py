"""Roles and their grants: who may read, write or administer which keys of which tier
(pure, no I/O; docs/security.md#roles).

The policy is one JSON document in the system tier (:data:`POLICY_KEY`), so it is
replicated and changed linearizably, like etcd's auth store::

    {"enabled": true,
     "roles": {"app-reader": [{"perm": "read", "tier": "system", "prefix": "/app/"}]},
     "users": {"alice": ["app-reader"]}}

A user is a TLS client certificate's name (``client/alice`` -> ``alice``). A grant
gives ``read``, ``write`` (which includes read) or ``admin`` (all of them) on the keys
of ``tier`` (``*``: every tier) starting with ``prefix``. Everything not granted is
denied (Consul's ``default_policy = "deny"``); there are no deny rules. The operator
credential is root and is never checked against the policy, so enabling it cannot lock
everybody out; nodes (``node/<id>``) are the cluster itself. The policy's own key,
under :data:`AUTH_PREFIX`, is for root alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from node.authn import check_hash

__all__ = [
    "AUDIT_PREFIX",
    "AUTH_PREFIX",
    "PERMS",
    "POLICY_KEY",
    "Grant",
    "Need",
    "Policy",
    "PolicyError",
    "Write",
    "changes_policy",
    "describe_change",
    "describe_writes",
    "missing",
]

AUTH_PREFIX: Final = "/tadpole/auth/"
# Where each node copies its audit trail (node/audit.py): written by the nodes alone.
AUDIT_PREFIX: Final = "/tadpole/audit/"
POLICY_KEY: Final = AUTH_PREFIX + "policy"
PERMS: Final = ("read", "write", "admin")
TIERS: Final = ("system", "population", "agent", "mesh", "metrics", "*")
_RANK: Final = {perm: i for i, perm in enumerate(PERMS)}


class PolicyError(ValueError):
    """A policy document (or a change to one) that is not valid; names the problem."""


@dataclass(frozen=True, slots=True)
class Grant:
    perm: str
    tier: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.perm not in PERMS:
            raise PolicyError(f"permission {self.perm!r}: use one of {', '.join(PERMS)}")
        if self.tier not in TIERS:
            raise PolicyError(f"tier {self.tier!r}: use one of {', '.join(TIERS)}")

    def covers(self, need: Need) -> bool:
        return (
            _RANK[self.perm] >= _RANK[need.perm]
            and self.tier in ("*", need.tier)
            and need.key.startswith(self.prefix)
        )  # a prefix need is covered when the grant's prefix is a prefix of it

    def __str__(self) -> str:
        return f"{self.perm} on {self.tier} {self.prefix or '(every key)'}"


@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs: ``perm`` on ``key`` of ``tier`` (a prefix request needs
    it on the prefix, i.e. on every key under it)."""

    perm: str
    tier: str
    key: str
    prefix: bool = False  # every key starting with ``key``

    def __str__(self) -> str:
        what = f"keys under {self.key!r}" if self.prefix else repr(self.key)
        if self.prefix and not self.key:
            what = "every key"
        return f"{self.perm} on {self.tier} {what}"


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """``doc[name]``: an object (absent or null: empty)."""
    found = doc.get(name)
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise PolicyError(f"{name} must be a JSON object")
    return found


@dataclass(frozen=True)
class Policy:
    enabled: bool = False
    roles: dict[str, tuple[Grant, ...]] | None = None
    users: dict[str, tuple[str, ...]] | None = None
    # user -> scrypt hash (node/authn.py): who may log in for a token without a certificate
    passwords: dict[str, str] | None = None

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Policy:
        if not raw:
            return cls()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise PolicyError(f"policy is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise PolicyError("policy must be a JSON object")
        roles: dict[str, tuple[Grant, ...]] = {}
        for name, grants in _section(doc, "roles").items():
            if not isinstance(grants, list) or not all(isinstance(g, dict) for g in grants):
                raise PolicyError(f"role {name!r}: grants must be a list of objects")
            try:
                roles[name] = tuple(
                    Grant(str(g["perm"]), str(g["tier"]), str(g.get("prefix", ""))) for g in grants
                )
            except (KeyError, TypeError) as exc:
                raise PolicyError(f"role {name!r}: a grant needs perm and tier") from exc
        users: dict[str, tuple[str, ...]] = {}
        for name, names in _section(doc, "users").items():
            if not isinstance(names, list) or not all(isinstance(r, str) for r in names):
                raise PolicyError(f"user {name!r}: roles must be a list of names")
            unknown = [r for r in names if r not in roles]
            if unknown:
                raise PolicyError(f"user {name!r}: no role {unknown[0]!r}")
            users[name] = tuple(names)
        passwords: dict[str, str] = {}
        for name, stored in _section(doc, "passwords").items():
            try:
                if not isinstance(stored, str):
                    raise ValueError("not a stored hash (set it with tadpole auth password)")
                check_hash(stored)
            except ValueError as exc:
                raise PolicyError(f"user {name!r}: password: {exc}") from None
            passwords[name] = stored
        return cls(bool(doc.get("enabled", False)), roles, users, passwords)

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "enabled": self.enabled,
            "roles": {
                name: [{"perm": g.perm, "tier": g.tier, "prefix": g.prefix} for g in grants]
                for name, grants in sorted((self.roles or {}).items())
            },
            "users": {name: list(r) for name, r in sorted((self.users or {}).items())},
            "passwords": dict(sorted((self.passwords or {}).items())),
        }
        return json.dumps(doc, indent=1, sort_keys=True)

    def grants_of(self, user: str) -> list[Grant]:
        roles = self.roles or {}
        return [g for role in (self.users or {}).get(user, ()) for g in roles.get(role, ())]


def missing(policy: Policy, user: str | None, needs: list[Need]) -> Need | None:
    """The first of ``needs`` that ``user`` (None: unidentified) is not granted, or
    None when every one is (or the policy is not enabled). The policy's own keys
    (under :data:`AUTH_PREFIX` of the system tier: roles, users, password hashes) are
    granted to nobody here, for reading or writing, nor is a prefix over them: root
    only."""
    if not policy.enabled:
        return None
    grants = policy.grants_of(user) if user is not None else []
    for need in needs:
        if _over_policy(need):
            return need  # the policy itself, or a prefix over it
        if need.perm != "read" and _over(need, AUDIT_PREFIX):
            return need  # the audit trail's copy: the nodes write it, roles may read it
        if not any(g.covers(need) for g in grants):
            return need
    return None


def _over(need: Need, prefix: str) -> bool:
    """Whether ``need`` is on a system key under ``prefix``, or on a prefix over it."""
    return need.tier in ("system", "*") and (
        need.key.startswith(prefix) or (need.prefix and prefix.startswith(need.key))
    )


def _over_policy(need: Need) -> bool:
    return _over(need, AUTH_PREFIX)


def changes_policy(needs: list[Need]) -> bool:
    """Whether a request with ``needs`` may change the policy (write or delete a key
    under :data:`AUTH_PREFIX`, or a prefix over it): an admin action, audited."""
    return any(need.perm != "read" and _over_policy(need) for need in needs)


def describe_change(old: Policy, new: Policy) -> str:
    """What a change of the policy from ``old`` to ``new`` does, in names only (never a
    password hash), for the audit trail: ``enabled; role ops: write on system /app/;
    user erin: ops; password of erin set``."""
    parts: list[str] = []
    if old.enabled != new.enabled:
        parts.append("enabled" if new.enabled else "disabled")
    parts += _named_changes(
        "role", old.roles or {}, new.roles or {}, lambda g: ", ".join(map(str, g)) or "no grants"
    )
    parts += _named_changes(
        "user", old.users or {}, new.users or {}, lambda r: ", ".join(r) or "no roles"
    )
    before_pw, after_pw = old.passwords or {}, new.passwords or {}
    for name in sorted(before_pw.keys() | after_pw.keys()):
        if name not in after_pw:
            parts.append(f"password of {name} removed")
        elif after_pw[name] != before_pw.get(name):
            parts.append(f"password of {name} set")
    return "; ".join(parts) or "no change"


# A write as the audit describes it: (key, value, prefix), value None for a delete.
Write = tuple[str, bytes | None, bool]


def _named_changes(
    kind: str, before: dict[str, Any], after: dict[str, Any], show: Callable[[Any], str]
) -> list[str]:
    """``kind NAME: what it is now`` for each name ``after`` changed, ``kind NAME
    removed`` for each it lost."""
    parts: list[str] = []
    for name in sorted(before.keys() | after.keys()):
        now = after.get(name)
        if now is None:
            parts.append(f"{kind} {name} removed")
        elif now != before.get(name):
            parts.append(f"{kind} {name}: {show(now)}")
    return parts


def describe_writes(writes: Sequence[Write], old: Policy) -> str:
    """What ``writes`` — ``(key, value, prefix)``, value None for a delete — do to the
    policy (the others are left out), for the audit trail. A policy document that does
    not parse is :class:`PolicyError`: it is refused, not stored."""
    parts: list[str] = []
    for key, value, prefix in writes:
        if not (key.startswith(AUTH_PREFIX) or (prefix and AUTH_PREFIX.startswith(key))):
            continue
        if key == POLICY_KEY and value is not None:
            parts.append(describe_change(old, Policy.parse(value)))
        elif value is None:
            parts.append(f"delete {key}{'*' if prefix else ''}")
        else:
            parts.append(f"put {key}")
    return "; ".join(parts)
