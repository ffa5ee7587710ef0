"""gRPC servicers for the client API: KV (system tier) and Cluster.

Every failure is answered through :mod:`node.api.status`, the one exception -> status table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import grpc

from consensus.backend import SystemBackend
from consensus.errors import (
    CompactedError,
    NotLeaderError,
    ProposalError,
)
from consensus.statemachine import (
    CommandResult,
    Compare,
    CompareOp,
    CompareTarget,
    DeleteOp,
    GetOp,
    KeyValue,
    OpResult,
    PutOp,
    Txn,
    TxnOp,
)
from node.api import status
from node.config import NodeConfig
from node.errors import NotFound
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.peer.cluster_metrics import ClusterMetrics
from node.peer.gossip import GossipDriver
from node.rbac import Need, changes_policy
from node.tiers import validation as v
from node.tls import Renewal, aio_channel, close_later, server_name_for

log = logging.getLogger(__name__)

VERSION = "0.1.0"
MAX_MANY = 1_000  # puts in one PutMany call, gets in one GetMany call


def kv_to_pb(kv: KeyValue | None) -> Any:
    if kv is None:
        return pb.KeyValue()
    return pb.KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
    )


class _Api:
    """Shared plumbing of the servicers: headers, deadlines, error mapping."""

    def __init__(
        self, config: NodeConfig, system: SystemBackend, metrics: ClusterMetrics | None = None
    ) -> None:
        self.config = config
        self.system = system
        self.metrics = metrics

    def count(self, name: str, request: Any) -> None:
        if self.metrics is not None:
            self.metrics.incr(name)
            self.metrics.incr("bytes_in", request.ByteSize())

    def header(self, revision: int | None = None) -> Any:
        st = self.system.info()
        return pb.ResponseHeader(
            revision=st.revision if revision is None else revision,
            member_id=self.config.node_id,
            raft_term=st.term,
            leader_id=st.leader_id,
        )

    def timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        budget = self.config.request_timeout_s
        if remaining is not None:
            budget = min(budget, max(remaining - 0.05, 0.01))
        return budget

    def leader_address(self, leader_id: str) -> str:
        if leader_id == self.config.node_id:
            return self.config.address
        return self.config.peers.get(leader_id, "")

    async def abort_for(self, context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
        await status.abort(context, exc, leader=self._leader_hint)

    def _leader_hint(self) -> tuple[str, str] | None:
        leader = self.system.info().leader_id
        return (leader, self.leader_address(leader)) if leader else None

    @staticmethod
    def linearizable(consistency: int) -> bool:
        if consistency not in (pb.LINEARIZABLE, pb.SERIALIZABLE):
            raise v.InvalidArgument(f"unknown consistency {consistency}")
        return bool(consistency == pb.LINEARIZABLE)


_UNREAD = RuntimeError("GetMany: a get was never read")  # a placeholder that must not last


def _resend_alone() -> dict[str, Any]:
    """The fields of a batch item left unanswered, not applied: the batch's answer was
    full (the client sends it again alone)."""
    return {
        "code": grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        "message": "the batch's answer is full: send this again (not applied)",
        "trailers": [
            pb.Trailer(key=status.OUTCOME_KEY, value="not-applied"),
            pb.Trailer(key=status.RESEND_ALONE_KEY, value="1"),
        ],
    }


def _op_from_pb(op: Any, max_value: int) -> TxnOp:
    which = op.WhichOneof("request")
    if which == "put":
        v.check_key(op.put.key)
        v.check_value(op.put.value, max_value)
        return PutOp(op.put.key, op.put.value)
    if which == "delete":
        return _delete_from_pb(op.delete)
    if which == "range":
        v.check_prefix(op.range.prefix)
        v.check_limit(op.range.limit)
        return GetOp(op.range.prefix, True, op.range.limit)
    raise v.InvalidArgument("transaction operation has no request set")


def _delete_from_pb(request: Any) -> DeleteOp:
    """A delete of one key, of a non-empty prefix, or — only when ``all_keys`` says so
    explicitly — of every key (an empty prefix never means "everything")."""
    if request.all_keys:
        if request.key or request.prefix:
            raise v.InvalidArgument("all_keys deletes every key: key must be empty, prefix false")
        return DeleteOp("", True)
    v.check_key(request.key, "prefix" if request.prefix else "key")
    return DeleteOp(request.key, request.prefix)


def _compare_from_pb(c: Any) -> Compare:
    v.check_key(c.key, "compare key")
    try:
        target = CompareTarget(c.target)
        op = CompareOp(c.result)
    except ValueError as exc:
        raise v.InvalidArgument(f"compare on {c.key!r}: {exc}") from exc
    if target is not CompareTarget.VALUE:
        v.check_revision(c.number, f"compare {target.name.lower()} operand")
    return Compare(c.key, target, op, c.number, c.value)


def _op_result_to_pb(op: TxnOp, res: OpResult, revision: int, header: Any) -> Any:
    if isinstance(op, PutOp):
        return pb.ResponseOp(
            put=pb.PutResponse(header=header, kv=kv_to_pb(res.kvs[0]), prev_kv=kv_to_pb(res.prev))
        )
    if isinstance(op, DeleteOp):
        return pb.ResponseOp(
            delete=pb.DeleteResponse(
                header=header, deleted=len(res.kvs), prev_kvs=[kv_to_pb(k) for k in res.kvs]
            )
        )
    return pb.ResponseOp(
        range=pb.RangeResponse(
            header=header, kvs=[kv_to_pb(k) for k in res.kvs], more=res.more, count=len(res.kvs)
        )
    )


class KVServicer(_Api, pb_grpc.KVServicer):  # type: ignore[misc]
    async def Get(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.count("kv_reads", request)
        try:
            v.check_tier(request.tier)
            v.check_key(request.key)
            found, revision = await self.system.get(
                request.key,
                linearizable=self.linearizable(request.consistency),
                timeout=self.timeout(context),
            )
        except Exception as exc:
            await self.abort_for(context, exc)
        return pb.GetResponse(
            header=self.header(revision), found=found is not None, kv=kv_to_pb(found)
        )

    async def Range(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.count("kv_reads", request)
        try:
            v.check_tier(request.tier)
            v.check_prefix(request.prefix)
            v.check_limit(request.limit)
            res = await self.system.range(
                request.prefix,
                limit=request.limit,
                start_after=request.start_after,
                linearizable=self.linearizable(request.consistency),
                timeout=self.timeout(context),
            )
        except Exception as exc:
            await self.abort_for(context, exc)
        return pb.RangeResponse(
            header=self.header(res.revision),
            kvs=[kv_to_pb(k) for k in res.kvs],
            more=res.more,
            count=res.count,
        )

    async def _commit(self, context: grpc.aio.ServicerContext, txn: Txn) -> Any:
        return await self.system.txn(txn, self.timeout(context))

    async def Put(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.count("kv_writes", request)
        try:
            v.check_tier(request.tier)
            v.check_key(request.key)
            v.check_value(request.value, self.config.max_value_bytes)
            v.check_request_id(request.request_id)
            result = await self._commit(
                context,
                Txn(success=(PutOp(request.key, request.value),), request_id=request.request_id),
            )
        except Exception as exc:
            await self.abort_for(context, exc)
        op = result.results[0]
        return pb.PutResponse(
            header=self.header(result.revision),
            kv=kv_to_pb(op.kvs[0]),
            prev_kv=kv_to_pb(op.prev) if request.prev_kv and op.prev else None,
        )

    async def PutMany(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Each put checked and committed on its own, as :meth:`Put` would, and answered
        with what :meth:`Put` would have answered (an invalid one is refused alone). All
        are proposed at once, so the Raft tick carries them in one entry and one fsync."""
        if self.metrics is not None:
            self.metrics.incr("kv_writes", len(request.puts))
            self.metrics.incr("bytes_in", request.ByteSize())
        await self._check_many(context, len(request.puts), "puts")
        # The answer carries the values back: once they would pass max_value_bytes the
        # rest are left for the client to send again (not applied).
        room, taken = self.config.max_value_bytes, list[bool]()
        for put in request.puts:
            taken.append(len(put.value) <= room or not taken)
            if taken[-1]:
                room -= len(put.value)
        timeout = self.timeout(context)
        outcomes = await asyncio.gather(
            *(
                self._put_one(put, timeout)
                for put, go in zip(request.puts, taken, strict=True)
                if go
            ),
            return_exceptions=True,
        )
        top = max((o.revision for o in outcomes if isinstance(o, CommandResult)), default=0)
        info = self.system.info()
        results = []
        answered = iter(outcomes)
        for put, go in zip(request.puts, taken, strict=True):
            if not go:
                results.append(pb.PutManyResult(**_resend_alone()))
                continue
            outcome = next(answered)
            if isinstance(outcome, CommandResult):
                op = outcome.results[0]
                answer = pb.PutResponse(
                    header=self._item_header(info, outcome.revision),
                    kv=kv_to_pb(op.kvs[0]),
                    prev_kv=kv_to_pb(op.prev) if put.prev_kv and op.prev else None,
                )
                results.append(pb.PutManyResult(put=answer))
            else:
                results.append(pb.PutManyResult(**self._item_failure(outcome, "put")))
        return pb.PutManyResponse(header=self.header(top or None), results=results)

    async def GetMany(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Each get answered as :meth:`Get` would answer it, at its own consistency (an
        invalid one is refused alone); the linearizable ones share ReadIndex rounds."""
        if self.metrics is not None:
            self.metrics.incr("kv_reads", len(request.gets))
            self.metrics.incr("bytes_in", request.ByteSize())
        await self._check_many(context, len(request.gets), "gets")
        outcomes = await self._get_each(request.gets, self.timeout(context))
        info = self.system.info()
        results: list[Any] = []
        room = self.config.max_value_bytes  # what the answer may carry; then it is full
        for outcome in outcomes:
            if isinstance(outcome, tuple):
                found, revision = outcome
                answer = pb.GetResponse(
                    header=self._item_header(info, revision),
                    found=found is not None,
                    kv=kv_to_pb(found),
                )
                size = answer.ByteSize()
                if size > room and len(results) > 0:
                    results.append(pb.GetManyResult(**_resend_alone()))
                    continue
                room -= size
                results.append(pb.GetManyResult(get=answer))
            else:
                results.append(pb.GetManyResult(**self._item_failure(outcome, "get")))
        return pb.GetManyResponse(header=self.header(), results=results)

    async def _check_many(self, context: grpc.aio.ServicerContext, count: int, what: str) -> None:
        if count > MAX_MANY:
            await self.abort_for(
                context,
                v.InvalidArgument(f"{count} {what} in one call; the limit is {MAX_MANY}"),
            )

    def _item_header(self, info: Any, revision: int) -> Any:
        return pb.ResponseHeader(
            revision=revision,
            member_id=self.config.node_id,
            raft_term=info.term,
            leader_id=info.leader_id,
        )

    def _item_failure(self, exc: BaseException, what: str) -> dict[str, Any]:
        """The fields of a batch item's failure: the status a lone call would have
        answered, with its trailers (outcome, leader hint)."""
        if isinstance(exc, asyncio.CancelledError):
            raise exc  # the call itself was cancelled
        st = status.status_for(exc, leader=self._leader_hint())
        if st.code is grpc.StatusCode.INTERNAL:
            log.error("unexpected error in a batched %s", what, exc_info=exc)
        return {
            "code": st.code.value[0],
            "message": st.message,
            "trailers": [pb.Trailer(key=k, value=val) for k, val in st.trailers()],
        }

    async def _get_each(
        self, gets: Sequence[Any], timeout: float
    ) -> list[tuple[KeyValue | None, int] | BaseException]:
        """Each get's answer or error, in order: the valid ones read in one call per
        consistency (one read point for all the linearizable ones)."""
        outcomes: list[tuple[KeyValue | None, int] | BaseException] = []
        wanted: dict[bool, list[int]] = {True: [], False: []}
        for i, get in enumerate(gets):
            try:
                v.check_tier(get.tier)
                v.check_key(get.key)
                wanted[self.linearizable(get.consistency)].append(i)
            except v.InvalidArgument as exc:
                outcomes.append(exc)
            else:
                outcomes.append(_UNREAD)  # until its read below answers it

        async def read(linearizable: bool, indexes: list[int]) -> None:
            keys = [gets[i].key for i in indexes]
            try:
                found = await self.system.get_many(keys, linearizable=linearizable, timeout=timeout)
            except Exception as exc:  # every get of this read gets its error
                found = [exc] * len(indexes)
            for i, answer in zip(indexes, found, strict=True):
                outcomes[i] = answer

        await asyncio.gather(*(read(lin, idx) for lin, idx in wanted.items() if idx))
        assert _UNREAD not in outcomes
        return outcomes

    async def _put_one(self, put: Any, timeout: float) -> CommandResult:
        if put.prev_kv:
            raise v.InvalidArgument(
                "prev_kv is not offered in PutMany (the answer could outgrow a message): "
                "send the put alone"
            )
        v.check_tier(put.tier)
        v.check_key(put.key)
        v.check_value(put.value, self.config.max_value_bytes)
        v.check_request_id(put.request_id)
        if changes_policy([Need("write", put.tier or "system", put.key)]):
            raise v.InvalidArgument(
                f"{put.key!r} is under the access policy's prefix: send it alone (Put or "
                "Txn), which audits the change"
            )
        txn = Txn(success=(PutOp(put.key, put.value),), request_id=put.request_id)
        return await self.system.txn(txn, timeout)

    async def Delete(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.count("kv_writes", request)
        try:
            v.check_tier(request.tier)
            v.check_request_id(request.request_id)
            result = await self._commit(
                context,
                Txn(success=(_delete_from_pb(request),), request_id=request.request_id),
            )
        except Exception as exc:
            await self.abort_for(context, exc)
        deleted = result.results[0].kvs
        return pb.DeleteResponse(
            header=self.header(result.revision),
            deleted=len(deleted),
            prev_kvs=[kv_to_pb(k) for k in deleted] if request.prev_kv else [],
        )

    async def Txn(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.count("kv_writes", request)
        try:
            v.check_tier(request.tier)
            total = len(request.compare) + len(request.success) + len(request.failure)
            if total > v.MAX_TXN_OPS:
                raise v.InvalidArgument(
                    f"transaction has {total} compares and operations; the limit is {v.MAX_TXN_OPS}"
                )
            size = sum(len(op.put.value) for op in (*request.success, *request.failure))
            if size > self.config.max_value_bytes:
                raise v.InvalidArgument(
                    f"transaction carries {size} bytes of values; the limit is "
                    f"{self.config.max_value_bytes} bytes"
                )
            txn = Txn(
                tuple(_compare_from_pb(c) for c in request.compare),
                tuple(_op_from_pb(op, self.config.max_value_bytes) for op in request.success),
                tuple(_op_from_pb(op, self.config.max_value_bytes) for op in request.failure),
                request.request_id,
            )
            v.check_request_id(request.request_id)
            result = await self._commit(context, txn)
        except Exception as exc:
            await self.abort_for(context, exc)
        header = self.header(result.revision)
        ops: Sequence[TxnOp] = txn.success if result.succeeded else txn.failure
        return pb.TxnResponse(
            header=header,
            succeeded=result.succeeded,
            responses=[
                _op_result_to_pb(op, res, result.revision, header)
                for op, res in zip(ops, result.results, strict=True)
            ],
        )

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            v.check_tier(request.tier)
            if request.prefix:
                v.check_prefix(request.key)
            else:
                v.check_key(request.key)
            v.check_revision(request.start_revision, "start_revision")
        except Exception as exc:
            await self.abort_for(context, exc)
        try:
            async for events in self.system.watch(
                request.key, prefix=request.prefix, start_revision=request.start_revision
            ):
                yield pb.WatchResponse(
                    header=self.header(events[-1].kv.mod_revision),
                    events=[
                        pb.Event(
                            type=int(e.type),  # type: ignore[arg-type]
                            kv=kv_to_pb(e.kv),
                            prev_kv=kv_to_pb(e.prev_kv) if e.prev_kv else None,
                        )
                        for e in events
                    ],
                )
        except CompactedError as exc:
            await self.abort_for(context, exc)


class ClusterServicer(_Api, pb_grpc.ClusterServicer):  # type: ignore[misc]
    def __init__(
        self,
        config: NodeConfig,
        system: SystemBackend,
        started_at: float,
        gossip: GossipDriver | None = None,
        tier_health: Callable[[], list[Any]] | None = None,
        load: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(config, system)
        self._started_at = started_at
        self._load = load  # StatusResponse's load fields (see NodeServer.load)
        self._gossip = gossip
        self._tier_health = tier_health
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._renewal = Renewal(config.tls())

    def _stub(self, address: str, node_id: str) -> Any:
        if self._renewal.due():  # present a rotated certificate on new channels
            old, self._channels = self._channels, {}
            close_later(old.values(), 2.0)
        channel = self._channels.get(f"{node_id}@{address}")
        if channel is None:
            channel = aio_channel(address, self.config.tls(), server_name=server_name_for(node_id))
            self._channels[f"{node_id}@{address}"] = channel
        return pb_grpc.ClusterStub(channel)

    def status_pb(self) -> Any:
        st = self.system.info()
        return pb.StatusResponse(
            header=self.header(),
            id=self.config.node_id,
            raft_role=st.role,
            term=st.term,
            commit_index=st.commit_index,
            applied_index=st.applied_index,
            log_entries=st.log_entries,
            keys=st.keys,
            has_quorum=st.has_quorum,
            version=VERSION,
            uptime_s=time.monotonic() - self._started_at,
            data_dir=self.config.data_path,
            system_backend=self.system.name,
            tiers=self._tier_health() if self._tier_health is not None else [],
            **(self._load() if self._load is not None else {}),
        )

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.status_pb()

    async def Members(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.members(local_view=request.local_view)

    async def members(self, *, local_view: bool = False) -> Any:
        """Every member with its Raft view (asked of it, 0.5 s at most) and this node's
        gossip view: the MembersResponse of ``tadpole members`` and ``/api/v1/members``.
        ``local_view``: ask no peer; each is described by this node's Raft and gossip
        views alone (what the client needs to place keys, answered at once)."""
        st = self.system.info()
        me = self.status_pb()
        members = [
            pb.Member(
                id=self.config.node_id,
                address=self.config.address,
                raft_role=me.raft_role,
                term=me.term,
                commit_index=me.commit_index,
                applied_index=me.applied_index,
                status="alive",
                is_self=True,
                match_index=-1,
                last_heard_s=0.0,
            )
        ]

        async def ask(peer_id: str, address: str) -> Any:
            peer = st.peers.get(peer_id)
            last_heard = peer.last_heard_s if peer else float("inf")
            member = pb.Member(
                id=peer_id,
                address=address,
                raft_role="unknown",
                status="unreachable",
                match_index=peer.match_index if peer else -1,
                last_heard_s=last_heard if last_heard != float("inf") else -1.0,
            )
            if local_view:
                return member
            try:
                remote = await self._stub(address, peer_id).Status(pb.StatusRequest(), timeout=0.5)
            except grpc.aio.AioRpcError:
                return member
            member.raft_role = remote.raft_role
            member.term = remote.term
            member.commit_index = remote.commit_index
            member.applied_index = remote.applied_index
            member.status = "alive"
            return member

        members += await asyncio.gather(
            *(ask(pid, addr) for pid, addr in sorted(self.config.peers.items()))
        )
        self._add_gossip_view(members)
        return pb.MembersResponse(header=self.header(), members=members)

    def _add_gossip_view(self, members: list[Any]) -> None:
        """Fill in this node's SWIM view; members known only to gossip are appended."""
        if self._gossip is None:
            return
        now = self._gossip.now()
        by_id = {m.id: m for m in members}
        for view in self._gossip.members():
            member = by_id.get(view.id)
            if member is None:
                member = pb.Member(
                    id=view.id, address=view.address, raft_role="none", status="unreachable"
                )
                members.append(member)
            member.gossip_status = str(view.status)
            member.incarnation = view.incarnation
            member.gossip_last_heard_s = max(0.0, now - view.last_heard)
            member.tiers[:] = list(view.meta.tiers)
            if member.status == "unreachable" and str(view.status) == "alive":
                member.status = "alive"

    async def TransferLeadership(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        target = request.target_id
        if target and target not in self.config.peers and target != self.config.node_id:
            await self.abort_for(context, NotFound(f"no member with id {target!r}"))
        st = self.system.info()
        if target == st.leader_id and target:
            return pb.TransferLeadershipResponse(header=self.header(), leader_id=target)
        budget = self.timeout(context)  # the caller's deadline, forwarded or spent here
        if st.role != "leader":
            if not st.leader_id:
                await self.abort_for(context, NotLeaderError("no leader right now; retry"))
            address = self.leader_address(st.leader_id)
            try:
                return await self._stub(address, st.leader_id).TransferLeadership(
                    request, timeout=budget, metadata=auth_metadata(self.config.operator_token())
                )
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "leader did not answer")
        try:
            leader = await self.system.transfer_leadership(target, budget)
        except ProposalError as exc:
            await self.abort_for(context, exc)
        return pb.TransferLeadershipResponse(header=self.header(), leader_id=leader)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
