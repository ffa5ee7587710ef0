"""``tadpole pool|job|worker|instance``: the job / worker / tadpole lifecycle
(docs/ledger.md). Every command is one call of the ``Ledger`` service; ``--json``
prints the record the cluster answered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click

from node.cli.app import EXIT_USAGE, _fail, _handle_errors, _settings, _table

__all__ = ["analysis", "code", "improvement", "instance", "job", "learning", "pool", "worker"]

_JSON = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")


def _resources(func: Callable[..., Any]) -> Callable[..., Any]:
    for name, flag in reversed(
        (
            ("compute_units", "--compute-units"),
            ("memory_mb", "--memory-mb"),
            ("bandwidth_mbps", "--bandwidth-mbps"),
            ("thread_count", "--threads"),
        )
    ):
        func = click.option(flag, name, type=int, default=None, metavar="N",
                            help=f"{name} (whole units, default 0).")(func)  # fmt: skip
    return func


def _units(kwargs: dict[str, Any]) -> dict[str, int]:
    return {
        k: kwargs.pop(k)
        for k in ("compute_units", "memory_mb", "bandwidth_mbps", "thread_count")
        if kwargs.get(k) is not None
    }


def _object(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(f"{what} is not valid JSON: {exc}", EXIT_USAGE)


def _call(name: str, args: dict[str, Any]) -> Any:
    return _settings().client().ledger(name, {k: v for k, v in args.items() if v is not None})


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + "Z"


def _show(answer: Any, as_json: bool, line: str) -> None:
    click.echo(json.dumps(answer, indent=2, sort_keys=True) if as_json else line)


def _units_text(units: dict[str, int]) -> str:
    held = [f"{k}={v}" for k, v in units.items() if v]
    return ", ".join(held) or "nothing"


# -- pools


@click.group()
def pool() -> None:
    """Resource pools: what jobs, workers and tadpoles allocate from."""


@pool.command(name="set")
@click.argument("name")
@_resources
@_JSON
@_handle_errors
def pool_set(name: str, as_json: bool, **kwargs: Any) -> None:
    """Create pool NAME or change its capacity (not below what is in use)."""
    answer = _call("SetPool", {"name": name, "capacity": _units(kwargs)})
    _show(answer, as_json, f"pool {name}: capacity {_units_text(answer['capacity'])}")


@pool.command(name="list")
@_JSON
@_handle_errors
def pool_list(as_json: bool) -> None:
    """Every pool: capacity, in use, free."""
    answer = _call("Pools", {})
    rows = []
    for p in answer["pools"]:
        for res, cap in p["capacity"].items():
            used = p["in_use"][res]
            rows.append([p["name"], res, cap, used, cap - used])
    _show(answer, as_json, _table(["pool", "resource", "capacity", "in_use", "free"], rows))


# -- jobs


@click.group()
def job() -> None:
    """Jobs: assign (allocating resources), start, complete or fail, show."""


@job.command(name="assign")
@click.argument("job_id")
@click.option("--objective", default=None, help="What the job is for.")
@click.option("--reward", "reward_signal", type=float, default=None, help="Its reward signal.")
@click.option("--pool", default=None, help="The pool to allocate from (default: default).")
@click.option("--metadata", default=None, metavar="JSON", help="A JSON object kept with it.")
@_resources
@_JSON
@_handle_errors
def job_assign(job_id: str, as_json: bool, metadata: str | None, **kwargs: Any) -> None:
    """Create JOB_ID and allocate its resources, or update it (a changed request
    re-allocates in one step). Refused when the pool lacks room."""
    units = _units(kwargs)
    args = {"job_id": job_id, **kwargs, "metadata": _object(metadata, "--metadata")}
    if units:
        args["resources"] = units
    answer = _call("AssignJob", args)
    _show(
        answer,
        as_json,
        f"job {job_id}: {answer['status']}, holding "
        f"{_units_text(answer['requested_resources'])} from pool {answer['pool']}"
        f" (allocation {answer['allocation_id']})",
    )


def _transition(name: str, job_id: str, as_json: bool, **args: Any) -> None:
    answer = _call(name, {"job_id": job_id, **args})
    _show(answer, as_json, f"job {job_id}: {answer['status']}")


@job.command(name="start")
@click.argument("job_id")
@_JSON
@_handle_errors
def job_start(job_id: str, as_json: bool) -> None:
    """Mark JOB_ID running."""
    _transition("StartJob", job_id, as_json)


@job.command(name="complete")
@click.argument("job_id")
@click.option("--efficiency", type=float, default=None, help="0..1, recorded in job_metrics.")
@_JSON
@_handle_errors
def job_complete(job_id: str, efficiency: float | None, as_json: bool) -> None:
    """Complete JOB_ID: its workers and tadpoles retire, its allocations are released."""
    _transition("FinishJob", job_id, as_json, outcome="completed", efficiency=efficiency)


@job.command(name="fail")
@click.argument("job_id")
@_JSON
@_handle_errors
def job_fail(job_id: str, as_json: bool) -> None:
    """Fail JOB_ID: its workers and tadpoles end failed, its allocations are released."""
    _transition("FinishJob", job_id, as_json, outcome="failed")


@job.command(name="show")
@click.argument("job_id")
@_JSON
@_handle_errors
def job_show(job_id: str, as_json: bool) -> None:
    """JOB_ID as the cluster holds it, with its live workers and tadpoles."""
    answer = _call("GetJob", {"job_id": job_id})
    held = _units_text(answer["requested_resources"]) if answer["allocation_id"] else "nothing"
    lines = [
        f"job {job_id}: {answer['status']} (pool {answer['pool']}, holding {held})",
        f"assigned {_when(answer['spawned_at'])}, started {_when(answer['started_at'])}, "
        f"ended {_when(answer['completed_at'])}; {answer['ttl_expirations']} TTL expirations",
    ]
    units = [
        [u["kind"], u["id"], u["status"], _when(u["expiry_at"]), u["allocation_id"] or "-"]
        for u in answer["live_units"]
    ]
    if units:
        lines.append(_table(["kind", "id", "status", "expires", "allocation"], units))
    _show(answer, as_json, "\n".join(lines))


# -- workers and tadpoles


def _spawn(kind: str, unit_id: str, as_json: bool, metadata: str | None, **kwargs: Any) -> None:
    units = _units(kwargs)
    args = {"kind": kind, "id": unit_id, **kwargs, "metadata": _object(metadata, "--metadata")}
    if units:
        args["resources"] = units
    answer = _call("Spawn", args)
    _show(
        answer,
        as_json,
        f"{kind} {unit_id}: {answer['status']} for job {answer['job_id']}, "
        f"expires {_when(answer['expiry_at'])}"
        + (f", holding {_units_text(units)}" if units else ""),
    )


def _retire(kind: str, unit_id: str, status: str, as_json: bool) -> None:
    answer = _call("Retire", {"kind": kind, "id": unit_id, "status": status})
    _show(answer, as_json, f"{kind} {unit_id}: {answer['status']}")


_SPAWN = (
    click.argument("unit_id", metavar="ID"),
    click.option("--job", "job_id", required=True, help="The job it works for."),
    click.option(
        "--ttl",
        "ttl_seconds",
        type=int,
        required=True,
        metavar="SECONDS",
        help="It expires (and its allocation is released) after this long.",
    ),
    click.option("--metadata", default=None, metavar="JSON", help="A JSON object kept with it."),
)


def _spawn_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_SPAWN):
        func = option(func)
    return _resources(func)


_END = click.option(
    "--status",
    type=click.Choice(["retired", "failed"]),
    default="retired",
    show_default=True,
    help="How it ended.",
)


@click.group()
def worker() -> None:
    """Workers (tadpole, quest_worker, supervisor): spawn with a TTL, record events, retire."""


@worker.command(name="spawn")
@_spawn_options
@click.option("--type", "worker_type", type=click.Choice(["tadpole", "quest_worker", "supervisor"]),
              default="tadpole", show_default=True, help="The worker type.")  # fmt: skip
@click.option("--specialization", default=None, help="What it specialises in.")
@_JSON
@_handle_errors
def worker_spawn(unit_id: str, as_json: bool, metadata: str | None, **kwargs: Any) -> None:
    """Spawn worker ID for a job, with a TTL and optionally its own resources."""
    _spawn("worker", unit_id, as_json, metadata, **kwargs)


@worker.command(name="retire")
@click.argument("unit_id", metavar="ID")
@_END
@_JSON
@_handle_errors
def worker_retire(unit_id: str, status: str, as_json: bool) -> None:
    """End worker ID before its TTL; its allocation is released."""
    _retire("worker", unit_id, status, as_json)


@worker.command(name="event")
@click.argument("worker_id")
@click.argument("event_type")
@click.option("--payload", default=None, metavar="JSON", help="A JSON object.")
@_JSON
@_handle_errors
def worker_event(worker_id: str, event_type: str, payload: str | None, as_json: bool) -> None:
    """Record an event of WORKER_ID (a heartbeat, a metrics report ...)."""
    args = {
        "worker_id": worker_id,
        "event_type": event_type,
        "payload": _object(payload, "--payload"),
    }
    answer = _call("RecordEvent", args)
    _show(answer, as_json, f"worker {worker_id}: recorded {event_type}")


@click.group()
def instance() -> None:
    """Tadpole instances: spawn with a TTL, report metrics, retire."""


@instance.command(name="spawn")
@_spawn_options
@click.option("--worker", "worker_id", default=None, help="The worker it belongs to.")
@click.option("--protocol", default=None, help="Its communication protocol.")
@_JSON
@_handle_errors
def instance_spawn(unit_id: str, as_json: bool, metadata: str | None, **kwargs: Any) -> None:
    """Spawn tadpole instance ID for a job, with a TTL and optionally its own resources."""
    _spawn("tadpole", unit_id, as_json, metadata, **kwargs)


@instance.command(name="retire")
@click.argument("unit_id", metavar="ID")
@_END
@_JSON
@_handle_errors
def instance_retire(unit_id: str, status: str, as_json: bool) -> None:
    """End tadpole instance ID before its TTL; its allocation is released."""
    _retire("tadpole", unit_id, status, as_json)


@instance.command(name="metrics")
@click.argument("tadpole_id")
@click.option("--entropy", type=float, default=None)
@click.option("--resource-pressure", type=float, default=None, help="0..1 of its allocation.")
@click.option("--protocol-success", type=float, default=None, help="0..1 of its exchanges.")
@_JSON
@_handle_errors
def instance_metrics(tadpole_id: str, as_json: bool, **kwargs: Any) -> None:
    """Record micro-metrics of tadpole instance TADPOLE_ID."""
    answer = _call("RecordTadpoleMetrics", {"tadpole_id": tadpole_id, **kwargs})
    _show(answer, as_json, f"tadpole {tadpole_id}: metrics recorded")


# -- analysis work and code versions


@click.group()
def analysis() -> None:
    """Analysis requests: queue, start (a run), complete with findings, or fail."""


@analysis.command(name="request")
@click.argument("request_id")
@click.option("--kind", required=True, help="e.g. monetization_scan, forecast.")
@click.option("--prompt", required=True, help="What to analyse.")
@click.option("--parameters", default=None, metavar="JSON", help="A JSON object.")
@click.option("--by", "requested_by", default=None, help="Who asks.")
@_JSON
@_handle_errors
def analysis_request(request_id: str, parameters: str | None, as_json: bool, **kwargs: Any) -> None:
    """Queue analysis request REQUEST_ID."""
    answer = _call(
        "RequestAnalysis",
        {"request_id": request_id, **kwargs, "parameters": _object(parameters, "--parameters")},
    )
    _show(answer, as_json, f"analysis {request_id}: {answer['status']}")


@analysis.command(name="start")
@click.argument("request_id")
@click.option("--run", "run_id", required=True, help="The run's id.")
@click.option("--job", "job_id", default=None, help="The job carrying it out.")
@click.option("--worker", "worker_id", default=None, help="The worker carrying it out.")
@_JSON
@_handle_errors
def analysis_start(request_id: str, as_json: bool, **kwargs: Any) -> None:
    """Start REQUEST_ID (queued -> running) as a run."""
    answer = _call("StartAnalysis", {"request_id": request_id, **kwargs})
    _show(answer, as_json, f"analysis {request_id}: {answer['status']} as run {answer['run_id']}")


@analysis.command(name="complete")
@click.argument("request_id")
@click.option("--summary", "outcome_summary", default=None, help="How it went.")
@click.option("--findings", default=None, metavar="JSON",
              help="A JSON list of findings (docs/ledger.md).")  # fmt: skip
@_JSON
@_handle_errors
def analysis_complete(
    request_id: str, outcome_summary: str | None, findings: str | None, as_json: bool
) -> None:
    """Complete REQUEST_ID (running -> completed) with its findings."""
    args = {"request_id": request_id, "outcome_summary": outcome_summary,
            "findings": _object(findings, "--findings")}  # fmt: skip
    answer = _call("CompleteAnalysis", args)
    _show(answer, as_json, f"analysis {request_id}: {answer['status']}, "
          f"{len(answer.get('findings', []))} findings")  # fmt: skip


@analysis.command(name="fail")
@click.argument("request_id")
@click.option("--summary", "outcome_summary", default=None, help="What went wrong.")
@_JSON
@_handle_errors
def analysis_fail(request_id: str, outcome_summary: str | None, as_json: bool) -> None:
    """Fail REQUEST_ID."""
    args = {"request_id": request_id, "outcome": "failed", "outcome_summary": outcome_summary}
    answer = _call("CompleteAnalysis", args)
    _show(answer, as_json, f"analysis {request_id}: {answer['status']}")


@click.group()
def code() -> None:
    """Code versions by digest and their update reports (reviewed, never deployed)."""


@code.command(name="register")
@click.argument("digest")
@click.option("--worker-type", default=None)
@click.option("--uri", "artifact_uri", default=None, help="Where the artifact is.")
@click.option("--description", default=None)
@_JSON
@_handle_errors
def code_register(digest: str, as_json: bool, **kwargs: Any) -> None:
    """Catalogue code version DIGEST (sha256:<hex>)."""
    answer = _call("RegisterCode", {"digest": digest, **kwargs})
    _show(answer, as_json, f"code {digest}: registered")


@code.command(name="report")
@click.argument("report_id")
@click.option("--digest", required=True, help="The code version it is about.")
@click.option("--summary", required=True)
@click.option("--worker", "worker_id", default=None, help="The worker suggesting it.")
@click.option("--change", "proposed_change", default=None, help="The proposed change.")
@_JSON
@_handle_errors
def code_report(report_id: str, as_json: bool, **kwargs: Any) -> None:
    """Submit update report REPORT_ID against a code version."""
    answer = _call("SubmitCodeReport", {"report_id": report_id, **kwargs})
    _show(answer, as_json, f"code report {report_id}: {answer['status']}")


@code.command(name="review")
@click.argument("report_id")
@click.argument("decision", type=click.Choice(["accepted", "rejected"]))
@click.option("--reviewer", required=True)
@_JSON
@_handle_errors
def code_review(report_id: str, decision: str, reviewer: str, as_json: bool) -> None:
    """Record the review of REPORT_ID. Nothing is deployed."""
    args = {"report_id": report_id, "decision": decision, "reviewer": reviewer}
    answer = _call("ReviewCodeReport", args)
    _show(answer, as_json, f"code report {report_id}: {answer['status']} by {reviewer}")


# -- governance


@click.group()
def improvement() -> None:
    """Improvement reports: adjustment bundles for a job or analysis, decided by people."""


@improvement.command(name="propose")
@click.argument("report_id")
@click.option("--title", required=True)
@click.option("--job", "job_id", default=None, help="The job it is about.")
@click.option("--request", "request_id", default=None, help="The analysis request it is about.")
@click.option("--bundle", default=None, metavar="JSON", help="The adjustments, a JSON object.")
@_JSON
@_handle_errors
def improvement_propose(report_id: str, bundle: str | None, as_json: bool, **kwargs: Any) -> None:
    """Propose improvement report REPORT_ID."""
    args = {"report_id": report_id, **kwargs, "bundle": _object(bundle, "--bundle")}
    answer = _call("ProposeImprovement", args)
    _show(answer, as_json, f"improvement {report_id}: {answer['status']}")


@improvement.command(name="decide")
@click.argument("report_id")
@click.argument("decision", type=click.Choice(["approved", "rejected"]))
@click.option("--by", "decided_by", required=True, help="Who decides.")
@_JSON
@_handle_errors
def improvement_decide(report_id: str, decision: str, decided_by: str, as_json: bool) -> None:
    """Record the decision on REPORT_ID (recorded only: nothing is applied)."""
    args = {"report_id": report_id, "decision": decision, "decided_by": decided_by}
    answer = _call("DecideImprovement", args)
    _show(answer, as_json, f"improvement {report_id}: {answer['status']} by {decided_by}")


@click.group()
def learning() -> None:
    """Learning snapshots: principle scores of a job, worker or tadpole over time."""


@learning.command(name="record")
@click.argument("snapshot_id")
@click.option(
    "--subject", required=True, metavar="KIND:ID", help="job:ID, worker:ID or tadpole:ID."
)
@click.option(
    "--rubric", "rubric_version", required=True, help="The rubric version scored against."
)
@click.option("--scores", required=True, metavar="JSON", help='e.g. {"honesty": 0.9}')
@click.option("--overall", "overall_score", type=float, default=None)
@_JSON
@_handle_errors
def learning_record(
    snapshot_id: str, subject: str, scores: str, as_json: bool, **kwargs: Any
) -> None:
    """Record learning snapshot SNAPSHOT_ID."""
    kind, _, subject_id = subject.partition(":")
    args = {"snapshot_id": snapshot_id, "subject_type": kind, "subject_id": subject_id,
            **kwargs, "principle_scores": _object(scores, "--scores")}  # fmt: skip
    answer = _call("RecordLearningSnapshot", args)
    _show(answer, as_json, f"learning snapshot {snapshot_id}: recorded for {subject}")
