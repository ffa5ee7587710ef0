"""Gathering a backup from a running cluster (over the ``Backup`` gRPC service).

* **System tier**: one member's snapshot of its state machine, taken at a
  linearizable read point (``consensus.backend.SystemBackend.snapshot``): every write
  acknowledged before the backup began is in it, and it is one revision's cut.
* **CRDT tiers**: every member's copies (and the hints it keeps for down owners),
  joined key by key. The join of CRDT states is commutative, associative and
  idempotent, and each copy is a state some replica reached, so the joined state
  holds every update any answering copy holds -- nothing is double counted however
  many copies overlap.

The coverage rule: a write to a tier is acknowledged once ``W`` (its write quorum)
distinct members hold it durably, owners or fallbacks. So if at most ``W - 1``
members fail to answer, at least one holder of every acknowledged write answered,
and the tier is **complete**. Population and mesh (``W = 2``) tolerate one missing
member; agent and metrics (``W = 1``) need every member. A tier that misses more is
marked incomplete in the manifest, and ``create`` refuses it unless told
``--allow-incomplete``.

The population tier's retention archives (files each owner writes before entries
leave the live state) are gathered too, as the ``archive`` section: content-named,
so copies from several members are the same file.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from consensus.errors import SnapshotError
from consensus.statemachine import SystemStateMachine
from crdt import CRDTError, decode, encode
from node.backup.archive import BackupError, Gathered, TierCopy, system_records
from node.backup.layout import ARCHIVE
from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc
from node.peer.auth import auth_metadata
from node.tiers.ops import TIERS
from node.tls import TlsFiles, aio_channel

_CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 << 20),)
# Answers that asking again will not change (anything else counts as "did not answer").
_FINAL = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    address: str


def missing_allowed(tier: str) -> int:
    """Members that may fail to answer with the tier still complete: ``W - 1``. An
    archive is written by every owner of its population key before the entries leave
    the live state (which is replicated with population's W), so it counts as population."""
    return TIERS["population" if tier == ARCHIVE else tier].write_quorum - 1


def join_copies(
    tier: str, copies: Sequence[Sequence[tuple[str, bytes]]]
) -> list[tuple[str, bytes]]:
    """The key-by-key join of several members' copies of a tier, in key order.
    Identical bytes are kept as they are; different ones are decoded and merged."""
    joined: dict[str, bytes] = {}
    for rows in copies:
        for key, value in rows:
            have = joined.get(key)
            if have is None:
                joined[key] = value
            elif have != value and tier == ARCHIVE:
                raise BackupError(f"archive {key}: two members hold different bytes under one name")
            elif have != value:
                try:
                    a, b = decode(have), decode(value)
                    if type(a) is not type(b):
                        raise CRDTError(f"{type(a).__name__} and {type(b).__name__}")
                    joined[key] = encode(a.merge(b))
                except CRDTError as exc:
                    raise BackupError(f"{tier}/{key}: copies can't be joined ({exc})") from exc
    return sorted(joined.items())


async def gather(
    endpoints: Sequence[str], token: str, *, timeout_s: float = 60.0, tls: TlsFiles | None = None
) -> Gathered:
    """Everything a backup holds, from the cluster behind ``endpoints`` (over TLS with
    ``tls``)."""
    metadata = auth_metadata(token)
    members, source, channel_for = await _members(endpoints, timeout_s, tls)
    try:
        state = await _system_from_any(
            [source, *(m for m in members if m.id != source.id)], channel_for, metadata, timeout_s
        )
        # Every tier from every member at once: a member that is slow to come back
        # costs its retries once, not once per tier.
        sections = [*TIERS, ARCHIVE]
        asks = [(tier, m) for tier in sections for m in members]
        results = await asyncio.gather(
            *(_retried(_rows, channel_for(m), tier, metadata, timeout_s) for tier, m in asks),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ConnectionError):
                raise result
        tiers: dict[str, TierCopy] = {}
        for tier in sections:
            answers = {m.id: r for (t, m), r in zip(asks, results, strict=True) if t == tier}
            copies = [r for r in answers.values() if not isinstance(r, BaseException)]
            missing = tuple(mid for mid, r in answers.items() if isinstance(r, BaseException))
            tiers[tier] = TierCopy(
                records=join_copies(tier, copies),
                members=tuple(mid for mid in answers if mid not in missing),
                missing=missing,
                complete=len(missing) <= missing_allowed(tier),
            )
    finally:
        await channel_for.close()
    return Gathered(
        revision=state.revision,
        system=system_records(state),
        tiers=tiers,
        source=source.id,
        members=tuple(m.id for m in members),
    )


class _Channels:
    def __init__(self, tls: TlsFiles | None) -> None:
        self._tls = tls
        self._open: dict[str, grpc.aio.Channel] = {}

    def __call__(self, member: Member) -> grpc.aio.Channel:
        channel = self._open.get(member.address)
        if channel is None:
            channel = self._open[member.address] = aio_channel(
                member.address, self._tls, options=list(_CHANNEL_OPTIONS)
            )
        return channel

    async def close(self) -> None:
        for channel in self._open.values():
            await channel.close()


async def _members(
    endpoints: Sequence[str], timeout_s: float, tls: TlsFiles | None
) -> tuple[list[Member], Member, _Channels]:
    channels = _Channels(tls)
    errors = []
    for endpoint in endpoints:
        stub = pb_grpc.ClusterStub(channels(Member("", endpoint)))
        try:
            reply = await stub.Members(pb.MembersRequest(), timeout=min(timeout_s, 5.0))
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{endpoint}: {exc.details() or exc.code().name}")
            continue
        members = [Member(m.id, m.address) for m in reply.members]
        me = next((m for m in reply.members if m.is_self), None)
        source = Member(me.id, endpoint) if me is not None else members[0]
        return members, source, channels
    await channels.close()
    raise BackupError("no endpoint answered: " + "; ".join(errors))


# A member that does not answer (restarting, briefly partitioned) is asked again this
# many times, RETRY_PAUSE_S apart, before it counts as missing.
ATTEMPTS = 5
RETRY_PAUSE_S = 1.0


async def _retried(fn: Any, *args: Any) -> Any:
    for attempt in range(ATTEMPTS):
        try:
            return await fn(*args)
        except ConnectionError:
            if attempt == ATTEMPTS - 1:
                raise
            await asyncio.sleep(RETRY_PAUSE_S)
    raise AssertionError("unreachable")


async def _system_from_any(
    members: Sequence[Member],
    channel_for: _Channels,
    metadata: tuple[tuple[str, str], ...],
    timeout_s: float,
) -> SystemStateMachine:
    """The system tier's snapshot from the first member that can give one (a member
    that lost its leader or quorum, or died, is passed over)."""
    problems = []
    for _ in range(ATTEMPTS):
        for member in members:
            try:
                return await _system(channel_for(member), metadata, timeout_s)
            except ConnectionError as exc:
                problems.append(f"{member.id}: {exc}")
        await asyncio.sleep(RETRY_PAUSE_S)
    raise BackupError("system tier: no member gave a snapshot: " + "; ".join(problems[-3:]))


async def _system(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], timeout_s: float
) -> SystemStateMachine:
    stub = pb_grpc.BackupStub(channel)
    buffer = io.BytesIO()
    try:
        async for piece in stub.System(pb.BackupSystemRequest(), metadata=metadata,
                                       timeout=timeout_s):  # fmt: skip
            buffer.write(piece.data)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _FINAL:
            raise BackupError(f"system tier: {exc.details() or exc.code().name}") from exc
        raise ConnectionError(exc.details() or exc.code().name) from exc
    buffer.seek(0)
    state = SystemStateMachine()
    try:
        state.restore_from(buffer)
    except SnapshotError as exc:
        raise BackupError(f"system tier: the snapshot received is unreadable: {exc}") from exc
    return state


async def _rows(
    channel: grpc.aio.Channel,
    tier: str,
    metadata: tuple[tuple[str, str], ...],
    timeout_s: float,
) -> list[tuple[str, bytes]]:
    stub = pb_grpc.BackupStub(channel)
    rows: list[tuple[str, bytes]] = []
    done = False
    try:
        async for page in stub.Rows(pb.BackupRowsRequest(tier=tier), metadata=metadata,
                                    timeout=timeout_s):  # fmt: skip
            rows.extend((r.key, r.value) for r in page.rows)
            done = done or page.done
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _FINAL:
            raise BackupError(f"{tier}: {exc.details()}") from exc
        raise ConnectionError(exc.details() or exc.code().name) from exc
    if not done:
        raise ConnectionError("the stream ended before its last page")
    return rows
