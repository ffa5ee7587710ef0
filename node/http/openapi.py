"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/v1/openapi.json``.

Written as data next to the handlers; ``tests/unit/node/http/test_openapi.py``
validates it with ``openapi-spec-validator`` and checks that every route the server
registers is in it (and nothing else is).
"""

from __future__ import annotations

import re
from typing import Any

from node.api.kv import VERSION
from node.http.ledger import LEDGER_ROUTES

__all__ = ["document"]

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_ANY: dict[str, Any] = {}


def _param(
    name: str,
    where: str,
    description: str,
    schema: dict[str, Any] | None = None,
    required: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _json(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _PROBLEM for code in codes}


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


_TOKEN = _header("The agent's causal token; send it back to read your writes on any node.")
_REVISION = {
    "ETag": _header('The store revision the answer reflects, quoted ("42").'),
    "Tadpole-Revision": _header("The same revision, unquoted."),
}
_WRITE = {
    "Tadpole-Member": _header("The node that coordinated the write."),
    "Tadpole-Replicas": _header("Owners that acknowledged it durably, comma-separated."),
    "Tadpole-Hinted": _header("Owners that were down; a hint holds their copy."),
}
_CONSISTENCY = _param(
    "consistency",
    "query",
    "Owners to consult (default: the tier's).",
    {"type": "string", "enum": ["default", "one", "quorum", "all"]},
)
_PAGE = [
    _param(
        "limit", "query", "At most this many.", {"type": "integer", "minimum": 1, "maximum": 10000}
    ),
    _param("start_after", "query", "Only items after this one (the next page)."),
]
_TOKEN_PARAM = _param("Tadpole-Causal-Token", "header", "A causal token from an earlier answer.")
_SELECT = [
    _param("prefix", "query", "Changes to keys under this prefix (default: every key)."),
    _param("key", "query", "Changes to this one key (instead of a prefix)."),
]


def _agent() -> dict[str, Any]:
    agent_id = _param("agent_id", "path", "The agent's id (its identity.agent_id, a UUID v4).")
    doc = {"$ref": "#/components/schemas/AgentDocument"}
    ok = _json(doc, "The agent document.", {"Tadpole-Causal-Token": _TOKEN})
    written = _json(
        doc, "The document after the write.", {"Tadpole-Causal-Token": _TOKEN, **_WRITE}
    )
    return {
        "parameters": [agent_id],
        "get": {
            "summary": "Read an agent document",
            "operationId": "getAgent",
            "parameters": [_CONSISTENCY, _TOKEN_PARAM],
            "responses": {"200": ok, **_errors(400, 404, 503, 504)},
        },
        "put": {
            "summary": "Create or replace an agent document",
            "description": "With `If-None-Match: *` it only creates (412 if one exists).",
            "operationId": "putAgent",
            "parameters": [
                _TOKEN_PARAM,
                _param("If-None-Match", "header", "`*`: create only."),
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": doc}}},
            "responses": {"200": written, **_errors(400, 412, 413, 415, 422, 503, 504)},
        },
        "patch": {
            "summary": "Merge-patch an agent document (RFC 7396)",
            "operationId": "patchAgent",
            "parameters": [_TOKEN_PARAM],
            "requestBody": {
                "required": True,
                "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
            },
            "responses": {"200": written, **_errors(400, 404, 413, 415, 422, 503, 504)},
        },
    }


def _mesh() -> dict[str, Any]:
    doc = {"$ref": "#/components/schemas/MeshDocument"}
    return {
        "parameters": [_param("mesh_id", "path", "The mesh's id.")],
        "get": {
            "summary": "Read a mesh document",
            "operationId": "getMesh",
            "parameters": [_CONSISTENCY],
            "responses": {"200": _json(doc, "The mesh document."), **_errors(400, 404, 503)},
        },
        "put": {
            "summary": "Create a mesh, or update the fields the document names",
            "description": "With `If-None-Match: *` it only creates (412 if the mesh is live).",
            "operationId": "putMesh",
            "parameters": [_param("If-None-Match", "header", "`*`: create only.")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": doc}}},
            "responses": {
                "200": _json(doc, "The mesh after the write.", _WRITE),
                **_errors(400, 412, 413, 415, 422, 503, 504),
            },
        },
        "delete": {
            "summary": "Delete a mesh",
            "operationId": "deleteMesh",
            "responses": {
                "204": {"description": "Deleted.", "headers": _WRITE},
                **_errors(400, 404, 503, 504),
            },
        },
    }


def _system() -> dict[str, Any]:
    keys = {
        "type": "object",
        "additionalProperties": True,
        "description": 'Key -> JSON value ({"$base64": ...} for non-JSON bytes).',
    }
    return {
        "get": {
            "summary": "Read the system tier as an object of keys",
            "operationId": "getSystem",
            "parameters": [
                _param("prefix", "query", "Only keys under this prefix."),
                *_PAGE,
                _param(
                    "consistency",
                    "query",
                    "linearizable (default) or serializable (may be stale, cheaper).",
                    {"type": "string", "enum": ["linearizable", "serializable"]},
                ),
            ],
            "responses": {
                "200": _json(
                    keys, "The keys.", {**_REVISION, "Link": _header('rel="next": the next page.')}
                ),
                **_errors(400, 503, 504),
            },
        },
        "patch": {
            "summary": "Merge-patch the system tier atomically (one transaction)",
            "description": '`null` deletes a key. With `If-Match: "R"` it applies only if '
            "no key it names changed after revision R (412 otherwise).",
            "operationId": "patchSystem",
            "parameters": [
                _param("If-Match", "header", "A revision ETag."),
                _param(
                    "Idempotency-Key",
                    "header",
                    "Up to 60 characters: a resend with the same key applies at most once.",
                ),
            ],
            "requestBody": {
                "required": True,
                "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": _json(keys, "The new values of the named keys (null = deleted).", _REVISION),
                **_errors(400, 409, 412, 413, 415, 503, 504),
            },
        },
    }


def _tiers() -> dict[str, Any]:
    tier = _param(
        "tier",
        "path",
        "A CRDT tier.",
        {"type": "string", "enum": ["population", "agent", "mesh", "metrics"]},
    )
    key = _param("key", "path", "The key (population keys are <subspace>/<id>).")
    value = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "value": _ANY,
            "replicas": {"type": "array", "items": {"type": "string"}},
            "repaired": {"type": "integer"},
        },
        "required": ["type", "value"],
    }
    update = {
        "type": "object",
        "required": ["op"],
        "properties": {
            "op": {
                "type": "string",
                "enum": [
                    "counter_add",
                    "set_add",
                    "set_remove",
                    "register_set",
                    "log_append",
                    "map_set",
                ],
            },
            "amount": {"type": "integer"},
            "elements": {"type": "array", "items": {"type": "string"}},
            "value": _ANY,
            "payload": _ANY,
            "entry_id": {"type": "string"},
            "field": {"type": "string"},
            "remove": {"type": "boolean"},
        },
    }
    keys = {
        "type": "object",
        "properties": {
            "keys": {"type": "array", "items": {"type": "string"}},
            "more": {"type": "boolean"},
        },
    }
    return {
        "/api/v1/tiers/{tier}": {
            "parameters": [tier],
            "get": {
                "summary": "List a tier's keys",
                "operationId": "scanTier",
                "parameters": [
                    _param("prefix", "query", "Only keys under this prefix."),
                    *_PAGE,
                ],
                "responses": {"200": _json(keys, "Keys in order."), **_errors(400, 503)},
            },
        },
        "/api/v1/tiers/{tier}/{key}": {
            "parameters": [tier, key],
            "get": {
                "summary": "Read a key's value",
                "operationId": "readTier",
                "parameters": [_CONSISTENCY],
                "responses": {"200": _json(value, "The value."), **_errors(400, 404, 503)},
            },
            "post": {
                "summary": "Apply an update to a key (not idempotent)",
                "operationId": "updateTier",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": update}},
                },
                "responses": {
                    "200": _json(value, "The value on the coordinating owner after it.", _WRITE),
                    **_errors(400, 413, 415, 503, 504),
                },
            },
        },
    }


def _graph() -> dict[str, Any]:
    page = {
        "type": "object",
        "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "more": {"type": "boolean"},
        },
    }
    out: dict[str, Any] = {}
    for name, param, summary, op in (
        ("meshes-of", "agent_id", "Meshes an agent is a member of", "meshesOf"),
        ("members-of", "mesh_id", "Members of a mesh", "membersOf"),
        ("neighbours-of", "agent_id", "Agents sharing a mesh with an agent", "neighboursOf"),
    ):
        out[f"/api/v1/graph/{name}/{{{param}}}"] = {
            "parameters": [_param(param, "path", "The id.")],
            "get": {
                "summary": summary,
                "operationId": op,
                "parameters": _PAGE,
                "responses": {"200": _json(page, "One page of ids."), **_errors(400, 404, 503)},
            },
        }
    return out


_CRDT_TIER = _param(
    "tier",
    "path",
    "A CRDT tier.",
    {"type": "string", "enum": ["population", "agent", "mesh", "metrics"]},
)


def _streams() -> dict[str, Any]:
    changes = {
        "type": "object",
        "properties": {
            "changes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "node": {"type": "string"},
                        "seq": {"type": "integer"},
                        "key": {"type": "string"},
                        "type": {"type": "string"},
                        "value": _ANY,
                    },
                },
            },
            "cursor": {"type": "string"},
            "unreachable": {"type": "array", "items": {"type": "string"}},
        },
    }
    event = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["put", "delete"]},
            "key": {"type": "string"},
            "revision": {"type": "integer"},
            "value": _ANY,
            "version": {"type": "integer"},
            "prev_value": _ANY,
        },
        "required": ["type", "key", "revision"],
    }
    log = {
        "type": "object",
        "properties": {
            "events": {"type": "array", "items": event},
            "next_after": {"type": "integer"},
            "more": {"type": "boolean"},
        },
    }
    return {
        "/api/v1/events": {
            "get": {
                "summary": "The system tier's change history after a revision",
                "operationId": "events",
                "parameters": [
                    _param("after", "query", "Changes after this revision.", {"type": "integer"}),
                    _param("limit", "query", "At most this many events.", {"type": "integer"}),
                    *_SELECT,
                ],
                "responses": {
                    "200": _json(log, "Events in revision order."),
                    **_errors(400, 410, 503, 504),
                },
            }
        },
        "/api/v1/changes/{tier}": {
            "parameters": [_CRDT_TIER],
            "get": {
                "summary": "A CRDT tier's changes, from every member's change feed",
                "description": "Without `after`: from the oldest change each member keeps; "
                "`after=now`: only a cursor to follow from. Each change names its node and "
                "seq and carries the key's value on that node.",
                "operationId": "changes",
                "parameters": [
                    _param("after", "query", "A cursor from an earlier page, or `now`."),
                    _param("prefix", "query", "Only keys under this prefix."),
                    _param(
                        "limit",
                        "query",
                        "At most this many per member.",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                    ),
                ],
                "responses": {
                    "200": _json(changes, "Changes and the cursor after them."),
                    **_errors(400, 410, 503),
                },
            },
        },
        "/api/v1/changes/{tier}/watch": {
            "parameters": [_CRDT_TIER],
            "get": {
                "summary": "A CRDT tier's changes as Server-Sent Events",
                "description": "Each `changes` event's id is the cursor after it; reconnect "
                "to any node with `Last-Event-ID`.",
                "operationId": "watchChanges",
                "parameters": [
                    _param("after", "query", "A cursor to start after (default: now)."),
                    _param("Last-Event-ID", "header", "Resume after this cursor."),
                    _param("prefix", "query", "Only keys under this prefix."),
                ],
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 410, 503),
                },
            },
        },
        "/api/v1/ws": {
            "get": {
                "summary": "Subscriptions to system-tier changes over a WebSocket",
                "description": "JSON frames: send `subscribe` (id, prefix or key, after) and "
                "`unsubscribe` (id); receive `subscribed`, `change`, `unsubscribed`, `error`. "
                "Several subscriptions per socket (at most 32).",
                "operationId": "websocket",
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    **_errors(400),
                },
            }
        },
        "/api/v1/watch": {
            "get": {
                "summary": "Watch the system tier as Server-Sent Events",
                "description": "Each `change` event has `id:` = its revision; reconnect to any "
                "node with `Last-Event-ID` to resume without a gap.",
                "operationId": "watch",
                "parameters": [
                    _param("after", "query", "Start after this revision.", {"type": "integer"}),
                    _param("Last-Event-ID", "header", "Resume after this revision."),
                    *_SELECT,
                ],
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 410, 503, 504),
                },
            }
        },
    }


def _graphql() -> dict[str, Any]:
    result = _json({"type": "object"}, "A GraphQL response (`data`, `errors`).")
    body = {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {"type": "string"},
            "variables": {"type": "object"},
            "operationName": {"type": "string"},
        },
    }
    return {
        "get": {
            "summary": "GraphQL query by GET, or a WebSocket (graphql-transport-ws, graphql-ws)",
            "description": "The schema is introspectable; subscriptions: `systemChanges`.",
            "operationId": "graphqlGet",
            "parameters": [_param("query", "query", "The GraphQL document.")],
            "responses": {"200": result, "400": result},
        },
        "post": {
            "summary": "GraphQL query",
            "operationId": "graphqlPost",
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": result, "400": result},
        },
    }


def _query() -> dict[str, Any]:
    result = _json({"type": "object"}, "`data`, and `errors` for fields that failed.")
    return {
        "get": {
            "summary": "The GraphQL queries as plain JSON (no subscriptions)",
            "operationId": "queryGet",
            "parameters": [
                _param("query", "query", "The GraphQL document.", required=True),
                _param("variables", "query", "Its variables, as JSON."),
            ],
            "responses": {"200": result, **_errors(400)},
        },
        "post": {
            "summary": "The GraphQL queries as plain JSON (no subscriptions)",
            "operationId": "queryPost",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["query"],
                            "properties": {
                                "query": {"type": "string"},
                                "variables": {"type": "object"},
                            },
                        }
                    }
                },
            },
            "responses": {"200": result, **_errors(400, 413, 415)},
        },
    }


def _plain(operation: str, summary: str, media: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "operationId": operation,
            "responses": {
                "200": {"description": "OK", "content": {media: {"schema": {"type": "string"}}}}
            },
        }
    }


def _login() -> dict[str, Any]:
    credentials = {
        "type": "object",
        "required": ["user", "password"],
        "properties": {"user": {"type": "string"}, "password": {"type": "string"}},
    }
    token = {
        "type": "object",
        "properties": {"token": {"type": "string"}, "expires_at": {"type": "number"}},
    }
    return {
        "post": {
            "summary": "Log in with a password for a short-lived token (TLS only); send it "
            "as `Authorization: Bearer <token>`",
            "operationId": "login",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": credentials}},
            },
            "responses": {
                "200": _json(token, "The token and when it expires (unix seconds)."),
                **_errors(400, 401, 409, 413, 415, 503),
            },
        }
    }


def _ledger() -> dict[str, Any]:
    """The lifecycle API's routes, from the table that serves them."""
    paths: dict[str, Any] = {}
    for route in LEDGER_ROUTES:
        params = [
            _param(name, "path", f"The {name.replace('_', ' ')}.")
            for name in re.findall(r"\{(\w+)\}", route.path)
        ]
        if route.call == "Report":
            params.append(_param("limit", "query", "Rows of a findings report (default 20).",
                                 {"type": "integer", "minimum": 1, "maximum": 10000}))  # fmt: skip
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"ledger{route.call}{route.method.title()}{len(paths)}",
            "tags": ["ledger"],
            "responses": {
                "200": _json(
                    {"type": "object"}, "The record the cluster answered (docs/ledger.md)."
                ),
                **_errors(400, 404, 409, 503, 504),
            },
        }
        if params:
            op["parameters"] = params
        if route.body:
            op["parameters"] = [
                *params,
                _param(
                    "Idempotency-Key",
                    "header",
                    "Resending with the same key applies the change once.",
                ),
            ]
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        paths.setdefault(route.path, {})[route.method] = op
    return paths


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/state/agent/{agent_id}": _agent(),
        "/state/mesh/{mesh_id}": _mesh(),
        "/state/system": _system(),
        **_tiers(),
        **_graph(),
        **_streams(),
        **_ledger(),
        "/api/v1/status": {
            "get": {
                "summary": "This node's view: system tier, members, tiers",
                "operationId": "status",
                "responses": {"200": _json({"type": "object"}, "Status.")},
            }
        },
        "/api/v1/members": {
            "get": {
                "summary": "Every member: Raft role, term, indexes (asked of it) and gossip view",
                "operationId": "members",
                "responses": {"200": _json({"type": "object"}, "`members`, as `tadpole members`.")},
            }
        },
        "/api/v1/auth/token": _login(),
        "/ui": _plain("console", "The web console (HTML)", "text/html"),
        "/ui/{name}": {
            "parameters": [_param("name", "path", "console.js or console.css")],
            "get": {
                **_plain("consoleAsset", "A file of the web console", "text/plain")["get"],
                "responses": {
                    "200": {"description": "The file."},
                    **_errors(404),
                },
            },
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
        "/graphql": _graphql(),
        "/api/v1/query": _query(),
        "/metrics": _plain("metrics", "Prometheus metrics", "text/plain"),
        "/healthz": {
            "get": {
                "summary": "200 when a system-tier leader is known, else 503",
                "operationId": "healthz",
                "responses": {
                    "200": _json({"type": "object"}, "Healthy."),
                    "503": _json({"type": "object"}, "No leader known."),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tadpole State HTTP API",
            "version": VERSION,
            "description": "Every node serves the whole API. Errors are RFC 9457 problem "
            "documents whose `outcome` says whether anything was applied.",
        },
        "paths": paths,
        "components": {
            "responses": {
                "Problem": {
                    "description": "An RFC 9457 problem document.",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "outcome"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "outcome": {
                            "type": "string",
                            "enum": ["not-applied", "applied", "unknown"],
                        },
                        "compact_revision": {"type": "integer"},
                        "leader_id": {"type": "string"},
                        "leader_address": {"type": "string"},
                    },
                },
                "AgentDocument": {
                    "type": "object",
                    "description": "identity, knowledge_state, ... (docs/design.md).",
                    "required": ["identity"],
                },
                "MeshDocument": {
                    "type": "object",
                    "description": "topology, ... (docs/design.md).",
                },
            },
        },
    }
