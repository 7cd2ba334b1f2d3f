"""The ClickHouse store: spaces, rows, priorities and triggers in MergeTree tables.

Writes from one server are serialised by a lock: id uniqueness and seq allocation are
checked under it. Every change a reader could see half of is made visible by one insert:
rows by one single-block insert, deletes by one tombstone insert, a priority rewrite by the
space row naming the new generation, a trigger by its row after its items.

A crash between those inserts leaves something no reader sees, and the next writer must not
build on it: a new priority generation or trigger id is numbered past any left behind (their
rows would otherwise join the new ones), and a space whose first rows were stored without
the space row recording their dimension gets it recorded when the store opens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_core.config import Settings
from chroma_core.filters import Filter
from chroma_core.schema import batch_fingerprint_soon, embeddings_of
from chroma_core.store import (
    RESTORING_SETTING,
    AddPriorities,
    BatchAlreadyStored,
    FollowRows,
    JoinedNeighbors,
    JoinQuery,
    NeighborJoin,
    NeighborSearch,
    PagedBackup,
    ReplaceRows,
    Restore,
    SpaceSettings,
    Store,
    check_dimension,
    check_same_space,
    repeated,
)
from chroma_store_clickhouse import cell_join, schema
from chroma_store_clickhouse.arrow import matrix, strings
from chroma_store_clickhouse.connection import Target, target
from chroma_store_clickhouse.ivf import InvertedFile
from chroma_store_clickhouse.repair import repair_empty_definitions
from chroma_store_clickhouse.where import compile_where, listed
from chroma_wire.errors import ChromaError, Conflict, NotFound, ServerError
from chroma_wire.types import CATALOGUE_COLUMNS, Neighbors, SpaceInfo

if TYPE_CHECKING:
    from chroma_core.store import PriorityQuery, RowQuery, TriggerChange, VectorQuery

log = logging.getLogger("chroma.clickhouse")

_CATALOGUE = ", ".join(f"r.{c}" for c in CATALOGUE_COLUMNS)
_PRIORITY_CATALOGUE = [c for c in CATALOGUE_COLUMNS if c not in ("id", "metadata")]
_ITEM_COLUMNS = ("id", "input_uri", "dataset", "label", "inference", "priority")
_DISTANCE = {
    "l2": "L2Distance(r.embedding, {q:Array(Float32)})",
    "cosine": "cosineDistance(r.embedding, {q:Array(Float32)})",
    "ip": "1 - dotProduct(r.embedding, {q:Array(Float32)})",
}
#: bytes of ids a query takes as one parameter at most (about)
ID_RUN_BYTES = 256 << 10
# how long another server's change to a space may go unseen here
SPACE_CACHE_SECONDS = 2.0
_SPACE_COLUMNS = "name, space_id, metric, dim, model, created_at, priority_generation"


class ClickHouseStore(
    Store,
    PagedBackup,
    Restore,
    NeighborSearch,
    NeighborJoin,
    SpaceSettings,
    AddPriorities,
    FollowRows,
    ReplaceRows,
):
    """A :class:`Store` in ClickHouse that pages and restores back-ups, answers k-NN itself
    (from its inverted file, or exactly with filters pushed down), and searches the
    neighbours of whole data sets cell by cell."""

    name = "clickhouse"

    def __init__(self, where: Target):
        self.target = where
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.RLock()
        self._max_seq: dict[int, int] = {}
        # (read at, row) by name: spaces change rarely and are read on every call
        self._spaces: dict[str, tuple[float, tuple]] = {}
        self._space_epoch = 0
        self._last_version = 0
        if where.embedded:
            # what a crash or a full disk left that would stop the engine from starting
            repair_empty_definitions(Path(where.options["dsn"][len("chdb://") :]))
        try:
            admin = where.client(None)
            admin.command(self._statement(f"CREATE DATABASE IF NOT EXISTS {where.database}"))
        except ChromaError:
            raise
        except Exception as exc:
            raise ServerError(f"cannot open {where.describe()}: {exc}") from None
        self._migrate()
        self._record_dimensions()
        self.ivf = (
            InvertedFile(self, train_rows=where.ivf_train_rows, probes=where.ivf_probes)
            if where.ivf
            else None
        )
        if self.ivf is not None:
            for sid, metric in self._query(
                "SELECT space_id, metric FROM spaces FINAL WHERE deleted = 0 AND dim > 0"
            ):
                self.ivf.complete(sid, metric)

    @classmethod
    def open(cls, settings: Settings) -> ClickHouseStore:
        return cls(target(settings))

    # --- plumbing -------------------------------------------------------------
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.target.client(self.target.database)
            with self._lock:
                self._clients.append(client)
        return client

    def _release_client(self) -> None:
        """Close the calling thread's client: a thread about to end leaves none open."""
        client = getattr(self._local, "client", None)
        if client is None:
            return
        self._local.client = None
        with self._lock:
            self._clients = [c for c in self._clients if c is not client]
        client.close()

    def _query(self, sql: str, params: dict | None = None) -> list[tuple]:
        try:
            return self._client().query(sql, parameters=params or {}).result_rows
        except Exception as exc:
            raise _gone(exc) from None

    def _arrow(self, sql: str, params: dict | None = None) -> pa.Table:
        try:
            return self._client().query_arrow(sql, parameters=params or {})
        except Exception as exc:
            raise _gone(exc) from None

    def _command(self, sql: str, params: dict | None = None, settings: dict | None = None):
        """Run DDL or a delete, on every server of the cluster when there is one."""
        return self._client().command(
            self._statement(sql), parameters=params or {}, settings=settings
        )

    def _statement(self, sql: str) -> str:
        cluster = self.target.cluster
        return schema.on_cluster(sql, cluster) if cluster else sql

    def _version(self) -> int:
        with self._lock:
            self._last_version = max(time.time_ns(), self._last_version + 1)
            return self._last_version

    def _migrate(self) -> None:
        with self._lock:
            self._command(
                "CREATE TABLE IF NOT EXISTS chroma_migrations (version UInt32, "
                "applied_at DateTime64(3)) ENGINE = MergeTree ORDER BY version"
            )
            current = self._query("SELECT max(version) FROM chroma_migrations")[0][0] or 0
            if current > schema.SCHEMA_VERSION:
                raise ServerError(
                    f"the ClickHouse database {self.target.database!r} has schema version "
                    f"{current}, newer than this Chroma ({schema.SCHEMA_VERSION}); upgrade Chroma"
                )
            for number in range(current + 1, schema.SCHEMA_VERSION + 1):
                for statement in schema.MIGRATIONS[number - 1]:
                    self._command(statement)
                self._command(
                    "INSERT INTO chroma_migrations VALUES ({v:UInt32}, now64(3))", {"v": number}
                )

    def _record_dimensions(self) -> None:
        """Record the dimension of a space whose first add stored its rows but not the space
        row saying so (the server stopped between the two)."""
        with self._lock:
            for name in self._query(
                "SELECT name FROM spaces FINAL WHERE deleted = 0 AND dim = 0 ORDER BY name"
            ):
                row = self._space_row(name[0], fresh=True)
                found = self._query(f"SELECT length(embedding) FROM rows_{row[1]} LIMIT 1")
                if found:
                    log.warning("space %s: recording the dimension of its first rows", row[0])
                    self._write_space((*row[:3], found[0][0], *row[4:]))
                    self._add_vector_index(row[1], row[2], found[0][0])

    def _add_vector_index(self, sid: int, metric: str, dim: int) -> None:
        if self.target.vector_index:
            ddl = schema.vector_index(sid, metric, dim)
            if ddl:
                self._command(ddl)

    def close(self) -> None:
        if self.ivf is not None:
            self.ivf.close()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._local = threading.local()

    # --- spaces ---------------------------------------------------------------
    def _space_row(self, name: str, fresh: bool = False) -> tuple:
        """The space's row; writers ask for it ``fresh``, readers may take a cached one."""
        cached = self._spaces.get(name)
        if not fresh and cached and time.monotonic() - cached[0] < SPACE_CACHE_SECONDS:
            return cached[1]
        epoch = self._space_epoch
        rows = self._query(
            f"SELECT {_SPACE_COLUMNS} FROM spaces FINAL WHERE deleted = 0 AND name = {{n:String}}",
            {"n": name},
        )
        if not rows:
            raise NotFound(f"space {name!r} does not exist")
        if epoch == self._space_epoch:  # no write began meanwhile, so the row is current
            self._spaces[name] = (time.monotonic(), rows[0])
        return rows[0]

    def _write_space(self, row: tuple, *, deleted: int = 0) -> None:
        name, sid, metric, dim, model, created_at, generation = row
        # the epoch moves before and after, so a reader whose read overlapped the write
        # never caches what it read
        self._space_epoch += 1
        self._spaces.pop(name, None)
        self._client().insert(
            "spaces",
            [[name, sid, metric, dim, model, created_at, generation, deleted, self._version()]],
            column_names=[*_SPACE_COLUMNS.split(", "), "deleted", "version"],
        )
        self._space_epoch += 1
        self._spaces.pop(name, None)

    def _info(self, row: tuple, count: bool) -> SpaceInfo:
        name, sid, metric, dim, model, created_at, _ = row
        rows = self._count(sid) if count else None
        return SpaceInfo(name, metric, dim or None, rows, json.loads(model), created_at, sid)

    def _count(self, sid: int, where: Filter | None = None) -> int:
        condition, params = self._condition(sid, where=where)
        return self._query(f"SELECT count() FROM rows_{sid} AS r WHERE {condition}", params)[0][0]

    def create_space(self, name: str, metric: str, model: dict) -> SpaceInfo:
        return self._new_space(name, metric, model, _now())

    def _new_space(
        self,
        name: str,
        metric: str,
        model: dict,
        created: str,
        dim: int | None = None,
        restoring: bool = False,
    ) -> SpaceInfo:
        with self._lock:
            try:
                self._space_row(name, fresh=True)
            except NotFound:
                pass
            else:
                raise Conflict(f"space {name!r} already exists")
            sid = (self._query("SELECT max(space_id) FROM spaces")[0][0] or 0) + 1
            for statement in schema.space_tables(sid):
                self._command(statement)
            row = (name, sid, metric, dim or 0, json.dumps(model or {}), created, 0)
            if dim and self.target.vector_index:
                ddl = schema.vector_index(sid, metric, dim)
                if ddl:
                    self._command(ddl)
            # before the space row, which makes the space: a restore is unfinished from its
            # first moment, and a space made after a crash here never inherits the mark
            self._client().insert(
                "space_settings",
                [[sid, RESTORING_SETTING, _now(), int(restoring), time.time_ns()]],
                column_names=["space_id", "name", "value", "present", "version"],
            )
            self._write_space(row)
            self._max_seq[sid] = 0
        return replace(self._info(row, count=False), count=0)

    def get_space(self, name: str, *, count: bool = True) -> SpaceInfo:
        return self._info(self._space_row(name), count)

    def list_spaces(self) -> list[SpaceInfo]:
        rows = self._query(
            f"SELECT {_SPACE_COLUMNS} FROM spaces FINAL WHERE deleted = 0 ORDER BY name"
        )
        return [self._info(row, count=True) for row in rows]

    def delete_space(self, name: str) -> None:
        with self._lock:
            row = self._space_row(name, fresh=True)
            sid = row[1]
            self._write_space(row, deleted=1)
            for table in ("rows", "ids", "deleted", "priorities", "ivf", "ivf_centroids"):
                self._command(f"DROP TABLE IF EXISTS {table}_{sid}")
            if self.ivf is not None:
                self.ivf.forget(sid)
            self._command("DELETE FROM batch_keys WHERE space_id = {s:UInt64}", {"s": sid})
            self._command("DELETE FROM space_settings WHERE space_id = {s:UInt64}", {"s": sid})
            self._command(
                "DELETE FROM trigger_items WHERE trigger_id IN "
                "(SELECT id FROM triggers WHERE space_id = {s:UInt64})",
                {"s": sid},
            )
            self._max_seq.pop(sid, None)

    # --- rows -----------------------------------------------------------------
    def _condition(self, sid: int, *, ids=None, where=None, seqs=None, after=None):
        parts = [f"r.seq NOT IN (SELECT seq FROM deleted_{sid})"]
        params: dict[str, Any] = {}
        if ids is not None:
            parts.append(f"r.id IN {listed('{ids:Array(String)}')}")
            params["ids"] = list(ids)
        if seqs is not None:
            parts.append(f"r.seq IN {listed('{seqs:Array(UInt64)}')}")
            params["seqs"] = [int(s) for s in seqs]
        if after is not None:
            parts.append("r.seq > {after:UInt64}")
            params["after"] = int(after)
        if where is not None:
            sql, bound = compile_where(where)
            parts.append(sql)
            params.update(bound)
        return " AND ".join(parts), params

    def _current_max_seq(self, sid: int) -> int:
        if sid not in self._max_seq:
            # tombstones keep the seqs of deleted rows, so none is ever given twice
            self._max_seq[sid] = (
                self._query(
                    f"SELECT greatest((SELECT max(seq) FROM rows_{sid}), "
                    f"(SELECT max(seq) FROM deleted_{sid}), (SELECT max(seq) FROM ids_{sid}))"
                )[0][0]
                or 0
            )
        return self._max_seq[sid]

    def add(self, space: str, rows: pa.Table, batch_key: str | None = None) -> np.ndarray:
        """Store a batch: its ids registered, then its key (when it has one), then its rows.

        A keyed batch is crash-safe in this order, with no transaction across the inserts:

        - the key is on disk (fsync) before the rows are inserted, so rows are never
          durable without their key being found after a restart;
        - a key is honoured (the batch answered as stored, nothing stored) only when a row
          of its seqs is found, in the rows or among the tombstones of deleted rows, so no
          key stands for rows that are not durable;
        - a key without its rows (a crash, or a failed insert, came between the two inserts)
          is completed when the batch comes again: its rows go in under the seqs the key
          recorded, with the same deduplication token, so an earlier insert that was
          reported failed but lands after all makes the same block, stored once. The
          token's window (``DEDUPLICATION_WINDOW`` blocks) only has to outlast such an
          insert still on its way, not the key.

        Everything runs under the store's lock, so one server never checks a key while
        another of its threads is between the two inserts of the same key.
        """
        n = rows.num_rows
        # hashed while the lock is waited for and the ids are checked, not before
        fingerprint = batch_fingerprint_soon(rows) if batch_key is not None else None
        with self._lock:
            row = self._space_row(space, fresh=True)
            sid = row[1]
            check_dimension(space, row[3] or None, rows)
            if n == 0:
                return np.empty(0, dtype=np.int64)
            if batch_key is not None and fingerprint is not None:
                seqs = self._batch_seqs(space, sid, batch_key, fingerprint)
                if seqs is not None:
                    if self._batch_stored(sid, seqs):
                        raise BatchAlreadyStored(space, batch_key, seqs)
                    self._check_ids_elsewhere(space, sid, rows.column("id"), seqs)
                    self._insert_rows(row, rows, seqs)
                    return seqs
            start = self._current_max_seq(sid)
            seqs = np.arange(start + 1, start + n + 1, dtype=np.int64)
            # seqs are spent from here on, stored or not: none is ever handed out twice
            self._max_seq[sid] = start + n
            self._check_new_ids(space, sid, rows.column("id"), seqs, start)
            if batch_key is not None and fingerprint is not None:
                self._keep_batch_key(sid, batch_key, fingerprint.result(), seqs)
            self._insert_rows(row, rows, seqs)
        return seqs

    def _keep_batch_key(self, sid: int, key: str, fingerprint: str, seqs: np.ndarray) -> None:
        """Record a batch's key with its fingerprint and seqs, before its rows go in."""
        self._client().insert(
            "batch_keys",
            [[sid, key, fingerprint, int(seqs[0]), len(seqs), datetime.now(UTC)]],
            column_names=["space_id", "key", "fingerprint", "first_seq", "count", "added_at"],
        )

    def _insert_rows(
        self, row: tuple, rows: pa.Table, seqs: np.ndarray, token: str | None = None
    ) -> None:
        """One insert of the batch under ``seqs``, deduplicated by a token made of the space
        and the seqs: the same rows under the same seqs are one block, however often sent.
        The token is an added batch's (:func:`_batch_token`) unless one is given (a restore
        gives :func:`_restore_token`). The space's first rows record its dimension, and its
        vector index when it has one."""
        sid, metric, stored_dim = row[1], row[2], row[3]
        token = token or _batch_token(sid, seqs)
        self._client().insert_arrow(
            f"rows_{sid}",
            _rows_for_insert(rows, seqs),
            settings={"insert_deduplication_token": token},
        )
        if not stored_dim:
            dim = rows.schema.field("embedding").type.list_size
            self._write_space((*row[:3], dim, *row[4:]))
            self._add_vector_index(sid, metric, dim)
        if self.ivf is not None:
            self.ivf.assign(sid, metric, seqs, rows)
            self.ivf.maintain(sid, metric, self._current_max_seq(sid))

    def _batch_seqs(
        self, space: str, sid: int, key: str, fingerprint: Future[str]
    ) -> np.ndarray | None:
        """The seqs recorded for ``key`` with these rows, None for a new key; ``Conflict``
        when the key was recorded for other rows."""
        found = self._query(
            "SELECT fingerprint, first_seq, count FROM batch_keys "
            "WHERE space_id = {s:UInt64} AND key = {k:String} LIMIT 1",
            {"s": sid, "k": key},
        )
        if not found:
            return None
        stored, first_seq, count = found[0]
        if stored != fingerprint.result():
            raise Conflict(
                f"batch key {key!r} already names another batch in space {space!r} (its "
                f"{count} rows from seq {first_seq}); a key names one batch, send new rows "
                "under a new key"
            )
        return np.arange(first_seq, first_seq + count, dtype=np.int64)

    def _batch_stored(self, sid: int, seqs: np.ndarray) -> bool:
        """Whether the rows of a recorded batch went in: one block holds all or none of them,
        and a deleted row leaves its tombstone, so its first seq tells."""
        found = self._query(
            f"SELECT (SELECT count() FROM rows_{sid} WHERE seq = {{f:UInt64}}) "
            f"+ (SELECT count() FROM deleted_{sid} WHERE seq = {{f:UInt64}})",
            {"f": int(seqs[0])},
        )
        return bool(found[0][0])

    def _check_ids_elsewhere(self, space: str, sid: int, ids: pa.ChunkedArray, seqs) -> None:
        """``Conflict`` if another batch stored one of these ids after this batch registered
        them without storing its rows."""
        condition, params = self._condition(sid, ids=ids.to_pylist())
        taken = self._query(
            f"SELECT r.id FROM rows_{sid} AS r WHERE {condition} "
            "AND (r.seq < {lo:UInt64} OR r.seq > {hi:UInt64}) LIMIT 1",
            {**params, "lo": int(seqs[0]), "hi": int(seqs[-1])},
        )
        if taken:
            raise Conflict(f"id {taken[0][0]!r:.200} is already stored in space {space!r}")

    def _check_new_ids(self, space: str, sid: int, ids: pa.ChunkedArray, seqs, start: int):
        """Register a batch's ids; ``Conflict`` (registering nothing) if one is stored."""
        self._client().insert_arrow(
            f"ids_{sid}", pa.table({"id": ids, "seq": pa.array(seqs.astype(np.uint64))})
        )
        candidates = self._query(
            f"SELECT id, seq FROM ids_{sid} WHERE seq <= {{start:UInt64}} "
            f"AND id IN (SELECT id FROM ids_{sid} WHERE seq > {{start:UInt64}}) "
            f"AND seq NOT IN (SELECT seq FROM deleted_{sid}) LIMIT 1000",
            {"start": start},
        )
        stored: set[str] = set()
        if candidates:
            # an id registered by an add that never stored its rows is not a conflict
            stored = {
                r[0]
                for r in self._query(
                    f"SELECT id FROM rows_{sid} WHERE (id, seq) IN "
                    f"(SELECT arrayJoin({{c:Array(Tuple(String, UInt64))}}))",
                    {"c": [tuple(c) for c in candidates]},
                )
            }
        if not stored:
            return
        self._command(f"DELETE FROM ids_{sid} WHERE seq > {{start:UInt64}}", {"start": start})
        first = next(i for i in ids.to_pylist() if i in stored)
        raise Conflict(f"id {first!r:.200} is already stored in space {space!r}")

    def select(self, space: str, query: RowQuery) -> pa.Table:
        row = self._space_row(space)
        sid, dim = row[1], row[3]
        ids, limit, offset = query.ids, query.limit, query.offset
        if ids is not None and len(ids) == 0:
            ids = []
        columns = f"r.seq, {_CATALOGUE}"
        if query.include_embeddings:
            columns += ", r.embedding, r.output, r.has_output"
        condition, params = self._condition(sid, ids=ids, where=query.where)
        page = ""
        if limit is not None:
            page = f" LIMIT {int(limit)} OFFSET {int(offset or 0)}"
        elif offset:
            page = f" LIMIT 18446744073709551615 OFFSET {int(offset)}"
        table = self._arrow(
            f"SELECT {columns} FROM rows_{sid} AS r WHERE {condition} ORDER BY r.seq{page}", params
        )
        return _rows_table(table, dim if query.include_embeddings else None)

    def count(self, space: str, where: Filter | None = None) -> int:
        return self._count(self._space_row(space)[1], where)

    def delete(self, space, *, ids=None, where=None) -> np.ndarray:
        with self._lock:
            sid = self._space_row(space, fresh=True)[1]
            if ids is None and where is None:
                return np.empty(0, dtype=np.int64)
            condition, params = self._condition(sid, ids=ids, where=where)
            found = self._query(
                f"SELECT r.seq FROM rows_{sid} AS r WHERE {condition} ORDER BY r.seq", params
            )
            seqs = np.array([r[0] for r in found], dtype=np.int64)
            if not len(seqs):
                return seqs
            # the tombstones hide these rows at once; their space is reclaimed after
            self._tombstone(space, sid, seqs)
        return seqs

    def replace(
        self, space: str, rows: pa.Table, batch_key: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The batch's rows added under new seqs, then the stored rows of their ids
        tombstoned. ClickHouse has no transaction across the two inserts: for the moment
        between them a reader sees both versions of a replaced row, and a server killed
        there leaves both until the batch comes again under its key (as the client resends
        it), which finishes the replacement."""
        n = rows.num_rows
        fingerprint = batch_fingerprint_soon(rows) if batch_key is not None else None
        ids = rows.column("id").to_pylist()
        empty = np.empty(0, dtype=np.int64)
        with self._lock:
            row = self._space_row(space, fresh=True)
            sid = row[1]
            check_dimension(space, row[3] or None, rows)
            if n == 0:
                return empty, empty
            if len(set(ids)) != n:
                raise Conflict(f"id {repeated(ids)!r:.200} appears twice in the batch")
            if batch_key is not None and fingerprint is not None:
                seqs = self._batch_seqs(space, sid, batch_key, fingerprint)
                if seqs is not None:
                    if not self._batch_stored(sid, seqs):
                        self._insert_rows(row, rows, seqs)
                    # the rows are in: what they replace goes, if a crash left it
                    self._tombstone(space, sid, self._other_seqs(sid, ids, seqs))
                    raise BatchAlreadyStored(space, batch_key, seqs)
            replaced = self._other_seqs(sid, ids, empty)
            start = self._current_max_seq(sid)
            seqs = np.arange(start + 1, start + n + 1, dtype=np.int64)
            self._max_seq[sid] = start + n
            self._client().insert_arrow(
                f"ids_{sid}", pa.table({"id": pa.array(ids, pa.string()),
                                        "seq": pa.array(seqs.astype(np.uint64))})
            )  # fmt: skip
            if batch_key is not None and fingerprint is not None:
                self._keep_batch_key(sid, batch_key, fingerprint.result(), seqs)
            self._insert_rows(row, rows, seqs)
            self._tombstone(space, sid, replaced)
        return seqs, replaced

    def _other_seqs(self, sid: int, ids: list[str], seqs: np.ndarray) -> np.ndarray:
        """The seqs of stored rows with one of ``ids``, other than ``seqs``."""
        condition, params = self._condition(sid, ids=ids)
        found = self._query(
            f"SELECT r.seq FROM rows_{sid} AS r WHERE {condition} "
            "AND r.seq NOT IN (SELECT arrayJoin({mine:Array(UInt64)})) ORDER BY r.seq",
            {**params, "mine": [int(v) for v in seqs]},
        )
        return np.array([r[0] for r in found], dtype=np.int64)

    def _tombstone(self, space: str, sid: int, seqs: np.ndarray) -> None:
        """Hide rows ``seqs`` behind tombstones, then reclaim their space."""
        if not len(seqs):
            return
        self._client().insert_arrow(
            f"deleted_{sid}", pa.table({"seq": pa.array(seqs.astype(np.uint64))})
        )
        try:
            self._command(
                f"DELETE FROM rows_{sid} WHERE seq IN (SELECT arrayJoin({{s:Array(UInt64)}}))",
                {"s": seqs.tolist()},
            )
        except Exception as exc:
            log.warning("rows of %s stay on disk behind tombstones: %s", space, exc)

    def select_vectors(self, space: str, query: VectorQuery):
        row = self._space_row(space)
        sid, dim = row[1], row[3] or 0
        condition, params = self._condition(
            sid, where=query.where, seqs=query.seqs, after=query.after_seq
        )
        columns = "r.seq, r.embedding" if query.with_vectors else "r.seq"
        table = self._arrow(
            f"SELECT {columns} FROM rows_{sid} AS r WHERE {condition} ORDER BY r.seq", params
        )
        found = table.column("seq").to_numpy().astype(np.int64)
        if not query.with_vectors:
            return found, None
        return found, matrix(table.column("embedding"), dim)

    def rows_by_seq(self, space: str, seqs: np.ndarray) -> pa.Table:
        sid = self._space_row(space)[1]
        condition, params = self._condition(sid, seqs=np.asarray(seqs))
        table = self._arrow(
            f"SELECT r.seq, {_CATALOGUE} FROM rows_{sid} AS r WHERE {condition}", params
        )
        return _rows_table(table, None)

    def max_seq(self, space: str) -> int:
        sid = self._space_row(space)[1]
        with self._lock:
            return self._current_max_seq(sid)

    # --- priorities -------------------------------------------------------------
    def replace_priorities(
        self, space: str, scores: pa.Table, *, space_id: int | None = None
    ) -> None:
        priority = scores.column("priority").cast(pa.float64())
        with self._lock:
            row = self._space_row(space, fresh=True)
            sid = row[1]
            check_same_space(space, sid, space_id)
            # past any generation a crash left written but never named by the space row
            written = self._query(f"SELECT max(generation) FROM priorities_{sid}")[0][0] or 0
            generation = max(row[6], written) + 1
            ids = scores.column("id").to_pylist()
            live = dict(
                self._query(
                    f"SELECT r.id, r.seq FROM rows_{sid} AS r "
                    f"WHERE {self._condition(sid, ids=ids)[0]}",
                    {"ids": ids},
                )
            )
            # a repeated id keeps its last score
            last = {}
            for position, i in enumerate(ids):
                if i in live:
                    last[i] = position
            take = pa.array(sorted(last.values()), pa.int64())
            n = len(take)
            table = pa.table(
                {
                    "generation": pa.array(np.full(n, generation, dtype=np.uint64)),
                    "seq": pa.array([live[ids[i]] for i in sorted(last.values())], pa.uint64()),
                    "id": scores.column("id").take(take),
                    "priority": priority.take(take),
                    "components": _optional(scores, "components", n).take(take)
                    if "components" in scores.column_names
                    else pa.nulls(n, pa.string()),
                    "computed_at": _optional(scores, "computed_at", n).take(take)
                    if "computed_at" in scores.column_names
                    else pa.nulls(n, pa.string()),
                }
            )
            if n:
                self._client().insert_arrow(f"priorities_{sid}", table)
            self._write_space((*row[:6], generation))
            # a reader that took the space row just before the switch still reads a whole
            # generation: the two before the current one are kept
            self._command(
                f"DELETE FROM priorities_{sid} WHERE generation + 2 < {{g:UInt64}}",
                {"g": generation},
            )

    def select_priorities(self, space: str, query: PriorityQuery) -> pa.Table:
        row = self._space_row(space)
        sid, generation = row[1], row[6]
        condition, params = self._condition(sid, where=query.where)
        params["g"] = generation
        extra = ""
        if query.min_priority is not None:
            extra = " AND p.priority >= {mp:Float64}"
            params["mp"] = float(query.min_priority)
        limit = f" LIMIT {int(query.n)}" if query.n is not None else ""
        catalogue = ", ".join(f"r.{c} AS {c}" for c in _PRIORITY_CATALOGUE)
        # the scores are the join's right side, the one held in memory: a space's rows
        # outnumber its scored rows (every training row), and only scored rows are read
        scored = f"SELECT seq FROM priorities_{sid} WHERE generation = {{g:UInt64}}"
        table = self._arrow(
            f"SELECT p.id AS id, p.priority AS priority, p.components AS components, "
            f"p.computed_at AS computed_at, {catalogue} "
            f"FROM rows_{sid} AS r INNER JOIN "
            f"(SELECT seq, id, priority, components, computed_at FROM priorities_{sid} "
            f"WHERE generation = {{g:UInt64}}) AS p ON r.seq = p.seq "
            f"WHERE {condition} AND r.seq IN ({scored}){extra} "
            f"ORDER BY priority DESC, id ASC{limit}",
            params,
        )
        return strings(table)

    # --- triggers ---------------------------------------------------------------
    _TRIGGER = (
        "SELECT id, space, status, note, selection, count, created_at, updated_at, deliveries, "
        "space_id FROM triggers FINAL WHERE space_id IN "
        "(SELECT space_id FROM spaces FINAL WHERE deleted = 0)"
    )

    def create_trigger(self, space, items, note, selection, *, space_id=None) -> dict:
        with self._lock:
            sid = self._space_row(space, fresh=True)[1]
            check_same_space(space, sid, space_id)
            # past the items of any trigger a crash left without its row
            trigger_id = (
                self._query(
                    "SELECT greatest((SELECT max(id) FROM triggers), "
                    "(SELECT max(trigger_id) FROM trigger_items))"
                )[0][0]
                or 0
            ) + 1
            n = items.num_rows
            if n:
                self._client().insert_arrow("trigger_items", _items_table(trigger_id, items))
            now = _now()
            trigger = {
                "id": trigger_id, "space": space, "status": "pending", "note": note,
                "selection": selection, "count": n, "created_at": now, "updated_at": now,
                "deliveries": {},
            }  # fmt: skip
            self._write_trigger(trigger, sid)
        return trigger

    def _write_trigger(self, trigger: dict, sid: int) -> None:
        self._client().insert(
            "triggers",
            [
                [
                    trigger["id"],
                    sid,
                    trigger["space"],
                    trigger["status"],
                    trigger["note"],
                    json.dumps(trigger["selection"]),
                    trigger["count"],
                    trigger["created_at"],
                    trigger["updated_at"],
                    json.dumps(trigger["deliveries"]),
                    self._version(),
                ]
            ],  # fmt: skip
            column_names=[
                "id",
                "space_id",
                "space",
                "status",
                "note",
                "selection",
                "count",
                "created_at",
                "updated_at",
                "deliveries",
                "version",
            ],  # fmt: skip
        )

    def _trigger(self, trigger_id) -> tuple[dict, int]:
        if isinstance(trigger_id, bool) or not isinstance(trigger_id, int | np.integer) \
                or trigger_id < 1:  # fmt: skip
            raise NotFound(f"trigger {trigger_id!r:.40} does not exist")
        rows = self._query(self._TRIGGER + " AND id = {i:UInt64}", {"i": int(trigger_id)})
        if not rows:
            raise NotFound(f"trigger {trigger_id!r:.40} does not exist")
        return _trigger_dict(rows[0]), rows[0][9]

    def get_trigger(self, trigger_id: int) -> dict:
        return self._trigger(trigger_id)[0]

    def list_triggers(self, space=None, status=None) -> list[dict]:
        sql, params = self._TRIGGER, {}
        if space is not None:
            self._space_row(space)
            sql += " AND space = {s:String}"
            params["s"] = space
        if status is not None:
            sql += " AND status = {st:String}"
            params["st"] = status
        return [_trigger_dict(r) for r in self._query(sql + " ORDER BY id DESC", params)]

    def change_trigger(self, trigger_id: int, change: TriggerChange) -> dict:
        with self._lock:
            trigger, sid = self._trigger(trigger_id)
            if change.status is not None:
                trigger["status"] = change.status
            if change.delivery is not None:
                name, outcome = change.delivery
                trigger["deliveries"] = {**trigger["deliveries"], name: outcome}
            trigger["updated_at"] = _now()
            self._write_trigger(trigger, sid)
        return trigger

    def trigger_items(self, trigger_id: int) -> pa.Table:
        self._trigger(trigger_id)
        table = self._arrow(
            f"SELECT {', '.join(_ITEM_COLUMNS)} FROM trigger_items WHERE trigger_id = {{i:UInt64}} "
            "ORDER BY priority DESC NULLS LAST, position",
            {"i": int(trigger_id)},
        )
        return strings(table)

    # --- back-up and restore --------------------------------------------------------
    def rows_page(self, space: str, *, after_seq: int, limit: int) -> pa.Table:
        row = self._space_row(space)
        sid, dim = row[1], row[3]
        condition, params = self._condition(sid, after=after_seq)
        table = self._arrow(
            f"SELECT r.seq, {_CATALOGUE}, r.embedding, r.output, r.has_output FROM rows_{sid} AS r "
            f"WHERE {condition} ORDER BY r.seq LIMIT {int(limit)}",
            params,
        )
        return _rows_table(table, dim)

    def scored_rows_after(
        self, space: str, *, after_seq: int, limit: int, where: Filter | None = None
    ) -> pa.Table:
        row = self._space_row(space)
        sid, generation = row[1], row[6]
        condition, params = self._condition(sid, where=where, after=after_seq)
        params["g"] = generation
        inner = ", ".join(f"r.{c} AS {c}" for c in ("seq", "id", *_PRIORITY_CATALOGUE))
        outer = ", ".join(f"w.{c} AS {c}" for c in ("seq", "id", *_PRIORITY_CATALOGUE))
        table = self._arrow(
            f"SELECT {outer}, p.priority AS priority, p.computed_at AS computed_at FROM "
            f"(SELECT {inner} FROM rows_{sid} AS r WHERE {condition} ORDER BY r.seq "
            f"LIMIT {int(limit)}) AS w "
            f"LEFT JOIN (SELECT seq, priority, computed_at FROM priorities_{sid} "
            f"WHERE generation = {{g:UInt64}} AND seq > {{after:UInt64}}) AS p ON w.seq = p.seq "
            f"ORDER BY seq SETTINGS join_use_nulls = 1",
            params,
        )
        return strings(table)

    def last_seq(self, space: str) -> int:
        sid = self._space_row(space)[1]
        return int(self._query(f"SELECT max(seq) FROM rows_{sid}")[0][0] or 0)

    def priorities_page(self, space: str, *, after_id: str | None, limit: int) -> pa.Table:
        row = self._space_row(space)
        sid, generation = row[1], row[6]
        params: dict[str, Any] = {"g": generation}
        after = ""
        if after_id is not None:
            after = " AND p.id > {after:String}"
            params["after"] = str(after_id)
        table = self._arrow(
            "SELECT p.id AS id, p.priority AS priority, p.components AS components, "
            f"p.computed_at AS computed_at, p.seq AS seq FROM priorities_{sid} AS p "
            f"WHERE p.generation = {{g:UInt64}}{after} "
            f"AND p.seq NOT IN (SELECT seq FROM deleted_{sid}) ORDER BY p.id LIMIT {int(limit)}",
            params,
        )
        return strings(table)

    def restore_space(self, info: SpaceInfo) -> SpaceInfo:
        created = info.created_at or _now()
        return self._new_space(
            info.name, info.metric, info.model, created, info.dim, restoring=True
        )

    def finish_restore(self, space: str) -> None:
        self.set_space_setting(space, RESTORING_SETTING, None)

    def unfinished_restores(self) -> list[str]:
        found = self._query(
            "SELECT name FROM spaces FINAL WHERE deleted = 0 AND space_id IN ("
            "SELECT space_id FROM space_settings WHERE name = {n:String} "
            "GROUP BY space_id HAVING argMax(present, version) = 1) ORDER BY name",
            {"n": RESTORING_SETTING},
        )
        return [name for (name,) in found]

    def restore_rows(self, space: str, rows: pa.Table, seqs: np.ndarray) -> None:
        n, seqs = rows.num_rows, np.asarray(seqs, dtype=np.int64)
        with self._lock:
            row = self._space_row(space, fresh=True)
            sid = row[1]
            check_dimension(space, row[3] or None, rows)
            if n == 0:
                return
            start = self._current_max_seq(sid)
            if seqs[0] <= start:
                raise Conflict(
                    f"seq {int(seqs[0])} is not above the largest seq {start} of space {space!r}"
                )
            self._max_seq[sid] = int(seqs[-1])
            self._check_new_ids(space, sid, rows.column("id"), seqs, start)
            self._insert_rows(row, rows, seqs, _restore_token(sid, seqs))

    def _live_ids(self, sid: int, chunks: list[list[str]]) -> pa.Table | None:
        """``id`` and ``seq`` of the stored rows among the ids of ``chunks`` (lists of ids);
        None for no chunk."""
        found = [
            self._arrow(
                f"SELECT r.id AS id, r.seq AS seq FROM rows_{sid} AS r WHERE {condition}",
                params,
            )
            for condition, params in (self._condition(sid, ids=chunk) for chunk in chunks)
        ]
        return pa.concat_tables([strings(t) for t in found]) if found else None

    def restore_priorities(self, space: str, scores: pa.Table) -> None:
        priority = scores.column("priority").cast(pa.float64())
        n = scores.num_rows
        ids = scores.column("id").combine_chunks().cast(pa.string())
        chunks = _id_chunks(ids)
        with self._lock:
            row = self._space_row(space, fresh=True)
            sid, generation = row[1], row[6]
            live = self._live_ids(sid, chunks)
            position = pc.index_in(ids, live.column("id") if live else pa.array([], pa.string()))
            if position.null_count:
                first = ids.filter(position.is_null())[0].as_py()
                raise NotFound(f"id {first!r:.200} has a score but is not in space {space!r}")
            for chunk in chunks:
                scored = self._query(
                    f"SELECT id FROM priorities_{sid} WHERE generation = {{g:UInt64}} "
                    f"AND id IN {listed('{ids:Array(String)}')} "
                    f"AND seq NOT IN (SELECT seq FROM deleted_{sid}) LIMIT 1",
                    {"g": generation, "ids": chunk},
                )
                if scored:
                    raise Conflict(
                        f"id {scored[0][0]!r:.200} already has a score in space {space!r}"
                    )
            if not n or live is None:
                return
            table = pa.table(
                {
                    "generation": pa.array(np.full(n, generation, dtype=np.uint64)),
                    "seq": live.column("seq").take(position).cast(pa.uint64()),
                    "id": ids,
                    "priority": priority,
                    "components": _optional(scores, "components", n),
                    "computed_at": _optional(scores, "computed_at", n),
                }
            )
            self._client().insert_arrow(f"priorities_{sid}", table)

    # --- scores added as rows arrive, settings -------------------------------------
    def add_priorities(self, space: str, scores: pa.Table, *, space_id: int | None = None) -> int:
        ids = scores.column("id").combine_chunks().cast(pa.string())
        priority = scores.column("priority").cast(pa.float64())
        chunks = _id_chunks(ids)
        with self._lock:
            row = self._space_row(space, fresh=True)
            sid, generation = row[1], row[6]
            check_same_space(space, sid, space_id)
            live = self._live_ids(sid, chunks)
            if live is None or live.num_rows == 0:
                return 0
            scored = [
                self._arrow(
                    f"SELECT id FROM priorities_{sid} WHERE generation = {{g:UInt64}} "
                    f"AND id IN {listed('{ids:Array(String)}')}",
                    {"g": generation, "ids": chunk},
                )
                for chunk in chunks
            ]
            taken = pa.concat_arrays(
                [strings(t).column("id").combine_chunks() for t in scored]
                or [pa.array([], pa.string())]
            )
            position = pc.index_in(ids, live.column("id"))
            keep = pc.and_(position.is_valid(), pc.invert(pc.is_in(ids, taken)))
            # one score an id: the first of an id given twice
            first = np.zeros(len(ids), dtype=bool)
            first[np.unique(ids.to_numpy(zero_copy_only=False), return_index=True)[1]] = True
            keep = pc.and_(keep, pa.array(first))
            n = pc.sum(keep.cast(pa.int64())).as_py() or 0
            if not n:
                return 0
            table = pa.table(
                {
                    "generation": pa.array(np.full(n, generation, dtype=np.uint64)),
                    "seq": live.column("seq").take(position.filter(keep)).cast(pa.uint64()),
                    "id": ids.filter(keep),
                    "priority": priority.filter(keep),
                    "components": _optional(scores, "components", len(ids)).filter(keep),
                    "computed_at": _optional(scores, "computed_at", len(ids)).filter(keep),
                }
            )
            self._client().insert_arrow(f"priorities_{sid}", table)
            return n

    def space_settings(self, space: str) -> dict[str, str]:
        sid = self._space_row(space)[1]
        found = self._query(
            "SELECT name, argMax(value, version) FROM space_settings "
            "WHERE space_id = {sid:UInt64} GROUP BY name HAVING argMax(present, version) = 1",
            {"sid": sid},
        )
        return {name: value for name, value in found}

    def set_space_setting(self, space: str, name: str, value: str | None) -> None:
        with self._lock:
            sid = self._space_row(space, fresh=True)[1]
            self._client().insert(
                "space_settings",
                [[sid, name, value or "", 0 if value is None else 1, time.time_ns()]],
                column_names=["space_id", "name", "value", "present", "version"],
            )

    def restore_trigger(self, space: str, trigger: dict, items: pa.Table) -> dict:
        status = trigger.get("status")
        with self._lock:
            sid = self._space_row(space, fresh=True)[1]
            wanted = int(trigger["id"])
            if self._query(self._TRIGGER + " AND id = {i:UInt64}", {"i": wanted}):
                trigger_id = (self._query("SELECT max(id) FROM triggers")[0][0] or 0) + 1
            else:
                trigger_id = wanted
                # the id may have been a trigger of a deleted space: none of its items stay
                self._command(
                    "DELETE FROM trigger_items WHERE trigger_id = {i:UInt64}", {"i": trigger_id}
                )
            n = items.num_rows
            if n:
                self._client().insert_arrow("trigger_items", _items_table(trigger_id, items))
            created = trigger.get("created_at") or _now()
            restored = {
                "id": trigger_id, "space": space, "status": status, "note": trigger.get("note"),
                "selection": trigger.get("selection") or {}, "count": n, "created_at": created,
                "updated_at": trigger.get("updated_at") or created,
                "deliveries": trigger.get("deliveries") or {},
            }  # fmt: skip
            self._write_trigger(restored, sid)
        return restored

    # --- search -------------------------------------------------------------------
    def answers_unfiltered(self, space: SpaceInfo) -> bool:
        # exactly until the inverted file is trained, from its cells after
        return self.ivf is not None

    def nearest_neighbors(self, space: SpaceInfo, queries, k, where) -> Neighbors | None:
        """The inverted file when it is on and the space trained (filters on catalogue
        fields too), else exact search with the filter pushed down, or ClickHouse's vector
        index when enabled; with none of them and no filter, the hnswlib plugin answers."""
        use_index = self.target.vector_index and space.metric in ("l2", "cosine")
        sid = self._space_row(space.name)[1]
        if self.ivf is not None:
            # exact below the inverted file's training size, or for a filter that is
            answer = self.ivf.search(sid, space.metric, queries, k, where=where)
            if answer is not None:
                return answer
        if where is None and not use_index and self.ivf is None:
            return None
        condition, params = self._condition(sid, where=where)
        distance = _DISTANCE[space.metric]
        settings = {"vector_search_with_rescoring": 1} if use_index and where is None else None
        n = len(queries)
        seqs = np.full((n, k), -1, dtype=np.int64)
        dists = np.full((n, k), np.inf, dtype=np.float32)
        sql = (
            f"SELECT r.seq, {distance} AS d FROM rows_{sid} AS r WHERE {condition} "
            f"ORDER BY d ASC, r.seq ASC LIMIT {int(k)}"
        )
        for i, query in enumerate(queries):
            found = (
                self._client()
                .query(sql, parameters={**params, "q": query.tolist()}, settings=settings)
                .result_rows
            )
            for j, (seq, d) in enumerate(found):
                seqs[i, j], dists[i, j] = seq, d
        method = "clickhouse_vector_index" if settings else "clickhouse_exact"
        return Neighbors(seqs, dists, {"method": method})

    def join_neighbors(self, space: SpaceInfo, query: JoinQuery) -> JoinedNeighbors | None:
        """Cell by cell in the inverted file (:mod:`chroma_store_clickhouse.cell_join`);
        None while the space is searched exactly or the inverted file is off."""
        if self.ivf is None:
            return None
        return cell_join.join(self.ivf, self._space_row(space.name)[1], space.metric, query)

    def vector_pages(self, space, where, *, labelled=False, rows):
        row = self._space_row(space)
        sid, dim = row[1], row[3] or 0
        condition, params = self._condition(sid, where=where)
        if labelled:
            condition += " AND r.label IS NOT NULL"
        with self._lock:
            last = self._current_max_seq(sid)
        # a window of ``rows`` seqs holds at most ``rows`` rows, and is read through the
        # primary key alone (a LIMIT after a filter would read on to the end each time)
        for after in range(0, last, int(rows)):
            table = self._arrow(
                f"SELECT r.seq AS seq, r.embedding AS embedding, r.label AS label "
                f"FROM rows_{sid} AS r WHERE {condition} AND r.seq > {{after:UInt64}} "
                f"AND r.seq <= {{until:UInt64}} ORDER BY r.seq",
                {**params, "after": after, "until": after + int(rows)},
            )
            if table.num_rows == 0:
                continue
            seqs = table.column("seq").to_numpy().astype(np.int64)
            yield seqs, matrix(table.column("embedding"), dim), strings(table.select(["label"]))


# --- helpers ----------------------------------------------------------------------
def _batch_token(sid: int, seqs: np.ndarray) -> str:
    """The deduplication token of an added batch. Its seqs run on without a gap, so the
    space, the seq before the first and the count name them: a keyed batch sent again
    after a failed insert gets the seqs its key recorded, so the same token."""
    start, n = int(seqs[0]) - 1, len(seqs)
    return hashlib.sha1(f"{sid}:{start}:{n}".encode()).hexdigest()


def _restore_token(sid: int, seqs: np.ndarray) -> str:
    """The deduplication token of a restored batch. Restored seqs may leave gaps, so the
    first, the last and the count name them with the space."""
    n = len(seqs)
    return hashlib.sha1(f"{sid}:{seqs[0]}:{seqs[-1]}:{n}".encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _optional(table: pa.Table, name: str, n: int) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(n, pa.string())
    return table.column(name).combine_chunks().cast(pa.string())


def _items_table(trigger_id: int, items: pa.Table) -> pa.Table:
    """A trigger's items as ``trigger_items`` holds them, in the order given."""
    n = items.num_rows
    return pa.table(
        {
            "trigger_id": pa.array(np.full(n, trigger_id, dtype=np.uint64)),
            "position": pa.array(np.arange(n, dtype=np.uint32)),
            **{c: _optional(items, c, n) for c in _ITEM_COLUMNS if c != "priority"},
            "priority": items.column("priority").cast(pa.float64())
            if "priority" in items.column_names
            else pa.nulls(n, pa.float64()),
        }
    )


def _id_chunks(ids: pa.Array, budget: int | None = None) -> list[list[str]]:
    """``ids`` in runs of about ``budget`` bytes (:data:`ID_RUN_BYTES`): each run is one
    query parameter, which an HTTP connection sends in the URL, where ClickHouse takes at
    most 1 MiB."""
    budget = budget or ID_RUN_BYTES
    if not len(ids):
        return []
    ends = np.cumsum(pc.binary_length(ids).to_numpy(zero_copy_only=False) + 4)
    cuts = np.searchsorted(ends, np.arange(budget, int(ends[-1]), budget), side="right")
    bounds = [0, *sorted(set(cuts.tolist()) - {0, len(ids)}), len(ids)]
    return [ids[a:b].to_pylist() for a, b in zip(bounds[:-1], bounds[1:], strict=False)]


def _rows_for_insert(rows: pa.Table, seqs: np.ndarray) -> pa.Table:
    n = rows.num_rows
    matrix = embeddings_of(rows)
    output = rows.column("output").combine_chunks()
    has_output = pc.invert(output.is_null()).cast(pa.uint8())
    empty = pa.array([[]] * n, pa.list_(pa.float32())) if output.null_count else None
    if empty is not None:
        output = pc.if_else(output.is_null(), empty, output)
    offsets = pa.array(np.arange(0, (n + 1) * matrix.shape[1], matrix.shape[1], dtype=np.int32))
    embedding = pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))
    table = pa.table(
        {
            "seq": pa.array(seqs.astype(np.uint64)),
            **{
                c: rows.column(c)
                for c in ("id", "dataset", "context", "input_uri", "inference", "label", "metadata")
            },  # fmt: skip
            "embedding": embedding,
            "output": output,
            "has_output": has_output,
        }
    )
    # one record batch is one block, and one block is one part: all of it or none
    return table.combine_chunks()


def _rows_table(table: pa.Table, dim: int | None) -> pa.Table:
    table = strings(table)
    base = table.select(["seq", *CATALOGUE_COLUMNS])
    if dim is None:
        return base
    n = table.num_rows
    vectors = matrix(table.column("embedding"), dim)
    if n:
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    else:
        embedding = pa.array([], pa.list_(pa.float32(), dim))
    output = table.column("output").combine_chunks().cast(pa.list_(pa.float32()))
    missing = pc.equal(table.column("has_output").combine_chunks(), 0)
    output = pc.if_else(missing, pa.nulls(n, pa.list_(pa.float32())), output)
    return base.append_column("embedding", embedding).append_column("output", output)


def _trigger_dict(row: tuple) -> dict:
    keys = ("id", "space", "status", "note", "selection", "count", "created_at", "updated_at",
            "deliveries")  # fmt: skip
    out = dict(zip(keys, row[:9], strict=True))
    out["selection"] = json.loads(out["selection"])
    out["deliveries"] = json.loads(out["deliveries"])
    return out


#: ClickHouse's names of a table or database that is not there
_MISSING = ("UNKNOWN_TABLE", "UNKNOWN_DATABASE")


def _gone(exc: Exception) -> Exception:
    """``NotFound`` for a read whose space's tables were dropped under it (another server
    deleted the space meanwhile); any other error as it is."""
    if any(name in str(exc) for name in _MISSING):
        return NotFound("the space this call reads was deleted while it ran (its tables are gone)")
    return exc
