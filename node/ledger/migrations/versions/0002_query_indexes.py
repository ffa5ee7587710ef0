"""Indexes for the ledger"s queries: a job"s rows, open allocations per pool, the TTL
sweeper"s next expiries, a worker"s events and a subject"s learning history in
time order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_analysis_findings_run_id", "analysis_findings", ["run_id"], unique=False)
    op.create_index("ix_analysis_runs_request_id", "analysis_runs", ["request_id"], unique=False)
    op.create_index("ix_job_metrics_job_id", "job_metrics", ["job_id"], unique=False)
    op.create_index(
        "ix_learning_snapshots_subject",
        "learning_snapshots",
        ["subject_type", "subject_id", "recorded_at"],
        unique=False,
    )
    op.create_index(
        "ix_resource_allocations_job_id", "resource_allocations", ["job_id"], unique=False
    )
    op.create_index(
        "ix_resource_allocations_pool_released_at",
        "resource_allocations",
        ["pool", "released_at"],
        unique=False,
    )
    op.create_index(
        "ix_tadpole_instances_status_expiry_at",
        "tadpole_instances",
        ["status", "expiry_at"],
        unique=False,
    )
    op.create_index(
        "ix_tadpole_metrics_tadpole_id_recorded_at",
        "tadpole_metrics",
        ["tadpole_id", "recorded_at"],
        unique=False,
    )
    op.create_index(
        "ix_worker_events_worker_id_occurred_at",
        "worker_events",
        ["worker_id", "occurred_at"],
        unique=False,
    )
    op.create_index("ix_workers_job_id", "workers", ["job_id"], unique=False)
    op.create_index("ix_workers_status_expiry_at", "workers", ["status", "expiry_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_analysis_findings_run_id", table_name="analysis_findings")
    op.drop_index("ix_analysis_runs_request_id", table_name="analysis_runs")
    op.drop_index("ix_job_metrics_job_id", table_name="job_metrics")
    op.drop_index("ix_learning_snapshots_subject", table_name="learning_snapshots")
    op.drop_index("ix_resource_allocations_job_id", table_name="resource_allocations")
    op.drop_index("ix_resource_allocations_pool_released_at", table_name="resource_allocations")
    op.drop_index("ix_tadpole_instances_status_expiry_at", table_name="tadpole_instances")
    op.drop_index("ix_tadpole_metrics_tadpole_id_recorded_at", table_name="tadpole_metrics")
    op.drop_index("ix_worker_events_worker_id_occurred_at", table_name="worker_events")
    op.drop_index("ix_workers_job_id", table_name="workers")
    op.drop_index("ix_workers_status_expiry_at", table_name="workers")
