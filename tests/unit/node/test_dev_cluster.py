"""What `make cluster` writes for its clients: the certificate bundles for curl and a
browser, and the Prometheus configuration `make monitor` runs (no node started); the
environment a node is started with; and a script that started nodes stopping them on
SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys

from cryptography.hazmat.primitives.serialization import pkcs12

from node.dev.cluster import LocalCluster, prometheus_config


def test_a_tls_cluster_leaves_bundles_for_curl_and_a_browser(tmp_path: pathlib.Path) -> None:
    cluster = LocalCluster(
        str(tmp_path / "c"), ["n1", "n2"], 7100, metrics_base_port=7200, tls=True
    )
    cluster.prepare()
    tls = pathlib.Path(cluster.tls_dir)
    curlrc = (tls / "curlrc").read_text().splitlines()
    assert curlrc == [
        f'cacert = "{tls.resolve() / "ca.pem"}"',
        f'cert = "{tls.resolve() / "cli.pem"}"',
        f'key = "{tls.resolve() / "cli.key"}"',
    ]
    bundle = pkcs12.load_pkcs12((tls / "cli.p12").read_bytes(), None)
    assert bundle.cert is not None and bundle.key is not None
    assert bundle.cert.friendly_name == b"client/cli"
    for name in ("curlrc", "cli.p12", "cli.key"):
        assert stat.S_IMODE(os.stat(tls / name).st_mode) == 0o600, name
    doc = json.loads((tmp_path / "c" / "cluster.json").read_text())
    assert doc["http"] == {"n1": "127.0.0.1:7201", "n2": "127.0.0.1:7202"} and doc["tls"]


def test_the_prometheus_configuration_scrapes_this_cluster(tmp_path: pathlib.Path) -> None:
    secure = LocalCluster(str(tmp_path / "s"), ["n1"], 7100, metrics_base_port=7300, tls=True)
    secure.prepare()
    config = prometheus_config(secure.root, "deploy/prometheus/rules.yml")
    assert '- targets: ["127.0.0.1:7301"]' in config
    assert "scheme: https" in config
    assert f'cert_file: "{os.path.abspath(secure.tls_dir)}/cli.pem"' in config
    assert f'- "{os.path.abspath("deploy/prometheus/rules.yml")}"' in config
    # plaintext: what `make cluster TLS=0` gets
    plain = LocalCluster(str(tmp_path / "p"), ["n1", "n2"], 7100, metrics_base_port=7400, tls=False)
    plain.prepare()
    config = prometheus_config(plain.root, "rules.yml", interval="1s")
    assert "scheme" not in config and "tls_config" not in config
    assert "scrape_interval: 1s" in config
    assert '- targets: ["127.0.0.1:7401", "127.0.0.1:7402"]' in config


class _Probe(LocalCluster):
    """A "node" that prints two variables of its environment and exits."""

    def command(self, node_id: str) -> list[str]:
        show = "import os; print(os.environ.get('TADPOLE_PROBE'), os.environ.get('PATH') == "
        return [sys.executable, "-c", show + repr(os.environ.get("PATH")) + ")"]


def test_a_node_gets_the_clusters_environment_on_top_of_its_starters(
    tmp_path: pathlib.Path,
) -> None:
    given = _Probe(str(tmp_path / "g"), ["n1"], 7100, tls=False, env={"TADPOLE_PROBE": "0.005"})
    plain = _Probe(str(tmp_path / "p"), ["n1"], 7100, tls=False)
    for cluster in (given, plain):
        cluster.start_node("n1")
        assert cluster.procs["n1"].wait(timeout=30) == 0
    assert pathlib.Path(given.log_file("n1")).read_text() == "0.005 True\n"
    assert pathlib.Path(plain.log_file("n1")).read_text() == "None True\n"


_SCRIPT = """
import sys, time
from node.dev.cluster import exit_on_sigterm
if sys.argv[1] == "on":
    exit_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    open(sys.argv[2], "w").write("stopped its nodes")
"""


def test_sigterm_runs_a_scripts_finally_blocks(tmp_path: pathlib.Path) -> None:
    """A bench killed with SIGTERM still reaches the ``finally`` that stops its nodes
    (Python's default handler ends the process without it, as the second run shows)."""
    outcomes = {}
    for mode in ("on", "off"):
        marker = tmp_path / f"finally-{mode}"
        proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, mode, str(marker)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        outcomes[mode] = (proc.wait(timeout=30), marker.exists())
        proc.stdout.close()
    assert outcomes == {"on": (128 + signal.SIGTERM, True), "off": (-signal.SIGTERM, False)}
