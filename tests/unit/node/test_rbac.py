"""Roles and grants (node/rbac.py)."""

from __future__ import annotations

import pytest

from node.authn import hash_password
from node.rbac import (
    POLICY_KEY,
    Grant,
    Need,
    Policy,
    PolicyError,
    changes_policy,
    describe_change,
    describe_writes,
    missing,
)

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
        ("carol", Need("read", "system", "/tadpole/audit/n1"), True),
        ("carol", Need("write", "system", "/tadpole/audit/n1"), False),  # the nodes' own
        ("carol", Need("write", "system", "/tadpole/", True), False),  # a delete over it
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


def test_only_root_reads_or_writes_the_policy_even_with_admin_everywhere() -> None:
    # It holds the users' password hashes: reading it is as much root's as writing it.
    for perm in ("read", "write"):
        assert missing(POLICY, "carol", [Need(perm, "system", POLICY_KEY)]) is not None
        assert missing(POLICY, "carol", [Need(perm, "system", "/tadpole/", True)]) is not None
        assert missing(POLICY, "carol", [Need(perm, "system", "", True)]) is not None
    assert missing(POLICY, "carol", [Need("read", "system", "/tadpole/ledger/", True)]) is None
    assert missing(POLICY, "carol", [Need("read", "population", "", True)]) is None


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


def test_a_delete_of_every_key_is_a_write_on_every_key_and_cannot_drop_the_policy() -> None:
    from node.api.authz import NEEDS
    from node.pb import tadpole_pb2 as pb

    writer = Policy.parse(
        '{"enabled": true, "roles": {"w": [{"perm": "write", "tier": "system", "prefix": ""}]},'
        ' "users": {"carol": ["w"]}}'
    )
    delete_all = NEEDS["/tadpole.v1.KV/Delete"](pb.DeleteRequest(all_keys=True))
    assert delete_all == [Need("write", "system", "", True)]
    assert missing(writer, "carol", delete_all) is not None  # it would take the policy
    txn = pb.TxnRequest(success=[pb.RequestOp(delete=pb.DeleteRequest(all_keys=True))])
    assert missing(writer, "carol", NEEDS["/tadpole.v1.KV/Txn"](txn)) is not None
    assert missing(writer, "carol", NEEDS["/tadpole.v1.KV/Put"](pb.PutRequest(key="/x"))) is None


async def test_the_policy_cache_is_unknown_until_read_and_remembers_the_last_one(
    tmp_path: object,
) -> None:
    import asyncio
    import pathlib

    from consensus.memory import MemorySystem
    from consensus.statemachine import DeleteOp, PutOp, Txn
    from node.api.authz import PolicyCache

    class Backend(MemorySystem):
        """A replica whose linearizable reads fail while no leader is ``up``."""

        up = False
        reads = 0

        async def get(self, key: str, *, linearizable: bool, timeout: float) -> object:
            assert key == POLICY_KEY and linearizable
            self.reads += 1
            if not self.up:
                raise ConnectionError("no leader")
            return await super().get(key, linearizable=linearizable, timeout=timeout)

    async def until(check: object) -> None:
        for _ in range(200):
            if check():  # type: ignore[operator]
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the policy cache did not follow")

    path = str(pathlib.Path(str(tmp_path)) / "auth.policy")
    backend = Backend()
    await backend.txn(Txn(success=(PutOp(POLICY_KEY, POLICY.to_json().encode()),)), 1.0)
    # interval_s is an hour: once read, only the watch can bring a change in.
    cache = PolicyCache(backend, path, interval_s=3600, retry_s=0.01)  # type: ignore[arg-type]
    cache.start()
    await asyncio.sleep(0.05)
    assert cache.get() is None  # no leader yet: unknown, not "disabled"
    backend.up = True
    await until(lambda: cache.get() is not None)
    got = cache.get()
    assert got is not None and got.enabled
    reads = backend.reads
    await backend.txn(Txn(success=(DeleteOp(POLICY_KEY),)), 1.0)
    await until(lambda: cache.get() == Policy())  # deleted: the empty policy
    await backend.txn(Txn(success=(PutOp(POLICY_KEY, b"not json"),)), 1.0)
    await asyncio.sleep(0.05)
    assert cache.get() == Policy()  # one that does not parse keeps the last good one
    await backend.txn(Txn(success=(PutOp(POLICY_KEY, POLICY.to_json().encode()),)), 1.0)
    await until(lambda: cache.get() == got)
    assert backend.reads == reads  # followed by the watch, not by reading again
    backend.up = False  # leader gone: the last one is kept
    await asyncio.sleep(0.05)
    assert cache.get() == got
    await cache.close()
    restarted = PolicyCache(backend, path)  # type: ignore[arg-type]
    assert restarted.get() == got  # known at once after a restart


@pytest.mark.parametrize(
    ("needs", "changes"),
    [
        ([Need("write", "system", POLICY_KEY)], True),
        ([Need("write", "system", "/tadpole/", True)], True),  # a delete over it
        ([Need("write", "system", "", True)], True),  # every key
        ([Need("read", "system", POLICY_KEY)], False),
        ([Need("write", "system", "/app/x")], False),
        ([Need("write", "population", POLICY_KEY)], False),  # another tier's key
        ([Need("write", "*", "/tadpole/auth/x")], True),
    ],
)
def test_what_changes_the_policy(needs: list[Need], changes: bool) -> None:
    assert changes_policy(needs) is changes


def test_a_change_is_described_by_names_never_by_hashes() -> None:
    stored = hash_password("s3cret-pass")
    new = Policy(
        True,
        {"writer": POLICY.roles["writer"], "ops": (Grant("read", "mesh", "m-"),)},  # type: ignore[index]
        {"alice": ("writer",), "erin": ("ops",)},
        {"erin": stored},
    )
    text = describe_change(POLICY, new)
    assert text == (
        "role ops: read on mesh m-; role reader removed; role root-ish removed; "
        "user alice: writer; user carol removed; user dave removed; user erin: ops; "
        "password of erin set"
    )
    assert stored not in text and "enabled" not in text  # it was already
    assert describe_change(new, new) == "no change"
    assert describe_change(new, Policy()).startswith("disabled; role ops removed")


def test_writes_are_described_when_they_touch_the_policy() -> None:
    doc = b'{"enabled": true}'
    assert describe_writes([("/app/x", b"1", False)], POLICY) == ""
    assert describe_writes([(POLICY_KEY, doc, False)], Policy()) == "enabled"
    assert describe_writes([(POLICY_KEY, None, False)], POLICY) == f"delete {POLICY_KEY}"
    assert describe_writes([("/tadpole/", None, True)], POLICY) == "delete /tadpole/*"
    assert describe_writes([("/tadpole/auth/x", b"1", False)], POLICY) == "put /tadpole/auth/x"
    with pytest.raises(PolicyError, match="no role 'ghost'"):
        describe_writes([(POLICY_KEY, b'{"users": {"a": ["ghost"]}}', False)], POLICY)


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ('{"users": "x"}', "users must be a JSON object"),
        ('{"roles": [1]}', "roles must be a JSON object"),
        ('{"roles": {"r": [1]}}', "grants must be a list of objects"),
        ('{"roles": {}, "users": {"u": [{}]}}', "roles must be a list of names"),
        ('{"passwords": []}', "passwords must be a JSON object"),
        ('{"passwords": {"u": 5}}', "not a stored hash"),
        ('{"roles": {"r": [{"perm": "read"}]}}', "a grant needs perm and tier"),
        ("[]", "policy must be a JSON object"),
    ],
)
def test_a_malformed_policy_is_a_policy_error_naming_the_problem(doc: str, named: str) -> None:
    with pytest.raises(PolicyError, match=named):  # not a TypeError from deep inside
        Policy.parse(doc)
