"""The OpenAPI document is valid OpenAPI 3.1 and describes exactly the routes served."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from node.http.openapi import document
from tests.unit.node.http.bare_app import bare_app


def _routes() -> set[tuple[str, str]]:
    app = bare_app()
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD beside every GET
        path = route.resource.canonical if route.resource is not None else ""
        served.add((route.method.lower(), re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)))
    return served


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # raises on any violation of the 3.1 schema or a dangling $ref


def test_every_served_route_is_documented_and_nothing_else() -> None:
    spec = document()
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "patch", "post", "delete")
    }
    assert _routes() == documented


def test_every_operation_documents_its_errors_as_problems() -> None:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            # Answers that cannot fail on input: probes, this document, the node's views.
            if method == "parameters" or path in (
                "/metrics",
                "/healthz",
                "/api/v1/openapi.json",
                "/graphql",
                "/api/v1/status",
                "/api/v1/members",
                "/ui",
            ):
                continue
            codes = {int(c) for c in op["responses"]}
            assert any(c >= 400 for c in codes), (method, path)
            for code in codes:
                if code >= 400:
                    assert op["responses"][str(code)] == {
                        "$ref": "#/components/responses/Problem"
                    }, (method, path, code)
