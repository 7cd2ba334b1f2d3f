"""Serve ``CHROMA_STORE=clickhouse``, configured by the ``CHROMA_CLICKHOUSE_*`` settings."""

from __future__ import annotations

from chroma_core.hookspecs import hookimpl
from chroma_store_clickhouse.settings import SETTINGS


@hookimpl
def chroma_settings():
    return SETTINGS


@hookimpl
def chroma_open_store(name, settings, plugin_settings):
    if name != "clickhouse":
        return None
    from chroma_store_clickhouse.connection import target
    from chroma_store_clickhouse.store import ClickHouseStore

    return ClickHouseStore(target(settings, plugin_settings))


@hookimpl
def chroma_space_status(context, space):
    """The space's inverted file, when the ClickHouse store keeps one: as ``index``, where
    the similarity plugin shows its own when it answers, with every stored row findable
    (rows are put in their cells as they are added, so none is pending)."""
    ivf = getattr(context.store, "ivf", None)
    if ivf is None or context.store.name != "clickhouse":
        return None
    store = context.store
    status = ivf.status(store._space_row(space.name)[1])
    rows = store.count(space.name)
    return {"index": {"kind": "clickhouse_ivf", **status, "indexed": rows, "pending": 0}}
