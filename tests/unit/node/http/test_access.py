"""The HTTP port's role table covers every route it serves, and asks the gRPC port's
question: the same policy gives the same answer on both."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from node.api.authz import NEEDS, Caller, decide
from node.http.access import IN_HANDLER, OPEN, ROUTE_NEEDS, common_name
from node.pb import tadpole_pb2 as pb
from node.rbac import Grant, Need, Policy
from tests.unit.node.http.bare_app import bare_app


def test_every_served_route_has_exactly_one_rule() -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in bare_app().router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    tables = (set(ROUTE_NEEDS), set(IN_HANDLER), set(OPEN))
    for i, table in enumerate(tables):
        for other in tables[i + 1 :]:
            assert not table & other, table & other
    assert served == set().union(*tables)


CAROL = Caller("client/carol", "carol")
POLICY = Policy(
    True,
    {"r": (Grant("read", "system", "/app/"), Grant("write", "agent", "aaaa"))},
    {"carol": ("r",)},
)


def _http_needs(method: str, path: str, canonical: str, **params: str) -> list[Need]:
    request = make_mocked_request(method, path, match_info=params)
    return ROUTE_NEEDS[(method, canonical)](request)


@pytest.mark.parametrize(
    ("http", "grpc_method", "grpc_request"),
    [
        (("GET", "/state/system?prefix=/app/x", "/state/system", {}), "/tadpole.v1.KV/Range",
         pb.RangeRequest(prefix="/app/x")),
        (("GET", "/state/system?prefix=/", "/state/system", {}), "/tadpole.v1.KV/Range",
         pb.RangeRequest(prefix="/")),
        (("PUT", "/state/agent/aaaa-1", "/state/agent/{agent_id}", {"agent_id": "aaaa-1"}),
         "/tadpole.v1.Documents/Put", pb.DocPutRequest(tier="agent", id="aaaa-1")),
        (("GET", "/state/agent/bbbb-1", "/state/agent/{agent_id}", {"agent_id": "bbbb-1"}),
         "/tadpole.v1.Documents/Get", pb.DocGetRequest(tier="agent", id="bbbb-1")),
        (("GET", "/api/v1/ledger/pools", "/api/v1/ledger/pools", {}), "/tadpole.v1.Ledger/Pools",
         pb.LedgerCall()),
    ],
)  # fmt: skip
def test_one_request_gets_one_answer_on_both_ports(
    http: tuple[str, str, str, dict[str, str]], grpc_method: str, grpc_request: Any
) -> None:
    method, path, canonical, params = http
    needs = _http_needs(method, path, canonical, **params)
    via_http = decide(POLICY, CAROL, needs, "http")
    via_grpc = decide(POLICY, CAROL, NEEDS[grpc_method](grpc_request), "grpc")
    assert via_http == via_grpc


def test_decide_refuses_the_unknown_and_the_unidentified_and_trusts_root() -> None:
    need = [Need("read", "system", "/app/x")]
    unknown = decide(None, CAROL, need, "x")
    assert unknown is not None and unknown.unknown
    assert decide(None, Caller("operator", None, True), need, "x") is None  # root, always
    nobody = decide(POLICY, Caller(None), need, "x")
    assert nobody is not None and "present a client certificate" in nobody.message
    assert "or a token (tadpole auth login)" in nobody.message
    unchecked = decide(POLICY, CAROL, None, "GET /new")
    assert unchecked is not None and "may not call GET /new" in unchecked.message
    assert decide(Policy(), Caller(None), need, "x") is None  # roles not enabled
    # a token's user is held to the same grants as the certificate of that name
    by_token = decide(POLICY, Caller("token/carol", "carol"), [Need("read", "system", "/x")], "x")
    by_cert = decide(POLICY, CAROL, [Need("read", "system", "/x")], "x")
    assert by_token == by_cert is not None


def test_common_name_reads_the_subject() -> None:
    cert = {"subject": ((("organizationName", "tadpole"),), (("commonName", "client/carol"),))}
    assert common_name(cert) == "client/carol"
    assert common_name(None) is None and common_name({"subject": ()}) is None
