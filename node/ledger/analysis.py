"""Analysis work and code versions (spec: analysis_requests, analysis_runs,
analysis_findings, finding_artifacts, code_versions, code_update_reports), as pure
lifecycle operations over :class:`node.ledger.lifecycle.Tx` -- the same transactions,
outbox and exporter as jobs and workers.

* An analysis request runs ``queued -> running -> completed`` (or ``failed``): a run
  starts it (joining it to the job and worker carrying it out) and its completion
  records the findings, each with its scores and artifact URIs, in one change.
* A code version is catalogued by digest; an update report names a registered
  digest and is reviewed (``submitted -> accepted | rejected``). Nothing is ever
  deployed: accepting a report only records the decision (spec policy).
"""

from __future__ import annotations

import re
from typing import Any

from node.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from node.ledger.lifecycle import (
    PREFIX,
    Tx,
    check_id,
    check_json,
    check_number,
    check_text,
    job_key,
    unit_key,
)

__all__ = [
    "complete_analysis",
    "decide_improvement",
    "propose_improvement",
    "record_learning_snapshot",
    "register_code",
    "request_analysis",
    "review_code_report",
    "start_analysis",
    "submit_code_report",
]

ANALYSIS_TRANSITIONS = {
    "queued": ("running", "failed"),
    "running": ("completed", "failed"),
    "completed": (),
    "failed": (),
}
MAX_FINDINGS = 100
MAX_ARTIFACTS = 20
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_ARTIFACT_KINDS = ("notebook", "chart", "raw_data")


def _request_key(request_id: str) -> str:
    return f"{PREFIX}analysis/{request_id}"


def _code_key(digest: str) -> str:
    return f"{PREFIX}code/{digest}"


def _report_key(report_id: str) -> str:
    return f"{PREFIX}code-reports/{report_id}"


def _request_row(r: dict[str, Any]) -> dict[str, Any]:
    names = ("request_id", "kind", "prompt", "parameters", "status", "requested_by",
             "created_at", "started_at", "completed_at")  # fmt: skip
    return {k: r[k] for k in names}


def _advance(record: dict[str, Any], target: str, what: str) -> bool:
    current = record["status"]
    if current == target:
        return False
    if target not in ANALYSIS_TRANSITIONS[current]:
        raise FailedPrecondition(f"{what} is {current}; it can't become {target}")
    record["status"] = target
    return True


def _created(
    tx: Tx, key: str, asked: dict[str, Any], what: str, clash: str = "exists (with other arguments)"
) -> dict[str, Any] | None:
    """The record at ``key`` if it was created with ``asked`` (a resend: answer it
    unchanged); None if there is none; ALREADY_EXISTS (``what``, then ``clash``) if it
    holds something else."""
    existing = tx.get(key)
    if existing is None:
        return None
    if {k: existing.get(k) for k in asked} == asked:
        return existing
    raise AlreadyExists(f"{what} {clash}")


def request_analysis(
    tx: Tx,
    request_id: str,
    kind: Any,
    prompt: Any,
    *,
    parameters: Any = None,
    requested_by: Any = None,
) -> dict[str, Any]:
    """Queue an analysis request (a monetisation scan, a forecasting mission ...).
    The same request again is a resend; another under the same id is ALREADY_EXISTS."""
    check_id(request_id, "request_id")
    check_id(kind, "kind", 64)
    prompt = check_text(prompt, "prompt", required=True)
    parameters = check_json(parameters, "parameters")
    requested_by = check_text(requested_by, "requested_by", max_len=128)
    asked = {"kind": kind, "prompt": prompt, "parameters": parameters, "requested_by": requested_by}
    existing = _created(tx, _request_key(request_id), asked, f"analysis request {request_id!r}")
    if existing is not None:
        return existing
    record = {"request_id": request_id, **asked, "status": "queued", "created_at": tx.now,
              "started_at": None, "completed_at": None, "run_id": None}  # fmt: skip
    tx.emit("analysis_requests", _request_row(record))
    tx.put(_request_key(request_id), record)
    return record


def start_analysis(
    tx: Tx, request_id: str, run_id: str, *, job_id: Any = None, worker_id: Any = None
) -> dict[str, Any]:
    """A run takes the request (queued -> running), carried out by a job and/or worker
    that must exist."""
    check_id(request_id, "request_id")
    check_id(run_id, "run_id")
    record = tx.get(_request_key(request_id))
    if record is None:
        raise NotFound(f"no analysis request {request_id!r}")
    if record["status"] == "running" and record["run_id"] == run_id:
        return record  # a resend
    _claim(tx, "run", run_id, request_id)
    if job_id is not None and tx.get(job_key(check_id(job_id, "job_id"))) is None:
        raise NotFound(f"no job {job_id!r}")
    if (
        worker_id is not None
        and tx.get(unit_key("worker", check_id(worker_id, "worker_id"))) is None
    ):
        raise NotFound(f"no worker {worker_id!r}")
    _advance(record, "running", f"analysis request {request_id!r}")
    record.update(started_at=tx.now, run_id=run_id, job_id=job_id, worker_id=worker_id)
    tx.emit("analysis_requests", _request_row(record))
    tx.emit("analysis_runs", _run_row(record, "running"))
    tx.put(_request_key(request_id), record)
    return record


def _run_row(record: dict[str, Any], status: str, **more: Any) -> dict[str, Any]:
    return {
        "run_id": record["run_id"],
        "request_id": record["request_id"],
        "job_id": record.get("job_id"),
        "worker_id": record.get("worker_id"),
        "status": status,
        "started_at": record["started_at"],
        "finished_at": more.get("finished_at"),
        "outcome_summary": more.get("outcome_summary"),
        "metrics": more.get("metrics"),
    }


def complete_analysis(
    tx: Tx,
    request_id: str,
    *,
    outcome: str = "completed",
    outcome_summary: Any = None,
    metrics: Any = None,
    findings: Any = None,
) -> dict[str, Any]:
    """Finish the running request (completed or failed) with its findings: each
    ``{finding_id, title, summary?, monetization_score?, novelty_score?,
    confidence?, details?, artifacts?: [{artifact_id, uri, kind?, media_type?,
    checksum?}]}``, scores 0..1. All of it lands in one change."""
    check_id(request_id, "request_id")
    if outcome not in ("completed", "failed"):
        raise InvalidArgument(f"outcome must be completed or failed (got {outcome!r})")
    summary = check_text(outcome_summary, "outcome_summary")
    metrics = check_json(metrics, "metrics")
    rows = _findings(findings)
    record = tx.get(_request_key(request_id))
    if record is None:
        raise NotFound(f"no analysis request {request_id!r}")
    if record["status"] == outcome:
        return record  # a resend
    if rows and record["run_id"] is None:
        raise FailedPrecondition(
            f"analysis request {request_id!r} is {record['status']}: it has no run to hold findings"
        )
    _advance(record, outcome, f"analysis request {request_id!r}")
    for finding, artifacts in rows:  # ids name one row of the ledger each, forever
        _claim(tx, "finding", finding["finding_id"], request_id)
        for artifact in artifacts:
            _claim(tx, "artifact", artifact["artifact_id"], request_id)
    record["completed_at"] = tx.now
    tx.emit("analysis_requests", _request_row(record))
    if record["run_id"] is not None:  # a request failed before any run started has none
        tx.emit("analysis_runs", _run_row(record, outcome, finished_at=tx.now,
                                          outcome_summary=summary, metrics=metrics))  # fmt: skip
    for finding, artifacts in rows:
        tx.emit("analysis_findings", {**finding, "run_id": record["run_id"], "created_at": tx.now})
        for artifact in artifacts:
            tx.emit("finding_artifacts", {**artifact, "finding_id": finding["finding_id"],
                                          "created_at": tx.now})  # fmt: skip
    record["findings"] = [f["finding_id"] for f, _a in rows]
    tx.put(_request_key(request_id), record)
    return record


def _claim(tx: Tx, kind: str, item_id: str, request_id: str) -> None:
    """``item_id`` (a run, finding or artifact: a primary key of the ledger) for
    ``request_id``; ALREADY_EXISTS if another request holds it."""
    key = f"{PREFIX}analysis-ids/{kind}/{item_id}"
    holder = tx.get(key)
    if holder is not None and holder["request_id"] != request_id:
        raise AlreadyExists(
            f"{kind} id {item_id!r} belongs to analysis request {holder['request_id']!r}"
        )
    if holder is None:
        tx.put(key, {"request_id": request_id})


def _score(item: dict[str, Any], name: str, where: str) -> float | None:
    return check_number(item.get(name), f"{where}.{name}", 0.0, 1.0)


def _findings(value: Any) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_FINDINGS:
        raise InvalidArgument(f"findings must be a list of at most {MAX_FINDINGS} objects")
    out = []
    seen: set[str] = set()
    seen_artifacts: set[str] = set()
    for i, item in enumerate(value):
        where = f"findings[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where} must be an object")
        known = {"finding_id", "title", "summary", "monetization_score", "novelty_score",
                 "confidence", "details", "artifacts"}  # fmt: skip
        unknown = sorted(set(item) - known)
        if unknown:
            raise InvalidArgument(f"{where}: unknown field {unknown[0]!r}")
        finding_id = check_id(item.get("finding_id"), f"{where}.finding_id")
        if finding_id in seen:
            raise InvalidArgument(f"{where}: finding_id {finding_id!r} appears twice")
        seen.add(finding_id)
        finding = {
            "finding_id": finding_id,
            "title": check_text(item.get("title"), f"{where}.title", required=True),
            "summary": check_text(item.get("summary"), f"{where}.summary"),
            "monetization_score": _score(item, "monetization_score", where),
            "novelty_score": _score(item, "novelty_score", where),
            "confidence": _score(item, "confidence", where),
            "details": check_json(item.get("details"), f"{where}.details"),
        }
        artifacts = _artifacts(item.get("artifacts"), where)
        for artifact in artifacts:
            if artifact["artifact_id"] in seen_artifacts:
                raise InvalidArgument(
                    f"{where}: artifact_id {artifact['artifact_id']!r} appears twice"
                )
            seen_artifacts.add(artifact["artifact_id"])
        out.append((finding, artifacts))
    return out


def _artifacts(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ARTIFACTS:
        raise InvalidArgument(f"{where}.artifacts must be a list of at most {MAX_ARTIFACTS}")
    out = []
    for j, item in enumerate(value):
        at = f"{where}.artifacts[{j}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{at} must be an object")
        uri = check_text(item.get("uri"), f"{at}.uri", required=True)
        assert uri is not None
        if not re.match(r"[a-z][a-z0-9+.-]*://", uri):
            raise InvalidArgument(f"{at}.uri must be an absolute URI (scheme://...)")
        kind = item.get("kind")
        if kind is not None and kind not in _ARTIFACT_KINDS:
            raise InvalidArgument(f"{at}.kind must be one of {', '.join(_ARTIFACT_KINDS)}")
        out.append(
            {
                "artifact_id": check_id(item.get("artifact_id"), f"{at}.artifact_id"),
                "uri": uri,
                "kind": kind,
                "media_type": check_text(item.get("media_type"), f"{at}.media_type", max_len=128),
                "checksum": check_text(item.get("checksum"), f"{at}.checksum", max_len=128),
            }
        )
    return out


def register_code(
    tx: Tx,
    digest: Any,
    *,
    worker_type: Any = None,
    artifact_uri: Any = None,
    description: Any = None,
    metadata: Any = None,
) -> dict[str, Any]:
    """Catalogue a worker code artifact by its content digest (sha256:/sha512: hex).
    A digest names one artifact forever: registering it again with other details is
    ALREADY_EXISTS."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidArgument("digest must be sha256:<64 hex> or sha512:<128 hex>, lower case")
    record = {
        "digest": digest,
        "worker_type": check_text(worker_type, "worker_type", max_len=32),
        "artifact_uri": check_text(artifact_uri, "artifact_uri"),
        "description": check_text(description, "description"),
        "metadata": check_json(metadata, "metadata"),
    }
    existing = _created(
        tx, _code_key(digest), record, f"code version {digest}", "is registered with other details"
    )
    if existing is not None:
        return existing
    record["created_at"] = tx.now
    tx.emit("code_versions", record)
    tx.put(_code_key(digest), record)
    return record


def submit_code_report(
    tx: Tx,
    report_id: str,
    digest: Any,
    summary: Any,
    *,
    worker_id: Any = None,
    proposed_change: Any = None,
) -> dict[str, Any]:
    """A worker's improvement suggestion against a registered code version."""
    check_id(report_id, "report_id")
    summary = check_text(summary, "summary", required=True)
    proposed_change = check_text(proposed_change, "proposed_change")
    if not isinstance(digest, str) or tx.get(_code_key(digest)) is None:
        raise NotFound(f"no code version {digest!r}: register it first")
    if (
        worker_id is not None
        and tx.get(unit_key("worker", check_id(worker_id, "worker_id"))) is None
    ):
        raise NotFound(f"no worker {worker_id!r}")
    record = {"report_id": report_id, "code_digest": digest, "worker_id": worker_id,
              "summary": summary, "proposed_change": proposed_change}  # fmt: skip
    existing = _created(tx, _report_key(report_id), record, f"code report {report_id!r}")
    if existing is not None:
        return existing
    record.update(status="submitted", created_at=tx.now, reviewed_at=None, reviewer=None)
    tx.emit("code_update_reports", record)
    tx.put(_report_key(report_id), record)
    return record


def review_code_report(tx: Tx, report_id: str, decision: Any, reviewer: Any) -> dict[str, Any]:
    """Record a review: accepted or rejected, by a named reviewer. Only recorded --
    nothing is deployed."""
    check_id(report_id, "report_id")
    return _decide(
        tx, "code_update_reports", _report_key(report_id), f"code report {report_id!r}",
        "submitted", ("accepted", "rejected"), decision, reviewer, ("reviewer", "reviewed_at"),
    )  # fmt: skip


def _decide(
    tx: Tx,
    table: str,
    key: str,
    what: str,
    pending: str,
    choices: tuple[str, str],
    decision: Any,
    by: Any,
    fields: tuple[str, str],
) -> dict[str, Any]:
    """A named person's decision (one of ``choices``) on the ``pending`` record under
    ``key``, kept in ``fields`` (who, when): an identical resend answers the record,
    a second decision is FAILED_PRECONDITION naming the first."""
    if decision not in choices:
        raise InvalidArgument(f"decision must be {' or '.join(choices)} (got {decision!r})")
    who, when = fields
    by = check_text(by, who, required=True, max_len=128)
    record = tx.get(key)
    if record is None:
        raise NotFound(f"no {what}")
    if record["status"] == decision and record[who] == by:
        return record
    if record["status"] != pending:
        raise FailedPrecondition(f"{what} is {record['status']} already")
    record.update({"status": decision, when: tx.now, who: by})
    tx.emit(table, record)
    tx.put(key, record)
    return record


# -- governance: improvement reports and learning snapshots


def _improvement_key(report_id: str) -> str:
    return f"{PREFIX}improvements/{report_id}"


def propose_improvement(
    tx: Tx,
    report_id: str,
    title: Any,
    *,
    bundle: Any = None,
    job_id: Any = None,
    request_id: Any = None,
) -> dict[str, Any]:
    """A bundle of adjustments linked to a job and/or an analysis request (which must
    exist), proposed for a governance decision."""
    check_id(report_id, "report_id")
    title = check_text(title, "title", required=True)
    bundle = check_json(bundle, "bundle")
    if job_id is None and request_id is None:
        raise InvalidArgument("an improvement report links a job_id, a request_id or both")
    if job_id is not None and tx.get(job_key(check_id(job_id, "job_id"))) is None:
        raise NotFound(f"no job {job_id!r}")
    if request_id is not None and tx.get(_request_key(check_id(request_id, "request_id"))) is None:
        raise NotFound(f"no analysis request {request_id!r}")
    asked = {"report_id": report_id, "job_id": job_id, "request_id": request_id,
             "title": title, "bundle": bundle}  # fmt: skip
    existing = _created(tx, _improvement_key(report_id), asked, f"improvement report {report_id!r}")
    if existing is not None:
        return existing
    record = {**asked, "status": "proposed", "created_at": tx.now, "decided_at": None,
              "decided_by": None}  # fmt: skip
    tx.emit("improvement_reports", record)
    tx.put(_improvement_key(report_id), record)
    return record


def decide_improvement(tx: Tx, report_id: str, decision: Any, decided_by: Any) -> dict[str, Any]:
    """Approve or reject a proposed improvement report, by a named person. Only
    recorded: applying the adjustments is for people and their tools."""
    check_id(report_id, "report_id")
    return _decide(
        tx, "improvement_reports", _improvement_key(report_id),
        f"improvement report {report_id!r}", "proposed", ("approved", "rejected"), decision,
        decided_by, ("decided_by", "decided_at"),
    )  # fmt: skip


def record_learning_snapshot(
    tx: Tx,
    snapshot_id: str,
    subject_type: Any,
    subject_id: Any,
    rubric_version: Any,
    principle_scores: Any,
    *,
    overall_score: Any = None,
) -> dict[str, Any]:
    """Principle scores of a job, worker or tadpole (which must exist) under one rubric
    version, for longitudinal review. A snapshot id names one snapshot forever."""
    check_id(snapshot_id, "snapshot_id")
    if not isinstance(subject_type, str) or subject_type not in ("job", "worker", "tadpole"):
        raise InvalidArgument(f"subject_type must be job, worker or tadpole (got {subject_type!r})")
    check_id(subject_id, "subject_id")
    check_id(rubric_version, "rubric_version", 64)
    scores = check_json(principle_scores, "principle_scores")
    if not scores:
        raise InvalidArgument("principle_scores must name at least one principle")
    for name, score in scores.items():
        check_number(score, f"principle_scores.{name}")
    overall = check_number(overall_score, "overall_score")
    key = job_key(subject_id) if subject_type == "job" else unit_key(subject_type, subject_id)
    if tx.get(key) is None:
        raise NotFound(f"no {subject_type} {subject_id!r}")
    row = {"snapshot_id": snapshot_id, "subject_type": subject_type, "subject_id": subject_id,
           "rubric_version": rubric_version, "principle_scores": scores,
           "overall_score": overall}  # fmt: skip
    what = f"learning snapshot {snapshot_id!r}"
    existing = _created(
        tx, f"{PREFIX}learning/{snapshot_id}", row, what, "exists (with other scores)"
    )
    if existing is not None:
        return existing
    record = {**row, "recorded_at": tx.now}
    tx.emit("learning_snapshots", record)
    tx.put(f"{PREFIX}learning/{snapshot_id}", record)
    return record
