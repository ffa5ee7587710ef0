"""The deployment files are checked by the tools their platforms use, offline: the
Compose file against the compose-spec schema, the Kubernetes manifests against the
API schemas (strict), the systemd unit by ``systemd-analyze verify``. Each check is
also shown to reject a broken copy, and every ``tadpole node`` flag the files use must
be one the node accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yml"
KUBERNETES = DEPLOY / "kubernetes" / "tadpole.yaml"
UNIT = DEPLOY / "systemd" / "tadpole.service"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True)


def _compose_ok(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)


def _kubernetes_ok(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(BIN / "kubernetes-validate", "--strict", path)


def test_the_compose_file_follows_the_compose_spec(tmp_path: Path) -> None:
    checked = _compose_ok(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "compose.yml"
    broken.write_text(COMPOSE.read_text().replace("services:", "servicez:", 1))
    assert _compose_ok(broken).returncode != 0


def test_the_kubernetes_manifests_validate_strictly(tmp_path: Path) -> None:
    checked = _kubernetes_ok(KUBERNETES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc}
    assert kinds == {"Service", "StatefulSet", "PodDisruptionBudget"}
    broken = tmp_path / "tadpole.yaml"
    broken.write_text(KUBERNETES.read_text().replace("  replicas: 3", "  replica: 3", 1))
    assert _kubernetes_ok(broken).returncode != 0


def test_the_pod_disruption_budget_keeps_a_quorum() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d}
    replicas = docs["StatefulSet"]["spec"]["replicas"]
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == replicas // 2 + 1


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="make system-deps")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this checkout's tadpole.
    unit = tmp_path / "tadpole.service"
    text = UNIT.read_text()
    assert "ExecStart=/opt/tadpole/venv/bin/tadpole node" in text
    unit.write_text(text.replace("/opt/tadpole/venv/bin/tadpole", str(BIN / "tadpole")))
    checked = _run("systemd-analyze", "verify", unit)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unit.write_text(text.replace("/opt/tadpole/venv/bin/tadpole", "/nonexistent/tadpole"))
    assert _run("systemd-analyze", "verify", unit).returncode != 0


def test_the_dockerfile_copies_what_exists_and_runs_tadpole_node() -> None:
    text = DOCKERFILE.read_text()
    sources = [
        line.split()[1:-1]
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
    ]
    assert sources
    for paths in sources:
        for path in paths:
            assert (ROOT / path).exists(), path
    assert 'ENTRYPOINT ["tadpole", "node"]' in text


def test_every_node_flag_the_files_use_is_one_the_node_accepts() -> None:
    from node.cli import cli

    usage = CliRunner().invoke(cli, ["node", "--help"]).output
    accepted = set(re.findall(r"--[a-z][a-z-]+", usage))
    used: set[str] = set()
    compose = yaml.safe_load(COMPOSE.read_text())
    for service in compose["services"].values():
        used.update(a for a in service["command"] if a.startswith("--"))
    for doc in yaml.safe_load_all(KUBERNETES.read_text()):
        if doc and doc["kind"] == "StatefulSet":
            script = doc["spec"]["template"]["spec"]["containers"][0]["args"][0]
            used.update(re.findall(r"--[a-z][a-z-]+", script))
    assert used and used <= accepted, used - accepted
