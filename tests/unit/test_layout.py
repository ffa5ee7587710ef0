"""Project-level contracts: import direction, generated code, module names."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests import import_contract

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dependency_direction_is_kept() -> None:
    assert import_contract.violations() == []


def test_import_contract_catches_a_violation(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "crdt"
    bad.mkdir()
    (bad / "oops.py").write_text("from node.config import NodeConfig\n")
    for pkg in ("gossip", "consensus", "node"):
        (tmp_path / pkg).mkdir()
    monkeypatch.setattr(import_contract, "ROOT", tmp_path)
    assert import_contract.violations() == ["crdt/oops.py:1: crdt must not import node.config"]


def test_generated_grpc_code_is_fresh(tmp_path: pathlib.Path) -> None:
    """`make proto` output is committed; regenerate it and compare byte for byte."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Inode/pb=proto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            "proto/tadpole.proto",
        ],
        cwd=ROOT,
        check=True,
    )
    for name in ("tadpole_pb2.py", "tadpole_pb2.pyi", "tadpole_pb2_grpc.py"):
        fresh = (tmp_path / "node" / "pb" / name).read_bytes()
        committed = (ROOT / "node" / "pb" / name).read_bytes()
        assert fresh == committed, f"node/pb/{name} is stale: run `make proto` and commit"


def test_no_installed_top_level_module_is_named_proto() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.split("*")[0].rstrip(".") == "proto" for pattern in include)
    assert not (ROOT / "proto" / "__init__.py").exists()
