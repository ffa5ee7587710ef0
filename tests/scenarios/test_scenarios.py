"""Whole-cluster replication scenarios with golden output (etcd-io/raft ``testdata`` style).

Each ``testdata/*.txt`` is a script of commands (``cluster.py`` lists them), each
followed by ``----`` and the output it must produce, then a blank line::

    # comment lines are kept as they are
    update population/job_event_log/j-1 counter_add 5
    ----
    n1: ok, coordinator n1, acks n1, n2
      pncounter 5

The test runs the commands in order on a fresh in-memory cluster and compares the whole
file with what it would be with the actual outputs. To accept new output after a
deliberate change, regenerate and review the diff::

    .venv/bin/python -m pytest tests/scenarios --rewrite     # or SCENARIOS_REWRITE=1

``expect-*`` commands check their property in code as well, so a rewrite can never
bless a broken cluster. Nodes keep their state in :class:`MemoryStore`;
``SCENARIOS_STORE=sqlite`` runs the same scripts on the real ``TierStore`` (in
``tmp_path``) and must give the same output.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.replication.store import ReplicaStore, TierStore
from tests.scenarios.cluster import Cluster, memory_stores

TESTDATA = Path(__file__).with_name("testdata")
SEPARATOR = "----"


@dataclass
class Step:
    preamble: list[str]  # comment and blank lines before the command, kept verbatim
    command: str
    expected: list[str]


def parse(text: str, name: str) -> tuple[list[Step], list[str]]:
    """The steps of a script, and the lines after the last one."""
    lines = text.splitlines()
    steps: list[Step] = []
    preamble: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            preamble.append(line)
            i += 1
            continue
        command = line
        i += 1
        expected: list[str] = []
        if i < len(lines) and lines[i] == SEPARATOR:
            i += 1
            while i < len(lines) and lines[i].strip():
                expected.append(lines[i])
                i += 1
            i += 1  # the blank line that ends the step
        elif i < len(lines) and lines[i].strip():
            raise ValueError(f"{name}: {command!r} is not followed by {SEPARATOR!r}")
        else:
            i += 1  # a new command with no output yet: its blank line ends the step
        steps.append(Step(preamble, command, expected))
        preamble = []
    return steps, preamble


def render(steps: list[Step], outputs: list[str], tail: list[str]) -> str:
    out: list[str] = []
    for step, output in zip(steps, outputs, strict=True):
        out += step.preamble
        out += [step.command, SEPARATOR, *output.splitlines(), ""]
    out += tail
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n"


def _rewrite(config: pytest.Config) -> bool:
    return bool(config.getoption("rewrite", default=False)) or os.environ.get(
        "SCENARIOS_REWRITE", ""
    ) not in ("", "0")


SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
async def test_scenario(path: Path, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    text = path.read_text()
    steps, tail = parse(text, path.name)
    cluster = Cluster(memory_stores)
    if os.environ.get("SCENARIOS_STORE") == "sqlite":  # the same output on the real store

        def sqlite_stores(node_id: str, clock_ns: Callable[[], int]) -> ReplicaStore:
            return TierStore(str(tmp_path / f"{node_id}.db"), clock_ns=clock_ns)

        cluster = Cluster(sqlite_stores)
    outputs = []
    try:
        for step in steps:
            output = await cluster.run(step.command)
            assert all(line.strip() for line in output.splitlines()), "blank line in output"
            outputs.append(output)
    finally:
        await cluster.close()
    actual = render(steps, outputs, tail)
    if _rewrite(request.config):
        if actual != text:
            path.write_text(actual)
        return
    if actual != text:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"{path.name} (golden)",
                f"{path.name} (actual)",
            )
        )
        pytest.fail(f"{path.name} differs from its golden output (--rewrite to accept):\n{diff}")


def test_the_format_round_trips() -> None:
    text = "# c\n\nstart n1\n----\nmembers n1\n\n# tail\n"
    steps, tail = parse(text, "t")
    assert [(s.preamble, s.command, s.expected) for s in steps] == [
        (["# c", ""], "start n1", ["members n1"])
    ]
    assert render(steps, ["members n1"], tail) == text
    with pytest.raises(ValueError):
        parse("start n1\nkill n1\n", "t")
    # a command written without output yet gets its section on --rewrite
    steps, tail = parse("start n1\n\nkill n1\n", "t")
    assert render(steps, ["a", "b"], tail) == "start n1\n----\na\n\nkill n1\n----\nb\n"
