"""The SQLite store passes the store conformance suite, run as any store package runs it."""

from __future__ import annotations

from chroma_core.testing import StoreConformance


class TestSqliteConformance(StoreConformance):
    store_name = "sqlite"
