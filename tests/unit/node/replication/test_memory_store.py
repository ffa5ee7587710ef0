"""One contract, two stores: TierStore (SQLite) and MemoryStore answer alike for
everything the replication driver uses (``ReplicaStore``), so a scenario run on the
memory store says something about the real one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from node.replication.memory import MemoryStore
from node.replication.store import OnceFn, ReplicaStore, TierStore, digest_of


def _const(value: bytes) -> Callable[[bytes | None], bytes]:
    return lambda _: value


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ReplicaStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    tier_store = TierStore(str(tmp_path / "tiers.db"))
    try:
        yield tier_store
    finally:
        await tier_store.aclose()


async def test_update_returns_the_new_value_and_none_deletes(store: ReplicaStore) -> None:
    seen: list[bytes | None] = []

    def put(value: bytes | None) -> Callable[[bytes | None], bytes | None]:
        def fn(old: bytes | None) -> bytes | None:
            seen.append(old)
            return value

        return fn

    assert await store.update("population", "a/1", put(b"one")) == b"one"
    assert await store.update("population", "a/1", put(b"two")) == b"two"
    assert store.get("population", "a/1") == b"two"
    assert await store.update("population", "a/1", put(None)) is None
    assert store.get("population", "a/1") is None
    assert seen == [None, b"one", b"two"]
    assert await store.update("population", "a/1", put(None)) is None


async def test_an_update_function_that_raises_writes_nothing(store: ReplicaStore) -> None:
    await store.update("mesh", "m", lambda _: b"kept")

    def boom(_: bytes | None) -> bytes:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await store.update("mesh", "m", boom)
    assert store.get("mesh", "m") == b"kept"


@pytest.mark.parametrize(("tier", "key"), [("", "k"), ("t", ""), (1, "k"), ("t", None)])
async def test_names_are_checked(store: ReplicaStore, tier: object, key: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store.update(tier, key, lambda _: b"x")  # type: ignore[arg-type]


async def test_scans_keys_digests_and_counts(store: ReplicaStore) -> None:
    for key in ("b/2", "a/1", "b/1", "c/\u00e9", "b/10"):
        await store.update("population", key, _const(key.encode()))
    await store.update("mesh", "b/1", lambda _: b"other tier")
    assert [k for k, _ in store.scan("population")] == ["a/1", "b/1", "b/10", "b/2", "c/\u00e9"]
    assert store.scan("population", "b/") == [(k, k.encode()) for k in ("b/1", "b/10", "b/2")]
    assert [k for k, _ in store.scan("population", "b/", "b/1")] == ["b/10", "b/2"]
    assert [k for k, _ in store.scan("population", "", "", 2)] == ["a/1", "b/1"]
    assert list(store.keys_and_digests("mesh")) == [("b/1", digest_of(b"other tier"))]
    assert (store.count("population"), store.count("mesh"), store.count("agent")) == (5, 1, 0)
    with pytest.raises(ValueError):
        store.scan("population", limit=-1)


async def test_hints_come_oldest_first_per_target(store: ReplicaStore) -> None:
    ids = [
        await store.add_hint("n2", "population", "a/1", b"h1"),
        await store.add_hint("n3", "mesh", "m", b"h2"),
        await store.add_hint("n2", "population", "a/2", b"h3"),
    ]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for_n2 = store.hints_for("n2")
    assert [(h.tier, h.key, h.value, h.target) for h in for_n2] == [
        ("population", "a/1", b"h1", "n2"),
        ("population", "a/2", b"h3", "n2"),
    ]
    assert [h.value for h in store.hints_for("n2", 1)] == [b"h1"]
    assert await store.delete_hints([for_n2[0].id, 10_000]) == 1
    assert [h.value for h in store.hints_for("n2")] == [b"h3"]
    assert [h.value for h in store.hints_for("n3")] == [b"h2"]
    assert store.hints_for("n9") == []
    assert await store.delete_hints([]) == 0


async def test_hints_about_a_key_whatever_their_target(store: ReplicaStore) -> None:
    first = await store.add_hint("n2", "population", "s/1", b"one")
    await store.add_hint("n3", "population", "s/2", b"other key")
    await store.add_hint("n3", "mesh", "s/1", b"other tier")
    last = await store.add_hint("n3", "population", "s/1", b"two")
    about = store.hints_about("population", "s/1")
    assert [(h.id, h.target, h.value) for h in about] == [
        (first, "n2", b"one"),
        (last, "n3", b"two"),
    ]
    await store.delete_hints([first])
    assert [h.value for h in store.hints_about("population", "s/1")] == [b"two"]
    assert store.hints_about("agent", "s/1") == []


async def test_the_version_grows_with_each_committed_change_of_its_tier(
    store: ReplicaStore,
) -> None:
    assert store.version("population") == 0
    await store.update("population", "a/1", _const(b"one"))
    after_write = store.version("population")
    assert after_write > 0 and store.version("mesh") == 0
    await store.update("population", "a/1", lambda _: None)  # a delete is a change
    assert store.version("population") > after_write
    await store.add_hint("n2", "mesh", "m", b"hint")  # hints are not the tier's values
    assert store.version("mesh") == 0


async def test_the_change_feed_reports_each_changed_key_with_its_value(
    store: ReplicaStore,
) -> None:
    await store.update("mesh", "m/1", _const(b"a"))
    await store.update("mesh", "m/1", _const(b"a"))  # the same value: no change, no entry
    await store.update("mesh", "m/2", _const(b"b"))
    await store.update("agent", "x", _const(b"c"))  # another tier
    await store.update("mesh", "m/1", _const(b"d"))
    await store.update("mesh", "m/2", lambda _: None)  # a delete is a change too
    page = store.changes("mesh", "m/", 0, 100)
    assert page.feed
    # One entry per key, its last change, with the value now; in seq order.
    assert [(k, v) for _, k, v in page.entries] == [("m/1", b"d"), ("m/2", None)]
    seqs = [s for s, _, _ in page.entries]
    assert seqs == sorted(seqs) and page.through >= seqs[-1]
    assert store.changes("mesh", "m/", page.through, 100).entries == []
    first = store.changes("mesh", "", 0, 1)  # one row read: the page stops there
    assert [k for _, k, _ in first.entries] == ["m/1"] and first.through == first.entries[0][0]
    rest = store.changes("mesh", "", first.through, 100)
    # m/2, m/1, m/2 changed after it: each once, ordered by its last change.
    assert [k for _, k, _ in rest.entries] == ["m/1", "m/2"]


async def test_update_once_shows_each_request_id_applied_before(store: ReplicaStore) -> None:
    calls: list[tuple[bytes | None, frozenset[str]]] = []

    def add(value: bytes, applied: tuple[str, ...]) -> OnceFn:
        def fn(old: bytes | None, seen: frozenset[str]) -> tuple[bytes, Sequence[str]]:
            calls.append((old, seen))
            return value, applied

        return fn

    assert await store.update_once("population", "c", add(b"1", ("a", "b")), ["a", "b"]) == b"1"
    assert await store.update_once("population", "c", add(b"2", ("c", "z")), ["b", "c"]) == b"2"
    assert calls == [(None, frozenset()), (b"1", frozenset({"b"}))]

    def boom(_old: bytes | None, _seen: frozenset[str]) -> tuple[bytes, Sequence[str]]:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await store.update_once("population", "c", boom, ["d"])
    calls.clear()
    await store.update_once("population", "c", add(b"3", ()), ["d", "e", "z"])
    assert calls == [(b"2", frozenset())], "a failed update, or an id not given, is not recorded"
    calls.clear()
    await store.update_once("population", "c", add(b"3", ("d", "e")), ["d", "e"])
    assert calls == [(b"3", frozenset())], "only the ids the function applied are recorded"
    assert store.get("population", "c") == b"3"


async def test_update_many_once_answers_each_group_on_its_own(store: ReplicaStore) -> None:
    def put(value: bytes, ids: tuple[str, ...]) -> OnceFn:
        return lambda _old, _seen: (value, ids)

    def refuse(_old: bytes | None, _seen: frozenset[str]) -> tuple[bytes, Sequence[str]]:
        raise ValueError("does not fit")

    results = await store.update_many_once(
        [
            ("population", "a", put(b"1", ("r1",)), ["r1"]),
            ("population", "b", refuse, ["r2"]),
            ("population", "c", put(b"3", ()), []),
        ]
    )
    assert results[0] == b"1" and results[2] == b"3"
    assert isinstance(results[1], ValueError)
    assert store.get("population", "b") is None
    seen: list[frozenset[str]] = []
    await store.update_once("population", "b", lambda v, s: (seen.append(s) or v, []), ["r1", "r2"])
    assert seen == [frozenset({"r1"})], "the refused group's id was not recorded"
    assert await store.update_many_once([]) == []


async def test_update_many_applies_in_order_each_item_on_its_own(store: ReplicaStore) -> None:
    await store.update("population", "k", _const(b"0"))
    version = store.version("population")

    def append(suffix: bytes) -> Callable[[bytes | None], bytes]:
        return lambda old: (old or b"") + suffix

    def refuse(_: bytes | None) -> bytes:
        raise ValueError("does not fit")

    results = await store.update_many(
        [
            ("population", "k", append(b"1")),
            ("population", "n", append(b"x")),
            ("population", "k", refuse),
            ("population", "k", append(b"2")),  # the same key again sees its first new value
            ("population", "gone", lambda _: None),
        ]
    )
    assert results[:2] == [b"01", b"x"] and results[3:] == [b"012", None]
    assert isinstance(results[2], ValueError)
    assert store.get("population", "k") == b"012" and store.get("population", "n") == b"x"
    assert store.get("population", "gone") is None
    assert store.version("population") > version
    assert await store.update_many([("population", "k", lambda old: old)]) == [b"012"]
    assert await store.update_many([]) == []


async def test_update_many_once_shows_an_id_applied_earlier_in_the_same_call(
    store: ReplicaStore,
) -> None:
    seen: list[frozenset[str]] = []

    def put(value: bytes) -> OnceFn:
        def fn(_old: bytes | None, s: frozenset[str]) -> tuple[bytes, Sequence[str]]:
            seen.append(s)
            return value, [] if "r" in s else ["r"]

        return fn

    results = await store.update_many_once(
        [("population", "a", put(b"1"), ["r"]), ("population", "b", put(b"2"), ["r", "q"])]
    )
    assert results == [b"1", b"2"]
    assert seen == [frozenset(), frozenset({"r"})]
