"""Per-client rate limits on a real node: a client that floods is answered
RESOURCE_EXHAUSTED (gRPC) and 429 (HTTP) with the time to wait; another client,
meanwhile, is served in full."""

from __future__ import annotations

import pathlib
import urllib.error
import urllib.request

import grpc
import pytest

from node.certs import issue
from node.dev.cluster import LocalCluster, free_base_port
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.tls import TlsFiles

pytestmark = pytest.mark.integration


def test_a_flooding_client_is_slowed_and_others_are_not(tmp_path: pathlib.Path) -> None:
    base, http = free_base_port(1), free_base_port(1)
    while abs(base - http) < 10:
        http = free_base_port(1)
    cluster = LocalCluster(
        str(tmp_path / "c"), ["n1"], base, metrics_base_port=http, tls=True,
        extra_args=["--set", "client_rate_limit=20", "--set", "client_rate_burst=20"],
    )  # fmt: skip
    cluster.start()
    try:
        cluster.wait_leader(30, all_up=True)
        tls_dir = cluster.tls_dir
        for name in ("flooder", "other"):
            issue(tls_dir, tls_dir, name, client=name)

        def files(name: str) -> TlsFiles:
            return TlsFiles(f"{tls_dir}/ca.pem", f"{tls_dir}/{name}.pem", f"{tls_dir}/{name}.key")

        address = cluster.addresses["n1"]
        codes: list[grpc.StatusCode] = []
        other_ok = 0
        with (
            grpc.secure_channel(address, files("flooder").channel_credentials()) as flood,
            grpc.secure_channel(address, files("other").channel_credentials()) as calm,
        ):
            kv, calm_kv = pb_grpc.KVStub(flood), pb_grpc.KVStub(calm)
            for i in range(200):
                try:
                    kv.Get(pb.GetRequest(key="k"), timeout=5)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())  # type: ignore[attr-defined]
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                        assert "rate limit: client/flooder may make 20 requests/s" in (
                            exc.details()  # type: ignore[attr-defined]
                        )
                if i % 20 == 0:
                    calm_kv.Get(pb.GetRequest(key="k"), timeout=5)  # raises if refused
                    other_ok += 1
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert codes[:20] == [grpc.StatusCode.OK] * 20  # the burst
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 100
        assert other_ok == 10

        url = f"https://{cluster.metrics_address('n1')}/api/v1/system/k"
        statuses = []
        for _ in range(60):
            try:
                with urllib.request.urlopen(url, context=files("flooder").client_context()) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as exc:
                with exc:  # closes its TLS connection
                    statuses.append(exc.code)
                    if exc.code == 429:
                        assert int(exc.headers["Retry-After"]) >= 1
                        assert "rate limit: client/flooder" in exc.read().decode()
        assert 429 in statuses
        with urllib.request.urlopen(url.replace("/api/v1/system/k", "/healthz"),
                                    context=files("flooder").client_context()) as r:  # fmt: skip
            assert r.status == 200  # probes are never limited
    finally:
        cluster.kill("n1")
