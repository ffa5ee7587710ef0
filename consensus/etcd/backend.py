"""The system tier stored in an external etcd v3 cluster (``system_backend = "etcd"``).

:class:`EtcdSystem` implements :class:`consensus.backend.SystemBackend` with
the aetcd client. etcd's MVCC model is the one ``consensus.statemachine``
copies, so the mapping is one to one:

=========================  ================================================
Tadpole                    etcd
=========================  ================================================
revision                   etcd's cluster revision, exposed **as is**
create/mod revision, ver.  the etcd key's create_revision/mod_revision/version
Txn compares and ops       one etcd ``Txn`` (VALUE compare on an absent key
                           is false in both)
linearizable read          etcd default (quorum, ReadIndex) ``Range``
serializable read          ``Range`` with ``serializable=true``
watch from a revision      etcd ``Watch`` with ``start_revision``, prev_kv;
                           one batch per revision
compacted history          etcd compaction -> :class:`CompactedError`
=========================  ================================================

**Revisions.** Tadpole revisions *are* etcd revisions. etcd starts an empty
store at revision 1 (Tadpole's own state machine at 0) and, when the etcd
cluster is shared with other users, the revision also moves for their
writes, and for this backend's request records (below). What holds on both
backends: revisions only grow, every change of one transaction shares one
revision, and a key's create/mod revision and version mean the same thing.

**Key layout.** Everything lives under ``prefix`` (default
``/tadpole/system/``): Tadpole key ``k`` is etcd key ``<prefix>kv/k``;
request records (exactly-once writes, below) are ``<prefix>req/<id>``. The
prefix is stripped from everything returned.

**Exactly-once writes.** A transaction with a ``request_id`` is sent as a
nested etcd transaction: *if* ``<prefix>req/<id>`` does not exist, run the
caller's transaction and create the record in the same revision; *else*
return the record. The record holds whether the compares succeeded; its
mod_revision is the original revision, from which the original result is
read back through etcd's MVCC history (``Range`` at that revision). So a
resend with the same id changes nothing and answers like the first
application, and this backend may itself resend a write of unknown outcome
to another etcd member. Records hang off a lease that is rotated every
``request_ttl_s / 2`` and lives ``request_ttl_s``, so they are kept between
half and all of ``request_ttl_s`` (default 10 minutes). A resend after that,
or one whose original revision was compacted, is refused with a
:class:`ProposalError` rather than applied twice or answered wrongly.

**Differences that remain.** etcd refuses a transaction that changes one key
twice (``duplicate key given in txn request``); Tadpole's state machine would
apply both in order. Such a request fails with :class:`ProposalError` and
changes nothing. A range inside a transaction that was re-answered from the
request record sees the state *after* the transaction.

**Failover.** Calls go to one endpoint at a time; when it fails the next
endpoint is tried within the same deadline. Reads and writes that certainly
did not reach etcd's log (connection refused, ``no leader``) are retried;
a write whose outcome is unknown is retried only when it carries a request
id, otherwise it raises :class:`OutcomeUnknownError`.

Thread-safety: one event loop; every coroutine must run on the loop that
called :meth:`EtcdSystem.start`. Errors: the ``consensus.errors`` tree, never
a gRPC exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aetcd
import grpc
from aetcd import rpc

from consensus.backend import BackendInfo, RangeResult
from consensus.errors import (
    CompactedError,
    NotLeaderError,
    OutcomeUnknownError,
    ProposalError,
    ProposalTimeout,
)
from consensus.statemachine import (
    CommandResult,
    Compare,
    CompareOp,
    CompareTarget,
    DeleteOp,
    Event,
    EventType,
    GetOp,
    KeyValue,
    OpResult,
    PutOp,
    SystemStateMachine,
    Txn,
    TxnOp,
    page_events,
)

log = logging.getLogger(__name__)

# How long a history read waits for the next revision before answering with what
# arrived (etcd's catch-up loop for a watcher in the past runs every 100 ms).
HISTORY_QUIET_S = 0.5

T = TypeVar("T")

DEFAULT_PREFIX = "/tadpole/system/"
_RECORD_SUCCEEDED = b"s"
_RECORD_FAILED = b"f"

_COMPARE_RESULT = {
    CompareOp.EQUAL: rpc.Compare.EQUAL,
    CompareOp.NOT_EQUAL: rpc.Compare.NOT_EQUAL,
    CompareOp.GREATER: rpc.Compare.GREATER,
    CompareOp.LESS: rpc.Compare.LESS,
}
_COMPARE_TARGET = {
    CompareTarget.VERSION: rpc.Compare.VERSION,
    CompareTarget.CREATE: rpc.Compare.CREATE,
    CompareTarget.MOD: rpc.Compare.MOD,
    CompareTarget.VALUE: rpc.Compare.VALUE,
}

# etcd answers these when the request never entered its log: resending is safe.
_NOT_APPLIED_MARKERS = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "etcdserver: no leader",
    "etcdserver: not capable",
    "etcdserver: too many requests",
    "dns resolution failed",
)


def prefix_end(key: bytes) -> bytes:
    """Smallest byte string greater than every string starting with ``key``
    (``b"\\0"`` = no upper bound, etcd's convention)."""
    stem = key.rstrip(b"\xff")
    if not stem:
        return b"\0"
    return stem[:-1] + bytes([stem[-1] + 1])


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
    return host, int(port)


def _not_applied(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return True
    details = (exc.details() or "").lower()
    return any(marker in details for marker in _NOT_APPLIED_MARKERS)


class EtcdSystem:
    """SystemBackend over etcd v3. See the module docstring for the mapping."""

    name = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = DEFAULT_PREFIX,
        *,
        request_ttl_s: int = 600,
        status_interval_s: float = 1.0,
    ) -> None:
        if not endpoints:
            raise ValueError("the etcd backend needs at least one endpoint")
        if request_ttl_s < 10:
            raise ValueError("request_ttl_s must be at least 10 s")
        self._endpoints = list(endpoints)
        self._clients = [
            aetcd.Client(*parse_endpoint(e), options=_CHANNEL_OPTIONS) for e in endpoints
        ]
        self._current = 0
        raw = prefix.encode()
        self._kv_prefix = raw + b"kv/"
        self._req_prefix = raw + b"req/"
        self._request_ttl_s = request_ttl_s
        self._status_interval_s = status_interval_s
        self._lease_id = 0
        self._lease_granted_at = float("-inf")
        self._lease_lock: asyncio.Lock | None = None
        self._refresher: asyncio.Task[None] | None = None
        # Cached for info(), which must not block.
        self._revision = 0
        self._term = 0
        self._raft_index = 0
        self._applied_index = 0
        self._leader_name = ""
        self._has_quorum = False
        self._keys = 0
        self._member_names: dict[int, str] = {}

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        self._lease_lock = asyncio.Lock()
        for client in self._clients:
            await client.connect()  # builds the channel; connects lazily
        with contextlib.suppress(ProposalError):
            await self._refresh_status(timeout=2.0)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        log.info(
            "etcd backend on %s, prefix %r (leader %s, revision %d)",
            ",".join(self._endpoints),
            self._kv_prefix[:-3].decode(),
            self._leader_name or "unknown",
            self._revision,
        )

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for client in self._clients:
            await client.close()

    # -- the call loop ------------------------------------------------------------

    async def _call(
        self,
        attempt: Callable[[aetcd.Client, float], Awaitable[T]],
        *,
        timeout: float,
        resend_safe: bool,
        what: str,
    ) -> T:
        """Run ``attempt(client, remaining_s)`` against the current endpoint,
        moving to the next on failure until ``timeout``. ``resend_safe``: an
        attempt of unknown outcome may be repeated (reads; writes with a
        request id)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        unknown = False
        failures = 0
        last = ""
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                break
            index = self._current
            try:
                result = await attempt(self._clients[index], remaining)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                last = f"{self._endpoints[index]}: {code.name} {exc.details()}"
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    raise ProposalError(f"{what}: {exc.details()}") from exc
                if code in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                ):
                    raise ProposalError(f"etcd refused {what}: {exc.details()}") from exc
                if not _not_applied(exc):
                    unknown = True
                    if not resend_safe:
                        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                            raise ProposalTimeout(
                                f"{what} not confirmed within {timeout:.3g} s; "
                                "it may still be applied"
                            ) from exc
                        raise OutcomeUnknownError(
                            f"{what}: etcd call failed after sending ({last}); "
                            "it may or may not have been applied"
                        ) from exc
                failures += 1
                self._rotate(index)
                if failures % len(self._clients) == 0:
                    # Every endpoint failed once: back off a little before another round.
                    await asyncio.sleep(min(0.05 * failures, 0.5, max(remaining - 0.01, 0)))
                continue
            self._current = index
            return result
        if unknown:
            raise ProposalTimeout(
                f"{what} not confirmed within {timeout:.3g} s (last: {last}); "
                "it may or may not have been applied"
            )
        raise NotLeaderError(f"etcd unavailable for {what} within {timeout:.3g} s (last: {last})")

    def _rotate(self, failed: int) -> None:
        if self._current == failed:
            self._current = (failed + 1) % len(self._clients)

    def _note(self, header: Any) -> None:
        self._revision = max(self._revision, int(header.revision))
        self._term = max(self._term, int(header.raft_term))

    # -- keys -------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return self._kv_prefix + key.encode("utf-8", "surrogatepass")

    def _strip(self, raw: bytes) -> str:
        return raw[len(self._kv_prefix) :].decode("utf-8", "surrogatepass")

    def _kv(self, kv: Any) -> KeyValue:
        return KeyValue(
            self._strip(kv.key),
            bytes(kv.value),
            int(kv.create_revision),
            int(kv.mod_revision),
            int(kv.version),
        )

    def _range_request(
        self, key: str, *, prefix: bool, limit: int = 0, serializable: bool = False
    ) -> Any:
        raw = self._key(key)
        request = rpc.RangeRequest(key=raw, limit=limit, serializable=serializable)
        if prefix:
            request.range_end = prefix_end(raw)
        return request

    # -- writes -----------------------------------------------------------------

    def _compare(self, c: Compare) -> Any:
        message = rpc.Compare(
            key=self._key(c.key), result=_COMPARE_RESULT[c.op], target=_COMPARE_TARGET[c.target]
        )
        if c.target is CompareTarget.VERSION:
            message.version = c.number
        elif c.target is CompareTarget.CREATE:
            message.create_revision = c.number
        elif c.target is CompareTarget.MOD:
            message.mod_revision = c.number
        else:
            message.value = c.value
        return message

    def _request_op(self, op: TxnOp) -> Any:
        if isinstance(op, PutOp):
            return rpc.RequestOp(
                request_put=rpc.PutRequest(key=self._key(op.key), value=op.value, prev_kv=True)
            )
        if isinstance(op, DeleteOp):
            raw = self._key(op.key)
            delete = rpc.DeleteRangeRequest(key=raw, prev_kv=True)
            if op.prefix:
                delete.range_end = prefix_end(raw)
            return rpc.RequestOp(request_delete_range=delete)
        return rpc.RequestOp(
            request_range=self._range_request(op.key, prefix=op.prefix, limit=op.limit)
        )

    def _op_result(self, op: TxnOp, response: Any, revision: int) -> OpResult:
        if isinstance(op, PutOp):
            put = response.response_put
            prev = self._kv(put.prev_kv) if put.HasField("prev_kv") else None
            # etcd does not echo the new key; it is fully determined by the put.
            kv = KeyValue(
                op.key,
                op.value,
                prev.create_revision if prev else revision,
                revision,
                prev.version + 1 if prev else 1,
            )
            return OpResult(kvs=(kv,), prev=prev)
        if isinstance(op, DeleteOp):
            return OpResult(
                kvs=tuple(self._kv(kv) for kv in response.response_delete_range.prev_kvs)
            )
        found = response.response_range
        return OpResult(kvs=tuple(self._kv(kv) for kv in found.kvs), more=bool(found.more))

    async def txn(self, txn: Txn, timeout: float) -> CommandResult:
        compares = [self._compare(c) for c in txn.compares]
        success = [self._request_op(op) for op in txn.success]
        failure = [self._request_op(op) for op in txn.failure]
        if not txn.request_id:
            request = rpc.TxnRequest(compare=compares, success=success, failure=failure)

            async def plain(client: aetcd.Client, remaining: float) -> Any:
                return await client.kvstub.Txn(request, timeout=remaining, metadata=client.metadata)

            response = await self._call(plain, timeout=timeout, resend_safe=False, what="txn")
            self._note(response.header)
            return self._result(txn, bool(response.succeeded), response.responses, response.header)
        return await self._txn_once(txn, compares, success, failure, timeout)

    def _result(
        self, txn: Txn, succeeded: bool, responses: Sequence[Any], header: Any
    ) -> CommandResult:
        ops = txn.success if succeeded else txn.failure
        revision = int(header.revision)
        return CommandResult(
            revision,
            succeeded,
            tuple(self._op_result(op, r, revision) for op, r in zip(ops, responses, strict=True)),
        )

    async def _txn_once(
        self, txn: Txn, compares: list[Any], success: list[Any], failure: list[Any], timeout: float
    ) -> CommandResult:
        record = self._req_prefix + txn.request_id.encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        lease = await self._lease(timeout)

        def mark(value: bytes) -> Any:
            return rpc.RequestOp(request_put=rpc.PutRequest(key=record, value=value, lease=lease))

        inner = rpc.TxnRequest(
            compare=compares,
            success=[*success, mark(_RECORD_SUCCEEDED)],
            failure=[*failure, mark(_RECORD_FAILED)],
        )
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=record, result=rpc.Compare.EQUAL, target=rpc.Compare.VERSION, version=0
                )
            ],
            success=[rpc.RequestOp(request_txn=inner)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=record))],
        )

        async def once(client: aetcd.Client, remaining: float) -> Any:
            return await client.kvstub.Txn(request, timeout=remaining, metadata=client.metadata)

        try:
            response = await self._call(once, timeout=timeout, resend_safe=True, what="txn")
        except ProposalError as exc:
            if "lease not found" not in str(exc):
                raise
            # The lease expired under us (etcd unreachable for a long time): nothing
            # was applied; take a fresh lease and try once more.
            self._lease_granted_at = float("-inf")
            return await self._txn_once(
                txn, compares, success, failure, max(deadline - loop.time(), 0.01)
            )
        self._note(response.header)
        if response.succeeded:
            nested = response.responses[0].response_txn
            return self._result(
                txn, bool(nested.succeeded), list(nested.responses)[:-1], response.header
            )
        found = response.responses[0].response_range.kvs
        if not found:  # cannot happen: the compare said the record exists
            raise OutcomeUnknownError(f"request {txn.request_id!r}: record vanished")
        return await self._replay(txn, found[0], max(deadline - loop.time(), 0.01))

    async def _replay(self, txn: Txn, record: Any, timeout: float) -> CommandResult:
        """Answer a resend: rebuild the first application's result from etcd's
        history at the record's revision."""
        revision = int(record.mod_revision)
        succeeded = bytes(record.value) == _RECORD_SUCCEEDED
        ops = txn.success if succeeded else txn.failure

        async def at(request: Any, rev: int) -> Any:
            request.revision = rev

            async def attempt(client: aetcd.Client, remaining: float) -> Any:
                return await client.kvstub.Range(
                    request, timeout=remaining, metadata=client.metadata
                )

            return await self._call(attempt, timeout=timeout, resend_safe=True, what="replay")

        results: list[OpResult] = []
        try:
            for op in ops:
                if isinstance(op, PutOp):
                    now = await at(self._range_request(op.key, prefix=False), revision)
                    before = await at(self._range_request(op.key, prefix=False), revision - 1)
                    kv = self._kv(now.kvs[0])
                    prev = self._kv(before.kvs[0]) if before.kvs else None
                    results.append(OpResult(kvs=(kv,), prev=prev))
                elif isinstance(op, DeleteOp):
                    before = await at(self._range_request(op.key, prefix=op.prefix), revision - 1)
                    after = await at(self._range_request(op.key, prefix=op.prefix), revision)
                    remaining_keys = {bytes(kv.key) for kv in after.kvs}
                    gone = tuple(
                        self._kv(kv) for kv in before.kvs if bytes(kv.key) not in remaining_keys
                    )
                    results.append(OpResult(kvs=gone))
                else:
                    assert isinstance(op, GetOp)
                    found = await at(
                        self._range_request(op.key, prefix=op.prefix, limit=op.limit), revision
                    )
                    results.append(
                        OpResult(kvs=tuple(self._kv(kv) for kv in found.kvs), more=bool(found.more))
                    )
        except (ProposalError, IndexError) as exc:
            raise ProposalError(
                f"request {txn.request_id!r} was already applied at revision {revision}, "
                f"but its result is no longer available ({exc}); not applied again"
            ) from exc
        return CommandResult(revision, succeeded, tuple(results))

    async def _lease(self, timeout: float) -> int:
        """The lease request records hang off; a new one every ttl/2."""
        assert self._lease_lock is not None, "start() first"
        async with self._lease_lock:
            age = time.monotonic() - self._lease_granted_at
            if age < self._request_ttl_s / 2:
                return self._lease_id

            async def grant(client: aetcd.Client, remaining: float) -> Any:
                return await client.leasestub.LeaseGrant(
                    rpc.LeaseGrantRequest(TTL=self._request_ttl_s),
                    timeout=remaining,
                    metadata=client.metadata,
                )

            granted = await self._call(grant, timeout=timeout, resend_safe=True, what="lease grant")
            self._lease_id = int(granted.ID)
            self._lease_granted_at = time.monotonic()
            return self._lease_id

    # -- reads ------------------------------------------------------------------

    async def _range(self, request: Any, timeout: float) -> Any:
        async def attempt(client: aetcd.Client, remaining: float) -> Any:
            return await client.kvstub.Range(request, timeout=remaining, metadata=client.metadata)

        response = await self._call(attempt, timeout=timeout, resend_safe=True, what="read")
        self._note(response.header)
        return response

    async def get(
        self, key: str, *, linearizable: bool, timeout: float
    ) -> tuple[KeyValue | None, int]:
        response = await self._range(
            self._range_request(key, prefix=False, serializable=not linearizable), timeout
        )
        found = self._kv(response.kvs[0]) if response.kvs else None
        return found, int(response.header.revision)

    async def get_many(
        self, keys: Sequence[str], *, linearizable: bool, timeout: float
    ) -> list[tuple[KeyValue | None, int] | BaseException]:
        """One range call per key, all at once (each at its own revision); a key whose
        read failed has its error in its place."""
        return list(
            await asyncio.gather(
                *(self.get(key, linearizable=linearizable, timeout=timeout) for key in keys),
                return_exceptions=True,
            )
        )

    async def range(
        self,
        prefix: str,
        *,
        limit: int,
        start_after: str,
        linearizable: bool,
        timeout: float,
    ) -> RangeResult:
        whole = self._range_request(prefix, prefix=True, serializable=not linearizable)
        if not start_after:
            whole.limit = limit
            response = await self._range(whole, timeout)
            kvs = [self._kv(kv) for kv in response.kvs]
            return RangeResult(
                kvs, bool(response.more), int(response.count), int(response.header.revision)
            )
        # A page after ``start_after`` and the count of the whole prefix, read at
        # one revision: a read-only txn (linearizable unless every range is
        # serializable, as etcd defines it).
        page = self._range_request(prefix, prefix=True, limit=limit, serializable=not linearizable)
        page.key = max(whole.key, self._key(start_after) + b"\0")
        whole.count_only = True
        request = rpc.TxnRequest(
            success=[rpc.RequestOp(request_range=page), rpc.RequestOp(request_range=whole)]
        )

        async def attempt(client: aetcd.Client, remaining: float) -> Any:
            return await client.kvstub.Txn(request, timeout=remaining, metadata=client.metadata)

        response = await self._call(attempt, timeout=timeout, resend_safe=True, what="read")
        self._note(response.header)
        got, counted = response.responses[0].response_range, response.responses[1].response_range
        return RangeResult(
            [self._kv(kv) for kv in got.kvs],
            bool(got.more),
            int(counted.count),
            int(response.header.revision),
        )

    # -- watch ------------------------------------------------------------------

    async def watch(
        self, key: str, *, prefix: bool, start_revision: int
    ) -> AsyncIterator[list[Event]]:
        """One etcd watch stream at a time; if it breaks, a new one on the next
        endpoint resumes from the revision after the last one delivered."""
        raw = self._key(key)
        next_rev = start_revision
        failures = 0
        while True:
            index = self._current
            client = self._clients[index]
            create = rpc.WatchCreateRequest(key=raw, start_revision=next_rev, prev_kv=True)
            if prefix:
                create.range_end = prefix_end(raw)
            call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        break
                    failures = 0
                    self._note(response.header)
                    if response.compact_revision:
                        raise CompactedError(int(response.compact_revision) - 1)
                    if response.canceled:
                        raise ProposalError(f"etcd cancelled the watch: {response.cancel_reason}")
                    if response.created and next_rev == 0:
                        next_rev = int(response.header.revision) + 1
                    for batch in self._by_revision(response.events):
                        yield batch
                        next_rev = batch[-1].kv.mod_revision + 1
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.INTERNAL,
                    grpc.StatusCode.UNKNOWN,
                ):
                    raise ProposalError(f"etcd watch failed: {exc.details()}") from exc
                log.info(
                    "etcd watch on %s broke (%s); resuming", self._endpoints[index], exc.code()
                )
            finally:
                call.cancel()
            failures += 1
            self._rotate(index)
            if next_rev == 0:
                # Never created: "from the next change" must not skip anything
                # that happens while we reconnect, so pin the revision now.
                with contextlib.suppress(ProposalError):
                    next_rev = (await self.get(key, linearizable=False, timeout=1.0))[1] + 1
            await asyncio.sleep(min(0.02 * failures, 0.5))

    async def history(
        self, key: str, *, prefix: bool, start_revision: int, limit: int, timeout: float
    ) -> tuple[list[Event], int, bool]:
        """A watch over this cluster's whole etcd prefix from ``start_revision``, read
        until it reaches the revision of a linearizable read, filtered here.

        etcd 3.4's progress notification is not ordered with the catch-up of a watcher
        that starts in the past (it can arrive before the old events), so it cannot
        mark "caught up". Watching the whole prefix instead, every revision this cluster
        made is seen, and etcd delivers them in order: the history is complete up to
        the last revision received. When the newest revision is another etcd user's
        (a shared etcd), the watch ends after :data:`HISTORY_QUIET_S` without news
        and the answer is complete up to what arrived; never beyond it."""
        _, wanted = await self.get(key, linearizable=True, timeout=timeout)
        if start_revision > wanted:
            return [], wanted, False
        whole = self._kv_prefix[:-3]  # "<prefix>": data (kv/) and request records (req/)
        create = rpc.WatchCreateRequest(
            key=whole, range_end=prefix_end(whole), start_revision=start_revision, prev_kv=True
        )
        want = self._key(key)

        def matches(raw_key: bytes) -> bool:
            if not raw_key.startswith(self._kv_prefix):
                return False
            return raw_key.startswith(want) if prefix else raw_key == want

        async def attempt(client: aetcd.Client, remaining: float) -> tuple[list[Event], int]:
            call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata, timeout=remaining)
            events: list[Event] = []
            through = start_revision - 1
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                while through < wanted:
                    try:
                        response = await asyncio.wait_for(call.read(), HISTORY_QUIET_S)
                    except TimeoutError:
                        break
                    if response is grpc.aio.EOF:
                        raise ProposalError("etcd closed the history watch")
                    if response.compact_revision:
                        raise CompactedError(int(response.compact_revision) - 1)
                    if response.canceled:
                        raise ProposalError(f"etcd cancelled the watch: {response.cancel_reason}")
                    mine = [e for e in response.events if matches(bytes(e.kv.key))]
                    for batch in self._by_revision(mine):
                        events.extend(batch)
                    if response.events:
                        through = max(through, int(response.events[-1].kv.mod_revision))
                return events, through
            finally:
                call.cancel()

        events, through = await self._call(
            attempt, timeout=timeout, resend_safe=True, what="history"
        )
        return page_events(events, limit, through)

    def _by_revision(self, events: Sequence[Any]) -> list[list[Event]]:
        batches: list[list[Event]] = []
        for raw in events:
            prev = self._kv(raw.prev_kv) if raw.HasField("prev_kv") else None
            kv = self._kv(raw.kv)
            if raw.type == rpc.Event.DELETE:
                event = Event(EventType.DELETE, KeyValue(kv.key, b"", 0, kv.mod_revision, 0), prev)
            else:
                event = Event(EventType.PUT, kv, prev)
            if batches and batches[-1][-1].kv.mod_revision == kv.mod_revision:
                batches[-1].append(event)
            else:
                batches.append([event])
        return batches

    # -- status -----------------------------------------------------------------

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            role="etcd",
            term=self._term,
            leader_id=self._leader_name,
            commit_index=self._raft_index,
            applied_index=self._applied_index,
            log_entries=0,
            has_quorum=self._has_quorum,
            revision=self._revision,
            keys=self._keys,
        )

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._status_interval_s)
            try:
                await self._refresh_status(timeout=max(self._status_interval_s, 0.5))
            except ProposalError as exc:
                if self._has_quorum:
                    log.warning("etcd status unavailable: %s", exc)
                self._has_quorum = False
                self._leader_name = ""

    async def _refresh_status(self, timeout: float) -> None:
        async def status(client: aetcd.Client, remaining: float) -> Any:
            return await client.maintenancestub.Status(
                rpc.StatusRequest(), timeout=remaining, metadata=client.metadata
            )

        st = await self._call(status, timeout=timeout, resend_safe=True, what="status")
        leader = int(st.leader)
        if leader and leader not in self._member_names:

            async def members(client: aetcd.Client, remaining: float) -> Any:
                return await client.clusterstub.MemberList(
                    rpc.MemberListRequest(), timeout=remaining, metadata=client.metadata
                )

            listed = await self._call(members, timeout=timeout, resend_safe=True, what="members")
            self._member_names = {int(m.ID): m.name or f"{m.ID:x}" for m in listed.members}
        counted = await self._range(
            rpc.RangeRequest(
                key=self._kv_prefix,
                range_end=prefix_end(self._kv_prefix),
                count_only=True,
                serializable=True,
            ),
            timeout,
        )
        self._note(st.header)
        self._raft_index = int(st.raftIndex)
        self._applied_index = int(st.raftAppliedIndex)
        self._leader_name = self._member_names.get(leader, f"{leader:x}") if leader else ""
        self._has_quorum = bool(leader)
        self._keys = int(counted.count)

    async def snapshot(self, timeout: float) -> SystemStateMachine:
        raise ProposalError(
            "the system tier lives in etcd: back it up with `etcdctl snapshot save` "
            "(tadpole backup covers the CRDT tiers)"
        )

    async def transfer_leadership(self, target_id: str, timeout: float) -> str:
        raise ProposalError(
            "not supported with the etcd backend: leadership belongs to the etcd cluster "
            "(use etcdctl move-leader)"
        )


# Keepalive finds a silently dead member (no RST) within ~15 s; etcd refuses
# client pings more often than every 5 s (--grpc-keepalive-min-time).
_CHANNEL_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
}
