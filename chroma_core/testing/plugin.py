"""The pytest plugin of the store conformance suite (entry point ``pytest11``:
``chroma``): the ``--chroma-store`` option. The tests are :mod:`chroma_core.testing`'s."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chroma", "Chroma store conformance")
    group.addoption(
        "--chroma-store",
        dest="chroma_store",
        default=None,
        metavar="NAME",
        help="the store (a CHROMA_STORE name) that conformance classes without a store_name "
        "run against",
    )
