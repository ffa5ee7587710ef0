"""Password logins on a real TLS cluster: a user without a certificate of its own logs in
(gRPC, HTTP, the CLI) for a token, the roles treat the token's calls as that user's on
both ports, a wrong password or an expired or forged token is refused and audited, and
neither the password nor a token ever reaches a log."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from node.client import Client
from node.client.errors import PermissionDenied, Unauthenticated
from node.dev.cluster import LocalCluster
from node.tls import TlsFiles
from tests.integration.conftest import start_http_cluster
from tests.integration.test_roles import creds
from tests.support.https import https

pytestmark = pytest.mark.integration

PASSWORD = "quartz-otter-41-lantern"
TTL_S = 4


def cli(cluster: LocalCluster, *args: str, stdin: str = "", token: bool = True) -> Any:
    tls = cluster.client_tls()
    assert tls is not None
    return subprocess.run(
        [sys.executable, "-m", "node.cli", "--endpoints", cluster.endpoints,
         "--ca-file", tls.ca, "--cert-file", tls.cert, "--key-file", tls.key,
         *(["--token-file", cluster.token_file] if token else []), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # HTTP clients need no certificate here (a browser, curl): a token names them.
    extra = ["--set", "client_cert_auth=false", "--set", f"auth_token_ttl_s={TTL_S}"]
    cluster = start_http_cluster(str(tmp_path_factory.mktemp("login")), extra, tls=True)
    try:
        for args, stdin in (
            (("auth", "role", "add", "reader", "read:system:/app/"), ""),
            (("auth", "user", "add", "erin", "reader"), ""),
            (("auth", "password", "erin", "--password-stdin"), PASSWORD + "\n"),
            (("put", "/app/x", "v1"), ""),
            (("auth", "enable"), ""),
        ):
            done = cli(cluster, *args, stdin=stdin)
            assert done.returncode == 0, done.stdout + done.stderr
        shown = cli(cluster, "auth", "show").stdout
        assert "user erin: reader (may log in with a password)" in shown
        assert PASSWORD not in shown and "scrypt" not in shown
        time.sleep(1.5)  # every node reads the policy within a second
        yield cluster
    finally:
        for node_id in cluster.node_ids:
            cluster.kill(node_id)


def _client(cluster: LocalCluster, token: str | None = None) -> Client:
    # the CLI's certificate opens the TLS connection; the token says who calls
    return Client(cluster.endpoints.split(","), credentials=creds(cluster, "cli"), token=token)


def test_a_token_calls_as_its_user_on_grpc(cluster: LocalCluster) -> None:
    with _client(cluster) as anyone:
        token, expires = anyone.authenticate("erin", PASSWORD)
        assert time.time() < expires <= time.time() + TTL_S + 1
        with pytest.raises(PermissionDenied, match="cli lacks read on system"):
            anyone.get("/app/x")  # the certificate alone names a user without roles
    with _client(cluster, token) as erin:
        kv = erin.get("/app/x")
        assert kv is not None and kv.value == b"v1"
        with pytest.raises(PermissionDenied, match="erin lacks write on system '/app/x'"):
            erin.put("/app/x", "v2")
        with pytest.raises(PermissionDenied, match="erin lacks read on system '/tadpole/auth/"):
            erin.get("/tadpole/auth/policy")  # the password hashes are root's alone


def test_a_token_watches_as_its_user(cluster: LocalCluster) -> None:
    """A stream names its caller by the token as a call does (it was sent without it, so
    a user with no certificate of its own could not watch what it may read)."""
    with _client(cluster) as anyone:
        token, _ = anyone.authenticate("erin", PASSWORD)
    with _client(cluster, token) as erin:
        watch = erin.watch("/app/x", start_revision=1)
        try:
            event = next(watch)
            assert event.kv.key == "/app/x" and event.kv.value == b"v1"
        finally:
            watch.close()
        denied = erin.watch("/tadpole/auth/policy", start_revision=1)
        try:
            with pytest.raises(PermissionDenied, match="erin lacks read"):
                next(denied)
        finally:
            denied.close()


def test_a_wrong_password_gets_nothing_and_is_audited(cluster: LocalCluster) -> None:
    with _client(cluster) as anyone:
        for user, password in (("erin", PASSWORD + "x"), ("mallory", PASSWORD)):
            with pytest.raises(Unauthenticated, match="wrong user or password"):
                anyone.authenticate(user, password)
    # Refusals are queued for the audit writer (not waited on): give it a moment.
    deadline = time.monotonic() + 10
    while True:
        audit = [
            json.loads(line)
            for n in cluster.node_ids
            for line in pathlib.Path(cluster.data_dir(n), "audit.log").read_text().splitlines()
        ]
        denied = {r["action"] for r in audit if r["result"] == "denied"}
        if {"login erin", "login mallory"} <= denied or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {"login erin", "login mallory"} <= denied, audit
    assert not any(PASSWORD in json.dumps(r) for r in audit)


def test_an_expired_or_forged_token_is_refused_on_both_ports(cluster: LocalCluster) -> None:
    with _client(cluster) as anyone:
        token, _ = anyone.authenticate("erin", PASSWORD)
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    with _client(cluster, forged) as c, pytest.raises(Unauthenticated, match="not valid here"):
        c.get("/app/x")
    time.sleep(TTL_S + 1)
    with _client(cluster, token) as c, pytest.raises(Unauthenticated, match="expired"):
        c.get("/app/x")
    status, body, headers = _http(cluster, "GET", "/state/system?prefix=/app/", token=token)
    assert status == 401 and "expired" in body["detail"], body
    assert headers["WWW-Authenticate"].startswith("Bearer")


def _http(
    cluster: LocalCluster, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any, Any]:
    tls = cluster.client_tls()
    assert tls is not None
    ca_only = TlsFiles(tls.ca, "", "").client_context()  # no client certificate
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return https(cluster.metrics_address("n1") or "", method, path, ca_only, body, headers)


def test_http_clients_without_a_certificate_log_in_for_a_token(cluster: LocalCluster) -> None:
    status, body, _ = _http(cluster, "GET", "/state/system?prefix=/app/")
    assert status == 403 and "has no roles" in body["detail"], body
    status, body, _ = _http(
        cluster, "POST", "/api/v1/auth/token", {"user": "erin", "password": "no"}
    )
    assert status == 401 and body["detail"] == "wrong user or password", body
    status, body, headers = _http(
        cluster, "POST", "/api/v1/auth/token", {"user": "erin", "password": PASSWORD}
    )
    assert status == 200 and headers["Cache-Control"] == "no-store", body
    token = body["token"]
    status, body, _ = _http(cluster, "GET", "/state/system?prefix=/app/", token=token)
    assert status == 200 and body == {"/app/x": {"$base64": "djE="}}, body
    status, body, _ = _http(cluster, "PATCH", "/state/system", {"/app/x": "v2"}, token=token)
    assert status == 403 and "erin lacks write on system '/app/x'" in body["detail"], body
    status, body, _ = _http(cluster, "GET", "/state/system?prefix=/", token=token)
    assert status == 403 and "erin lacks read on system" in body["detail"], body


def test_the_cli_logs_in_and_no_secret_reaches_a_log(
    cluster: LocalCluster, tmp_path: pathlib.Path
) -> None:
    wrong = cli(cluster, "auth", "login", "erin", "--password-stdin", stdin="nope\n", token=False)
    assert (wrong.returncode, wrong.stderr) == (
        1,
        "error: unauthenticated: wrong user or password\n",
    )
    out = tmp_path / "erin.token"
    done = cli(
        cluster, "auth", "login", "erin", "--password-stdin", "--out", str(out),
        stdin=PASSWORD + "\n", token=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out.stat().st_mode & 0o777) == 0o600
    token = out.read_text().strip()
    got = cli(cluster, "--token-file", str(out), "get", "/app/x", token=False)
    assert got.returncode == 0 and got.stdout == "v1\n", got.stderr
    who = cli(cluster, "--token-file", str(out), "auth", "whoami", token=False)
    assert who.stdout.startswith("erin (a login token"), who.stdout
    logs = "".join(
        pathlib.Path(p).read_text(errors="replace")
        for n in cluster.node_ids
        for p in (cluster.log_file(n), pathlib.Path(cluster.data_dir(n), "audit.log"))
    )
    assert PASSWORD not in logs and token not in logs
    for n in cluster.node_ids:  # each node's copy of the policy holds the hashes: 0600
        assert pathlib.Path(cluster.data_dir(n), "auth.policy").stat().st_mode & 0o777 == 0o600
    assert token.split(".")[2] not in logs  # not even its signature
