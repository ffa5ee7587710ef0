"""Roles and grants (node/rbac.py)."""

from __future__ import annotations

import pytest

from node.rbac import POLICY_KEY, Grant, Need, Policy, PolicyError, missing

POLICY = Policy.parse(
    """{"enabled": true,
        "roles": {"reader": [{"perm": "read", "tier": "system", "prefix": "/app/"}],
                  "writer": [{"perm": "write", "tier": "population", "prefix": "job_"}],
                  "root-ish": [{"perm": "admin", "tier": "*", "prefix": ""}]},
        "users": {"alice": ["reader", "writer"], "carol": ["root-ish"], "dave": []}}"""
)


@pytest.mark.parametrize(
    ("user", "need", "allowed"),
    [
        ("alice", Need("read", "system", "/app/x"), True),
        ("alice", Need("write", "system", "/app/x"), False),  # read does not give write
        ("alice", Need("read", "system", "/other"), False),
        ("alice", Need("read", "system", "/app/", True), True),  # the granted prefix itself
        ("alice", Need("read", "system", "/ap", True), False),  # wider than the grant
        ("alice", Need("read", "population", "job_1"), True),  # write gives read
        ("alice", Need("write", "population", "job_1"), True),
        ("alice", Need("admin", "population", "job_1"), False),
        ("alice", Need("write", "agent", "job_1"), False),  # another tier
        ("carol", Need("write", "mesh", "m"), True),  # admin on every tier
        ("dave", Need("read", "system", "/app/x"), False),  # no roles
        ("eve", Need("read", "system", "/app/x"), False),  # not in the policy
        (None, Need("read", "system", "/app/x"), False),  # unidentified
    ],
)
def test_a_grant_covers_its_tier_its_prefix_and_weaker_permissions(
    user: str | None, need: Need, allowed: bool
) -> None:
    assert (missing(POLICY, user, [need]) is None) is allowed


def test_the_first_missing_permission_is_named() -> None:
    needs = [Need("read", "system", "/app/a"), Need("write", "system", "/app/b")]
    lacking = missing(POLICY, "alice", needs)
    assert lacking == needs[1] and str(lacking) == "write on system '/app/b'"
    assert str(Need("read", "system", "", True)) == "read on system every key"


def test_only_root_writes_the_policy_even_with_admin_everywhere() -> None:
    assert missing(POLICY, "carol", [Need("write", "system", POLICY_KEY)]) is not None
    assert missing(POLICY, "carol", [Need("write", "system", "/tadpole/", True)]) is not None
    assert missing(POLICY, "carol", [Need("read", "system", POLICY_KEY)]) is None


def test_a_disabled_policy_allows_everything() -> None:
    off = Policy(False, POLICY.roles, POLICY.users)
    assert missing(off, None, [Need("write", "system", "/x")]) is None


def test_the_policy_round_trips_and_bad_documents_are_refused() -> None:
    assert Policy.parse(POLICY.to_json()) == POLICY
    assert Policy.parse(None) == Policy() and not Policy.parse(b"").enabled
    for doc, problem in [
        ("[]", "must be a JSON object"),
        ("{not json", "not JSON"),
        ('{"roles": {"r": [{"perm": "rule", "tier": "system"}]}}', "permission 'rule'"),
        ('{"roles": {"r": [{"perm": "read", "tier": "sys"}]}}', "tier 'sys'"),
        ('{"roles": {"r": [{"tier": "system"}]}}', "a grant needs perm and tier"),
        ('{"users": {"u": ["nope"]}}', "no role 'nope'"),
    ]:
        with pytest.raises(PolicyError, match=problem):
            Policy.parse(doc)
    with pytest.raises(PolicyError):
        Grant("read", "nowhere")
