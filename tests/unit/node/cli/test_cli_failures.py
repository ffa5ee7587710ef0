"""No input makes the CLI print a traceback: every failure is one ``error: ...`` line with
the documented exit code (1 remote/runtime, 2 usage)."""

from __future__ import annotations

import string

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.cli.app import cli

# Port 1 on loopback: connections are refused at once, so remote calls fail fast.
DEAD = ["--endpoints", "127.0.0.1:1", "--timeout", "0.05"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, [*DEAD, *args])


def assert_one_error_line(result: Result, code: int) -> None:
    assert "Traceback" not in result.output + result.stderr
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_a_key_that_is_not_utf8_is_a_usage_error() -> None:
    """Issue 17, defect 5: ``tadpole get $'\\xff\\xfe'`` printed a UnicodeEncodeError."""
    result = invoke("get", "\udcff\udcfe")
    assert_one_error_line(result, 2)
    assert "not valid UTF-8" in result.stderr


def test_a_limit_beyond_int64_is_a_usage_error() -> None:
    """Issue 17, defect 5: ``--limit 99999999999999999999`` printed a ValueError."""
    result = invoke("range", "p/", "--limit", "99999999999999999999")
    assert_one_error_line(result, 2)
    assert "--limit" in result.stderr


def test_an_unknown_option_is_one_error_line() -> None:
    result = invoke("get", "k", "--no-such-option")
    assert_one_error_line(result, 2)


def test_a_remote_failure_is_one_error_line() -> None:
    assert_one_error_line(invoke("get", "k"), 1)


# ``watch`` is left out: it is built to outlast an outage (40 reconnects with back-off,
# ~25 s against a dead endpoint); its argument parsing is the same code as the others'.
COMMANDS = [
    ["get"],
    ["put"],
    ["del"],
    ["range"],
    ["cas"],
    ["members"],
    ["status"],
    ["leader", "transfer"],
    ["tier", "add"],
    ["tier", "get"],
    ["tier", "scan"],
    ["tier", "put"],
    ["tier", "append"],
    ["tier", "map-set"],
    ["mesh", "create"],
    ["mesh", "get"],
    ["mesh", "of"],
    ["agent", "get"],
    ["agent", "patch"],
]
WORDS = st.one_of(
    st.text(alphabet=string.printable, max_size=12),
    st.text(max_size=8),  # any Unicode, surrogates included
    st.sampled_from(
        [
            "--limit",
            "--prefix",
            "--start-revision",
            "--expect-revision",
            "--expect-value",
            "--consistency",
            "--all-keys",
            "-3",
            "0",
            "99999999999999999999",
            "-99999999999999999999",
            "{}",
            "{bad json",
            "[]",
            "population",
            "metrics",
            "system",
            "",
            "\udcff",
        ]
    ),
)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(command=st.sampled_from(COMMANDS), args=st.lists(WORDS, max_size=5))
def test_no_arguments_make_a_traceback(command: list[str], args: list[str]) -> None:
    result = invoke(*command, *args)
    assert "Traceback" not in result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (0, 1, 2)
    if result.exit_code != 0:
        lines = [ln for ln in result.stderr.split("\n") if ln]
        assert lines, "a failure must say why"
        assert lines[-1].startswith("error: ") or "Usage:" in result.stderr, result.stderr


@pytest.mark.parametrize("args", [[], ["tier"], ["mesh"]])
def test_a_group_without_a_command_shows_help_and_exits_2(args: list[str]) -> None:
    result = invoke(*args)
    assert "Traceback" not in result.output + result.stderr
    assert result.exit_code == 2
