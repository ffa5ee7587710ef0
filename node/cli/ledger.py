"""``tadpole ledger``: create or upgrade the relational ledger's database.

Loaded only when it runs (SQLAlchemy and Alembic take longer to import than a client
command takes to run). The database is ``--url`` or ``$ADAPTIVE_DATABASE_URL``."""

from __future__ import annotations

import getpass
import json
import os
import socket

import click

from node.cli.app import EXIT_FAILURE, EXIT_USAGE, _fail, _handle_errors, _settings, _table
from node.ledger.migrate import ENV_URL, LedgerError, engine_for, migrate, status

__all__ = ["ledger"]

_URL = click.option(
    "--url",
    default=None,
    metavar="URL",
    help=f"SQLAlchemy URL of the ledger database (default: ${ENV_URL}), e.g. "
    "postgresql+psycopg://user:password@host/db or sqlite:///path/ledger.db.",
)


def _url(given: str | None) -> str:
    url = given or os.environ.get(ENV_URL, "")
    if not url:
        _fail(f"no ledger database: pass --url or set {ENV_URL}", EXIT_USAGE)
    return url


def _shown(url: str) -> str:
    return engine_for(url).url.render_as_string(hide_password=True)


@click.group()
def ledger() -> None:
    """The relational ledger (jobs, allocations, workers, tadpoles, analysis work)."""


@ledger.command(name="migrate")
@_URL
def migrate_command(url: str | None) -> None:
    """Create the ledger in an empty database, or bring it to the newest version.

    A database holding other tables, or a version this release does not know, is
    refused and left unchanged."""
    target = _url(url)
    try:
        done = migrate(target)
        shown = _shown(target)
    except LedgerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    if done.created:
        click.echo(f"created the ledger at version {done.after} in {shown}")
    elif done.before == done.after:
        click.echo(f"the ledger in {shown} is at the newest version, {done.after}")
    else:
        click.echo(f"upgraded the ledger in {shown}: {done.before} -> {done.after}")


@ledger.command(name="status")
@_URL
def status_command(url: str | None) -> None:
    """The ledger database's version and the newest one (exit 1 when it is behind)."""
    target = _url(url)
    try:
        current, newest = status(target)
    except LedgerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    if current == newest:
        click.echo(f"version {current} (newest)")
        return
    click.echo(f"version {current or 'none (empty database)'}; newest {newest}")
    _fail("the ledger is behind: run tadpole ledger migrate", EXIT_FAILURE)


@ledger.command(name="report")
@click.argument("name", type=click.Choice(["capacity", "jobs", "ttl", "findings"]))
@click.option("--limit", type=int, default=20, show_default=True, help="Rows of findings.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_handle_errors
def report_command(name: str, limit: int, as_json: bool) -> None:
    """Print a report from the ledger the cluster keeps (its leader's, with the
    embedded default): capacity (replay and throttling advice per pool), jobs
    (latency percentiles), ttl (expirations per worker type), findings."""
    answer = _settings().client().ledger("Report", {"name": name, "limit": limit})
    if as_json:
        click.echo(json.dumps(answer, indent=2, default=str))
        return
    click.echo(answer["title"])
    if answer["rows"]:
        click.echo(_table(answer["columns"], answer["rows"]))
    for note in answer["notes"]:
        click.echo(note)


@ledger.command(name="export-status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@_handle_errors
def export_status_command(as_json: bool) -> None:
    """The outbox exporter (on the leader): database, cursor, lag, last error."""
    answer = _settings().client().ledger("ExportStatus", {})
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    state = "exporting" if answer["running"] else "not exporting (not the leader)"
    click.echo(f"{state} to {answer['database']}")
    click.echo(
        f"cursor revision {answer['cursor']}, lag {answer['lag_s']:.1f} s, "
        f"{answer['exported']} events exported and {answer['expired']} units expired here"
    )
    if answer["last_error"]:
        click.echo(f"last error: {answer['last_error']}")


@ledger.command(name="attribute")
@click.argument("entity_type", type=click.Choice(["job", "worker", "tadpole"]))
@click.argument("entity_id")
@click.argument("key")
@click.argument("value", metavar="JSON")
@click.option("--weight", "weight_hint", type=float, default=None, help="A weight hint.")
@_handle_errors
def attribute_command(
    entity_type: str, entity_id: str, key: str, value: str, weight_hint: float | None
) -> None:
    """Record an experimental attribute KEY of a job, worker or tadpole (a
    dynamic_attributes row; `ledger schema propose` may make it a column)."""
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        _fail(f"JSON: not valid JSON: {exc}", EXIT_USAGE)
    args = {"entity_type": entity_type, "entity_id": entity_id, "key": key, "value": parsed}
    if weight_hint is not None:
        args["weight_hint"] = weight_hint
    _settings().client().ledger("RecordAttribute", args)
    click.echo(f"{entity_type} {entity_id}: {key} = {json.dumps(parsed)}")


@ledger.group(name="schema")
def schema_group() -> None:
    """Reviewed schema growth: dynamic attributes become columns only by approval."""


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@schema_group.command(name="propose")
@_URL
@click.option("--min-entities", type=int, default=3, show_default=True,
              help="Propose a column for a key seen on at least this many entities.")  # fmt: skip
def schema_propose(url: str | None, min_entities: int) -> None:
    """Write ALTER TABLE proposals (with their rationale) for the observed dynamic
    attributes to schema_change_log. Applies nothing."""
    from node.ledger.growth import propose

    try:
        made, skipped = propose(_url(url), initiated_by=_who(), min_entities=min_entities)
    except LedgerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    for p in made:
        click.echo(f"#{p.id} proposed: {p.ddl}")
        click.echo(f"    {p.rationale}")
    for reason in skipped:
        click.echo(f"passed over {reason}")
    if not made:
        click.echo("nothing new to propose")


@schema_group.command(name="list")
@_URL
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def schema_list(url: str | None, as_json: bool) -> None:
    """The schema change log: proposals and applied changes."""
    from node.ledger.growth import changes

    try:
        rows = changes(_url(url))
    except LedgerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no schema changes logged")
        return
    click.echo(
        _table(
            ["id", "action", "by", "statement"],
            [[r["id"], r["action"], r["initiated_by"], r["ddl_statement"]] for r in rows],
        )
    )


@schema_group.command(name="approve")
@click.argument("change_id", type=int)
@_URL
def schema_approve(change_id: int, url: str | None) -> None:
    """Apply proposal CHANGE_ID: its ALTER TABLE, a backfill from the dynamic
    attributes and an `applied` log row, in one transaction (all or nothing)."""
    from node.ledger.growth import approve

    try:
        done = approve(_url(url), change_id, approved_by=_who())
    except LedgerError as exc:
        _fail(str(exc), EXIT_FAILURE)
    click.echo(
        f"applied #{done.proposal} as #{done.log_id}: {done.table}.{done.column} added, "
        f"{done.backfilled} rows backfilled"
    )
