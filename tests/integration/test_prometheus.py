"""The alert rules against real tools: promtool checks them (and the shipped
prometheus.yml) and unit-tests them, and a real
Prometheus (Debian's) scrapes a real three-node cluster with them loaded — quiet while
every node is up, ``TadpoleNodeDown`` firing for the node that was killed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from node.dev.cluster import LocalCluster, prometheus_config
from node.tls import TlsFiles
from tests.integration.conftest import free_base_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "tests" / "prometheus" / "rules_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tadpole.json"
METRIC = re.compile(r"\b(?:tadpole_[a-z_]+|process_[a-z_]+)\b")

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool not installed (make system-deps)",
)


@needs_prometheus
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    for what, path in (("rules", RULES), ("config", RULES.parent / "prometheus.yml")):
        checked = subprocess.run(
            ["promtool", "check", what, str(path)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", str(RULES_TEST)], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _firing(api: str, alertname: str) -> list[dict[str, Any]]:
    alerts = _get(f"{api}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def _dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def _check_dashboard(api: str, metrics_address: str, tls: TlsFiles) -> None:
    """Every panel's query parses and evaluates in the real Prometheus, and every
    metric it names is one the nodes export (or a recording rule of rules.yml)."""
    with urllib.request.urlopen(
        f"https://{metrics_address}/metrics", context=tls.client_context(), timeout=5
    ) as resp:
        exported = set(METRIC.findall(resp.read().decode()))
    queries = _dashboard_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        answer = _get(url)
        assert answer["status"] == "success", (title, expr, answer)
        unknown = set(METRIC.findall(expr)) - exported
        assert not unknown, f"panel {title!r} uses metrics no node exports: {unknown}"


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except OSError:  # Prometheus not listening yet
            got = None
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@needs_prometheus
def test_a_real_prometheus_fires_node_down_for_the_killed_node(tmp_path: Path) -> None:
    base = free_base_port(3)
    metrics_base = free_base_port(3)
    while abs(metrics_base - base) < 10:
        metrics_base = free_base_port(3)
    # `make cluster` and `make monitor`: mutual TLS, and the configuration made for the
    # cluster (the CLI's certificate, the shipped rules with every `for:` shortened to
    # 2 s so the test does not sit out the production hold times; promtool's unit
    # tests cover those).
    cluster = LocalCluster(
        str(tmp_path / "cluster"), ["n1", "n2", "n3"], base, metrics_base_port=metrics_base,
        tls=True,
    )  # fmt: skip
    cluster.prepare()
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "\n".join(
            "        for: 2s" if line.strip().startswith("for:") else line
            for line in RULES.read_text().splitlines()
        )
    )
    port = free_base_port(1) + 1
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(cluster.root, str(rules), interval="1s"))
    checked = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        cluster.start()
        cluster.wait_leader(30, all_up=True)

        def all_up() -> bool:
            result = _get(f"{api}/api/v1/query?query=up")["data"]["result"]
            return len(result) == 3 and all(r["value"][1] == "1" for r in result)

        _wait(all_up, 60, "Prometheus to scrape all three nodes")
        tls = cluster.client_tls()
        assert tls is not None
        _check_dashboard(api, cluster.metrics_address(cluster.node_ids[0]) or "", tls)
        time.sleep(4)  # two rule evaluations past the hold time: nothing may fire
        assert _firing(api, "TadpoleNodeDown") == []
        assert _firing(api, "TadpoleNoLeader") == []
        victim = next(n for n in cluster.node_ids if n != cluster.wait_leader())
        cluster.kill(victim)
        firing = _wait(lambda: _firing(api, "TadpoleNodeDown"), 60, "TadpoleNodeDown to fire")
        assert [a["labels"]["instance"] for a in firing] == [cluster.metrics_address(victim)]
        assert _firing(api, "TadpoleNoLeader") == []  # two of three still elect
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(10)
        except subprocess.TimeoutExpired:
            prometheus.kill()
        log.close()
        cluster.stop()
