"""Reviewed schema growth on a real PostgreSQL and SQLite: dynamic attributes become
columns only by an approved proposal, applied with its backfill in one transaction;
anything that would lose data, or fails, changes nothing and says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from consensus.memory import MemorySystem
from node.cli import cli
from node.ledger import lifecycle as lc
from node.ledger.export import Exporter
from node.ledger.growth import approve, changes, propose
from node.ledger.migrate import LedgerError, engine_for
from node.ledger.service import Lifecycle
from tests.support.ledger_db import empty_postgres

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield empty_postgres()


async def call(life: Lifecycle, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return (await life.run(lambda tx: fn(tx, *args, **kwargs)))[0]


@pytest.fixture
async def observed(url: str) -> Any:
    """Four jobs with attributes, exported to ``url``; the exporter stays usable."""
    system = MemorySystem()
    life = Lifecycle(system)
    await call(life, lc.set_pool, "default", {"compute_units": 10})
    for i in range(4):
        await call(life, lc.assign_job, f"j{i}")
        await call(life, lc.record_attribute, "job", f"j{i}", "priority", i * 10, weight_hint=0.5)
        if i < 3:
            await call(life, lc.record_attribute, "job", f"j{i}", "color", ["red", "blue"][i % 2])
    await call(life, lc.record_attribute, "job", "j0", "rare", True)
    await call(life, lc.record_attribute, "job", "j0", "priority", 5)  # the current value wins
    exporter = Exporter(system, life, url, is_leader=lambda: True)
    await exporter.round()
    assert exporter.status().last_error == ""
    yield life, exporter
    await exporter.close()


def columns(url: str, table: str) -> set[str]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


def select(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


async def test_proposals_apply_nothing_until_approved(url: str, observed: Any) -> None:
    life, exporter = observed
    made, skipped = propose(url, initiated_by="tester", min_entities=3)
    assert [(p.table, p.column) for p in made] == [("jobs", "color"), ("jobs", "priority")]
    ddl = {p.column: p.ddl for p in made}
    assert ddl["priority"] == "ALTER TABLE jobs ADD COLUMN priority BIGINT"
    assert ddl["color"] == "ALTER TABLE jobs ADD COLUMN color TEXT"
    priority = next(p for p in made if p.column == "priority")
    assert priority.rationale == (
        "priority observed on 4 of 4 jobs rows; integer values from 5 to 30; mean weight hint 0.50"
    )
    assert any("job.rare: seen on 1 jobs; a column needs 3" in s for s in skipped)
    assert not {"color", "priority"} & columns(url, "jobs")  # nothing applied
    assert propose(url, initiated_by="tester", min_entities=3)[0] == []  # not twice
    assert [r["action"] for r in changes(url)] == ["proposed", "proposed"]

    applied = approve(url, priority.id, approved_by="reviewer")
    assert (applied.table, applied.column, applied.backfilled) == ("jobs", "priority", 4)
    assert select(url, "SELECT job_id, priority FROM jobs ORDER BY job_id") == [
        ("j0", 5), ("j1", 10), ("j2", 20), ("j3", 30)
    ]  # fmt: skip
    log = changes(url)
    assert log[-1]["action"] == "applied" and log[-1]["initiated_by"] == "reviewer"
    assert log[-1]["rationale"].startswith(f"approves #{priority.id}: ")
    with pytest.raises(LedgerError, match=f"#{priority.id} was applied already"):
        approve(url, priority.id, approved_by="reviewer")
    with pytest.raises(LedgerError, match="records an applied change, not a proposal"):
        approve(url, log[-1]["id"], approved_by="reviewer")

    # New observations of a materialised key keep its column current.
    await call(life, lc.record_attribute, "job", "j1", "priority", 99)
    await exporter.round()
    assert select(url, "SELECT priority FROM jobs WHERE job_id = 'j1'") == [(99,)]


async def test_a_change_that_could_lose_data_or_fails_changes_nothing(
    url: str, observed: Any
) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO schema_change_log (initiated_by, entity_name, action, ddl_statement,"
                " rationale, created_at) VALUES ('mallory', 'jobs', 'proposed',"
                " 'ALTER TABLE jobs DROP COLUMN objective', 'tidy up', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    bad = changes(url)[-1]["id"]
    with pytest.raises(LedgerError, match="could lose data: only ADD COLUMN is ever applied"):
        approve(url, bad, approved_by="reviewer")
    assert "objective" in columns(url, "jobs")
    with pytest.raises(LedgerError, match="no schema change #999"):
        approve(url, 999, approved_by="reviewer")
    made, _skipped = propose(url, initiated_by="tester", min_entities=3)
    color = next(p for p in made if p.column == "color")
    engine = engine_for(url)
    with engine.begin() as conn:  # someone added the column by hand meanwhile
        conn.execute(text("ALTER TABLE jobs ADD COLUMN color TEXT"))
    engine.dispose()
    with pytest.raises(LedgerError, match="jobs already has a column color; nothing changed"):
        approve(url, color.id, approved_by="reviewer")
    assert [r["action"] for r in changes(url)].count("applied") == 0


async def test_values_a_column_cant_hold_are_refused_before_anything_changes(
    observed: Any, url: str
) -> None:
    life, exporter = observed
    made, _ = propose(url, initiated_by="tester", min_entities=3)
    priority = next(p for p in made if p.column == "priority")
    # Observed after the proposal: a value the proposed BIGINT can't hold.
    await call(life, lc.record_attribute, "job", "j2", "priority", "high")
    await exporter.round()
    with pytest.raises(
        LedgerError,
        match="not applied, nothing changed: job j2 has priority = 'high', which a BIGINT",
    ):
        approve(url, priority.id, approved_by="reviewer")
    assert "priority" not in columns(url, "jobs")
    assert [r["action"] for r in changes(url)] == ["proposed", "proposed"]


async def test_after_approval_a_misfit_value_does_not_hold_up_the_export(
    observed: Any, url: str
) -> None:
    life, exporter = observed
    made, _ = propose(url, initiated_by="tester", min_entities=3)
    approve(url, next(p for p in made if p.column == "priority").id, approved_by="reviewer")
    await call(life, lc.record_attribute, "job", "j1", "priority", {"not": "a number"})
    await call(life, lc.assign_job, "j9")  # a change after it must still be exported
    await exporter.round()
    assert exporter.status().last_error == ""
    assert select(url, "SELECT priority FROM jobs WHERE job_id = 'j1'") == [(10,)]  # kept
    assert select(url, "SELECT job_id FROM jobs WHERE job_id = 'j9'") == [("j9",)]


async def test_the_cli_proposes_lists_and_approves(url: str, observed: Any) -> None:
    runner = CliRunner()
    proposed = runner.invoke(cli, ["ledger", "schema", "propose", "--url", url])
    assert proposed.exit_code == 0, proposed.output
    assert "proposed: ALTER TABLE jobs ADD COLUMN priority BIGINT" in proposed.stdout
    listed = runner.invoke(cli, ["ledger", "schema", "list", "--url", url])
    assert listed.exit_code == 0 and listed.stdout.count("proposed") == 2
    change = next(r["id"] for r in changes(url) if "priority" in r["ddl_statement"])
    done = runner.invoke(cli, ["ledger", "schema", "approve", str(change), "--url", url])
    assert done.exit_code == 0, done.output
    assert (
        done.stdout
        == f"applied #{change} as #{change + 1}: jobs.priority added, 4 rows backfilled\n"
    )
    again = runner.invoke(cli, ["ledger", "schema", "approve", str(change), "--url", url])
    assert again.exit_code == 1 and "was applied already" in again.stderr
