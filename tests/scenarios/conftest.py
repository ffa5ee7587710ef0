"""``pytest tests/scenarios --rewrite`` (or ``SCENARIOS_REWRITE=1``) regenerates the
golden output of every scenario instead of comparing with it."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite tests/scenarios/testdata/*.txt with the actual output",
    )
