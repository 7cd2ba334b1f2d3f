"""The memory store passes the store conformance suite Chroma ships: every test of what it
implements, the tests of the capabilities it lacks (restore, its own k-NN) skipped."""

from __future__ import annotations

from chroma_core.testing import StoreConformance


class TestMemoryConformance(StoreConformance):
    store_name = "memory"
