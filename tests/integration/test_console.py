"""The web console (/ui) in a real headless Chromium, against a real cluster."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.dev.cluster import LocalCluster
from tests.integration.conftest import start_http_cluster

pytestmark = pytest.mark.integration

# CONSOLE_SCREENSHOT=docs/img/console.png refreshes the picture in the docs.
SCREENSHOT_ENV = "CONSOLE_SCREENSHOT"


def _browser(trusted: list[str]) -> object:
    """Headless Chromium that accepts the servers' certificates whose public keys are
    ``trusted`` (base64 SHA-256 of each SubjectPublicKeyInfo)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = "chromium and chromedriver are needed: make system-deps"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        "--ignore-certificate-errors-spki-list=" + ",".join(trusted),
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def spki_hashes(cluster: LocalCluster) -> list[str]:
    """What Chromium's --ignore-certificate-errors-spki-list takes, for every node."""
    out = []
    for node_id in cluster.node_ids:
        pem = Path(cluster.tls_dir, f"{node_id}.pem").read_bytes()
        key = x509.load_pem_x509_certificate(pem).public_key()
        der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        spki = key.public_bytes(*der)
        out.append(base64.b64encode(hashlib.sha256(spki).digest()).decode())
    return out


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    # HTTPS, but the browser presents no certificate (headless Chromium takes one only
    # from an NSS database, made with tools the tests do not install): HTTP clients are
    # let in without one, as for a browser with a token (test_login.py); gRPC still
    # requires one.
    cluster = start_http_cluster(str(tmp_path), ["--set", "client_cert_auth=false"])
    try:
        yield cluster
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_the_console_shows_members_leader_changes_and_a_killed_node(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = _browser(spki_hashes(cluster))
    try:
        leader = cluster.wait_leader(30, all_up=True)
        watcher = next(n for n in cluster.node_ids if n != leader)
        driver.get(cluster.http_url(watcher, "/ui"))  # type: ignore[attr-defined]

        def rows() -> dict[str, str]:
            # Read the table in one script: the page rebuilds it every 2 s.
            return driver.execute_script(  # type: ignore[attr-defined,no-any-return]
                "const out = {};"
                "for (const r of document.querySelectorAll('#members tbody tr'))"
                " out[r.dataset.memberId] = (r.classList.contains('leader') ? 'LEADER ' : '')"
                " + r.innerText;"
                "return out;"
            )

        wait_for(lambda: len(rows()) == 3, 15, "three members listed")
        wait_for(lambda: rows().get(leader, "").startswith("LEADER"), 15, "the leader marked")
        assert [m for m, text in rows().items() if text.startswith("LEADER")] == [leader]
        summary = driver.find_element(By.ID, "summary").text  # type: ignore[attr-defined]
        assert f"leader: {leader}" in summary and "3 of 3 members alive" in summary
        # A write shows up in the live change list (SSE) and in the key browser.
        import json
        import urllib.request

        request = urllib.request.Request(
            cluster.http_url(leader, "/state/system"),
            data=json.dumps({"config/console": {"ok": True}}).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
            method="PATCH",
        )
        with urllib.request.urlopen(request, context=cluster.http_context(), timeout=10) as resp:
            assert resp.status == 200
        wait_for(
            lambda: "config/console" in driver.find_element(By.ID, "events").text,
            10,  # type: ignore[attr-defined]
            "the change in the live list",
        )
        driver.find_element(By.ID, "prefix").send_keys("config/")  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, "#browse button[type=submit]").click()  # type: ignore[attr-defined]
        wait_for(
            lambda: '{"ok":true}' in driver.find_element(By.ID, "keys").text,
            10,  # type: ignore[attr-defined]
            "the key in the browser",
        )
        tiers = driver.find_element(By.ID, "tiers").text  # type: ignore[attr-defined]
        assert all(t in tiers for t in ("population", "agent", "mesh", "metrics"))
        screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "console.png")
        assert driver.save_screenshot(str(screenshot))  # type: ignore[attr-defined]
        assert screenshot.stat().st_size > 10_000
        # Kill a node that is not the one serving the page: the console says so.
        victim = next(n for n in cluster.node_ids if n not in (watcher,))
        cluster.kill(victim)
        wait_for(lambda: "unreachable" in rows().get(victim, ""), 10, f"{victim} shown down")
        wait_for(
            lambda: "2 of 3 members alive" in driver.find_element(By.ID, "summary").text,  # type: ignore[attr-defined]
            10,
            "the summary updated",
        )
    finally:
        driver.quit()  # type: ignore[attr-defined]
