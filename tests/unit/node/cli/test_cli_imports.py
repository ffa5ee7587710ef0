"""A client command must start fast: importing the CLI loads the client and nothing of
the server. Checked by what a fresh interpreter has loaded, not by a stopwatch (the
wall-clock figures are in the README: ~0.22 s for ``tadpole get`` against a local
cluster, was ~0.27 s)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Server-side packages and the client's asyncio flavour (asyncio + grpc.aio plumbing the
# blocking client never uses); node.main pulls Raft, pysyncobj and the stores.
NOT_FOR_A_CLIENT_COMMAND = (
    "node.main",
    "node.server",
    "node.config",
    "node.replication",
    "node.api",
    "consensus",
    "pysyncobj",
    "sqlite3",
    "node.client._async",
    "node.ledger",
    "sqlalchemy",
    "alembic",
    "rich",
)


def _loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", NOT_FOR_A_CLIENT_COMMAND)
def test_importing_the_cli_loads_nothing_of_the_server(module: str) -> None:
    loaded = _loaded_after("import node.cli")
    assert not any(m == module or m.startswith(module + ".") for m in loaded), module


def test_the_node_command_and_the_async_client_still_load_on_demand() -> None:
    loaded = _loaded_after(
        "import node.cli\n"
        "from node.client import AsyncClient\n"
        "node.cli.cli.get_command(None, 'node')"
    )
    assert {"node.main", "node.client._async"} <= loaded
