"""Writes sent only to followers, which forward them to the leader: how many come back
with each status, and whether the leader's term moved meanwhile.

    make cluster TLS=0
    .venv/bin/python bench/forwarded_writes.py --clients 64 --seconds 15

Raw ``KV.Put`` stubs without request ids (each caller one call at a time), so an
"outcome unknown" (``ABORTED``) reaches the caller as it would reach a program that
does not resend. With no election, every write should be ``OK``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time

import grpc

from node.pb import tadpole_pb2 as pb
from node.pb import tadpole_pb2_grpc as pb_grpc


async def status(endpoint: str, metadata: tuple[tuple[str, str], ...]) -> pb.StatusResponse:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        return await pb_grpc.ClusterStub(channel).Status(
            pb.StatusRequest(), metadata=metadata, timeout=2
        )


async def run(endpoints: list[str], token: str, clients: int, seconds: float) -> int:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    before = [await status(e, metadata) for e in endpoints]
    followers = [e for e, s in zip(endpoints, before, strict=True) if s.raft_role == "follower"]
    if not followers:
        print("no follower to send to", file=sys.stderr)
        return 2
    codes: collections.Counter[str] = collections.Counter()
    details: collections.Counter[str] = collections.Counter()
    channels = [grpc.aio.insecure_channel(e) for e in followers]
    stubs = [pb_grpc.KVStub(c) for c in channels]
    stop = time.monotonic() + seconds

    async def caller(n: int) -> None:
        stub, sent = stubs[n % len(stubs)], 0
        while time.monotonic() < stop:
            request = pb.PutRequest(key=f"forwarded/{n}/{sent}", value=b"v" * 256)
            try:
                await stub.Put(request, metadata=metadata, timeout=5)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                details[exc.details() or ""] += 1
            sent += 1

    await asyncio.gather(*(caller(n) for n in range(clients)))
    for channel in channels:
        await channel.close()
    after = [await status(e, metadata) for e in endpoints]
    terms = sorted({s.term for s in before} | {s.term for s in after})
    total = sum(codes.values())
    print(f"{total} writes to {len(followers)} followers, {total / seconds:.0f}/s; "
          f"terms seen: {terms}")  # fmt: skip
    for code, count in codes.most_common():
        print(f"  {code:>18}: {count} ({100 * count / total:.2f}%)")
    for detail, count in details.most_common(5):
        print(f"  {count:>6} x {detail}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", default="127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103")
    parser.add_argument("--token-file", default=".cluster/operator.token")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    try:
        with open(args.token_file) as f:
            token = f.read().strip()
    except FileNotFoundError:
        token = ""
    return asyncio.run(run(args.endpoints.split(","), token, args.clients, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
