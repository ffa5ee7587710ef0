"""The ledger's 17 tables (spec ``postgres_relational_layer.orchestration_tables``).

One model for both databases: JSON is ``JSONB`` on PostgreSQL and ``JSON`` on SQLite,
every timestamp is timezone-aware (``TIMESTAMPTZ``). Columns the spec lists are kept
with its names and types; where it names only a purpose, the columns below are
designed from it (docs/ledger.md says why each exists).

Identifiers of things the cluster creates (jobs, allocations, workers, events,
tadpoles, reports, requests, runs, findings ...) are strings chosen by the cluster,
not database sequences: the ledger is fed from the cluster's own records, and a
natural key is what makes applying the same record twice a no-op. Pure time series
and logs (metrics, dynamic attributes, the schema change log) use a surrogate
``id``.

Changing a table here is not enough: every change also needs a reviewed migration
in ``node/ledger/migrations/versions`` (a test compares the two on both databases).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AnalysisFinding",
    "AnalysisRequest",
    "AnalysisRun",
    "Base",
    "CodeUpdateReport",
    "CodeVersion",
    "DynamicAttribute",
    "ExportCursor",
    "FindingArtifact",
    "ImprovementReport",
    "Job",
    "JobMetric",
    "LearningSnapshot",
    "ResourceAllocation",
    "SchemaChange",
    "TadpoleInstance",
    "TadpoleMetric",
    "Worker",
    "WorkerEvent",
]

# JSONB on PostgreSQL (indexable, compared by value), JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")
Time = DateTime(timezone=True)
Id = String(128)
Status = String(32)

# Constraint names follow one convention, so migrations can name what they drop.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    """Every ``assign_job`` upserts here (spec)."""

    __tablename__ = "jobs"
    job_id: Mapped[str] = mapped_column(Id, primary_key=True)
    objective: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Status)
    reward_signal: Mapped[float | None] = mapped_column(Float)
    requested_resources: Mapped[Any] = mapped_column(Json, nullable=True)
    meta: Mapped[Any] = mapped_column("metadata", Json, nullable=True)
    spawned_at: Mapped[datetime | None] = mapped_column(Time)
    started_at: Mapped[datetime | None] = mapped_column(Time)
    completed_at: Mapped[datetime | None] = mapped_column(Time)


class JobMetric(Base):
    """Recorded when a job completes: its latency, efficiency and how many of its
    workers or tadpoles expired by TTL (spec purpose); ``details`` holds the rest."""

    __tablename__ = "job_metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id"))
    recorded_at: Mapped[datetime] = mapped_column(Time)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    efficiency: Mapped[float | None] = mapped_column(Float)
    ttl_expirations: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[Any] = mapped_column(Json, nullable=True)


class ResourceAllocation(Base):
    """Units taken from a resource pool for a job; ``released_at`` set once on release.
    Supports capacity replay and throttling recommendations (spec)."""

    __tablename__ = "resource_allocations"
    allocation_id: Mapped[str] = mapped_column(Id, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id"))
    pool: Mapped[str] = mapped_column(String(64))
    compute_units: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    bandwidth_mbps: Mapped[int] = mapped_column(Integer)
    thread_count: Mapped[int] = mapped_column(Integer)
    allocated_at: Mapped[datetime] = mapped_column(Time)
    released_at: Mapped[datetime | None] = mapped_column(Time)


class Worker(Base):
    """Tadpoles and higher-order workers (``worker_type``: tadpole | quest_worker |
    supervisor); lifecycle events fan out to worker_events (spec)."""

    __tablename__ = "workers"
    worker_id: Mapped[str] = mapped_column(Id, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String)  # spec: VARCHAR NULL, no FK
    worker_type: Mapped[str] = mapped_column(String(32))
    specialization: Mapped[str | None] = mapped_column(String)
    status: Mapped[str | None] = mapped_column(Status)
    spawned_at: Mapped[datetime | None] = mapped_column(Time)
    retired_at: Mapped[datetime | None] = mapped_column(Time)
    ttl_seconds: Mapped[int | None] = mapped_column(Integer)
    expiry_at: Mapped[datetime | None] = mapped_column(Time)
    meta: Mapped[Any] = mapped_column("metadata", Json, nullable=True)


class WorkerEvent(Base):
    __tablename__ = "worker_events"
    event_id: Mapped[str] = mapped_column(Id, primary_key=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.worker_id"))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(Json, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(Time)


class TadpoleInstance(Base):
    """One tadpole: TTL analysis and per-tadpole outcome tracing (spec)."""

    __tablename__ = "tadpole_instances"
    tadpole_id: Mapped[str] = mapped_column(Id, primary_key=True)
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("workers.worker_id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.job_id"))
    communication_protocol: Mapped[str | None] = mapped_column(String)
    resource_allocation: Mapped[Any] = mapped_column(Json, nullable=True)
    status: Mapped[str | None] = mapped_column(Status)
    spawned_at: Mapped[datetime | None] = mapped_column(Time)
    expiry_at: Mapped[datetime | None] = mapped_column(Time)


class TadpoleMetric(Base):
    """Micro-metrics per tadpole: entropy, resource pressure (0..1 of what it was
    allocated), protocol success (0..1 of its exchanges) (spec purpose)."""

    __tablename__ = "tadpole_metrics"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tadpole_id: Mapped[str] = mapped_column(ForeignKey("tadpole_instances.tadpole_id"))
    recorded_at: Mapped[datetime] = mapped_column(Time)
    entropy: Mapped[float | None] = mapped_column(Float)
    resource_pressure: Mapped[float | None] = mapped_column(Float)
    protocol_success: Mapped[float | None] = mapped_column(Float)
    details: Mapped[Any] = mapped_column(Json, nullable=True)


class DynamicAttribute(Base):
    """Experimental fields before they become columns (spec); one current value per
    (entity, id, key), upserted as observations arrive."""

    __tablename__ = "dynamic_attributes"
    __table_args__ = (UniqueConstraint("entity_type", "entity_id", "attribute_key"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(128))
    attribute_key: Mapped[str] = mapped_column(String(128))
    attribute_value: Mapped[Any] = mapped_column(Json, nullable=True)
    weight_hint: Mapped[float | None] = mapped_column(Float)
    observed_at: Mapped[datetime] = mapped_column(Time)


class SchemaChange(Base):
    """The review ledger of dynamic column additions (``action``: proposed | applied)."""

    __tablename__ = "schema_change_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    initiated_by: Mapped[str] = mapped_column(String(128))
    entity_name: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    ddl_statement: Mapped[str] = mapped_column(Text)
    rationale: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Time)


class CodeVersion(Base):
    """Digest-indexed catalogue of worker code artifacts (spec purpose)."""

    __tablename__ = "code_versions"
    digest: Mapped[str] = mapped_column(Id, primary_key=True)  # e.g. "sha256:..."
    worker_type: Mapped[str | None] = mapped_column(String(32))
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Time)
    meta: Mapped[Any] = mapped_column("metadata", Json, nullable=True)


class CodeUpdateReport(Base):
    """A worker's improvement suggestion against a code version. Never deployed
    automatically (spec policy): ``status`` only records the manual review
    (submitted | accepted | rejected)."""

    __tablename__ = "code_update_reports"
    report_id: Mapped[str] = mapped_column(Id, primary_key=True)
    code_digest: Mapped[str] = mapped_column(ForeignKey("code_versions.digest"))
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("workers.worker_id"))
    summary: Mapped[str] = mapped_column(Text)
    proposed_change: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Status)
    created_at: Mapped[datetime] = mapped_column(Time)
    reviewed_at: Mapped[datetime | None] = mapped_column(Time)
    reviewer: Mapped[str | None] = mapped_column(String(128))


class AnalysisRequest(Base):
    """A trial prompt (a monetisation scan, a forecasting mission ...); ``status``
    runs queued -> running -> completed (spec lifecycle)."""

    __tablename__ = "analysis_requests"
    request_id: Mapped[str] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    parameters: Mapped[Any] = mapped_column(Json, nullable=True)
    status: Mapped[str] = mapped_column(Status)
    requested_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Time)
    started_at: Mapped[datetime | None] = mapped_column(Time)
    completed_at: Mapped[datetime | None] = mapped_column(Time)


class AnalysisRun(Base):
    """Joins a request to the job and worker that carried it out, and sums up how it
    went (spec)."""

    __tablename__ = "analysis_runs"
    run_id: Mapped[str] = mapped_column(Id, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("analysis_requests.request_id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.job_id"))
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("workers.worker_id"))
    status: Mapped[str] = mapped_column(Status)
    started_at: Mapped[datetime | None] = mapped_column(Time)
    finished_at: Mapped[datetime | None] = mapped_column(Time)
    outcome_summary: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[Any] = mapped_column(Json, nullable=True)


class AnalysisFinding(Base):
    """A structured output for reviewers, ranked by its scores (spec)."""

    __tablename__ = "analysis_findings"
    finding_id: Mapped[str] = mapped_column(Id, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("analysis_runs.run_id"))
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    monetization_score: Mapped[float | None] = mapped_column(Float)
    novelty_score: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    details: Mapped[Any] = mapped_column(Json, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Time)


class FindingArtifact(Base):
    """A URI pointing at a notebook, chart or raw data behind a finding (spec)."""

    __tablename__ = "finding_artifacts"
    artifact_id: Mapped[str] = mapped_column(Id, primary_key=True)
    finding_id: Mapped[str] = mapped_column(ForeignKey("analysis_findings.finding_id"))
    uri: Mapped[str] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(32))  # notebook | chart | raw_data
    media_type: Mapped[str | None] = mapped_column(String(128))
    checksum: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Time)


class ImprovementReport(Base):
    """A bundle of adjustments linked to a job or an analysis request, for governance
    (spec): proposed, then approved or rejected by a named reviewer."""

    __tablename__ = "improvement_reports"
    report_id: Mapped[str] = mapped_column(Id, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.job_id"))
    request_id: Mapped[str | None] = mapped_column(ForeignKey("analysis_requests.request_id"))
    title: Mapped[str] = mapped_column(Text)
    bundle: Mapped[Any] = mapped_column(Json, nullable=True)
    status: Mapped[str] = mapped_column(Status)
    created_at: Mapped[datetime] = mapped_column(Time)
    decided_at: Mapped[datetime | None] = mapped_column(Time)
    decided_by: Mapped[str | None] = mapped_column(String(128))


class LearningSnapshot(Base):
    """Principle scores of a subject (a tadpole, worker or job) under one rubric
    version, kept for longitudinal review (spec)."""

    __tablename__ = "learning_snapshots"
    snapshot_id: Mapped[str] = mapped_column(Id, primary_key=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128))
    rubric_version: Mapped[str] = mapped_column(String(64))
    principle_scores: Mapped[Any] = mapped_column(Json)
    overall_score: Mapped[float | None] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(Time)


class ExportCursor(Base):
    """Bookkeeping, not one of the spec's tables: how far the cluster's outbox has been
    applied to this database. It is advanced in the same transaction as the rows an
    event produces, so each event has exactly one effect here (node/ledger/export.py)."""

    __tablename__ = "ledger_export_cursor"
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)  # the last applied event's revision
    event_at: Mapped[datetime | None] = mapped_column(Time)  # when that event happened
    exported_at: Mapped[datetime] = mapped_column(Time)


# Indexes for the queries the ledger serves (added by migration 0002): a job's rows,
# the open allocations per pool (capacity replay), the TTL sweeper's next expiries,
# a worker's events in time order, a subject's learning history.
Index("ix_job_metrics_job_id", JobMetric.job_id)
Index("ix_resource_allocations_job_id", ResourceAllocation.job_id)
Index(
    "ix_resource_allocations_pool_released_at",
    ResourceAllocation.pool,
    ResourceAllocation.released_at,
)
Index("ix_workers_job_id", Worker.job_id)
Index("ix_workers_status_expiry_at", Worker.status, Worker.expiry_at)
Index("ix_worker_events_worker_id_occurred_at", WorkerEvent.worker_id, WorkerEvent.occurred_at)
Index("ix_tadpole_instances_status_expiry_at", TadpoleInstance.status, TadpoleInstance.expiry_at)
Index(
    "ix_tadpole_metrics_tadpole_id_recorded_at", TadpoleMetric.tadpole_id, TadpoleMetric.recorded_at
)
Index("ix_analysis_runs_request_id", AnalysisRun.request_id)
Index("ix_analysis_findings_run_id", AnalysisFinding.run_id)
Index(
    "ix_learning_snapshots_subject",
    LearningSnapshot.subject_type,
    LearningSnapshot.subject_id,
    LearningSnapshot.recorded_at,
)
