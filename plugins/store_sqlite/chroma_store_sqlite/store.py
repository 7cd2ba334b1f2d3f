"""The SQLite store: one database file holds every space, row, priority and trigger."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from chroma_core.filters import Filter
from chroma_core.schema import batch_fingerprint_soon, embeddings_of
from chroma_core.store import (
    BATCH_KEY_RETENTION_SECONDS,
    RESTORING_SETTING,
    AddPriorities,
    BatchAlreadyStored,
    FollowRows,
    PagedBackup,
    ReplaceRows,
    Restore,
    SpaceSettings,
    Store,
    check_dimension,
    check_same_space,
    repeated,
)
from chroma_store_sqlite import damage
from chroma_store_sqlite.checkpoint import WAL_BYTES, Checkpointer
from chroma_store_sqlite.where import compile_where
from chroma_wire.errors import ChromaError, Conflict, InvalidInput, NotFound
from chroma_wire.rows import TEXT_FIELDS
from chroma_wire.types import CATALOGUE_COLUMNS, SpaceInfo

if TYPE_CHECKING:
    from chroma_core.store import PriorityQuery, RowQuery, TriggerChange, VectorQuery

# Migration N (1-based) brings a database from user_version N-1 to N. Append, never edit.
MIGRATIONS: tuple[tuple[Any, ...], ...] = (
    (
        """CREATE TABLE spaces (
            space_id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            metric TEXT NOT NULL,
            dim INTEGER,
            model TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            max_seq INTEGER NOT NULL DEFAULT 0,
            -- kept with every add and delete: COUNT(*) would scan millions of rows per call
            row_count INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE rows (
            space INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            id TEXT NOT NULL,
            dataset TEXT NOT NULL,
            context TEXT NOT NULL,
            input_uri TEXT,
            inference TEXT,
            label TEXT,
            metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
            embedding BLOB NOT NULL,
            output BLOB,
            UNIQUE (space, id),
            UNIQUE (space, seq)
        )""",
        # seq last, so a filtered read comes out of the index already in seq order
        "CREATE INDEX rows_dataset ON rows (space, dataset, seq)",
        "CREATE INDEX rows_context ON rows (space, context, seq)",
        "CREATE INDEX rows_label ON rows (space, label, seq)",
        "CREATE INDEX rows_inference ON rows (space, inference, seq)",
        """CREATE TABLE priorities (
            space INTEGER NOT NULL,
            id TEXT NOT NULL,
            priority REAL NOT NULL,
            components TEXT,
            computed_at TEXT,
            PRIMARY KEY (space, id)
        )""",
        "CREATE INDEX priorities_rank ON priorities (space, priority DESC, id)",
        """CREATE TABLE triggers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            space INTEGER NOT NULL,
            status TEXT NOT NULL,
            note TEXT,
            selection TEXT NOT NULL,
            count INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            deliveries TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX triggers_space ON triggers (space, status, id)",
        """CREATE TABLE trigger_items (
            trigger_id INTEGER NOT NULL,
            id TEXT NOT NULL,
            input_uri TEXT,
            dataset TEXT,
            label TEXT,
            inference TEXT,
            priority REAL
        )""",
        "CREATE INDEX trigger_items_trigger ON trigger_items (trigger_id, priority DESC)",
    ),
)


def space_tables(space_id: int) -> tuple[str, ...]:
    """The DDL of one space's rows table (the id is an integer, never user text).

    The seq is the rowid, so rows sit in seq order and no index is kept for it; each
    catalogue index ends in the rowid, so a filtered read comes out in seq order.
    """
    table = _rows(space_id)
    return (
        f"""CREATE TABLE {table} (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            dataset TEXT NOT NULL, context TEXT NOT NULL,
            input_uri TEXT, inference TEXT, label TEXT,
            metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
            embedding BLOB NOT NULL, output BLOB
        )""",
        *(f"CREATE INDEX {table}_{c} ON {table} ({c})" for c in _INDEXED),
    )


def _rows(space_id: int) -> str:
    return f"rows_{int(space_id):d}"


def _split_rows_by_space(conn: sqlite3.Connection) -> None:
    """Migration 2: one rows table per space instead of one shared table, so an insert
    updates no index on seq or on the space, and a space is dropped with its table."""
    columns = "seq, id, dataset, context, input_uri, inference, label, metadata, embedding, output"
    for (space_id,) in conn.execute("SELECT space_id FROM spaces").fetchall():
        for statement in space_tables(space_id):
            conn.execute(statement)
        conn.execute(
            f"INSERT INTO {_rows(space_id)} ({columns}) SELECT {columns} FROM rows "
            "WHERE space = ? ORDER BY seq",
            (space_id,),
        )
    conn.execute("DROP TABLE rows")


_INDEXED = ("dataset", "context", "label", "inference")
MIGRATIONS += ((_split_rows_by_space,),)
# Migration 3: the key of each keyed batch, written in the add's transaction, with the
# digest of its rows and the seqs they got; added_at (Unix seconds) is for forgetting it
MIGRATIONS += (
    (
        """CREATE TABLE batch_keys (
            space INTEGER NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            count INTEGER NOT NULL,
            added_at REAL NOT NULL,
            PRIMARY KEY (space, key)
        )""",
        "CREATE INDEX batch_keys_added ON batch_keys (added_at)",
    ),
)
# Migration 4: settings the plugins keep per space (SpaceSettings)
MIGRATIONS += (
    (
        """CREATE TABLE space_settings (
            space INTEGER NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (space, name)
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_SECONDS = 30.0
log = logging.getLogger("chroma.store.sqlite")

_SPACE = """SELECT s.name, s.metric, s.dim, s.row_count, s.model, s.created_at, s.space_id
    FROM spaces AS s"""
_TRIGGER = """SELECT t.id, s.name, t.status, t.note, t.selection, t.count, t.created_at,
    t.updated_at, t.deliveries FROM triggers AS t JOIN spaces AS s ON s.space_id = t.space"""
_CATALOGUE = ", ".join(f"r.{name}" for name in CATALOGUE_COLUMNS)
_PRIORITY_COLUMNS = ("id", "priority", "components", "computed_at")
_PRIORITY_CATALOGUE = [c for c in CATALOGUE_COLUMNS if c not in ("id", "metadata")]
_ITEM_COLUMNS = ("id", "input_uri", "dataset", "label", "inference", "priority")


class SqliteStore(
    Store, PagedBackup, Restore, SpaceSettings, AddPriorities, FollowRows, ReplaceRows
):
    """A :class:`Store` in one SQLite file, in WAL mode, safe to share between threads; it
    pages and restores back-ups, and leaves k-NN to the index plugins."""

    name = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size == 0:
            # a store's file is never empty once made: its content was lost
            log.warning(
                "the store's database file %s is empty: whatever it held is gone, and it "
                "starts again as an empty store; restore a back-up (chroma import) if there "
                "is one",
                self.path,
            )
        self._local = threading.local()
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        self._connections_lock = threading.Lock()
        # SQLite allows one writer at a time; queueing writers here rather than in
        # busy_timeout keeps them in order and off "database is locked"
        self._write_lock = threading.Lock()
        self._closed = False
        #: batch keys older than this many seconds are forgotten as later adds commit
        self.batch_key_retention = BATCH_KEY_RETENTION_SECONDS
        self._checkpointer: Checkpointer | None = None
        #: set once the file is known to be damaged: every write is refused with it
        self._damage: str | None = None
        # the log's frames as written, read before SQLite replays (and drops) any of them
        before = damage.committed_frames(Path(f"{self.path}-wal"))
        try:
            conn = self._conn()
            lost = damage.lost_commits(self.path, before, damage.replayed_frames(conn))
            if lost is not None:
                log.error("the SQLite database %s: %s", self.path, lost)
            problem = damage.quick_check(conn, self.path)
            if problem is not None:
                self._damaged(problem)
            if self._damage is None or self._schema_version(conn) != SCHEMA_VERSION:
                self._migrate()
        except BaseException:
            self.close()
            raise
        self._checkpointer = Checkpointer(self.path, self._connect)

    # --- connections --------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
        # and a lost commit lets max_seq go back, so a seq an index already holds as a
        # label could be handed to another row. Writes come in batches, so the extra
        # fsync per commit is cheap.
        conn.execute("PRAGMA synchronous = FULL")
        # commits only append to the log; the checkpointer copies it into the file
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # once the log has been copied in and starts over, its file shrinks back to this
        conn.execute(f"PRAGMA journal_size_limit = {WAL_BYTES:d}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._connections_lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("the SQLite store is closed")
                for thread in [t for t in self._connections if not t.is_alive()]:
                    self._connections.pop(thread).close()
                conn = self._connect()
                self._connections[threading.current_thread()] = conn
            self._local.conn = conn
        return conn

    def _damaged(self, problem: str) -> None:
        """Note that the file is damaged: said once, loudly; writes are refused from now."""
        if self._damage is None:
            self._damage = problem
            log.error("%s", damage.damaged(self.path, problem).detail)

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        return conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._damage is not None:
            raise damage.damaged(self.path, self._damage)
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.committed(conn)
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if damage.is_damage(exc):
                    self._damaged(str(exc))
                    raise damage.damaged(self.path, str(exc)) from exc
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for the several statements of a read."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            if damage.is_damage(exc):
                self._damaged(str(exc))
                raise damage.damaged(self.path, str(exc)) from exc
            raise
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except sqlite3.DatabaseError:
                    # a read commits nothing; one that met damage may not end cleanly
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")

    def _migrate(self) -> None:
        conn = self._conn()
        with self._write_lock:
            # journal_mode is stored in the file: set once, it holds for every connection
            conn.execute("PRAGMA journal_mode = WAL")
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than the "
                    f"{SCHEMA_VERSION} this chroma-store-sqlite knows; upgrade the plugin"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._connections_lock:
            self._closed = True
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()

    # --- spaces -------------------------------------------------------------
    def create_space(self, name: str, metric: str, model: dict) -> SpaceInfo:
        return self._new_space(name, metric, model, _now())

    def _new_space(
        self,
        name: str,
        metric: str,
        model: dict,
        created_at: str,
        dim: int | None = None,
        restoring: bool = False,
    ) -> SpaceInfo:
        model_json = _json(model or {}, "model")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM spaces WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"space {name!r} already exists")
            cursor = conn.execute(
                "INSERT INTO spaces (name, metric, dim, model, created_at) VALUES (?, ?, ?, ?, ?)",
                (name, metric, dim, model_json, created_at),
            )
            space_id = int(cursor.lastrowid or 0)
            for statement in space_tables(space_id):
                conn.execute(statement)
            if restoring:
                conn.execute(
                    "INSERT INTO space_settings (space, name, value) VALUES (?, ?, ?)",
                    (space_id, RESTORING_SETTING, _now()),
                )
        return SpaceInfo(name, metric, dim, 0, json.loads(model_json), created_at, space_id)

    def get_space(self, name: str, *, count: bool = True) -> SpaceInfo:
        row = self._conn().execute(_SPACE + " WHERE s.name = ?", (name,)).fetchone()
        info = _space_info(row or _missing(name))
        return info if count else replace(info, count=None)

    def list_spaces(self) -> list[SpaceInfo]:
        rows = self._conn().execute(_SPACE + " ORDER BY s.name").fetchall()
        return [_space_info(row) for row in rows]

    def delete_space(self, name: str) -> None:
        with self._write() as conn:
            space_id = _space(conn, name)[0]
            conn.execute(
                "DELETE FROM trigger_items WHERE trigger_id IN "
                "(SELECT id FROM triggers WHERE space = ?)",
                (space_id,),
            )
            conn.execute("DELETE FROM triggers WHERE space = ?", (space_id,))
            conn.execute("DELETE FROM priorities WHERE space = ?", (space_id,))
            conn.execute("DELETE FROM batch_keys WHERE space = ?", (space_id,))
            conn.execute("DELETE FROM space_settings WHERE space = ?", (space_id,))
            conn.execute(f"DROP TABLE {_rows(space_id)}")
            conn.execute("DELETE FROM spaces WHERE space_id = ?", (space_id,))

    # --- rows ---------------------------------------------------------------
    def add(self, space: str, rows: pa.Table, batch_key: str | None = None) -> np.ndarray:
        n = rows.num_rows
        # hashed while the batch is converted and written, not before
        fingerprint = batch_fingerprint_soon(rows) if batch_key is not None else None
        parameters = _row_parameters(rows)
        with self._write() as conn:
            space_id, stored_dim, max_seq = _space(conn, space)
            if batch_key is not None and fingerprint is not None:
                _check_batch_key(conn, space, space_id, batch_key, fingerprint)
            dim = check_dimension(space, stored_dim, rows)
            if n == 0:
                return np.empty(0, dtype=np.int64)
            seqs = np.arange(max_seq + 1, max_seq + n + 1, dtype=np.int64)
            _insert_rows(conn, space, space_id, dim, seqs, parameters)
            if batch_key is not None and fingerprint is not None:
                self._keep_batch_key(conn, space_id, batch_key, fingerprint.result(), seqs)
        return seqs

    def _keep_batch_key(self, conn, space_id: int, key: str, fingerprint: str, seqs) -> None:
        """Record a batch's key in the rows' transaction, so the key is durable exactly
        when they are, and forget keys past their retention."""
        now = time.time()
        conn.execute(
            "INSERT INTO batch_keys (space, key, fingerprint, first_seq, count, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (space_id, key, fingerprint, int(seqs[0]), len(seqs), now),
        )
        conn.execute("DELETE FROM batch_keys WHERE added_at < ?", (now - self.batch_key_retention,))

    def select(self, space: str, query: RowQuery) -> pa.Table:
        wide = query.include_embeddings
        columns = f"r.seq, {_CATALOGUE}" + (", r.embedding, r.output" if wide else "")
        with self._read() as conn:
            space_id, dim, _ = _space(conn, space)
            condition, params = _rows_condition(space_id, ids=query.ids, where=query.where)
            records = conn.execute(
                f"SELECT {columns} FROM {_rows(space_id)} AS r WHERE {condition} ORDER BY r.seq"
                + _page(query.limit, query.offset, params),
                params,
            ).fetchall()
        return _rows_table(records, (dim or 0) if wide else None)

    def count(self, space: str, where: Filter | None = None) -> int:
        with self._read() as conn:
            if where is None:
                # the count kept with every add and delete: no scan
                row = conn.execute("SELECT row_count FROM spaces WHERE name = ?", (space,))
                return int((row.fetchone() or _missing(space))[0])
            space_id = _space(conn, space)[0]
            condition, params = _rows_condition(space_id, where=where)
            return conn.execute(
                f"SELECT COUNT(*) FROM {_rows(space_id)} AS r WHERE {condition}", params
            ).fetchone()[0]

    def delete(
        self, space: str, *, ids: list[str] | None = None, where: Filter | None = None
    ) -> np.ndarray:
        with self._write() as conn:
            space_id = _space(conn, space)[0]
            if ids is None and where is None:
                return np.empty(0, dtype=np.int64)
            condition, params = _rows_condition(space_id, ids=ids, where=where)
            found = conn.execute(
                f"SELECT r.seq, r.id FROM {_rows(space_id)} AS r WHERE {condition} ORDER BY r.seq",
                params,
            ).fetchall()
            if not found:
                return np.empty(0, dtype=np.int64)
            seqs, deleted_ids = zip(*found, strict=True)
            _delete_rows(conn, space_id, seqs, deleted_ids)
        return np.array(seqs, dtype=np.int64)

    def replace(
        self, space: str, rows: pa.Table, batch_key: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        n = rows.num_rows
        fingerprint = batch_fingerprint_soon(rows) if batch_key is not None else None
        parameters = _row_parameters(rows)
        ids = rows.column("id").to_pylist()
        with self._write() as conn:
            space_id, stored_dim, max_seq = _space(conn, space)
            if batch_key is not None and fingerprint is not None:
                _check_batch_key(conn, space, space_id, batch_key, fingerprint)
            dim = check_dimension(space, stored_dim, rows)
            if n == 0:
                return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
            if len(set(ids)) != n:
                raise Conflict(f"id {repeated(ids)!r:.200} appears twice in the batch")
            found = conn.execute(
                f"SELECT seq, id FROM {_rows(space_id)} "
                "WHERE id IN (SELECT value FROM json_each(?)) ORDER BY seq",
                (json.dumps(ids),),
            ).fetchall()
            replaced: tuple = ()
            if found:
                replaced, replaced_ids = zip(*found, strict=True)
                _delete_rows(conn, space_id, replaced, replaced_ids)
            seqs = np.arange(max_seq + 1, max_seq + n + 1, dtype=np.int64)
            _insert_rows(conn, space, space_id, dim, seqs, parameters)
            if batch_key is not None and fingerprint is not None:
                self._keep_batch_key(conn, space_id, batch_key, fingerprint.result(), seqs)
        return seqs, np.array(replaced, dtype=np.int64)

    def select_vectors(
        self, space: str, query: VectorQuery
    ) -> tuple[np.ndarray, np.ndarray | None]:
        with_vectors = query.with_vectors
        columns = "r.seq, r.embedding" if with_vectors else "r.seq"
        with self._read() as conn:
            space_id, dim, _ = _space(conn, space)
            condition, params = _rows_condition(
                space_id, where=query.where, seqs=query.seqs, after_seq=query.after_seq
            )
            records = conn.execute(
                f"SELECT {columns} FROM {_rows(space_id)} AS r WHERE {condition} ORDER BY r.seq",
                params,
            ).fetchall()
        n = len(records)
        found = np.fromiter((record[0] for record in records), dtype=np.int64, count=n)
        if not with_vectors:
            return found, None
        # bytearray, so the caller gets a writable array without a second copy
        buffer = bytearray().join(record[1] for record in records)
        vectors = np.frombuffer(buffer, dtype="<f4").astype(np.float32, copy=False)
        return found, vectors.reshape(n, dim or 0)

    def rows_by_seq(self, space: str, seqs: np.ndarray) -> pa.Table:
        with self._read() as conn:
            space_id = _space(conn, space)[0]
            condition, params = _rows_condition(space_id, seqs=seqs)
            records = conn.execute(
                f"SELECT r.seq, {_CATALOGUE} FROM {_rows(space_id)} AS r WHERE {condition} "
                "ORDER BY r.seq",
                params,
            ).fetchall()
        return _rows_table(records, None)

    def max_seq(self, space: str) -> int:
        return _space(self._conn(), space)[2]

    # --- priorities ---------------------------------------------------------
    def replace_priorities(
        self, space: str, scores: pa.Table, *, space_id: int | None = None
    ) -> None:
        ids, values, components, computed_at = _score_columns(scores)
        with self._write() as conn:
            space_id = _space(conn, space, space_id)[0]
            conn.execute("DELETE FROM priorities WHERE space = ?", (space_id,))
            conn.executemany(
                "INSERT OR REPLACE INTO priorities (space, id, priority, components, computed_at) "
                "SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS "
                f"(SELECT 1 FROM {_rows(space_id)} WHERE id = ?2)",
                zip(repeat(space_id), ids, values.tolist(), components, computed_at, strict=False),
            )

    def select_priorities(self, space: str, query: PriorityQuery) -> pa.Table:
        catalogue = ", ".join(f"r.{name}" for name in _PRIORITY_CATALOGUE)
        with self._read() as conn:
            space_id = _space(conn, space)[0]
            condition, params = _rows_condition(space_id, where=query.where)
            if query.min_priority is not None:
                condition += " AND p.priority >= :min_priority"
                params["min_priority"] = float(query.min_priority)
            records = conn.execute(
                f"SELECT p.id, p.priority, p.components, p.computed_at, {catalogue} "
                f"FROM priorities AS p JOIN {_rows(space_id)} AS r ON r.id = p.id "
                f"WHERE p.space = :space AND {condition} "
                "ORDER BY p.priority DESC, p.id ASC" + _page(query.n, 0, params),
                params,
            ).fetchall()
        names = [*_PRIORITY_COLUMNS, *_PRIORITY_CATALOGUE]
        types = {"priority": pa.float64()}
        return _table(records, names, types)

    # --- triggers -----------------------------------------------------------
    def create_trigger(
        self,
        space: str,
        items: pa.Table,
        note: str | None,
        selection: dict,
        *,
        space_id: int | None = None,
    ) -> dict:
        columns = _columns(items, _ITEM_COLUMNS, ("id",))
        selection_json = _json(selection or {}, "selection")
        now = _now()
        with self._write() as conn:
            space_id = _space(conn, space, space_id)[0]
            trigger_id = conn.execute(
                "INSERT INTO triggers (space, status, note, selection, count, created_at, "
                "updated_at) VALUES (?, 'pending', ?, ?, ?, ?, ?)",
                (space_id, note, selection_json, items.num_rows, now, now),
            ).lastrowid
            return _add_items(conn, int(trigger_id or 0), columns)

    def get_trigger(self, trigger_id: int) -> dict:
        return _trigger(self._conn(), trigger_id)

    def list_triggers(self, space: str | None = None, status: str | None = None) -> list[dict]:
        conditions: list[str] = ["1"]
        params: list[Any] = []
        with self._read() as conn:
            if space is not None:
                conditions.append("t.space = ?")
                params.append(_space(conn, space)[0])
            if status is not None:
                conditions.append("t.status = ?")
                params.append(status)
            records = conn.execute(
                f"{_TRIGGER} WHERE {' AND '.join(conditions)} ORDER BY t.id DESC", params
            ).fetchall()
        return [_trigger_dict(record) for record in records]

    def change_trigger(self, trigger_id: int, change: TriggerChange) -> dict:
        status, delivery = change.status, change.delivery
        with self._write() as conn:
            trigger = _trigger(conn, trigger_id)
            if status is None and delivery is None:
                return trigger
            deliveries = trigger["deliveries"]
            if delivery is not None:
                deliveries[str(delivery[0])] = delivery[1]
            conn.execute(
                "UPDATE triggers SET status = ?, deliveries = ?, updated_at = ? WHERE id = ?",
                (status or trigger["status"], _json(deliveries, "delivery"), _now(), trigger["id"]),
            )
            return _trigger(conn, trigger["id"])

    def trigger_items(self, trigger_id: int) -> pa.Table:
        with self._read() as conn:
            trigger = _trigger(conn, trigger_id)
            records = conn.execute(
                f"SELECT {', '.join(_ITEM_COLUMNS)} FROM trigger_items WHERE trigger_id = ? "
                "ORDER BY priority DESC, rowid ASC",
                (trigger["id"],),
            ).fetchall()
        return _table(records, list(_ITEM_COLUMNS), {"priority": pa.float64()})

    # --- back-up and restore ------------------------------------------------
    def rows_page(self, space: str, *, after_seq: int, limit: int) -> pa.Table:
        with self._read() as conn:
            space_id, dim, _ = _space(conn, space)
            params: dict[str, Any] = {"after": int(after_seq)}
            records = conn.execute(
                f"SELECT r.seq, {_CATALOGUE}, r.embedding, r.output FROM {_rows(space_id)} AS r "
                "WHERE r.seq > :after ORDER BY r.seq" + _page(limit, 0, params),
                params,
            ).fetchall()
        return _rows_table(records, dim or 0)

    def scored_rows_after(
        self, space: str, *, after_seq: int, limit: int, where: Filter | None = None
    ) -> pa.Table:
        catalogue = ", ".join(f"r.{name}" for name in _PRIORITY_CATALOGUE)
        with self._read() as conn:
            space_id = _space(conn, space)[0]
            condition, params = _rows_condition(space_id, where=where, after_seq=after_seq)
            records = conn.execute(
                f"SELECT r.seq, r.id, {catalogue}, p.priority, p.computed_at "
                f"FROM {_rows(space_id)} AS r LEFT JOIN priorities AS p "
                "ON p.space = :space AND p.id = r.id "
                f"WHERE {condition} ORDER BY r.seq" + _page(limit, 0, params),
                params,
            ).fetchall()
        names = ["seq", "id", *_PRIORITY_CATALOGUE, "priority", "computed_at"]
        return _table(records, names, {"seq": pa.int64(), "priority": pa.float64()})

    def last_seq(self, space: str) -> int:
        with self._read() as conn:
            space_id = _space(conn, space)[0]
            found = conn.execute(f"SELECT max(seq) FROM {_rows(space_id)}").fetchone()
        return int(found[0] or 0)

    def priorities_page(self, space: str, *, after_id: str | None, limit: int) -> pa.Table:
        with self._read() as conn:
            space_id = _space(conn, space)[0]
            # BINARY collation: ids compare bytewise, the order every store pages in. The
            # first page starts above '', below every id (ids are never empty), so every
            # page is one range of the (space, id) key, starting where the last one ended
            params: dict[str, Any] = {
                "space": space_id,
                "after": "" if after_id is None else str(after_id),
            }
            records = conn.execute(
                "SELECT p.id, p.priority, p.components, p.computed_at, r.seq "
                f"FROM priorities AS p JOIN {_rows(space_id)} AS r ON r.id = p.id "
                "WHERE p.space = :space AND p.id > :after ORDER BY p.id" + _page(limit, 0, params),
                params,
            ).fetchall()
        names = [*_PRIORITY_COLUMNS, "seq"]
        return _table(records, names, {"priority": pa.float64(), "seq": pa.int64()})

    def restore_space(self, info: SpaceInfo) -> SpaceInfo:
        created_at = info.created_at or _now()
        return self._new_space(
            info.name, info.metric, info.model, created_at, info.dim, restoring=True
        )

    def finish_restore(self, space: str) -> None:
        self.set_space_setting(space, RESTORING_SETTING, None)

    def unfinished_restores(self) -> list[str]:
        with self._read() as conn:
            found = conn.execute(
                "SELECT s.name FROM space_settings AS t JOIN spaces AS s "
                "ON s.space_id = t.space WHERE t.name = ? ORDER BY s.name",
                (RESTORING_SETTING,),
            ).fetchall()
        return [name for (name,) in found]

    def restore_rows(self, space: str, rows: pa.Table, seqs: np.ndarray) -> None:
        n, seqs = rows.num_rows, np.asarray(seqs, dtype=np.int64)
        parameters = _row_parameters(rows)
        with self._write() as conn:
            space_id, stored_dim, max_seq = _space(conn, space)
            dim = check_dimension(space, stored_dim, rows)
            if n == 0:
                return
            if seqs[0] <= max_seq:
                raise Conflict(
                    f"seq {int(seqs[0])} is not above the largest seq {max_seq} of space {space!r}"
                )
            _insert_rows(conn, space, space_id, dim, seqs, parameters)

    def restore_priorities(self, space: str, scores: pa.Table) -> None:
        ids, values, components, computed_at = _score_columns(scores)
        listed = json.dumps(ids)
        with self._write() as conn:
            space_id = _space(conn, space)[0]
            missing = conn.execute(
                f"SELECT j.value FROM json_each(?) AS j WHERE NOT EXISTS "
                f"(SELECT 1 FROM {_rows(space_id)} AS r WHERE r.id = j.value) LIMIT 1",
                (listed,),
            ).fetchone()
            if missing is not None:
                raise NotFound(f"id {missing[0]!r:.200} has a score but is not in space {space!r}")
            try:
                conn.executemany(
                    "INSERT INTO priorities (space, id, priority, components, computed_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    zip(
                        repeat(space_id),
                        ids,
                        values.tolist(),
                        components,
                        computed_at,
                        strict=False,
                    ),
                )
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                scored = conn.execute(
                    "SELECT j.value FROM json_each(?) AS j JOIN priorities AS p "
                    "ON p.space = ? AND p.id = j.value ORDER BY j.key LIMIT 1",
                    (listed, space_id),
                ).fetchone()
                which = f"id {scored[0]!r:.200} already has" if scored else "an id has more than"
                raise Conflict(f"{which} one score in space {space!r}") from None

    # --- scores added as rows arrive, settings -------------------------------------
    def add_priorities(self, space: str, scores: pa.Table, *, space_id: int | None = None) -> int:
        ids, values, components, computed_at = _score_columns(scores)
        with self._write() as conn:
            space_id = _space(conn, space, space_id)[0]
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO priorities (space, id, priority, components, computed_at) "
                f"SELECT ?, r.id, ?, ?, ? FROM {_rows(space_id)} AS r WHERE r.id = ? "
                "ON CONFLICT (space, id) DO NOTHING",
                zip(repeat(space_id), values.tolist(), components, computed_at, ids, strict=False),
            )
            return conn.total_changes - before

    def space_settings(self, space: str) -> dict[str, str]:
        with self._read() as conn:
            space_id = _space(conn, space)[0]
            found = conn.execute(
                "SELECT name, value FROM space_settings WHERE space = ?", (space_id,)
            ).fetchall()
        return dict(found)

    def set_space_setting(self, space: str, name: str, value: str | None) -> None:
        with self._write() as conn:
            space_id = _space(conn, space)[0]
            if value is None:
                conn.execute(
                    "DELETE FROM space_settings WHERE space = ? AND name = ?", (space_id, name)
                )
            else:
                conn.execute(
                    "INSERT INTO space_settings (space, name, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (space, name) DO UPDATE SET value = excluded.value",
                    (space_id, name, value),
                )

    def restore_trigger(self, space: str, trigger: dict, items: pa.Table) -> dict:
        columns = _columns(items, _ITEM_COLUMNS, ("id",))
        selection = _json(trigger.get("selection") or {}, "selection")
        deliveries = _json(trigger.get("deliveries") or {}, "deliveries")
        status = trigger.get("status")
        created = trigger.get("created_at") or _now()
        updated = trigger.get("updated_at") or created
        with self._write() as conn:
            space_id = _space(conn, space)[0]
            wanted = int(trigger["id"])
            # triggers of deleted spaces go with them, so a stored id is a live trigger's
            taken = conn.execute("SELECT 1 FROM triggers WHERE id = ?", (wanted,)).fetchone()
            trigger_id = conn.execute(
                "INSERT INTO triggers (id, space, status, note, selection, count, created_at, "
                "updated_at, deliveries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    None if taken else wanted,
                    space_id,
                    status,
                    trigger.get("note"),
                    selection,
                    items.num_rows,
                    created,
                    updated,
                    deliveries,
                ),
            ).lastrowid
            return _add_items(conn, int(trigger_id or 0), columns)


# --- queries --------------------------------------------------------------------
def _space(
    conn: sqlite3.Connection, name: str, expected: int | None = None
) -> tuple[int, int | None, int]:
    """``(space_id, dim, max_seq)`` of space ``name``, which must be space ``expected``
    when that is given."""
    row = conn.execute(
        "SELECT space_id, dim, max_seq FROM spaces WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        raise NotFound(f"space {name!r} does not exist")
    check_same_space(name, row[0], expected)
    return row


def _check_batch_key(
    conn: sqlite3.Connection, space: str, space_id: int, key: str, fingerprint: Future[str]
) -> None:
    """Nothing when ``key`` is new in the space; ``BatchAlreadyStored`` when it names these
    rows, stored before; ``Conflict`` when it names other rows."""
    found = conn.execute(
        "SELECT fingerprint, first_seq, count FROM batch_keys WHERE space = ? AND key = ?",
        (space_id, key),
    ).fetchone()
    if found is None:
        return
    stored, first_seq, count = found
    if stored != fingerprint.result():
        raise Conflict(
            f"batch key {key!r} already names another batch in space {space!r} (its "
            f"{count} rows from seq {first_seq}); a key names one batch, send new rows "
            "under a new key"
        )
    raise BatchAlreadyStored(space, key, np.arange(first_seq, first_seq + count, dtype=np.int64))


def _row_parameters(rows: pa.Table) -> tuple[list[list], np.ndarray, list]:
    """A batch as :func:`_insert_rows` binds it, all but the seqs: the text fields (id
    first), the embeddings as little-endian float32 rows (the blob layout ``select`` and
    ``select_vectors`` read back) and the outputs. Made before the write lock is taken, so
    no writer waits on the conversion."""
    columns = [_text_column(rows, name) for name in TEXT_FIELDS]
    matrix = np.ascontiguousarray(embeddings_of(rows), dtype="<f4")
    return columns, matrix, _output_blobs(rows, rows.num_rows)


def _delete_rows(conn: sqlite3.Connection, space_id: int, seqs, ids) -> None:
    """Delete the rows ``seqs`` (whose ids are ``ids``) with their scores, and count them
    out of their space."""
    conn.execute(
        f"DELETE FROM {_rows(space_id)} WHERE seq IN (SELECT value FROM json_each(?))",
        (json.dumps(list(seqs)),),
    )
    conn.execute(
        "DELETE FROM priorities WHERE space = ? AND id IN (SELECT value FROM json_each(?))",
        (space_id, json.dumps(list(ids))),
    )
    conn.execute(
        "UPDATE spaces SET row_count = row_count - ? WHERE space_id = ?", (len(seqs), space_id)
    )


def _insert_rows(
    conn: sqlite3.Connection,
    space: str,
    space_id: int,
    dim: int,
    seqs: np.ndarray,
    parameters: tuple[list[list], np.ndarray, list],
) -> None:
    """Insert a batch under ``seqs`` (increasing, above the space's largest) and record it
    in its space: ``dim`` its dimension, the last seq its largest, the rows counted. An id
    already stored rolls the transaction back and raises ``Conflict`` naming it."""
    columns, matrix, outputs = parameters
    try:
        conn.executemany(
            f"INSERT INTO {_rows(space_id)} (seq, id, dataset, context, input_uri, "
            "inference, label, metadata, embedding, output) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            zip(seqs.tolist(), *columns, matrix, outputs, strict=False),
        )
    except sqlite3.IntegrityError:
        # ids are checked by the unique index as rows go in; the transaction rolls back,
        # and the first id already stored is named
        conn.execute("ROLLBACK")
        raise _stored_id(conn, space_id, space, columns[0]) from None
    conn.execute(
        "UPDATE spaces SET dim = ?, max_seq = ?, row_count = row_count + ? WHERE space_id = ?",
        (dim, int(seqs[-1]), len(seqs), space_id),
    )


def _rows_condition(
    space_id: int,
    *,
    ids: Sequence[str] | None = None,
    where: Filter | None = None,
    seqs: np.ndarray | None = None,
    after_seq: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """A condition on the space's rows table ``AS r`` with named parameters; ``:space`` (the
    space id) is always bound."""
    conditions = ["1"]
    params: dict[str, Any] = {"space": space_id}
    # a JSON array in one parameter instead of one parameter per value, which would run
    # into SQLite's limit on bound variables
    if ids is not None:
        conditions.append("r.id IN (SELECT value FROM json_each(:ids))")
        params["ids"] = json.dumps([str(i) for i in ids])
    if seqs is not None:
        conditions.append("r.seq IN (SELECT value FROM json_each(:seqs))")
        params["seqs"] = json.dumps(np.asarray(seqs, dtype=np.int64).reshape(-1).tolist())
    if after_seq is not None:
        conditions.append("r.seq > :after_seq")
        params["after_seq"] = int(after_seq)
    if where is not None:
        condition, where_params = compile_where(where, "r")
        conditions.append(condition)
        params.update(where_params)
    return " AND ".join(conditions), params


def _page(limit: int | None, offset: int, params: dict[str, Any]) -> str:
    if limit is None and not offset:
        return ""
    params["limit"] = -1 if limit is None else int(limit)
    params["offset"] = int(offset or 0)
    return " LIMIT :limit OFFSET :offset"


def _trigger(conn: sqlite3.Connection, trigger_id: int) -> dict:
    try:
        key = int(trigger_id)
    except (TypeError, ValueError):
        raise NotFound(f"trigger {trigger_id!r:.40} does not exist") from None
    record = conn.execute(_TRIGGER + " WHERE t.id = ?", (key,)).fetchone()
    if record is None:
        raise NotFound(f"trigger {trigger_id!r:.40} does not exist")
    return _trigger_dict(record)


def _add_items(conn: sqlite3.Connection, trigger_id: int, columns: list[list]) -> dict:
    """Store the items (the :data:`_ITEM_COLUMNS`, in the order given) of the trigger just
    inserted, and return the trigger."""
    conn.executemany(
        "INSERT INTO trigger_items (trigger_id, id, input_uri, dataset, label, "
        "inference, priority) VALUES (?, ?, ?, ?, ?, ?, ?)",
        zip(repeat(trigger_id), *columns, strict=False),
    )
    return _trigger(conn, trigger_id)


def _trigger_dict(record: tuple) -> dict:
    trigger_id, space, status, note, selection, count, created, updated, deliveries = record
    return {
        "id": trigger_id,
        "space": space,
        "status": status,
        "note": note,
        "selection": json.loads(selection),
        "count": count,
        "created_at": created,
        "updated_at": updated,
        "deliveries": json.loads(deliveries),
    }


def _score_columns(scores: pa.Table) -> tuple[list, np.ndarray, list, list]:
    """``(ids, priorities, components, computed_at)`` of scores to store, priorities as
    float64."""
    ids, priority, components, computed_at = _columns(scores, _PRIORITY_COLUMNS, ("id", "priority"))
    return ids, np.asarray(priority, dtype=np.float64), components, computed_at


def _stored_id(conn: sqlite3.Connection, space_id: int, space: str, ids: list) -> ChromaError:
    """The error of a batch that broke a unique index: the first of its ids already stored
    is named."""
    stored = conn.execute(
        f"SELECT j.value FROM json_each(?) AS j JOIN {_rows(space_id)} AS r "
        "ON r.id = j.value ORDER BY j.key LIMIT 1",
        (json.dumps(ids),),
    ).fetchone()
    if stored is not None:
        return Conflict(f"id {stored[0]!r:.200} is already stored in space {space!r}")
    return InvalidInput("the batch breaks a constraint of the store")


def _space_info(row: tuple) -> SpaceInfo:
    name, metric, dim, count, model, created_at, space_id = row
    return SpaceInfo(name, metric, dim, count, json.loads(model), created_at, space_id)


# --- Arrow <-> SQLite -------------------------------------------------------------
def _text_column(table: pa.Table, name: str) -> list:
    if name not in table.column_names:
        return [None] * table.num_rows
    return table.column(name).to_pylist()


def _output_blobs(table: pa.Table, n: int) -> list:
    """Per row a float32 view of the output (bound as a BLOB), or None."""
    if "output" not in table.column_names:
        return [None] * n
    column = table.column("output").combine_chunks()
    if column.null_count == n:
        return [None] * n
    column = column.cast(pa.list_(pa.float32()))
    offsets = column.offsets.to_numpy()
    values = np.ascontiguousarray(column.values.to_numpy(zero_copy_only=False), dtype="<f4")
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(n)]


def _columns(table: pa.Table, names: Sequence[str], required: Sequence[str]) -> list[list]:
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise InvalidInput(f"the table lacks column(s): {', '.join(missing)}")
    return [_text_column(table, name) for name in names]


def _rows_table(records: list[tuple], dim: int | None) -> pa.Table:
    """``seq`` and catalogue columns, then ``embedding`` and ``output`` when ``dim`` is given
    (0 for a space that has no rows yet)."""
    names = ["seq", *CATALOGUE_COLUMNS]
    if dim is None:
        return _table(records, names, {"seq": pa.int64()})
    columns = list(zip(*records, strict=True)) if records else [()] * (len(names) + 2)
    table = _table(records, names, {"seq": pa.int64()}, columns[: len(names)])
    if dim:
        flat = np.frombuffer(b"".join(columns[-2]), dtype="<f4").astype(np.float32, copy=False)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
    else:
        # from_arrays refuses a list size of 0
        embedding = pa.array([], pa.list_(pa.float32(), 0))
    return table.append_column("embedding", embedding).append_column(
        "output", _output_array(columns[-1])
    )


def _output_array(blobs: Sequence[bytes | None]) -> pa.Array:
    n = len(blobs)
    valid = np.fromiter((blob is not None for blob in blobs), dtype=bool, count=n)
    lengths = np.fromiter((len(blob or b"") // 4 for blob in blobs), dtype=np.int32, count=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.frombuffer(b"".join(blob for blob in blobs if blob), dtype="<f4")
    return pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.array(values.astype(np.float32, copy=False)),
        type=pa.list_(pa.float32()),
        mask=None if valid.all() else pa.array(~valid),
    )


def _table(
    records: list[tuple],
    names: Sequence[str],
    types: dict[str, pa.DataType],
    columns: Sequence[Sequence] | None = None,
) -> pa.Table:
    if columns is None:
        columns = list(zip(*records, strict=True)) if records else [()] * len(names)
    arrays = [
        pa.array(column, type=types.get(name, pa.string()))
        for name, column in zip(names, columns, strict=True)
    ]
    return pa.Table.from_arrays(arrays, names=list(names))


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_plain, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON-serialisable: {exc}") from None


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _missing(name: str):
    raise NotFound(f"space {name!r} does not exist")
