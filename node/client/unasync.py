"""Generate the blocking client from the asyncio one (httpcore's "unasync" idea).

::

    python -m node.client.unasync           # rewrite node/client/_sync.py (make client)
    python -m node.client.unasync --check   # exit 1 if node/client/_sync.py is stale

``node/client/_async.py`` is the only hand-written client. :func:`unasync` rewrites its
text with the regular expressions in :data:`RULES` (``async def`` -> ``def``, ``await``
dropped, ``AsyncClient`` -> ``Client``, ``__aenter__`` -> ``__enter__``,
``_async_io`` -> ``_sync_io``, ...), and refuses a result in which any ``async``,
``await``, ``asyncio``, ``aio`` or ``Async*`` name is left in the code: a construct no
rule covers belongs in the I/O helpers (:mod:`node.client._async_io` and its twin
:mod:`node.client._sync_io`), never in a hand edit of the output. :func:`generate` then
puts a "generated" header and docstring in place of the source's docstring and runs
``ruff`` (import sorting, then formatting) over it, because dropping ``await`` shortens
lines and renaming reorders imports.

A development tool: nothing in the client imports it. The unit test
``tests/unit/node/client/test_unasync.py`` regenerates the file in memory and fails
when the committed one differs.
"""

from __future__ import annotations

import argparse
import ast
import io
import pathlib
import re
import subprocess
import sys
import tokenize

__all__ = ["RULES", "SOURCE", "TARGET", "UnasyncError", "generate", "main", "unasync"]

SOURCE = pathlib.Path(__file__).with_name("_async.py")
TARGET = pathlib.Path(__file__).with_name("_sync.py")

COMMAND = "python -m node.client.unasync"

#: (pattern, replacement), applied in order to the whole text, strings included, so
#: docstrings name the flavour they are in.
RULES: tuple[tuple[str, str], ...] = (
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    # An async generator cannot ``yield from``; a blocking one should (ruff's UP028).
    (r"\bfor (\w+) in ([^\n]+):\n[ ]+yield \1\n", r"yield from \2\n"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bAsyncWatch\b", "Watch"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\b_async_io\b", "_sync_io"),
)

_LEFTOVER = re.compile(r"^(async|await|asyncio|aio|Async\w*|\w*_async\w*)$")

HEADER = f"""\
# GENERATED FILE, DO NOT EDIT. Source: node/client/_async.py.
# Regenerate with `{COMMAND}` (make client).
"""

DOCSTRING = f'''\
"""The blocking client: :class:`Client` and :class:`Watch`.

Generated from :mod:`node.client._async` by ``{COMMAND}``;
edit that file and regenerate. Behaviour (routing, deadlines, retries, threads) is described in
:mod:`node.client`.
"""
'''


class UnasyncError(Exception):
    """The async source uses a construct the rules do not translate."""


def unasync(source: str) -> str:
    """``source`` with every rule applied. Raises UnasyncError if an async construct
    is left in the code (strings and comments are not checked)."""
    text = source
    for pattern, replacement in RULES:
        text = re.sub(pattern, replacement, text)
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    for token in tokens:
        if token.type == tokenize.NAME and _LEFTOVER.match(token.string):
            raise UnasyncError(
                f"line {token.start[0]}: {token.string!r} has no blocking translation; "
                f"add a rule to node/client/unasync.py or move the difference into "
                f"node/client/_async_io.py and _sync_io.py: {token.line.strip()}"
            )
    return text


def _without_docstring(source: str) -> str:
    body = ast.parse(source).body
    if not body or not isinstance(body[0], ast.Expr) or not isinstance(body[0].value, ast.Constant):
        raise UnasyncError("the async source has no module docstring to replace")
    end = body[0].end_lineno or 0
    return "".join(source.splitlines(keepends=True)[end:])


def _ruff(args: list[str], text: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--quiet", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise UnasyncError(f"ruff {args[0]} failed on the generated code:\n{result.stderr}")
    return result.stdout


def generate(source: str) -> str:
    """The text of ``_sync.py`` for the async ``source``: header, docstring, the
    rewritten code, imports sorted and formatted by ruff (the project's settings)."""
    text = HEADER + DOCSTRING + unasync(_without_docstring(source))
    text = _ruff(["check", "--fix", "--exit-zero", "--select", "I"], text)
    return _ruff(["format"], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if _sync.py is stale; write nothing"
    )
    args = parser.parse_args(argv)
    fresh = generate(SOURCE.read_text())
    current = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if fresh != current:
            print(f"{TARGET} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        TARGET.write_text(fresh)
        print(f"regenerated {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
