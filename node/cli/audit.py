"""``tadpole audit``: the audit trail of every node (docs/security.md#audit)."""

from __future__ import annotations

import json
from typing import Any

import click
import grpc

from node.cli.app import EXIT_FAILURE
from node.cli.members import ask_every_member
from node.client import EventType
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.rbac import AUDIT_PREFIX

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """Operator actions and refused calls, as every node recorded them."""


@audit.command(name="tail")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="The newest this many records (of all nodes together).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--reads", is_flag=True, help="Also the reads of the trail (audit tail calls).")
@click.option("-f", "--follow", is_flag=True,
              help="Then print new records as the nodes copy them into the event log "
              "(/tadpole/audit/, about a second behind), until Ctrl-C.")  # fmt: skip
@click.pass_obj
def tail_command(settings: Any, limit: int, as_json: bool, reads: bool, follow: bool) -> None:
    """The newest records of every member, merged in time order."""
    # Where the event log stands before the files are read: a record copied after it is
    # followed, one copied before it was in its file when the tail was read.
    since = settings.client().range(AUDIT_PREFIX, limit=1).revision if follow else 0

    async def call(channel: grpc.aio.Channel, metadata: Any, timeout_s: float) -> Any:
        return await pb_grpc.AuditStub(channel).Tail(
            pb.AuditTailRequest(limit=limit, include_reads=reads),
            timeout=timeout_s,
            metadata=metadata,
        )

    replies = ask_every_member(settings, "audit tail", call)
    records: list[dict[str, Any]] = []
    failed = False
    for node, reply in sorted(replies.items()):
        if isinstance(reply, str):
            click.echo(f"{node}: {reply}", err=True)
            failed = True
            continue
        records.extend(json.loads(r) for r in reply.records)
        if reply.dropped:
            click.echo(f"{node}: {reply.dropped} refused-call records were dropped", err=True)
    records.sort(key=lambda r: (r.get("ts", ""), r.get("node", "")))
    shown = records[-limit:]
    _show(shown, as_json)
    if failed:
        raise SystemExit(EXIT_FAILURE)
    if follow:
        _follow(settings, since, as_json, reads, {_identity(r) for r in shown})


def _show(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for r in records:
            click.echo(json.dumps(r, separators=(",", ":")))
        return
    columns = ("ts", "node", "who", "from", "action", "result")  # as wide as the widest
    width = {c: max((len(_printable(str(r.get(c, "")))) for r in records), default=0)
             for c in columns}  # fmt: skip
    for r in records:
        cells = [f"{_printable(str(r.get(c, ''))):<{width[c]}}" for c in columns]
        if r.get("detail"):
            cells.append(_printable(str(r["detail"])))
        click.echo("  ".join(cells).rstrip())


def _identity(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def _follow(settings: Any, since: int, as_json: bool, reads: bool, seen: set[str]) -> None:
    """Each batch a node copies into the event log after revision ``since``, less what
    was shown already (a batch may be copied twice, or hold records the tail showed)."""
    stream = settings.client().watch(AUDIT_PREFIX, prefix=True, start_revision=since + 1)
    try:
        for event in stream:
            if event.type is not EventType.PUT:
                continue
            try:
                batch = json.loads(event.kv.value)
                records = [r for r in batch.get("records", ()) if isinstance(r, dict)]
            except (ValueError, AttributeError):
                continue  # not a copy the nodes made: roles off, anyone may write here
            fresh = []
            for r in records:
                if (reads or not _is_a_read(r)) and _identity(r) not in seen:
                    seen.add(_identity(r))
                    fresh.append(r)
            if len(seen) > 100_000:
                seen.clear()
            _show(fresh, as_json)
            if batch.get("skipped"):
                node = _printable(str(batch.get("node", "?")))
                click.echo(f"{node}: {batch['skipped']} records left out of the event log "
                           "by a flood (its audit.log has them)", err=True)  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        stream.close()


def _is_a_read(record: dict[str, Any]) -> bool:
    return record.get("action") == "/tadpole.v1.Audit/Tail"


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a record may quote what a caller sent,
    which must not drive the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
