"""The SQLite store passes the store conformance suite, run as any store package runs it;
and what is its own: a damaged start is said so."""

from __future__ import annotations

import logging
from pathlib import Path

from chroma_core.testing import StoreConformance


class TestSqliteConformance(StoreConformance):
    store_name = "sqlite"


def test_an_emptied_database_file_is_said_so_at_start(tmp_path, caplog):
    from chroma_store_sqlite.store import SqliteStore

    path = tmp_path / "chroma.sqlite3"
    store = SqliteStore(path)
    store.create_space("s", "l2", {})
    store.close()
    for suffix in ("", "-wal", "-shm"):
        extra = Path(str(path) + suffix)
        if extra.exists():
            extra.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="chroma.store.sqlite"):
        reopened = SqliteStore(path)
    assert "is empty: whatever it held is gone" in caplog.text and str(path) in caplog.text
    assert reopened.list_spaces() == []
    reopened.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="chroma.store.sqlite"):
        SqliteStore(path).close()  # a store made before is not empty: nothing to say
    assert "is empty" not in caplog.text
