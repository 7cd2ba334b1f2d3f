"""What the SQLite store does beyond the conformance suite: its file, pragmas and layout."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from chroma_core.config import Settings
from chroma_core.filters import parse
from chroma_core.schema import embeddings_of, validate_rows
from chroma_core.store import BatchAlreadyStored
from chroma_store_sqlite import checkpoint, plugin
from chroma_store_sqlite.store import MIGRATIONS, SCHEMA_VERSION, SqliteStore, space_tables
from chroma_store_sqlite.where import compile_where
from chroma_wire.errors import Conflict, InvalidInput

DIM = 3


def batch(ids: list[str], **columns) -> pa.Table:
    n = len(ids)
    embeddings = np.arange(n * DIM, dtype=np.float32).reshape(n, DIM) / 7
    table = pa.table(
        {
            "id": ids,
            "dataset": ["cifar10"] * n,
            "context": ["training"] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), DIM),
            **columns,
        }
    )
    return validate_rows(table, None)


@pytest.fixture
def store(tmp_path):
    store = SqliteStore(tmp_path / "chroma.sqlite3")
    store.create_space("space", "l2", {})
    yield store
    store.close()


def raw(store: SqliteStore) -> sqlite3.Connection:
    return sqlite3.connect(store.path)


def test_the_hook_opens_a_file_in_the_data_directory(tmp_path):
    settings = Settings(path=tmp_path / "not" / "yet", store="sqlite")
    store = plugin.chroma_open_store(name="sqlite", settings=settings)
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "not" / "yet" / "chroma.sqlite3"
        assert store.path.is_file()
    finally:
        store.close()
    assert plugin.chroma_open_store(name="clickhouse", settings=settings) is None


def test_the_file_is_in_wal_mode_at_the_current_schema_version(store):
    with raw(store) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_connections_sync_fully_and_wait_for_locks(store):
    conn = store._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_each_thread_gets_its_own_connection(store):
    seen = []
    thread = threading.Thread(target=lambda: seen.append(store._conn()))
    thread.start()
    thread.join()
    assert seen[0] is not store._conn()


def test_vectors_are_stored_as_float32_blobs(store):
    rows = batch(["a", "b"], output=pa.array([[0.5, 1.5], None], pa.list_(pa.float32())))
    store.add("space", rows)
    with raw(store) as conn:
        stored = conn.execute(
            "SELECT typeof(embedding), embedding, typeof(output), output, typeof(metadata) "
            "FROM rows_1 ORDER BY seq"
        ).fetchall()
    matrix = embeddings_of(rows)
    for i, (kind, blob, _, _, _) in enumerate(stored):
        assert kind == "blob"
        assert len(blob) == 4 * DIM
        assert blob == matrix[i].astype("<f4").tobytes()
    assert stored[0][2:4] == ("blob", np.array([0.5, 1.5], "<f4").tobytes())
    assert stored[1][2:4] == ("null", None)
    assert stored[0][4] == "null"


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "chroma.sqlite3"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        SqliteStore(path)


def test_reopening_keeps_the_schema_and_data(tmp_path):
    path = tmp_path / "chroma.sqlite3"
    first = SqliteStore(path)
    first.create_space("space", "l2", {})
    first.add("space", batch(["a"]))
    first.close()
    second = SqliteStore(path)
    try:
        assert second.count("space") == 1
    finally:
        second.close()


def test_metadata_that_is_not_json_is_refused_whole(store):
    # the service validates batches; the CHECK constraint still keeps json_extract safe
    rows = batch(["a", "b"])
    broken = rows.set_column(
        rows.schema.get_field_index("metadata"), "metadata", pa.array(['{"k": 1}', "{oops"])
    )
    with pytest.raises(InvalidInput):
        store.add("space", broken)
    assert store.count("space") == 0
    assert store.max_seq("space") == 0


def test_two_stores_on_one_file_write_without_lock_errors(tmp_path):
    # two stores stand for two processes: only SQLite's own locking keeps them apart
    stores = [SqliteStore(tmp_path / "chroma.sqlite3") for _ in range(2)]
    stores[0].create_space("space", "l2", {})
    errors: list[BaseException] = []

    def writer(store: SqliteStore, prefix: str) -> None:
        try:
            for b in range(15):
                store.add("space", batch([f"{prefix}-{b}-{r}" for r in range(4)]))
        except BaseException as exc:  # the main thread asserts on it
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(store, f"s{i}-t{t}"))
        for i, store in enumerate(stores)
        for t in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert stores[1].count("space") == 4 * 15 * 4
        seqs, _ = stores[0].vectors("space", with_vectors=False)
        assert len(np.unique(seqs)) == 4 * 15 * 4
    finally:
        for store in stores:
            store.close()


def test_a_closed_store_refuses_work(store):
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.count("space")


def test_filter_values_and_keys_travel_as_parameters():
    where = parse({"$or": [{"label": "x' OR 1=1 --"}, {"note-key": {"$in": ["a'", 'b"']}}]})
    sql, params = compile_where(where)
    assert "OR 1=1" not in sql and "note-key" not in sql and "a'" not in sql
    assert "x' OR 1=1 --" in params.values()
    assert '$."note-key"' in params.values()
    assert json.dumps(["a'", 'b"']) in params.values()


def test_delete_space_leaves_no_orphans(store):
    store.add("space", batch(["a", "b"]), batch_key="k")
    store.replace_priorities(
        "space",
        pa.table({"id": ["a"], "priority": [1.0], "components": ["{}"], "computed_at": [""]}),
    )
    store.create_trigger("space", pa.table({"id": ["a"], "priority": [1.0]}), None, {})
    store.delete_space("space")
    with raw(store) as conn:
        for table in ("spaces", "priorities", "triggers", "trigger_items", "batch_keys"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
        left = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'rows%'").fetchall()
        assert left == []


def test_kept_row_count_matches_the_rows_table(store):
    store.add("space", batch(["a", "b", "c", "d"]))
    store.delete("space", ids=["b", "zz"])
    store.delete("space", where=parse({"id": "c"}))
    counted = raw(store).execute("SELECT COUNT(*) FROM rows_1").fetchone()[0]
    assert store.count("space") == store.get_space("space").count == counted == 2


def test_a_version_1_file_is_split_into_one_rows_table_per_space(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        for space_id, name in ((1, "a"), (2, "b")):
            conn.execute(
                "INSERT INTO spaces (space_id, name, metric, dim, created_at, max_seq, row_count)"
                " VALUES (?, ?, 'l2', 2, '2026-01-01', 3, 2)",
                (space_id, name),
            )
            for seq in (1, 3):
                conn.execute(
                    "INSERT INTO rows (space, seq, id, dataset, context, metadata, embedding) "
                    "VALUES (?, ?, ?, 'd', 'training', '{\"k\": 1}', ?)",
                    (space_id, seq, f"{name}{seq}", np.array([seq, space_id], "<f4").tobytes()),
                )
    store = SqliteStore(path)
    try:
        got = store.get("b", include_embeddings=True)
        assert got.column("id").to_pylist() == ["b1", "b3"]
        assert got.column("seq").to_pylist() == [1, 3]
        assert embeddings_of(got).tolist() == [[1.0, 2.0], [3.0, 2.0]]
        assert got.column("metadata").to_pylist() == ['{"k": 1}'] * 2
        # new rows continue after the space's last seq, in its own table
        rows = pa.table(
            {
                "id": ["b4"],
                "dataset": ["d"],
                "context": ["training"],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array([0.0, 0.0], "f4"), 2),
            }
        )
        assert store.add("b", validate_rows(rows, 2)).tolist() == [4]
        assert store.count("a") == 2 and store.count("b") == 3
        with raw(store) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert "rows" not in names and {"rows_1", "rows_2"} <= names
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()


def test_a_version_2_file_gains_batch_keys_and_space_settings(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        for migration in MIGRATIONS[:2]:
            for statement in migration:
                if callable(statement):
                    statement(conn)
                else:
                    conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO spaces (space_id, name, metric, dim, created_at, max_seq, row_count) "
            "VALUES (1, 'a', 'l2', 3, '2026-01-01', 2, 1)"
        )
        for statement in space_tables(1):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO rows_1 (seq, id, dataset, context, embedding) "
            "VALUES (2, 'old', 'd', 'training', ?)",
            (np.zeros(3, "<f4").tobytes(),),
        )
    store = SqliteStore(path)
    try:
        rows = batch(["new"])
        assert store.add("a", rows, batch_key="k").tolist() == [3]
        with pytest.raises(BatchAlreadyStored):
            store.add("a", rows, batch_key="k")
        assert store.get("a").column("id").to_pylist() == ["old", "new"]
        with raw(store) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
            assert conn.execute("SELECT key, first_seq, count FROM batch_keys").fetchall() == [
                ("k", 3, 1)
            ]
        store.set_space_setting("a", "online", "{}")
        assert store.space_settings("a") == {"online": "{}"}
    finally:
        store.close()


def test_batch_keys_are_forgotten_after_their_retention(store):
    rows = batch(["a"])
    store.add("space", rows, batch_key="old")
    with raw(store) as conn:
        conn.execute("UPDATE batch_keys SET added_at = added_at - 3600 WHERE key = 'old'")
    store.batch_key_retention = 3000
    store.add("space", batch(["b"]), batch_key="new")
    with raw(store) as conn:
        assert [k for (k,) in conn.execute("SELECT key FROM batch_keys")] == ["new"]
    # forgotten: the batch is new again, and its stored id refuses it
    with pytest.raises(Conflict, match="'a'"):
        store.add("space", rows, batch_key="old")


def wal_frames(store: SqliteStore) -> tuple[int, int]:
    """(frames in the log, frames of it already copied into the file)."""
    with raw(store) as conn:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        _, log, copied = conn.execute("PRAGMA wal_checkpoint(NOOP)").fetchone()
    return log, copied


def test_commits_leave_checkpoints_to_the_checkpointer(store, monkeypatch):
    with raw(store) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    monkeypatch.setattr(checkpoint, "WAL_BYTES", 0)
    store.add("space", batch([f"r{i}" for i in range(500)]))
    deadline = time.monotonic() + 30
    while store._checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store._checkpointer.checkpoints >= 1
    log, copied = wal_frames(store)
    assert log > 0 and copied == log


def test_a_log_past_its_limit_is_checkpointed_by_the_writer(store, monkeypatch):
    monkeypatch.setattr(checkpoint, "WAL_LIMIT_BYTES", 0)
    store._checkpointer.close()  # its thread gone, only the writer can have copied the log
    store.add("space", batch(["a", "b"]))
    log, copied = wal_frames(store)
    assert log > 0 and copied == log
