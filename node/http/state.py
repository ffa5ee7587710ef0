"""The state endpoints: agent and mesh documents, the system tier, the CRDT tiers, the
agent-mesh graph and this node's status.

Every handler validates its input, then calls the same code the gRPC servicers call
(:class:`node.api.documents.Documents`, the system backend, the replication driver),
so guarantees and errors are the gRPC API's; failures become problem documents in
:mod:`node.http.problems`. Response metadata travels in headers:

``Tadpole-Causal-Token``  agent tier: the document's causal token; echo it on the next
                          request (any node) and the answer never reflects older state
``ETag`` / ``Tadpole-Revision``  system tier: the store revision the answer reflects
``Tadpole-Member``        the node that coordinated a CRDT-tier write
``Tadpole-Replicas`` / ``Tadpole-Hinted``  owners that acknowledged / hold it as a hint
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from consensus.backend import SystemBackend
from consensus.errors import CompactedError
from consensus.statemachine import DeleteOp, KeyValue, PutOp, Txn
from node.api.authz import parsed_policy
from node.api.documents import Documents
from node.api.tiers import tier_health
from node.audit import Ending
from node.errors import AlreadyExists, InvalidArgument
from node.http.access import Access, access_of
from node.http.problems import Problem
from node.http.requests import (
    JSON,
    MERGE_PATCH,
    choice_param,
    decode_token,
    encode_token,
    int_param,
    json_body,
)
from node.observe.view import MembersView
from node.rbac import POLICY_KEY, Need
from node.replication.driver import Replication, UpdateResult
from node.tiers import agent as agent_doc
from node.tiers import mesh as mesh_doc
from node.tiers import system_json
from node.tiers.ops import op_from_json, render, tier_spec
from node.tiers.validation import TIER_CONSISTENCIES, check_key, check_prefix
from node.tls import TlsFiles

__all__ = ["TOKEN_HEADER", "ApiConfig", "StateApi"]

log = logging.getLogger(__name__)

TOKEN_HEADER = "Tadpole-Causal-Token"
REVISION_HEADER = "Tadpole-Revision"
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
PATCH_ATTEMPTS = 5
_CONSISTENCY = {name: level for level, name in TIER_CONSISTENCIES.items()}


def _changing(
    access: Access | None, txn: Txn, current: dict[str, KeyValue | None]
) -> AbstractAsyncContextManager[Ending]:
    """Around applying ``txn``, planned over ``current``: audited when it changes the
    access policy (described against the policy in ``current``, as read)."""
    if access is None:  # an app built without roles (tests)
        return contextlib.nullcontext(Ending())
    writes = [
        (op.key, op.value, False) if isinstance(op, PutOp) else (op.key, None, op.prefix)
        for op in txn.success
        if isinstance(op, PutOp | DeleteOp)
    ]
    old = current.get(POLICY_KEY)
    return access.changing(writes, parsed_policy(old.value if old is not None else None))


class ApiConfig(Protocol):
    @property
    def node_id(self) -> str: ...

    @property
    def max_value_bytes(self) -> int: ...

    @property
    def request_timeout_s(self) -> float: ...

    @property
    def http_stream_write_timeout_s(self) -> float: ...

    @property
    def client_cert_auth(self) -> bool: ...

    def tls(self) -> TlsFiles | None: ...


@dataclass
class StateApi:
    config: ApiConfig
    system: SystemBackend
    replication: Replication
    gossip: MembersView

    def __post_init__(self) -> None:
        self.docs = Documents(self.replication)
        # A document body: the value limit plus room for JSON punctuation.
        self.body_limit = self.config.max_value_bytes + (64 << 10)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/state/agent/{agent_id}", self.agent_get),
            web.put("/state/agent/{agent_id}", self.agent_put),
            web.patch("/state/agent/{agent_id}", self.agent_patch),
            web.get("/state/mesh/{mesh_id}", self.mesh_get),
            web.put("/state/mesh/{mesh_id}", self.mesh_put),
            web.delete("/state/mesh/{mesh_id}", self.mesh_delete),
            web.get("/state/system", self.system_get),
            web.patch("/state/system", self.system_patch),
            web.get("/api/v1/tiers/{tier}", self.tier_scan),
            web.get("/api/v1/tiers/{tier}/{key:.+}", self.tier_get),
            web.post("/api/v1/tiers/{tier}/{key:.+}", self.tier_update),
            web.get("/api/v1/graph/meshes-of/{agent_id}", self.graph_meshes_of),
            web.get("/api/v1/graph/members-of/{mesh_id}", self.graph_members_of),
            web.get("/api/v1/graph/neighbours-of/{agent_id}", self.graph_neighbours_of),
            web.get("/api/v1/status", self.status),
        ]

    # -- agent documents -----------------------------------------------------------

    @staticmethod
    def _consistency(request: web.Request) -> int:
        name = choice_param(request, "consistency", tuple(_CONSISTENCY), "default")
        return _CONSISTENCY[name]

    def _agent_response(self, state: Any, result: UpdateResult | None = None) -> web.Response:
        agent = agent_doc.check_state(state)
        headers = {TOKEN_HEADER: encode_token(agent_doc.clock(agent))}
        if result is not None:
            headers.update(_write_headers(result))
        if not agent_doc.exists(agent):
            raise Problem(404, "no agent document under this id", headers=headers)
        return _json(agent_doc.render(agent), headers=headers)

    async def agent_get(self, request: web.Request) -> web.Response:
        token = decode_token(request.headers.get(TOKEN_HEADER), TOKEN_HEADER)
        state = await self.docs.agent_get(
            request.match_info["agent_id"], token, self._consistency(request)
        )
        return self._agent_response(state)

    async def agent_put(self, request: web.Request) -> web.Response:
        agent_id = request.match_info["agent_id"]
        only_new = _if_none_match_any(request)
        token = decode_token(request.headers.get(TOKEN_HEADER), TOKEN_HEADER)
        doc = await json_body(request, (JSON,), self.body_limit)
        try:
            result = await self.docs.agent_write(
                agent_id, doc, token, replace=True, only_new=only_new
            )
        except AlreadyExists as exc:
            raise Problem(412, f"If-None-Match: * failed: {exc}") from exc
        return self._agent_response(result.state, result)

    async def agent_patch(self, request: web.Request) -> web.Response:
        token = decode_token(request.headers.get(TOKEN_HEADER), TOKEN_HEADER)
        patch = await json_body(request, (MERGE_PATCH, JSON), self.body_limit)
        result = await self.docs.agent_write(
            request.match_info["agent_id"], patch, token, replace=False
        )
        return self._agent_response(result.state, result)

    # -- mesh documents ------------------------------------------------------------

    def _mesh_response(self, state: Any, result: UpdateResult | None = None) -> web.Response:
        headers = _write_headers(result) if result is not None else {}
        if not mesh_doc.exists(state):
            raise Problem(404, "no mesh under this id", headers=headers)
        return _json(mesh_doc.render(state), headers=headers)

    async def mesh_get(self, request: web.Request) -> web.Response:
        state = await self.docs.mesh_get(request.match_info["mesh_id"], self._consistency(request))
        return self._mesh_response(state)

    async def mesh_put(self, request: web.Request) -> web.Response:
        mesh_id = request.match_info["mesh_id"]
        only_new = _if_none_match_any(request)
        doc = await json_body(request, (JSON,), self.body_limit)
        if not isinstance(doc, dict):
            raise InvalidArgument("the mesh document must be a JSON object")
        topology = doc.setdefault("topology", {})
        if not isinstance(topology, dict):
            raise InvalidArgument("topology must be an object")
        given = topology.setdefault("mesh_id", mesh_id)
        if given != mesh_id:
            raise InvalidArgument(f"topology.mesh_id {given!r} is not the path's id {mesh_id!r}")
        try:
            result = await self.docs.mesh_write(mesh_id, doc, create=only_new, upsert=not only_new)
        except AlreadyExists as exc:
            raise Problem(412, f"If-None-Match: * failed: {exc}") from exc
        return self._mesh_response(result.state, result)

    async def mesh_delete(self, request: web.Request) -> web.Response:
        result = await self.docs.mesh_delete(request.match_info["mesh_id"])
        return web.Response(status=204, headers=_write_headers(result))

    # -- graph -------------------------------------------------------------------------

    async def _graph(self, request: web.Request, kind: str, name: str) -> web.Response:
        limit = int_param(request, "limit", DEFAULT_PAGE, lo=1, hi=MAX_PAGE)
        after = request.query.get("start_after", "")
        ids = await self.docs.query(kind, request.match_info[name])
        page, more = mesh_doc.page(ids, limit, after)
        return _json({"ids": page, "more": more})

    async def graph_meshes_of(self, request: web.Request) -> web.Response:
        return await self._graph(request, "meshes", "agent_id")

    async def graph_members_of(self, request: web.Request) -> web.Response:
        return await self._graph(request, "members", "mesh_id")

    async def graph_neighbours_of(self, request: web.Request) -> web.Response:
        return await self._graph(request, "neighbours", "agent_id")

    # -- system tier ---------------------------------------------------------------

    def _timeout(self) -> float:
        return self.config.request_timeout_s

    async def system_get(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        check_prefix(prefix)
        after = request.query.get("start_after", "")
        limit = int_param(request, "limit", DEFAULT_PAGE, lo=1, hi=MAX_PAGE)
        level = choice_param(
            request, "consistency", ("linearizable", "serializable"), "linearizable"
        )
        res = await self.system.range(
            prefix,
            limit=limit,
            start_after=after,
            linearizable=level == "linearizable",
            timeout=self._timeout(),
        )
        body = {kv.key: system_json.render_value(kv.value) for kv in res.kvs}
        headers = _revision_headers(res.revision)
        if res.more and res.kvs:
            query = {**request.query, "start_after": res.kvs[-1].key}
            headers["Link"] = f'<{request.url.with_query(query).path_qs}>; rel="next"'
        return _json(body, headers=headers)

    async def system_patch(self, request: web.Request) -> web.Response:
        """The merge patch as one transaction. ``Idempotency-Key: K`` makes a resend after
        an unknown outcome (504) apply at most once: attempt ``i`` of this handler is
        request id ``K:i`` in the state machine's dedup table, so a resend replays each
        attempt's first result. (A resend of an ``If-Match`` patch whose first try did
        apply answers 412: the keys moved, by that try.)"""
        if_match = _if_match_revision(request)
        idempotency = _idempotency_key(request)
        patch = await json_body(request, (MERGE_PATCH, JSON), self.body_limit)
        system_json.check_patch(patch)
        access = access_of(request)
        if access is not None:  # write on every key the patch names, or nothing runs
            access.require([Need("write", "system", key) for key in patch])
        for attempt in range(PATCH_ATTEMPTS):
            current = await self._current(list(patch))
            if if_match is not None:
                await self._check_unchanged_since(if_match, patch)
            txn, values = system_json.plan_patch(patch, current, self.config.max_value_bytes)
            if idempotency:
                txn = dataclasses.replace(txn, request_id=f"{idempotency}:{attempt}")
            async with _changing(access, txn, current) as ending:
                result = await self.system.txn(txn, self._timeout())
                if not result.succeeded:
                    ending.result = "not-applied"
                    ending.detail = f"a patched key changed meanwhile: {ending.detail}"
            if result.succeeded:
                return _json(values, headers=_revision_headers(result.revision))
            if if_match is not None:
                raise Problem(412, f"a patched key changed after revision {if_match}")
        raise Problem(
            409,
            f"the patched keys kept changing; gave up after {PATCH_ATTEMPTS} attempts "
            "(nothing applied)",
        )

    async def _current(self, keys: list[str]) -> dict[str, KeyValue | None]:
        found = await asyncio.gather(
            *(self.system.get(k, linearizable=True, timeout=self._timeout()) for k in keys)
        )
        return {k: kv for k, (kv, _rev) in zip(keys, found, strict=True)}

    async def _check_unchanged_since(self, revision: int, patch: dict[str, Any]) -> None:
        try:
            events, _through, _more = await self.system.history(
                "", prefix=True, start_revision=revision + 1, limit=0, timeout=self._timeout()
            )
        except CompactedError as exc:
            raise Problem(
                412,
                f"revision {revision} is older than the history kept; read again for a "
                "current ETag",
            ) from exc
        moved = system_json.touched_since(events, patch)
        if moved:
            raise Problem(412, f"changed after revision {revision}: {', '.join(moved[:10])}")

    # -- CRDT tiers --------------------------------------------------------------------

    async def tier_get(self, request: web.Request) -> web.Response:
        tier, key = request.match_info["tier"], request.match_info["key"]
        result = await self.replication.read(tier, key, self._consistency(request) or 1)
        if result.state is None:
            raise Problem(404, f"no key {key!r} in tier {tier}")
        type_name, value_json = render(result.state)
        return _json(
            {
                "type": type_name,
                "value": json.loads(value_json),
                "replicas": result.replicas,
                "repaired": result.repaired,
            }
        )

    async def tier_update(self, request: web.Request) -> web.Response:
        tier, key = request.match_info["tier"], request.match_info["key"]
        tier_spec(tier)
        check_key(key)
        body = await json_body(request, (JSON,), self.body_limit)
        if tier == "metrics" and key.startswith("cluster/"):
            raise InvalidArgument("metrics keys under 'cluster/' are the cluster's own counters")
        result = await self.replication.update(tier, key, op_from_json(body))
        type_name, value_json = result.value
        return _json(
            {"type": type_name, "value": json.loads(value_json)}, headers=_write_headers(result)
        )

    async def tier_scan(self, request: web.Request) -> web.Response:
        tier = request.match_info["tier"]
        tier_spec(tier)
        prefix = request.query.get("prefix", "")
        check_prefix(prefix)
        limit = int_param(request, "limit", DEFAULT_PAGE, lo=1, hi=MAX_PAGE)
        keys, more = await self.replication.scan(
            tier, prefix, request.query.get("start_after", ""), limit
        )
        return _json({"keys": keys, "more": more})

    # -- status ------------------------------------------------------------------------

    async def status(self, _request: web.Request) -> web.Response:
        info = self.system.info()
        return _json(
            {
                "node_id": self.config.node_id,
                "system": {
                    "backend": info.name,
                    "role": info.role,
                    "leader_id": info.leader_id,
                    "term": info.term,
                    "revision": info.revision,
                    "keys": info.keys,
                    "has_quorum": info.has_quorum,
                },
                "members": [
                    {"id": m.id, "address": m.address, "status": str(m.status)}
                    for m in self.gossip.members()
                ],
                "tiers": {
                    row.tier: {
                        "rf": row.rf,
                        "local_keys": row.local_keys,
                        "under_replicated": row.under_replicated,
                        "hints_pending": row.hints_pending,
                        "replica_lag_s": row.oldest_hint_age_s,
                        "last_sync_age_s": row.last_sync_age_s,
                    }
                    for row in tier_health(self.replication)
                },
            }
        )


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type=JSON,
        headers=headers,
    )


def _write_headers(result: UpdateResult) -> dict[str, str]:
    return {
        "Tadpole-Member": result.coordinator,
        "Tadpole-Replicas": ",".join(result.replicas),
        "Tadpole-Hinted": ",".join(result.hinted),
    }


def _revision_headers(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"', REVISION_HEADER: str(revision)}


def _idempotency_key(request: web.Request) -> str:
    value = request.headers.get("Idempotency-Key", "")
    if value and (len(value) > 60 or not value.isprintable()):
        raise InvalidArgument("Idempotency-Key must be 1..60 printable characters")
    return value


def _if_none_match_any(request: web.Request) -> bool:
    value = request.headers.get("If-None-Match")
    if value is None:
        return False
    if value.strip() != "*":
        raise InvalidArgument('If-None-Match supports only "*" (create only)')
    return True


def _if_match_revision(request: web.Request) -> int | None:
    value = request.headers.get("If-Match")
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 19:
        raise InvalidArgument(f"If-Match must be a revision ETag such as '\"42\"', not {value!r}")
    return int(text)
