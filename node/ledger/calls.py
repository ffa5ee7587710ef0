"""The lifecycle API's calls: name -> operation and the arguments it takes.

One table for gRPC (``Ledger`` service), HTTP (``/v1/ledger/``) and the CLI, so an
argument means the same on each and an unknown or missing one is refused the same
way (INVALID_ARGUMENT naming it) before anything is read or written.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.errors import InvalidArgument, NotFound
from node.ledger import analysis
from node.ledger import lifecycle as lc

__all__ = ["CALLS", "MAX_ARGS_BYTES", "Call", "parse_args", "show_job"]

MAX_ARGS_BYTES = 64 * 1024


def show_job(tx: lc.Tx, job_id: str) -> dict[str, Any]:
    """The job with the records of its live workers and tadpoles (a read)."""
    lc.check_id(job_id, "job_id")
    job = tx.get(lc.job_key(job_id))
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    keys = [lc.unit_key(kind, uid) for kind, uid in job["units"]]
    tx.need(*keys)
    job["live_units"] = [tx.get(k) for k in keys]
    if job["allocation_id"]:
        job["allocation"] = tx.get(lc.allocation_key(job["allocation_id"]))
    return job


@dataclass(frozen=True, slots=True)
class Call:
    operation: Callable[..., dict[str, Any]]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    write: bool = True
    rename: tuple[tuple[str, str], ...] = ()  # (JSON name, parameter name)
    once: bool = False  # a resend would repeat its effect: deduplicate by request id

    def bind(self, args: dict[str, Any]) -> Callable[[lc.Tx], dict[str, Any]]:
        missing = [name for name in self.required if name not in args]
        if missing:
            raise InvalidArgument(f"missing argument {missing[0]!r}")
        known = (*self.required, *self.optional)
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise InvalidArgument(
                f"unknown argument {unknown[0]!r} (this call takes {', '.join(known)})"
            )
        names = dict(self.rename)
        kwargs = {names.get(k, k): v for k, v in args.items()}
        return functools.partial(_apply, self.operation, kwargs)


def _apply(
    operation: Callable[..., dict[str, Any]], kwargs: dict[str, Any], tx: lc.Tx
) -> dict[str, Any]:
    return operation(tx, **kwargs)


_SPAWN_OPTIONS = ("resources", "worker_type", "specialization", "worker_id", "protocol", "metadata")
CALLS: dict[str, Call] = {
    "SetPool": Call(lc.set_pool, ("name", "capacity")),
    "AssignJob": Call(
        lc.assign_job,
        ("job_id",),
        ("objective", "reward_signal", "resources", "metadata", "pool"),
    ),
    "StartJob": Call(lc.start_job, ("job_id",)),
    "FinishJob": Call(lc.finish_job, ("job_id", "outcome"), ("efficiency", "details")),
    "GetJob": Call(show_job, ("job_id",), write=False),
    "Spawn": Call(
        lc.spawn,
        ("kind", "id", "job_id", "ttl_seconds"),
        _SPAWN_OPTIONS,
        rename=(("id", "unit_id"),),
    ),
    "Retire": Call(lc.retire, ("kind", "id"), ("status",), rename=(("id", "unit_id"),)),
    "RecordEvent": Call(lc.record_event, ("worker_id", "event_type"), ("payload",), once=True),
    "RecordAttribute": Call(
        lc.record_attribute,
        ("entity_type", "entity_id", "key", "value"),
        ("weight_hint",),
    ),
    "RequestAnalysis": Call(
        analysis.request_analysis,
        ("request_id", "kind", "prompt"),
        ("parameters", "requested_by"),
    ),
    "StartAnalysis": Call(
        analysis.start_analysis, ("request_id", "run_id"), ("job_id", "worker_id")
    ),
    "CompleteAnalysis": Call(
        analysis.complete_analysis,
        ("request_id",),
        ("outcome", "outcome_summary", "metrics", "findings"),
    ),
    "RegisterCode": Call(
        analysis.register_code,
        ("digest",),
        ("worker_type", "artifact_uri", "description", "metadata"),
    ),
    "SubmitCodeReport": Call(
        analysis.submit_code_report,
        ("report_id", "digest", "summary"),
        ("worker_id", "proposed_change"),
    ),
    "ReviewCodeReport": Call(analysis.review_code_report, ("report_id", "decision", "reviewer")),
    "ProposeImprovement": Call(
        analysis.propose_improvement,
        ("report_id", "title"),
        ("bundle", "job_id", "request_id"),
    ),
    "DecideImprovement": Call(analysis.decide_improvement, ("report_id", "decision", "decided_by")),
    "RecordLearningSnapshot": Call(
        analysis.record_learning_snapshot,
        ("snapshot_id", "subject_type", "subject_id", "rubric_version", "principle_scores"),
        ("overall_score",),
    ),
    "RecordTadpoleMetrics": Call(
        lc.record_tadpole_metrics,
        ("tadpole_id",),
        ("entropy", "resource_pressure", "protocol_success", "details"),
        once=True,
    ),
}


def parse_args(raw: str | bytes) -> dict[str, Any]:
    """A call's arguments: a JSON object of at most :data:`MAX_ARGS_BYTES`."""
    if len(raw) > MAX_ARGS_BYTES:
        raise InvalidArgument(f"arguments are {len(raw)} bytes; at most {MAX_ARGS_BYTES}")
    if not raw:
        return {}
    try:
        args = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise InvalidArgument("arguments must be a JSON object")
    return args
