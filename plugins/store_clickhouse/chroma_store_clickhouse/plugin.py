"""Serve ``CHROMA_STORE=clickhouse``."""

from __future__ import annotations

from chroma_core.hookspecs import hookimpl


@hookimpl
def chroma_open_store(name, settings):
    if name != "clickhouse":
        return None
    from chroma_store_clickhouse.store import ClickHouseStore

    return ClickHouseStore.open(settings)
