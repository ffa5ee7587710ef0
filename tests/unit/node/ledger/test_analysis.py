"""Analysis requests and code versions as lifecycle operations: transitions are
checked, findings are validated before anything is written, a review only records."""

from __future__ import annotations

from typing import Any

import pytest

from consensus.memory import MemorySystem
from node.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from node.ledger import analysis as an
from node.ledger import lifecycle as lc
from node.ledger.service import Lifecycle, decode

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def system() -> MemorySystem:
    return MemorySystem()


@pytest.fixture
def life(system: MemorySystem) -> Lifecycle:
    return Lifecycle(system, clock=lambda: 1_700_000_000.0)


async def run(life: Lifecycle, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return (await life.run(lambda tx: fn(tx, *args, **kwargs)))[0]


def rows(system: MemorySystem, table: str) -> list[dict[str, Any]]:
    kvs = sorted(
        system.sm.range(lc.OUTBOX, limit=0, start_after="")[0], key=lambda k: k.mod_revision
    )
    return [r["row"] for kv in kvs for r in decode(kv.value)["rows"] if r["table"] == table]


FINDING = {
    "finding_id": "f1",
    "title": "Subscription tier for pond maps",
    "monetization_score": 0.8,
    "novelty_score": 0.4,
    "artifacts": [{"artifact_id": "a1", "uri": "s3://bucket/f1.ipynb", "kind": "notebook"}],
}


async def test_an_analysis_runs_queued_running_completed(
    life: Lifecycle, system: MemorySystem
) -> None:
    await run(life, lc.set_pool, "default", {"compute_units": 1})
    await run(life, lc.assign_job, "j1")
    await run(life, an.request_analysis, "r1", "monetization_scan", "where is the money?")
    with pytest.raises(FailedPrecondition, match="'r1' is queued; it can't become completed"):
        await run(life, an.complete_analysis, "r1")
    with pytest.raises(NotFound, match="no job 'nope'"):
        await run(life, an.start_analysis, "r1", "run-1", job_id="nope")
    started = await run(life, an.start_analysis, "r1", "run-1", job_id="j1")
    assert started["status"] == "running"
    assert await run(life, an.start_analysis, "r1", "run-1", job_id="j1") == started  # resend
    done = await run(
        life, an.complete_analysis, "r1", outcome_summary="two leads", findings=[FINDING]
    )
    assert done["status"] == "completed" and done["findings"] == ["f1"]
    with pytest.raises(FailedPrecondition, match="'r1' is completed; it can't become running"):
        await run(life, an.start_analysis, "r1", "run-2")
    assert [r["status"] for r in rows(system, "analysis_requests")] == [
        "queued",
        "running",
        "completed",
    ]
    assert [r["status"] for r in rows(system, "analysis_runs")] == ["running", "completed"]
    assert rows(system, "analysis_findings")[0]["run_id"] == "run-1"
    assert rows(system, "finding_artifacts")[0]["finding_id"] == "f1"


F0 = r"findings\[0\]"
BAD_URI = [{"artifact_id": "a", "uri": "f1.ipynb"}]
BAD_KIND = [{"artifact_id": "a", "uri": "s3://x", "kind": "movie"}]


@pytest.mark.parametrize(
    ("finding", "message"),
    [
        ({**FINDING, "monetization_score": 1.5}, F0 + ".monetization_score must be between"),
        ({**FINDING, "title": ""}, F0 + ".title must be a non-empty string"),
        ({**FINDING, "color": "red"}, F0 + ": unknown field 'color'"),
        ({**FINDING, "artifacts": BAD_URI}, "must be an absolute URI"),
        ({**FINDING, "artifacts": BAD_KIND}, "kind must be one of notebook, chart, raw_data"),
    ],
)
async def test_bad_findings_change_nothing(
    life: Lifecycle, system: MemorySystem, finding: dict[str, Any], message: str
) -> None:
    await run(life, an.request_analysis, "r1", "forecast", "next season?")
    await run(life, an.start_analysis, "r1", "run-1")
    before = system.sm.revision
    with pytest.raises(InvalidArgument, match=message):
        await run(life, an.complete_analysis, "r1", findings=[finding])
    assert system.sm.revision == before


async def test_code_reports_name_a_registered_digest_and_a_review_only_records(
    life: Lifecycle, system: MemorySystem
) -> None:
    with pytest.raises(InvalidArgument, match="digest must be sha256:<64 hex>"):
        await run(life, an.register_code, "sha256:XYZ")
    with pytest.raises(NotFound, match=r"no code version .*: register it first"):
        await run(life, an.submit_code_report, "cr1", DIGEST, "faster pond scans")
    await run(life, an.register_code, DIGEST, worker_type="quest_worker")
    with pytest.raises(AlreadyExists, match="registered with other details"):
        await run(life, an.register_code, DIGEST, worker_type="supervisor")
    await run(life, an.submit_code_report, "cr1", DIGEST, "faster pond scans")
    reviewed = await run(life, an.review_code_report, "cr1", "accepted", "ada")
    assert reviewed["status"] == "accepted" and reviewed["reviewer"] == "ada"
    with pytest.raises(FailedPrecondition, match="'cr1' is accepted already"):
        await run(life, an.review_code_report, "cr1", "rejected", "bob")
    # Accepting records the decision and nothing else: the code version is unchanged.
    assert (
        decode(system.sm.get(lc.PREFIX + "code/" + DIGEST).value)["worker_type"] == "quest_worker"
    )
    assert [r["status"] for r in rows(system, "code_update_reports")] == ["submitted", "accepted"]


async def test_improvements_are_decided_once_and_snapshots_name_a_subject(
    life: Lifecycle, system: MemorySystem
) -> None:
    await run(life, lc.set_pool, "default", {"compute_units": 1})
    await run(life, lc.assign_job, "j1")
    with pytest.raises(InvalidArgument, match="links a job_id, a request_id or both"):
        await run(life, an.propose_improvement, "ir1", "tune TTLs")
    with pytest.raises(NotFound, match="no analysis request 'r9'"):
        await run(life, an.propose_improvement, "ir1", "tune TTLs", request_id="r9")
    await run(life, an.propose_improvement, "ir1", "tune TTLs", job_id="j1", bundle={"ttl": 30})
    decided = await run(life, an.decide_improvement, "ir1", "approved", "ada")
    assert decided["status"] == "approved"
    with pytest.raises(FailedPrecondition, match="'ir1' is approved already"):
        await run(life, an.decide_improvement, "ir1", "rejected", "bob")
    assert [r["status"] for r in rows(system, "improvement_reports")] == ["proposed", "approved"]

    with pytest.raises(NotFound, match="no worker 'w9'"):
        await run(life, an.record_learning_snapshot, "s1", "worker", "w9", "v1", {"care": 0.5})
    with pytest.raises(InvalidArgument, match=r"principle_scores\.care must be a finite number"):
        await run(life, an.record_learning_snapshot, "s1", "job", "j1", "v1", {"care": "high"})
    await run(life, an.record_learning_snapshot, "s1", "job", "j1", "v1", {"care": 0.5})
    with pytest.raises(AlreadyExists, match="learning snapshot 's1' exists"):
        await run(life, an.record_learning_snapshot, "s1", "job", "j1", "v1", {"care": 0.6})
    (snapshot,) = rows(system, "learning_snapshots")
    assert snapshot["subject_id"] == "j1" and snapshot["principle_scores"] == {"care": 0.5}
