"""Damage to the SQLite files is noticed and named: a damaged page at start and on read, and
a write-ahead log whose replay would drop acknowledged commits."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from chroma_core import api
from chroma_core.config import Settings
from chroma_core.schema import validate_rows
from chroma_core.service import Chroma
from chroma_store_sqlite.store import SqliteStore
from chroma_wire.errors import StorageDamaged

DIM = 32


def rows(prefix: str, n: int) -> pa.Table:
    vectors = np.random.default_rng(len(prefix)).normal(size=(n, DIM)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"{prefix}{i}" for i in range(n)],
            "dataset": ["d"] * n,
            "context": ["training"] * n,
            "metadata": [json.dumps({"i": i, "pad": "x" * 200}) for i in range(n)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )
    return validate_rows(table, DIM)


def damage_a_page(path: Path) -> None:
    """Garbage over a page in the middle of the file, as a disk that lost a write leaves."""
    size = path.stat().st_size
    page = (size // 2) // 4096 * 4096
    with open(path, "r+b") as file:
        file.seek(page)
        file.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def test_a_damaged_page_is_named_at_start_and_writes_are_refused(tmp_path, caplog):
    chroma = Chroma(Settings.from_env({}, path=tmp_path))
    chroma.space("s")
    chroma.add("s", rows("a", 3000))
    chroma.close()
    damage_a_page(tmp_path / "chroma.sqlite3")

    with caplog.at_level(logging.ERROR):
        again = Chroma(Settings.from_env({}, path=tmp_path))
    try:
        assert "chroma.sqlite3 is damaged" in caplog.text
        with pytest.raises(StorageDamaged, match="refuses writes"):
            api.call(again, "add", {"space": "s"}, rows("b", 10))
        # a read of the damaged part names the damage too, never an "internal error"
        with pytest.raises(StorageDamaged, match="damaged"):
            api.call(again, "get", {"space": "s", "include_embeddings": True})
    finally:
        again.close()


def test_damage_met_on_a_read_refuses_writes_from_then_on(tmp_path):
    store = SqliteStore(tmp_path / "db.sqlite3")
    store.create_space("s", "l2", {})
    store.add("s", rows("a", 3000))
    store.close()
    damage.CHECK_BYTES, saved = 0, damage.CHECK_BYTES  # too large to check at start
    try:
        damage_a_page(tmp_path / "db.sqlite3")
        store = SqliteStore(tmp_path / "db.sqlite3")
    finally:
        damage.CHECK_BYTES = saved
    try:
        store.create_space("t", "l2", {})  # nothing is known to be wrong yet
        with pytest.raises(StorageDamaged, match="db.sqlite3 is damaged"):
            store.get("s", include_embeddings=True)
        with pytest.raises(StorageDamaged, match="refuses writes"):
            store.create_space("u", "l2", {})
    finally:
        store.close()


def test_a_log_whose_replay_drops_commits_is_named_and_kept(tmp_path, caplog):
    made = tmp_path / "made"
    SqliteStore(made / "db.sqlite3").close()
    # three commits in the log, never copied into the file: a server that died there
    conn = sqlite3.connect(made / "db.sqlite3", isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    for i in range(3):
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO spaces (name, metric, model, created_at) VALUES (?, 'l2', '{}', '')",
            (f"s{i}" + "x" * 3000,),
        )
        conn.execute("COMMIT")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("db.sqlite3", "db.sqlite3-wal"):
        shutil.copyfile(made / name, crashed / name)
    conn.close()
    wal = crashed / "db.sqlite3-wal"
    page_size = int.from_bytes(wal.read_bytes()[8:12], "big")
    with open(wal, "r+b") as file:  # a byte of the first frame's page changed
        file.seek(32 + 24 + page_size // 2)
        byte = file.read(1)
        file.seek(32 + 24 + page_size // 2)
        file.write(bytes([byte[0] ^ 0xFF]))

    with caplog.at_level(logging.ERROR):
        store = SqliteStore(crashed / "db.sqlite3")
    try:
        assert "write-ahead log is damaged at frame 1" in caplog.text
        assert "may hold acknowledged commits" in caplog.text
        # the database itself is sound: writes go on
        store.create_space("after", "l2", {})
        assert list(crashed.glob("db.sqlite3-wal.damaged-*"))
    finally:
        store.close()


from chroma_store_sqlite import damage  # noqa: E402
