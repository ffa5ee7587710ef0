"""Project-level contracts: import layers and cycles, generated code, module names.

The layer contracts are import-linter's (``[tool.importlinter]`` in pyproject.toml),
the cycle check is ``tests/import_contract.py``; both run on the real tree here and,
to show they can fail, on a throwaway copy with a violation planted in it.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

from tests import import_contract

ROOT = pathlib.Path(__file__).resolve().parents[2]
LINT_IMPORTS = pathlib.Path(sys.executable).with_name("lint-imports")


def lint_imports(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run in ``root`` (it reads the contracts from root/pyproject.toml)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def cycle_check(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """``tests/import_contract.py root`` in a fresh process, so that the packages under
    ``root`` are the ones found (this process has already imported the real ones)."""
    script = ROOT / "tests" / "import_contract.py"
    return subprocess.run(
        [sys.executable, str(script), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A throwaway copy of the four packages and the contracts, to plant violations in."""
    for package in import_contract.PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def append(path: pathlib.Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text)


def test_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_cycles() -> None:
    assert import_contract.cycles(import_contract.import_graph()) == []


def test_grpc_in_node_tiers_breaks_the_pure_core_contract(tree: pathlib.Path) -> None:
    append(tree / "node" / "tiers" / "validation.py", "import grpc  # noqa: F401\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Pure cores import no grpc, asyncio, pysyncobj, sqlite3, aiohttp BROKEN" in (
        result.stdout
    )
    assert "node.tiers is not allowed to import grpc" in result.stdout
    assert "node.tiers.validation -> grpc" in result.stdout


def line_of(path: pathlib.Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize(
    "planted",
    [
        "def _late() -> None:\n    from gossip import swim  # noqa: F401\n",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from gossip import swim\n",
    ],
    ids=["function-level", "type-checking"],
)
def test_a_planted_cycle_is_caught(tree: pathlib.Path, planted: str) -> None:
    """gossip.swim imports gossip.suspicion; the reverse import closes a cycle even
    when it is inside a function or only for the type checker."""
    suspicion, swim = tree / "gossip" / "suspicion.py", tree / "gossip" / "swim.py"
    append(suspicion, planted)
    result = cycle_check(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"import cycle: gossip.suspicion (l.{line_of(suspicion, 'from gossip import swim')}) "
        f"-> gossip.swim (l.{line_of(swim, 'from gossip.suspicion import')}) -> gossip.suspicion",
        "import cycles: 1",
    ]


def test_the_copied_tree_is_clean_before_anything_is_planted(tree: pathlib.Path) -> None:
    """The failures above come from the planted lines, not from the copy itself."""
    assert lint_imports(tree).returncode == 0
    result = cycle_check(tree)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == ["import cycles: none"]


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
