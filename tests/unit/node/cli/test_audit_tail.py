"""`tadpole audit tail` prints what callers sent without letting it drive the terminal."""

from __future__ import annotations

from node.cli.audit import _printable


def test_control_characters_are_escaped() -> None:
    assert _printable("GET /api/v1/ws") == "GET /api/v1/ws"
    assert _printable("key\x1b[2J\x07\n") == "key\\x1b[2J\\x07\\n"
    assert _printable("caf\u00e9 \u2026") == "caf\u00e9 \u2026"  # printable text is kept
