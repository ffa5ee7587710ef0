"""The ledger's schema and migrations on a real PostgreSQL and on SQLite.

`make test` starts the machine's PostgreSQL (scripts/test-postgres.sh). Without it the
PostgreSQL cases skip, except under CI, where they fail: a ledger that only ever ran
on SQLite is not tested."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.orm import Session

from node.ledger import schema
from node.ledger.migrate import LedgerError, _config, engine_for, head, migrate, status
from tests.support.ledger_db import empty_postgres

pytestmark = pytest.mark.integration

TABLES = {
    "jobs", "job_metrics", "resource_allocations", "workers", "worker_events",
    "tadpole_instances", "tadpole_metrics", "dynamic_attributes", "schema_change_log",
    "code_versions", "code_update_reports", "analysis_requests", "analysis_runs",
    "analysis_findings", "finding_artifacts", "improvement_reports", "learning_snapshots",
}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield empty_postgres()


def _upgrade(url: str, to: str) -> None:
    """Run the reviewed migrations (not the model) up to ``to``."""
    engine = engine_for(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), to)
    engine.dispose()


def test_an_empty_database_is_made_from_the_model_then_left_as_it_is(url: str) -> None:
    made = migrate(url)
    assert (made.before, made.after, made.created) == (None, head(), True)
    assert status(url) == (head(), head())
    again = migrate(url)
    assert (again.before, again.created) == (head(), False)
    engine = engine_for(url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= TABLES
    engine.dispose()


def test_the_reviewed_migrations_build_exactly_the_model(url: str) -> None:
    # A database migrated step by step must equal one made from the model, or a
    # change to schema.py went in without its migration.
    _upgrade(url, "head")
    engine = engine_for(url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), schema.Base.metadata
        )
    engine.dispose()
    assert diff == []


def test_postgres_gets_jsonb_and_timezone_aware_timestamps() -> None:
    url = empty_postgres()
    migrate(url)
    engine = engine_for(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = 'jobs'"
            )
        ).all()
    engine.dispose()
    types = {column: kind for _, column, kind in rows}
    assert types["metadata"] == "jsonb" and types["requested_resources"] == "jsonb"
    assert types["spawned_at"] == "timestamp with time zone"
    assert types["objective"] == "text" and types["status"] == "character varying"


def _fill(conn: Connection, at: datetime) -> None:
    """One row in each of the 17 tables, their references satisfied."""
    with Session(conn) as s:
        s.add(schema.Job(job_id="j1", objective="scan", status="running", reward_signal=0.5,
                         requested_resources={"compute_units": 4}, meta={"k": [1, 2]},
                         spawned_at=at))  # fmt: skip
        s.add(schema.Worker(worker_id="w1", job_id="j1", worker_type="tadpole", status="alive",
                            ttl_seconds=60, expiry_at=at + timedelta(seconds=60)))  # fmt: skip
        s.add(schema.CodeVersion(digest="sha256:ab", created_at=at))
        s.add(schema.AnalysisRequest(request_id="r1", kind="monetization_scan", prompt="p",
                                     status="queued", created_at=at))  # fmt: skip
        s.flush()
        s.add(schema.JobMetric(job_id="j1", recorded_at=at, latency_ms=12.5))
        s.add(schema.ResourceAllocation(allocation_id="a1", job_id="j1", pool="default",
                                        compute_units=4, memory_mb=512, bandwidth_mbps=10,
                                        thread_count=2, allocated_at=at))  # fmt: skip
        s.add(schema.WorkerEvent(event_id="e1", worker_id="w1", event_type="spawned",
                                 payload={"x": 1}, occurred_at=at))  # fmt: skip
        s.add(schema.TadpoleInstance(tadpole_id="t1", worker_id="w1", job_id="j1", status="alive"))
        s.add(schema.DynamicAttribute(entity_type="job", entity_id="j1", attribute_key="color",
                                      attribute_value="blue", observed_at=at))  # fmt: skip
        s.add(schema.SchemaChange(initiated_by="ops", entity_name="jobs", action="proposed",
                                  ddl_statement="ALTER TABLE jobs ADD COLUMN color TEXT",
                                  created_at=at))  # fmt: skip
        s.add(schema.CodeUpdateReport(report_id="c1", code_digest="sha256:ab", summary="s",
                                      status="submitted", created_at=at))  # fmt: skip
        s.add(schema.AnalysisRun(run_id="run1", request_id="r1", job_id="j1", status="running"))
        s.add(schema.ImprovementReport(report_id="i1", job_id="j1", title="t",
                                       status="proposed", created_at=at))  # fmt: skip
        s.add(schema.LearningSnapshot(snapshot_id="l1", subject_type="tadpole", subject_id="t1",
                                      rubric_version="v3", principle_scores={"care": 0.9},
                                      recorded_at=at))  # fmt: skip
        s.flush()
        s.add(schema.TadpoleMetric(tadpole_id="t1", recorded_at=at, entropy=0.3))
        s.add(schema.AnalysisFinding(finding_id="f1", run_id="run1", title="t",
                                     monetization_score=0.8, created_at=at))  # fmt: skip
        s.flush()
        s.add(schema.FindingArtifact(artifact_id="fa1", finding_id="f1", uri="s3://x",
                                     created_at=at))  # fmt: skip
        s.commit()


def test_an_upgrade_from_the_first_version_keeps_every_row(url: str) -> None:
    _upgrade(url, "0001")
    at = datetime(2026, 12, 5, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    engine = engine_for(url)
    with engine.connect() as conn:
        _fill(conn, at)
    upgraded = migrate(url)
    assert (upgraded.before, upgraded.after, upgraded.created) == ("0001", head(), False)
    with engine.connect() as conn:
        for table in TABLES:
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() == 1, table
        indexes = {i["name"] for i in inspect(conn).get_indexes("workers")}
        assert "ix_workers_status_expiry_at" in indexes
        with Session(conn) as s:
            job = s.scalars(select(schema.Job)).one()
    engine.dispose()
    assert job.meta == {"k": [1, 2]} and job.requested_resources == {"compute_units": 4}
    assert job.spawned_at is not None
    if url.startswith("postgresql"):  # the instant survives, in UTC
        assert job.spawned_at == at and job.spawned_at.utcoffset() is not None
        assert job.spawned_at.astimezone(UTC).hour == 7


def test_a_creation_cut_short_leaves_an_empty_database_that_is_made_next_time(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node killed while it makes its ledger (stamping is the last step) must not
    # leave tables without a version: the next start would refuse them as foreign.
    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("killed while stamping")

    monkeypatch.setattr(command, "stamp", crash)
    with pytest.raises(RuntimeError, match="killed while stamping"):
        migrate(url)
    engine = engine_for(url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []
    engine.dispose()
    monkeypatch.undo()
    assert migrate(url).created


def test_an_upgrade_cut_short_leaves_the_previous_version_whole(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _upgrade(url, "0001")
    engine = engine_for(url)
    with engine.connect() as conn:
        before = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in TABLES}
    real = command.upgrade

    def upgrade_then_crash(cfg: object, to: str) -> None:
        real(cfg, to)  # every step ran, then the process died before COMMIT
        raise RuntimeError("killed before commit")

    monkeypatch.setattr(command, "upgrade", upgrade_then_crash)
    with pytest.raises(RuntimeError, match="killed before commit"):
        migrate(url)
    monkeypatch.undo()
    assert status(url) == ("0001", head())
    with engine.connect() as conn:
        after = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in TABLES}
        assert "ledger_export_cursor" not in inspect(conn).get_table_names()
    engine.dispose()
    assert after == before
    assert migrate(url).before == "0001"


def test_a_database_of_other_tables_is_refused_and_left_alone(url: str) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER)"))
    with pytest.raises(LedgerError, match="not a ledger made by tadpole; nothing changed"):
        migrate(url)
    with pytest.raises(LedgerError, match="holds tables \\(jobs\\) but no ledger version"):
        status(url)  # not reported as an empty database
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"jobs"}
    engine.dispose()


def test_a_version_this_release_does_not_know_is_refused(url: str) -> None:
    migrate(url)
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(LedgerError, match="version 9999, which this release does not know"):
        migrate(url)
    engine.dispose()


def test_a_bad_url_or_an_unreachable_server_is_named_without_its_password() -> None:
    with pytest.raises(LedgerError, match="not a database URL"):
        migrate("no-scheme-here")
    with pytest.raises(LedgerError) as refused:
        migrate("postgresql+psycopg://tadpole:s3cret-pw@127.0.0.1:1/tadpole_test")
    assert "s3cret-pw" not in str(refused.value) and "127.0.0.1:1" in str(refused.value)


def test_the_cli_migrates_reports_and_refuses_without_a_database(url: str) -> None:
    from click.testing import CliRunner

    from node.cli import cli

    runner = CliRunner()
    _upgrade(url, "0001")  # a ledger one version behind
    behind = runner.invoke(cli, ["ledger", "status", "--url", url])
    assert behind.exit_code == 1
    assert behind.stdout == f"version 0001; newest {head()}\n"
    assert "run tadpole ledger migrate" in behind.stderr
    done = runner.invoke(cli, ["ledger", "migrate", "--url", url])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("upgraded the ledger in ") and f"0001 -> {head()}" in done.stdout
    assert "tadpole:tadpole@" not in done.stdout  # the password is never shown
    assert (
        runner.invoke(cli, ["ledger", "status", "--url", url]).stdout
        == f"version {head()} (newest)\n"
    )
    missing = runner.invoke(cli, ["ledger", "migrate"], env={"ADAPTIVE_DATABASE_URL": ""})
    assert missing.exit_code == 2 and "pass --url or set ADAPTIVE_DATABASE_URL" in missing.stderr
