"""gRPC servicer for the CRDT tiers (``Tiers`` service): request validation and
conversion; the work is :mod:`node.replication.driver`'s. Failures are answered through
:mod:`node.api.status` (bad input INVALID_ARGUMENT, no owner reachable UNAVAILABLE with
outcome not-applied, below write quorum ABORTED with outcome applied: do not resend).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import grpc

from node.api import status
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.cluster_metrics import PREFIX as METRICS_PREFIX
from node.peer.cluster_metrics import ClusterMetrics
from node.replication.driver import Replication, UpdateResult
from node.tiers.ops import TIERS, check_tier_key, op_from_request, render, tier_spec
from node.tiers.validation import (
    InvalidArgument,
    check_consistency,
    check_limit,
    check_prefix,
    check_request_id,
)

log = logging.getLogger(__name__)


class TiersServicer(pb_grpc.TiersServicer):  # type: ignore[misc]
    def __init__(self, replication: Replication, metrics: ClusterMetrics | None = None) -> None:
        self._r = replication
        self._metrics = metrics

    def _count(self, name: str, request: Any) -> None:
        if self._metrics is not None:
            self._metrics.incr(name)
            self._metrics.incr("bytes_in", request.ByteSize())

    async def _fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        await status.abort(context, exc)

    async def Update(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._count("tier_updates", request)
        try:
            op = _checked_op(request)
            result = await self._r.update_group(
                request.tier, request.key, ((op, request.request_id),)
            )
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return _update_response(result, result.value)

    async def UpdateMany(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Every update checked first (one invalid update refuses the batch, naming it,
        and nothing is applied); then applied as ``Replication.update_many`` does, each
        answered with its own status."""
        if self._metrics is not None:
            self._metrics.incr("tier_updates", len(request.updates))
            self._metrics.incr("bytes_in", request.ByteSize())
        try:
            if len(request.updates) > MAX_BATCH:
                raise InvalidArgument(
                    f"{len(request.updates)} updates in one call; the limit is {MAX_BATCH}"
                )
            items = []
            for i, update in enumerate(request.updates):
                try:
                    check_tier_key(update.tier, update.key)
                    items.append((update.tier, update.key, _checked_op(update), update.request_id))
                except InvalidArgument as exc:
                    raise InvalidArgument(
                        f"update {i} ({update.tier}/{update.key}): {exc}"
                    ) from exc
            outcomes = await self._r.update_many(items)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        results = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                st = _item_status(outcome)
                results.append(
                    pb.TierUpdateOutcome(
                        code=st.code.value[0], message=st.message, outcome=st.outcome.value
                    )
                )
            else:
                results.append(pb.TierUpdateOutcome(outcome="applied", duplicate=outcome.duplicate))
        return pb.TierUpdateManyResponse(member_id=self._r.node_id, results=results)

    async def UpdateEach(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Single updates the client library sent together: each checked on its own (an
        invalid one is refused alone), the rest applied as ``UpdateMany`` applies them,
        and each answered with what :meth:`Update` would have answered it."""
        if self._metrics is not None:
            self._metrics.incr("tier_updates", len(request.updates))
            self._metrics.incr("bytes_in", request.ByteSize())
        if len(request.updates) > MAX_BATCH:
            too_many = f"{len(request.updates)} updates in one call; the limit is {MAX_BATCH}"
            await self._fail(context, InvalidArgument(too_many))
        answers: list[Any] = [None] * len(request.updates)
        items, places = [], []
        for i, update in enumerate(request.updates):
            try:
                check_tier_key(update.tier, update.key)
                items.append((update.tier, update.key, _checked_op(update), update.request_id))
                places.append(i)
            except InvalidArgument as exc:
                answers[i] = exc
        try:
            outcomes = await self._r.update_many(items) if items else []
        except Exception as exc:  # the batch failed whole: each of its updates with it
            outcomes = [exc] * len(items)
        for i, outcome in zip(places, outcomes, strict=True):
            answers[i] = outcome
        rendered: dict[int, tuple[str, str]] = {}  # a key's updates share its state
        results = []
        for answer in answers:
            if isinstance(answer, BaseException):
                st = _item_status(answer)
                trailers = [pb.Trailer(key=k, value=v) for k, v in st.trailers()]
                results.append(
                    pb.TierUpdateEachResult(
                        code=st.code.value[0], message=st.message, trailers=trailers
                    )
                )
                continue
            value = rendered.get(id(answer.state))
            if value is None:
                value = rendered[id(answer.state)] = answer.value
            results.append(pb.TierUpdateEachResult(update=_update_response(answer, value)))
        return pb.TierUpdateEachResponse(member_id=self._r.node_id, results=results)

    async def Read(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._count("tier_reads", request)
        if (
            self._metrics is not None
            and request.tier == "metrics"
            and request.key.startswith(METRICS_PREFIX)
        ):
            counter = self._metrics.read(request.key)
            response = pb.TierReadResponse(member_id=self._r.node_id, found=counter is not None)
            if counter is not None:
                response.value.type = "gcounter"
                response.value.value_json = json.dumps(
                    {"total": counter.value(), "per_node": dict(sorted(counter.counts.items()))}
                )
            return response
        try:
            consistency = check_consistency(request.consistency) or 1
            result = await self._r.read(request.tier, request.key, consistency)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        response = pb.TierReadResponse(
            member_id=self._r.node_id,
            found=result.state is not None,
            replicas=result.replicas,
            repaired=result.repaired,
        )
        if result.state is not None:
            type_name, value_json = render(result.state)
            response.value.type = type_name
            response.value.value_json = value_json
        return response

    async def Scan(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            tier_spec(request.tier)
            check_prefix(request.prefix)
            check_limit(request.limit)
            keys, more = await self._r.scan(
                request.tier, request.prefix, request.start_after, request.limit
            )
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return pb.TierScanResponse(keys=keys, more=more)

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.TierStatusResponse(member_id=self._r.node_id, tiers=tier_health(self._r))

    async def LocalKeys(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            tier_spec(request.tier)
        except InvalidArgument as exc:
            await self._fail(context, exc)
            raise
        pairs = list(self._r.store.keys_and_digests(request.tier))
        return pb.TierKeysResponse(keys=[k for k, _ in pairs], digests=[d for _, d in pairs])


MAX_BATCH = 10_000  # updates in one UpdateMany call


def _item_status(exc: BaseException) -> status.Status:
    """The status one update of a batch answers with; an INTERNAL one (a bug) is
    logged with its traceback, as a failed call's is."""
    st = status.status_for(exc)
    if st.code is grpc.StatusCode.INTERNAL:
        log.error("unexpected error in a batched update", exc_info=exc)
    return st


def _update_response(result: UpdateResult, value: tuple[str, str]) -> Any:
    """What Update answers for ``result``, its state rendered as ``value``."""
    type_name, value_json = value
    return pb.TierUpdateResponse(
        member_id=result.coordinator,
        value=pb.TierValue(type=type_name, value_json=value_json),
        replicas=result.replicas,
        hinted=result.hinted,
        duplicate=result.duplicate,
    )


def _checked_op(request: Any) -> Any:
    """The op of one TierUpdateRequest, with everything about it checked."""
    if request.tier == "metrics" and request.key.startswith(METRICS_PREFIX):
        raise InvalidArgument(
            f"metrics keys under {METRICS_PREFIX!r} are the cluster's own counters "
            "(spread by gossip) and are read-only"
        )
    check_consistency(request.consistency)
    check_request_id(request.request_id)
    return op_from_request(request)


def tier_health(replication: Replication) -> list[Any]:
    """Per tier: RF, local keys, under-replicated keys, pending hints and the
    age of the oldest (replica lag), age of the last anti-entropy round."""
    health = replication.health()
    now_ns = time.time_ns()
    pending: dict[str, int] = {}
    oldest: dict[str, int] = {}
    for member in replication.gossip.members():
        for hint in replication.store.hints_for(member.id):
            pending[hint.tier] = pending.get(hint.tier, 0) + 1
            oldest[hint.tier] = min(oldest.get(hint.tier, hint.created_ns), hint.created_ns)
    rows = []
    now_mono = time.monotonic()
    for name, spec in TIERS.items():
        h = health.get(name)
        rows.append(
            pb.TierReplicaStatus(
                tier=name,
                rf=spec.rf or len(replication.live()),
                local_keys=replication.store.count(name),
                under_replicated=h.under_replicated if h else 0,
                divergent=h.divergent if h else 0,
                hints_pending=pending.get(name, 0),
                last_sync_age_s=(now_mono - h.last_round) if h else -1.0,
                oldest_hint_age_s=(now_ns - oldest[name]) / 1e9 if name in oldest else 0.0,
            )
        )
    return rows
