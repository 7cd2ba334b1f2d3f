"""The ``sqlite`` store: the default, one file in the data directory."""

from __future__ import annotations

from pathlib import Path

from chroma_core.config import Settings
from chroma_core.hookspecs import hookimpl
from chroma_store_sqlite.store import SqliteStore

FILENAME = "chroma.sqlite3"


@hookimpl
def chroma_open_store(name: str, settings: Settings) -> SqliteStore | None:
    if name != SqliteStore.name:
        return None
    return SqliteStore(Path(settings.path) / FILENAME)
