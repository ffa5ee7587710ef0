"""Joining members' copies, the coverage rule, and the backup commands' failures: one
``error:`` line with the documented exit code, and nothing written."""

from __future__ import annotations

import os
import pathlib

import pytest
from click.testing import CliRunner, Result

from crdt import ORSet, PNCounter, decode, encode
from node.backup.archive import BackupError
from node.backup.collect import join_copies, missing_allowed
from node.backup.layout import ARCHIVE
from node.cli import cli
from tests.unit.node.cli.test_cli_failures import DEAD, assert_one_error_line


def test_copies_are_joined_not_picked() -> None:
    a = PNCounter().increment("n1", 5)
    b = a.merge(PNCounter().increment("n2", 7))  # a copy that saw more
    c = PNCounter().increment("n3", 1)  # a hint another member kept
    copies = [[("k", encode(a))], [("k", encode(b))], [("k", encode(c)), ("only-here", encode(a))]]
    joined = dict(join_copies("population", copies))
    assert decode(joined["k"]).value() == 13  # 5 + 7 + 1, nothing counted twice
    assert decode(joined["only-here"]).value() == 5
    assert list(joined) == ["k", "only-here"]


def test_copies_of_different_types_or_archives_that_differ_are_refused() -> None:
    with pytest.raises(BackupError, match="population/k: copies can't be joined"):
        join_copies("population", [[("k", encode(PNCounter()))], [("k", encode(ORSet()))]])
    with pytest.raises(
        BackupError, match=r"archive a\.jsonl\.gz: two members hold different bytes"
    ):
        join_copies(ARCHIVE, [[("a.jsonl.gz", b"one")], [("a.jsonl.gz", b"two")]])
    assert join_copies(ARCHIVE, [[("a.jsonl.gz", b"one")], [("a.jsonl.gz", b"one")]]) == [
        ("a.jsonl.gz", b"one")
    ]


def test_the_coverage_rule_is_write_quorum_minus_one() -> None:
    assert missing_allowed("population") == 1
    assert missing_allowed("mesh") == 1
    assert missing_allowed("agent") == 0
    assert missing_allowed("metrics") == 0
    assert missing_allowed(ARCHIVE) == 1


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, [*DEAD, *args])


def test_backup_commands_fail_with_one_line_and_write_nothing(tmp_path: pathlib.Path) -> None:
    repo = str(tmp_path / "repo")
    cases = [
        (("backup", "create", "--repo", repo), 2, "no recipient"),
        (("backup", "create", "--repo", repo, "-r", "age1bad"), 2, "not a valid key"),
        (("backup", "create", "--repo", repo, "-r", "hello"), 2, "expected an age public key"),
        (("backup", "list", "--repo", repo), 1, "not a backup repository"),
        (("backup", "verify", "--repo", repo), 1, "not a backup repository"),
        (("backup", "restore", "--repo", repo, "latest", "--node", "n1=x"), 2, "--identity"),
        (("backup", "prune", "--repo", repo), 1, "not a backup repository"),
    ]
    for args, code, text in cases:
        result = run(*args)
        assert_one_error_line(result, code)
        assert text in result.stderr, (args, result.stderr)
    assert not os.path.exists(repo)


def test_restore_names_bad_node_arguments(tmp_path: pathlib.Path) -> None:
    key = tmp_path / "key"
    assert run("backup", "keygen", "--out", str(key)).exit_code == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    again = run("backup", "keygen", "--out", str(key))
    assert_one_error_line(again, 2)
    assert "already exists" in again.stderr
    base = ("backup", "restore", "--repo", str(tmp_path), "latest", "-i", str(key))
    for nodes, text in (
        (("--node", "n1"), "expected ID=DATA_DIR"),
        (("--node", "n1=a", "--node", "n1=b"), "named twice"),
        (("--node", "n1=a", "--node", "n2=a"), "share a data directory"),
    ):
        result = run(*base, *nodes)
        assert_one_error_line(result, 2)
        assert text in result.stderr
    for extra, text in (
        (("--to-revision", "5", "--to-time", "2026-12-05T04:00:00Z"), "not both"),
        (("--to-time", "yesterday"), "not an ISO 8601 time"),
        (("--to-time", "2026-12-05T04:00:00"), "give a time zone"),
    ):
        result = run(*base, "--node", "n1=a", *extra)
        assert_one_error_line(result, 2)
        assert text in result.stderr
    bad_key = tmp_path / "bad"
    bad_key.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    result = run("backup", "verify", "--repo", str(tmp_path), "-i", str(bad_key))
    assert_one_error_line(result, 2)
    assert "not an age secret key" in result.stderr and "NOTAKEY" not in result.stderr
