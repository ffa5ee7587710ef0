"""The audit log (node/audit.py): durable records, tail, rotation, floods."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import threading

import pytest

from node.audit import AuditExport, AuditLog


def lines(path: pathlib.Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_durable_record_is_on_disk_when_it_returns(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path), "n1", clock_ns=lambda: 1_764_915_000_123_456_000)
    await audit.record_durably("operator", "ipv4:127.0.0.1:5000", "/x/Rotate", "ok")
    assert lines(path) == [
        {
            "ts": "2025-12-05T06:10:00.123456Z",
            "node": "n1",
            "who": "operator",
            "from": "ipv4:127.0.0.1:5000",
            "action": "/x/Rotate",
            "result": "ok",
            "detail": "",
        }
    ]
    assert os.stat(path).st_mode & 0o777 == 0o600
    audit.close()


async def test_tail_returns_the_newest_records_across_read_windows(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path), "n1")
    for i in range(3000):  # several 64 KiB windows
        audit.record("anonymous", "p", f"/a/{i}", "denied", "x" * 40)
    await audit.record_durably("operator", "p", "/a/last", "ok")
    got = audit.tail(1500)
    assert len(got) == 1500 and got[-1]["action"] == "/a/last"
    assert [r["action"] for r in got[:2]] == ["/a/1501", "/a/1502"]
    assert audit.tail(0) == [] and len(audit.tail(10_000)) == 3001
    audit.close()


async def test_a_flood_of_refusals_is_bounded_and_summarised(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path), "n1", queue_max=10)
    gate = threading.Lock()
    gate.acquire()
    real_write = os.write

    def slow_write(fd: int, data: bytes) -> int:  # hold the writer inside its first batch
        with gate:
            return real_write(fd, data)

    os.write = slow_write  # type: ignore[assignment]
    try:
        audit.record("a", "p", "/first", "denied")
        await asyncio.sleep(0.05)  # the writer has taken "/first" and waits on the gate
        for i in range(50):
            audit.record("a", "p", f"/flood/{i}", "denied")
        assert audit.dropped == 40
    finally:
        gate.release()
        os.write = real_write  # type: ignore[assignment]
    await audit.record_durably("operator", "p", "/after", "ok")
    records = lines(path)
    assert sum(r["action"].startswith("/flood/") for r in records) == 10
    assert any(
        r["result"] == "dropped" and r["detail"] == "40 refused-call records" for r in records
    )
    audit.close()


async def test_the_file_is_rotated_past_its_size(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path), "n1", max_bytes=2000)
    for i in range(30):
        await audit.record_durably("operator", "p", f"/a/{i}", "ok")
    assert (tmp_path / "audit.log.1").exists()
    assert lines(path)[-1]["action"] == "/a/29"
    audit.close()


async def test_tail_can_leave_out_records_and_still_fill_its_limit(tmp_path: pathlib.Path) -> None:
    audit = AuditLog(str(tmp_path / "audit.log"), "n1")
    for i in range(2000):
        audit.record("operator", "p", "/Audit/Tail" if i % 2 else f"/act/{i}", "ok")
    await audit.record_durably("operator", "p", "/Audit/Tail", "ok")
    got = audit.tail(300, skip=lambda r: r["action"] == "/Audit/Tail")
    assert len(got) == 300 and all(r["action"].startswith("/act/") for r in got)
    assert got[-1]["action"] == "/act/1998" and got[0]["action"] == "/act/1400"
    audit.close()


def record(i: int) -> bytes:
    return json.dumps({"who": f"c{i}", "result": "denied"}).encode() + b"\n"


def test_the_export_batches_bounds_and_counts_what_a_flood_left_out() -> None:
    audit = AuditLog.__new__(AuditLog)  # the export reads only its node id
    audit.node_id = "n1"
    export = AuditExport(audit, lambda key, value: None, batch_max=3, pending_max=5)
    assert export.key == "/tadpole/audit/n1"
    assert export.next_batch() is None  # nothing to write: no write at all
    export.add([record(i) for i in range(7)])  # 5 kept, 2 left out
    value, count = export.next_batch() or (b"", 0)
    assert count == 3
    doc = json.loads(value)
    assert doc == {"node": "n1", "records": [{"who": f"c{i}", "result": "denied"} for i in
                                             range(3)], "skipped": 2}  # fmt: skip
    export.add([record(7)])  # arrives while the batch is written: still no room
    export.written(count, 2)
    value, count = export.next_batch() or (b"", 0)
    doc = json.loads(value)
    assert [r["who"] for r in doc["records"]] == ["c3", "c4"] and doc["skipped"] == 1
    export.written(count, 1)
    assert export.next_batch() is None
    assert (export.exported, export.skipped) == (5, 3)
    export.add([record(8)])  # room again
    assert json.loads((export.next_batch() or (b"",))[0])["records"] == [
        {"who": "c8", "result": "denied"}
    ]


async def test_the_export_writes_what_is_durable_and_retries_a_failed_write(
    tmp_path: pathlib.Path,
) -> None:
    audit = AuditLog(str(tmp_path / "audit.log"), "n1")
    written: list[tuple[str, dict[str, object]]] = []
    failures = [RuntimeError("no leader")]

    async def write(key: str, value: bytes) -> None:
        if failures:
            raise failures.pop()
        written.append((key, json.loads(value)))

    export = AuditExport(audit, write, interval_s=0.01)
    export.start()
    try:
        await audit.record_durably("operator", "ipv4:127.0.0.1:1", "/x/Rotate", "started")
        for _ in range(500):
            if written:
                break
            await asyncio.sleep(0.01)
        assert [key for key, _ in written] == ["/tadpole/audit/n1"]  # once, after the retry
        (record_,) = written[0][1]["records"]  # type: ignore[misc]
        assert record_ == lines(tmp_path / "audit.log")[0]
    finally:
        await export.close()
        audit.close()
    with pytest.raises(ValueError):
        audit.listeners.remove(export._durable)  # closed: no longer told


async def test_every_field_of_a_record_is_bounded(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(str(path), "n1")
    huge = "/x" * 1_000_000  # a refusal may quote the key a caller sent
    await audit.record_durably(huge, huge, huge, huge, huge)
    (record_,) = lines(path)
    assert path.stat().st_size < 4000
    assert record_["detail"].endswith("\u2026") and record_["detail"].startswith("/x/x")
    audit.close()


def test_a_batch_is_bounded_in_bytes_too() -> None:
    audit = AuditLog.__new__(AuditLog)
    audit.node_id = "n1"
    export = AuditExport(audit, lambda key, value: None, batch_max=500, batch_bytes=1000)
    big = [json.dumps({"detail": "d" * 300}).encode() for _ in range(10)]
    export.add(big)
    value, count = export.next_batch() or (b"", 0)
    assert count == 3 and len(value) < 1100
    export.written(count, 0)
    export.add([json.dumps({"detail": "d" * 5000}).encode()])  # alone, it still goes
    while (batch := export.next_batch()) is not None:
        export.written(batch[1], 0)
    assert export.exported == 11
