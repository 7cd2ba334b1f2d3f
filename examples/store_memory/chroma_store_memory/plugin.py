"""Serve ``CHROMA_STORE=memory``: the spaces live in memory, a file each under
``<CHROMA_PATH>/memory``."""

from __future__ import annotations

from pathlib import Path

from chroma_core.config import Settings
from chroma_core.hookspecs import hookimpl
from chroma_store_memory.store import MemoryStore

DIRECTORY = "memory"


@hookimpl
def chroma_open_store(name: str, settings: Settings) -> MemoryStore | None:
    return MemoryStore(Path(settings.path) / DIRECTORY) if name == MemoryStore.name else None
