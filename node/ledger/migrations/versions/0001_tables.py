"""The ledger's 17 tables, their primary and foreign keys.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analysis_requests",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_analysis_requests")),
    )
    op.create_table(
        "code_versions",
        sa.Column("digest", sa.String(length=128), nullable=False),
        sa.Column("worker_type", sa.String(length=32), nullable=True),
        sa.Column("artifact_uri", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_code_versions")),
    )
    op.create_table(
        "dynamic_attributes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("attribute_key", sa.String(length=128), nullable=False),
        sa.Column(
            "attribute_value",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("weight_hint", sa.Float(), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dynamic_attributes")),
        sa.UniqueConstraint(
            "entity_type",
            "entity_id",
            "attribute_key",
            name=op.f("uq_dynamic_attributes_entity_type_entity_id_attribute_key"),
        ),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("objective", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("reward_signal", sa.Float(), nullable=True),
        sa.Column(
            "requested_resources",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("spawned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobs")),
    )
    op.create_table(
        "learning_snapshots",
        sa.Column("snapshot_id", sa.String(length=128), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("rubric_version", sa.String(length=64), nullable=False),
        sa.Column(
            "principle_scores",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("overall_score", sa.Float(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", name=op.f("pk_learning_snapshots")),
    )
    op.create_table(
        "schema_change_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("initiated_by", sa.String(length=128), nullable=False),
        sa.Column("entity_name", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("ddl_statement", sa.Text(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_change_log")),
    )
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(), nullable=True),
        sa.Column("worker_type", sa.String(length=32), nullable=False),
        sa.Column("specialization", sa.String(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("spawned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ttl_seconds", sa.Integer(), nullable=True),
        sa.Column("expiry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_workers")),
    )
    op.create_table(
        "analysis_runs",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome_summary", sa.Text(), nullable=True),
        sa.Column(
            "metrics",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_analysis_runs_job_id_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["analysis_requests.request_id"],
            name=op.f("fk_analysis_runs_request_id_analysis_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.worker_id"], name=op.f("fk_analysis_runs_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_analysis_runs")),
    )
    op.create_table(
        "code_update_reports",
        sa.Column("report_id", sa.String(length=128), nullable=False),
        sa.Column("code_digest", sa.String(length=128), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("proposed_change", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewer", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["code_digest"],
            ["code_versions.digest"],
            name=op.f("fk_code_update_reports_code_digest_code_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.worker_id"],
            name=op.f("fk_code_update_reports_worker_id_workers"),
        ),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_code_update_reports")),
    )
    op.create_table(
        "improvement_reports",
        sa.Column("report_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column(
            "bundle",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_improvement_reports_job_id_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["analysis_requests.request_id"],
            name=op.f("fk_improvement_reports_request_id_analysis_requests"),
        ),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_improvement_reports")),
    )
    op.create_table(
        "job_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("efficiency", sa.Float(), nullable=True),
        sa.Column("ttl_expirations", sa.Integer(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_job_metrics_job_id_jobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_metrics")),
    )
    op.create_table(
        "resource_allocations",
        sa.Column("allocation_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("compute_units", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("bandwidth_mbps", sa.Integer(), nullable=False),
        sa.Column("thread_count", sa.Integer(), nullable=False),
        sa.Column("allocated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_resource_allocations_job_id_jobs")
        ),
        sa.PrimaryKeyConstraint("allocation_id", name=op.f("pk_resource_allocations")),
    )
    op.create_table(
        "tadpole_instances",
        sa.Column("tadpole_id", sa.String(length=128), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("communication_protocol", sa.String(), nullable=True),
        sa.Column(
            "resource_allocation",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("spawned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expiry_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_tadpole_instances_job_id_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.worker_id"],
            name=op.f("fk_tadpole_instances_worker_id_workers"),
        ),
        sa.PrimaryKeyConstraint("tadpole_id", name=op.f("pk_tadpole_instances")),
    )
    op.create_table(
        "worker_events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.worker_id"], name=op.f("fk_worker_events_worker_id_workers")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_worker_events")),
    )
    op.create_table(
        "analysis_findings",
        sa.Column("finding_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("monetization_score", sa.Float(), nullable=True),
        sa.Column("novelty_score", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["analysis_runs.run_id"],
            name=op.f("fk_analysis_findings_run_id_analysis_runs"),
        ),
        sa.PrimaryKeyConstraint("finding_id", name=op.f("pk_analysis_findings")),
    )
    op.create_table(
        "tadpole_metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tadpole_id", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entropy", sa.Float(), nullable=True),
        sa.Column("resource_pressure", sa.Float(), nullable=True),
        sa.Column("protocol_success", sa.Float(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["tadpole_id"],
            ["tadpole_instances.tadpole_id"],
            name=op.f("fk_tadpole_metrics_tadpole_id_tadpole_instances"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tadpole_metrics")),
    )
    op.create_table(
        "finding_artifacts",
        sa.Column("artifact_id", sa.String(length=128), nullable=False),
        sa.Column("finding_id", sa.String(length=128), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("media_type", sa.String(length=128), nullable=True),
        sa.Column("checksum", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["finding_id"],
            ["analysis_findings.finding_id"],
            name=op.f("fk_finding_artifacts_finding_id_analysis_findings"),
        ),
        sa.PrimaryKeyConstraint("artifact_id", name=op.f("pk_finding_artifacts")),
    )


def downgrade() -> None:
    op.drop_table("finding_artifacts")
    op.drop_table("tadpole_metrics")
    op.drop_table("analysis_findings")
    op.drop_table("worker_events")
    op.drop_table("tadpole_instances")
    op.drop_table("resource_allocations")
    op.drop_table("job_metrics")
    op.drop_table("improvement_reports")
    op.drop_table("code_update_reports")
    op.drop_table("analysis_runs")
    op.drop_table("workers")
    op.drop_table("schema_change_log")
    op.drop_table("learning_snapshots")
    op.drop_table("jobs")
    op.drop_table("dynamic_attributes")
    op.drop_table("code_versions")
    op.drop_table("analysis_requests")
