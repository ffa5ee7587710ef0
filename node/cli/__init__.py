"""The ``tadpole`` command line: client commands (:mod:`node.cli.app`) plus ``tadpole node``.

``tadpole node`` (:mod:`node.main`) is registered here, explicitly, so the client commands
never import the server and the server never imports the CLI. It is loaded only when it
runs (or when help lists it): the server's modules (Raft, the stores) take longer to
import than a client command takes to run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from node.cli.app import cli

__all__ = ["cli", "main"]


def _node_command() -> click.Command:
    from node.main import node_command

    return node_command


def _ledger_command() -> click.Command:
    from node.cli.ledger import ledger

    return ledger


def _lifecycle(name: str) -> Callable[[], click.Command]:
    def load() -> click.Command:
        from node.cli import lifecycle

        command: click.Command = getattr(lifecycle, name)
        return command

    return load


def _auth_command() -> click.Command:
    from node.cli.auth import auth

    return auth


def _audit_command() -> click.Command:
    from node.cli.audit import audit

    return audit


def _certs_command() -> click.Command:
    from node.cli.certs import certs

    return certs


def _keys_command() -> click.Command:
    from node.cli.keys import keys

    return keys


def _backup_command() -> click.Command:
    from node.cli.backup import backup

    return backup


cli.add_lazy_command("node", _node_command)
cli.add_lazy_command("backup", _backup_command)
cli.add_lazy_command("ledger", _ledger_command)
cli.add_lazy_command("keys", _keys_command)
cli.add_lazy_command("certs", _certs_command)
cli.add_lazy_command("audit", _audit_command)
cli.add_lazy_command("auth", _auth_command)
for _name in ("pool", "job", "worker", "instance", "analysis", "code", "improvement", "learning"):
    cli.add_lazy_command(_name, _lifecycle(_name))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``tadpole``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="tadpole")
