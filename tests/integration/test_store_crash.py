"""The local store under SIGKILL, and with a torn or corrupted WAL tail.

A child process (the script in ``CHILD``) writes through ``TierStore`` and
prints one line per write *after* the write's coroutine returned, flushed at
once; a printed line is therefore an acknowledgement. The parent kills the
child with SIGKILL, reopens the store and checks the acknowledgements.

What SIGKILL tests: nothing acknowledged is lost when the process dies at an
arbitrary point (the page cache survives, so this does not by itself prove
the fsync; power loss is not simulated here).

What the WAL tests can honestly claim: SQLite's recovery keeps a WAL prefix
that ends at a commit frame whose checksums (and salts) verify. After cutting
or corrupting the file inside the last transaction's frames, the store must
open without error, hold every transaction before it, hold *nothing* of the
damaged transaction (atomicity: none of its keys, though it spans several
frames), and pass ``integrity_check``. The control case (WAL left intact)
shows that the same check sees the last transaction when it is not damaged.
In a real crash the damaged transaction is one whose fsync never completed,
so it was never acknowledged; here it was (the child finished it), which is
why the test names exactly which keys must vanish.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from node.replication.store import TierStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, hashlib, sys
from node.replication.store import TierStore

path, mode, tag, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def value(name):
    return hashlib.sha256(name.encode()).digest() * 4

def ack(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

def incr(current):
    return str(int(current or b"0") + 1).encode()

async def worker(store, w):
    n = 0
    while True:
        key = f"k/{tag}/{w}/{n}"
        await store.update("pop", key, lambda _c, key=key: value(key))
        ack(f"K {w} {n}")
        count = await store.update("pop", f"c/{tag}/{w}", incr)
        ack(f"C {w} {int(count)}")
        n += 1

async def stream():
    store = TierStore(path)
    ack("ready")
    await asyncio.gather(*(worker(store, w) for w in range(workers)))

async def sequential():
    store = TierStore(path)
    for n in range(50):
        key = f"seq/{n:03d}"
        await store.update("pop", key, lambda _c, key=key: value(key))
    # The last transaction: five 3 kB values in one commit, several WAL frames.
    await store.put_many([("pop", f"last/{i}", value(f"last/{i}") * 24) for i in range(5)])
    ack("done")
    sys.stdin.read()  # wait to be killed; never close the store cleanly

asyncio.run(stream() if mode == "stream" else sequential())
"""


def value(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest() * 4


def spawn(path: str, mode: str, tag: str = "0", workers: int = 1) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, path, mode, tag, str(workers)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def kill_and_collect(child: subprocess.Popen[str], lines: list[str]) -> list[str]:
    """SIGKILL the child, then keep every complete line it had already written."""
    child.kill()
    rest, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    lines.extend(line for line in rest.splitlines(keepends=True) if line.endswith("\n"))
    return [line.rstrip("\n") for line in lines]


# ------------------------------------------------------------------ SIGKILL


def test_acknowledged_updates_survive_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "tiers.db")
    rng = random.Random(20240611)
    workers = 64
    acked: dict[str, list[str]] = {}
    for r in range(4):  # four kills, each followed by a reopen of the same file
        tag = str(r)
        child = spawn(path, "stream", tag, workers)
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        lines: list[str] = []
        target = rng.randrange(300, 3000)
        while len(lines) < target:
            line = child.stdout.readline()
            assert line, "child exited early"
            lines.append(line)
        acked[tag] = kill_and_collect(child, lines)

        # Every round so far must check out, each time the store is reopened.
        with TierStore(path) as store:
            for t, ack_lines in acked.items():
                check_round(store, t, workers, ack_lines)


def check_round(store: TierStore, tag: str, workers: int, lines: list[str]) -> None:
    keys_acked: dict[int, list[int]] = {w: [] for w in range(workers)}
    count_acked: dict[int, int] = dict.fromkeys(range(workers), 0)
    for line in lines:
        kind, worker, number = line.split()
        if kind == "K":
            keys_acked[int(worker)].append(int(number))
        else:
            count_acked[int(worker)] = max(count_acked[int(worker)], int(number))
    assert sum(map(len, keys_acked.values())) > 0
    for w in range(workers):
        acked = keys_acked[w]
        assert acked == list(range(len(acked)))  # one worker writes sequentially
        present = {
            int(k.rsplit("/", 1)[1]): v for k, v in store.scan("pop", prefix=f"k/{tag}/{w}/")
        }
        for n in acked:
            assert present.get(n) == value(f"k/{tag}/{w}/{n}"), (tag, w, n)
        # At most the one write in flight at the kill may have committed unacknowledged.
        assert set(present) <= set(range(len(acked) + 1)), (tag, w, sorted(present))
        for n, v in present.items():
            assert v == value(f"k/{tag}/{w}/{n}")
        counter = int(store.get("pop", f"c/{tag}/{w}") or b"0")
        assert count_acked[w] <= counter <= count_acked[w] + 1, (tag, w, counter)


# ------------------------------------------------------------ torn WAL tail

_WAL_HEADER = struct.Struct(">IIIIIIII")
_FRAME_HEADER = struct.Struct(">IIIIII")


def wal_frames(wal: bytes) -> tuple[int, list[tuple[int, bool]]]:
    """(frame size, [(offset, is_commit)]) for the frames of the current WAL generation."""
    magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = _WAL_HEADER.unpack_from(wal)
    assert magic in (0x377F0682, 0x377F0683)
    size = _FRAME_HEADER.size + page_size
    frames = []
    offset = _WAL_HEADER.size
    while offset + size <= len(wal):
        _pgno, commit_size, s1, s2, _c1, _c2 = _FRAME_HEADER.unpack_from(wal, offset)
        if (s1, s2) != (salt1, salt2):
            break
        frames.append((offset, commit_size != 0))
        offset += size
    return size, frames


def write_then_kill(path: str) -> None:
    child = spawn(path, "sequential")
    assert child.stdout is not None
    assert child.stdout.readline() == "done\n"
    kill_and_collect(child, [])


def damage(wal_path: str, case: str) -> dict[str, int]:
    data = bytearray(Path(wal_path).read_bytes())
    size, frames = wal_frames(bytes(data))
    assert frames and frames[-1][1], "the WAL must end with a commit frame"
    assert len(data) == frames[-1][0] + size, "no stale frames beyond the last commit"
    commits = [i for i, (_, is_commit) in enumerate(frames) if is_commit]
    first_of_last = commits[-2] + 1
    last = frames[-1][0]
    facts = {"frames": len(frames), "last_txn_frames": len(frames) - first_of_last}
    if case == "intact":
        return facts
    if case == "cut-in-frame-header":
        del data[last + 7 :]
    elif case == "cut-in-page":
        del data[last + _FRAME_HEADER.size + 1001 :]
    elif case == "one-byte-short":
        del data[len(data) - 1 :]
    elif case == "cut-in-first-frame-of-txn":
        del data[frames[first_of_last][0] + 333 :]
    elif case == "bit-flip-in-last-page":
        data[last + _FRAME_HEADER.size + 2049] ^= 0x40
    else:
        raise AssertionError(case)
    assert len(data) % 2 == 1 or case.startswith("bit-flip")
    Path(wal_path).write_bytes(bytes(data))
    return facts


@pytest.mark.parametrize(
    "case",
    [
        "intact",
        "cut-in-frame-header",
        "cut-in-page",
        "one-byte-short",
        "cut-in-first-frame-of-txn",
        "bit-flip-in-last-page",
    ],
)
def test_damaged_wal_tail_drops_exactly_the_last_transaction(tmp_path: Path, case: str) -> None:
    path = str(tmp_path / "tiers.db")
    write_then_kill(path)
    facts = damage(path + "-wal", case)
    assert facts["last_txn_frames"] > 1  # the damaged transaction spans several frames

    with TierStore(path) as store:
        for n in range(50):
            key = f"seq/{n:03d}"
            assert store.get("pop", key) == value(key), key
        last = [store.get("pop", f"last/{i}") for i in range(5)]
        if case == "intact":
            assert last == [value(f"last/{i}") * 24 for i in range(5)]
        else:
            assert last == [None] * 5  # all of the damaged transaction, none served
        assert store.count("pop") == 50 + (5 if case == "intact" else 0)

    async def write_after_recovery() -> None:
        async with TierStore(path) as store:
            await store.put("pop", "after", b"ok")

    asyncio.run(write_after_recovery())
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT value FROM state WHERE key='after'").fetchone()[0] == b"ok"
    finally:
        conn.close()
