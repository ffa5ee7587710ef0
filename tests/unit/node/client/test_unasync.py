"""The blocking client is generated from the asyncio one (node/client/unasync.py).

The first test is the guard: it regenerates node/client/_sync.py in memory (ruff runs
on stdin, nothing is written) and fails when the committed file differs, i.e. when
_async.py, _sync_io.py's contract or the rules changed without `make client`.
"""

from __future__ import annotations

import inspect

import pytest

from node.client import AsyncClient, AsyncWatch, Client, Watch, unasync
from node.client.unasync import UnasyncError


def test_committed_sync_client_is_generated_from_the_async_one() -> None:
    fresh = unasync.generate(unasync.SOURCE.read_text())
    committed = unasync.TARGET.read_text()
    assert committed == fresh, (
        "node/client/_sync.py is stale: run `python -m node.client.unasync` (make client) "
        "and commit it"
    )


def test_generated_file_says_so_and_how() -> None:
    text = unasync.TARGET.read_text()
    assert text.startswith("# GENERATED FILE, DO NOT EDIT. Source: node/client/_async.py.\n")
    assert "python -m node.client.unasync" in text.splitlines()[1]


REWRITES = [
    ("async def f() -> None:\n", "def f() -> None:\n"),
    ("x = await self._call(req)\n", "x = self._call(req)\n"),
    ("async with AsyncClient() as c:\n", "with Client() as c:\n"),
    ("async for e in w:\n", "for e in w:\n"),
    ("def watch(self) -> AsyncWatch:\n", "def watch(self) -> Watch:\n"),
    ("-> AsyncIterator[str]:\n", "-> Iterator[str]:\n"),
    ("raise StopAsyncIteration\n", "raise StopIteration\n"),
    ("def __aenter__(self): ...\n", "def __enter__(self): ...\n"),
    ("def __aexit__(self): ...\n", "def __exit__(self): ...\n"),
    ("def __aiter__(self): ...\n", "def __iter__(self): ...\n"),
    ("def __anext__(self): ...\n", "def __next__(self): ...\n"),
    (
        "from node.client import _async_io as backend\n",
        "from node.client import _sync_io as backend\n",
    ),
    ("    for kv in page.kvs:\n        yield kv\n", "    yield from page.kvs\n"),
    ('"""See :class:`AsyncWatch`."""\n', '"""See :class:`Watch`."""\n'),
    # Only whole names: these are not async constructs.
    ("awaitable = asynchronous = 1\n", "awaitable = asynchronous = 1\n"),
]


@pytest.mark.parametrize(("source", "expected"), REWRITES, ids=[r[1].strip() for r in REWRITES])
def test_each_rule(source: str, expected: str) -> None:
    assert unasync.unasync(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "await asyncio.sleep(1)\n",  # flavour-specific I/O belongs in _async_io / _sync_io
        "import grpc.aio\n",
        "x = await(y)\n",  # no rule for this spelling: refused, not half-translated
        "class AsyncThing: ...\n",
        "from node.client import _async_helpers\n",
    ],
)
def test_untranslated_async_constructs_are_refused(source: str) -> None:
    with pytest.raises(UnasyncError, match="has no blocking translation"):
        unasync.unasync(source)


def public_methods(cls: type) -> dict[str, object]:
    return {name: member for name, member in vars(cls).items() if not name.startswith("_")}


@pytest.mark.parametrize(("aio", "sync"), [(AsyncClient, Client), (AsyncWatch, Watch)])
def test_both_flavours_have_the_same_methods_and_signatures(aio: type, sync: type) -> None:
    aio_methods, sync_methods = public_methods(aio), public_methods(sync)
    assert aio_methods.keys() == sync_methods.keys()
    for name, method in aio_methods.items():
        if not inspect.isfunction(method):
            continue
        other = sync_methods[name]
        assert inspect.isfunction(other), name
        aio_sig = str(inspect.signature(method)).replace("Async", "")
        assert aio_sig == str(inspect.signature(other)), name
        assert not inspect.iscoroutinefunction(other), name
        assert not inspect.isasyncgenfunction(other), name
