"""``tadpole audit``: the audit trail of every node (docs/security.md#audit)."""

from __future__ import annotations

import json
from typing import Any

import click
import grpc

from node.cli.app import EXIT_FAILURE
from node.cli.members import ask_every_member
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """Operator actions and refused calls, as every node recorded them."""


@audit.command(name="tail")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="The newest this many records (of all nodes together).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--reads", is_flag=True, help="Also the reads of the trail (audit tail calls).")
@click.pass_obj
def tail_command(settings: Any, limit: int, as_json: bool, reads: bool) -> None:
    """The newest records of every member, merged in time order."""

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
    if as_json:
        for r in shown:
            click.echo(json.dumps(r, separators=(",", ":")))
    else:  # columns as wide as the widest value shown
        columns = ("ts", "node", "who", "from", "action", "result")
        width = {c: max((len(_printable(str(r.get(c, "")))) for r in shown), default=0)
                 for c in columns}  # fmt: skip
        for r in shown:
            cells = [f"{_printable(str(r.get(c, ''))):<{width[c]}}" for c in columns]
            if r.get("detail"):
                cells.append(_printable(str(r["detail"])))
            click.echo("  ".join(cells).rstrip())
    if failed:
        raise SystemExit(EXIT_FAILURE)


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a record may quote what a caller sent,
    which must not drive the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
