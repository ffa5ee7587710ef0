"""The ``tadpole`` command line: client commands (:mod:`node.cli.app`) plus ``tadpole node``.

``tadpole node`` (:mod:`node.main`) is registered here, explicitly, so the client commands
never import the server and the server never imports the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.cli.app import cli
from node.main import node_command

__all__ = ["cli", "main"]

cli.add_command(node_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``tadpole``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="tadpole")
