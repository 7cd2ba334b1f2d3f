"""An inverted file kept in ClickHouse: k-NN answered from tables, by any server.

A space's rows are grouped into cells, one per k-means centroid. ``ivf_N`` holds each row's
seq and vector under its cell, sorted by (generation, cell, seq), so a query that probes a
few cells reads only their granules; ``ivf_centroids_N`` holds the centroids; the shared
table ``ivf_state`` (schema migration 3) names each space's current generation. A server
keeps nothing but a cache of centroids it can read again in milliseconds.

- A space is searched exactly until it holds ``train_rows`` rows; then a first generation is
  trained (centroids from a sample of the rows), every row is assigned to its nearest cell,
  and the generation becomes current. The space is trained again, as a new generation, each
  time it grows past ``GROWTH`` times the rows it was trained on.
- A new generation is written out of sight (readers keep the current one) and made current
  by one insert into ``ivf_state`` under the store's write lock, after the rows added while
  it was built are assigned to it: a reader sees one whole generation or the other, and a
  crash while a generation is built leaves only rows nobody reads, dropped at the next
  training. The generation before the current one is kept until the next, for readers that
  took the old one a moment before the switch.
- Each add assigns its rows to the current generation's cells right after they are stored,
  under the same lock. The rows of an add that a crash cut off between the two inserts are
  assigned when the store opens again (:meth:`InvertedFile.complete`).
- Deleted rows stay in their cells; the tombstones of ``deleted_N`` hide them, as from every
  reader of the rows.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from chroma_core.filters import Filter, comparisons
from chroma_store_clickhouse import cells as quantizer
from chroma_store_clickhouse.arrow import matrix, strings
from chroma_store_clickhouse.cells import Cells
from chroma_store_clickhouse.schema import DEDUPLICATION_WINDOW, DURABLE
from chroma_store_clickhouse.where import compile_where, listed
from chroma_wire.types import NEIGHBOR_COLUMNS, Neighbors

log = logging.getLogger("chroma.clickhouse.ivf")

#: a space is trained again once it holds this many times the rows it was trained on
GROWTH = 4
#: or once its largest cell holds this many times the rows of an average one: the rows
#: added since no longer spread over the cells as the ones trained on did (they drifted)
LOPSIDED = 8
#: the cells' sizes are looked at each time a space grows by this share of its trained rows
CHECK_SHARE = 0.1
#: rows read and assigned at once while a generation is built
PAGE_ROWS = 100_000
#: queries searched in one statement
BATCH_QUERIES = 256
#: how long a reader may keep a space's current generation before it reads it again
STATE_CACHE_SECONDS = 2.0

# How a query's distance is written for each metric, as the rows' own exact search writes it.
_DISTANCE = {
    "l2": "L2Distance(v.embedding, {q:Array(Float32)})",
    "cosine": "cosineDistance(v.embedding, {q:Array(Float32)})",
    "ip": "1 - dotProduct(v.embedding, {q:Array(Float32)})",
}


#: the catalogue columns the inverted file keeps beside each vector, typed as in ``rows_N``
CATALOGUE_DDL = (
    "id String, dataset LowCardinality(String), context LowCardinality(String), "
    "input_uri Nullable(String), inference LowCardinality(Nullable(String)), "
    "label LowCardinality(Nullable(String))"
)
CATALOGUE = ("id", *NEIGHBOR_COLUMNS)


# A space's inverted file: small granules, so a probe reads little beyond its cell; vectors
# stored as they are, since compressing floats saves little and slows every scan; and the
# catalogue a k-NN answer carries, so it comes with the neighbours in one read.
_TABLES = (
    f"""CREATE TABLE IF NOT EXISTS ivf_{{sid}} (
        generation UInt32, cell UInt32, seq UInt64, embedding Array(Float32) CODEC(NONE),
        {CATALOGUE_DDL}
    ) ENGINE = MergeTree PARTITION BY generation ORDER BY (generation, cell, seq)
    SETTINGS index_granularity = 256,
        non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}, {DURABLE}""",
    f"""CREATE TABLE IF NOT EXISTS ivf_centroids_{{sid}} (
        generation UInt32, cell UInt32, centroid Array(Float32)
    ) ENGINE = MergeTree ORDER BY (generation, cell) SETTINGS {DURABLE}""",
)


def tables(space_id: int) -> tuple[str, ...]:
    """The DDL of one space's inverted file (the id is an integer, never user text)."""
    return tuple(ddl.format(sid=int(space_id)) for ddl in _TABLES)


class InvertedFile:
    """The inverted files of one store's spaces: training, assignment and search.

    ``store`` is the :class:`~chroma_store_clickhouse.store.ClickHouseStore` it serves, whose
    connection, write lock and tables it uses."""

    def __init__(self, store: Any, *, train_rows: int, probes: int):
        self.store = store
        self.train_rows = train_rows
        self.probes = probes
        # (space id, generation) -> centroids; generation by space id with when it was read
        self._centroids: dict[tuple[int, int], Cells] = {}
        self._state: dict[int, tuple[float, tuple[int, int, int]]] = {}
        # moves at each switch, so a read that overlapped one is not cached (as spaces are)
        self._epoch = 0
        self._training: dict[int, threading.Thread] = {}
        # spaces whose training was asked for while a thread of theirs ran, and the lock
        # that decides between starting a thread and leaving the request to a running one
        self._asked: set[int] = set()
        self._asking = threading.Lock()
        # the rows each space held when its cells' sizes were last looked at
        self._checked: dict[int, int] = {}
        # one generation is built at a time: numbers and leftovers are decided by one builder
        self._building = threading.Lock()
        self._closing = threading.Event()

    # --- state ----------------------------------------------------------------
    def state(self, sid: int, fresh: bool = False) -> tuple[int, int, int]:
        """``(generation, cells, trained_rows)`` of the space; generation 0 is untrained."""
        cached = self._state.get(sid)
        if not fresh and cached and time.monotonic() - cached[0] < STATE_CACHE_SECONDS:
            return cached[1]
        epoch = self._epoch
        rows = self.store._query(
            "SELECT generation, cells, trained_rows FROM ivf_state FINAL "
            "WHERE space_id = {s:UInt64}",
            {"s": sid},
        )
        state = (int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else (0, 0, 0)
        if epoch == self._epoch:  # no switch began meanwhile, so the state is current
            self._state[sid] = (time.monotonic(), state)
        return state

    def centroids(self, sid: int, generation: int) -> Cells:
        key = (sid, generation)
        found = self._centroids.get(key)
        if found is None:
            table = self.store._arrow(
                f"SELECT cell, centroid FROM ivf_centroids_{sid} WHERE generation = {{g:UInt32}}",
                {"g": generation},
            )
            found = Cells.of(table.column("cell").to_numpy(), matrix(table.column("centroid")))
            self._centroids[key] = found
        return found

    def status(self, sid: int) -> dict:
        """What ``space.status()`` shows of the space's inverted file."""
        generation, cells, trained = self.state(sid, fresh=True)
        running = self._training.get(sid)
        return {
            "generation": generation,
            "cells": cells,
            "trained_rows": trained,
            "training": running is not None and running.is_alive(),
            "largest_cell": round(self.lopsided(sid, generation), 2),
            "probes": min(self.probes, cells) if cells else self.probes,
        }

    def forget(self, sid: int) -> None:
        """Drop what is cached of a space (it was dropped)."""
        self._state.pop(sid, None)
        self._checked.pop(sid, None)
        for key in [key for key in self._centroids if key[0] == sid]:
            del self._centroids[key]

    # --- writes ---------------------------------------------------------------
    def assign(self, sid: int, metric: str, seqs: np.ndarray, rows: pa.Table) -> None:
        """Put rows just stored (a validated batch) into the cells of the current generation,
        if there is one. Runs under the store's write lock, right after the rows' insert."""
        generation = self.state(sid, fresh=True)[0]
        if generation:
            self._insert(sid, generation, metric, seqs, rows)

    def _insert(
        self,
        sid: int,
        generation: int,
        metric: str,
        seqs: np.ndarray,
        rows: pa.Table,
        why: str = "add",
    ) -> None:
        """Insert ``rows`` (their ``embedding`` and catalogue columns) under ``seqs``."""
        vectors = matrix(rows.column("embedding"))
        cells = self.centroids(sid, generation).assign(vectors, metric)
        dim = vectors.shape[1]
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        table = pa.table(
            {
                "generation": pa.array(np.full(len(seqs), generation, np.uint32)),
                "cell": pa.array(cells.astype(np.uint32)),
                "seq": pa.array(np.asarray(seqs, dtype=np.uint64)),
                "embedding": pa.ListArray.from_arrays(
                    pa.array(np.arange(0, (len(seqs) + 1) * dim, dim, dtype=np.int32)), flat
                ),
                **{name: rows.column(name) for name in CATALOGUE},
            }
        )
        first, last = int(seqs[0]), int(seqs[-1])
        # the same rows assigned again for the same reason (a retried add) are stored once;
        # a completion after a crash is another reason, never mistaken for the lost insert
        token = f"ivf:{why}:{sid}:{generation}:{first}:{last}:{len(seqs)}"
        self.store._client().insert_arrow(
            f"ivf_{sid}", table, settings={"insert_deduplication_token": token}
        )

    def grown(self, sid: int, rows: int) -> bool:
        """Whether a space of ``rows`` rows is due for a (first or new) generation."""
        generation, _, trained = self.state(sid)
        if not generation:
            return rows >= self.train_rows
        return rows >= GROWTH * max(trained, 1)

    def maintain(self, sid: int, metric: str, rows: int) -> None:
        """After an add that brought the space to ``rows`` rows: train it in the background
        when it has grown enough, or look at its cells' sizes there when it has grown by
        ``CHECK_SHARE`` since the last look, and train it when they are lopsided."""
        if self.grown(sid, rows):
            self.train_soon(sid, metric)
            return
        generation, _, trained = self.state(sid)
        if not generation:
            return
        last = self._checked.setdefault(sid, trained)
        if rows - last >= CHECK_SHARE * max(trained, 1):
            self._checked[sid] = rows
            self.train_soon(sid, metric, only_if_lopsided=True)

    def lopsided(self, sid: int, generation: int | None = None) -> float:
        """How many times the rows of an average cell its largest holds, in ``generation``
        or the space's current one (0 before the first)."""
        if generation is None:
            generation = self.state(sid, fresh=True)[0]
        if not generation:
            return 0.0
        largest, mean = self.store._query(
            f"SELECT max(n), avg(n) FROM (SELECT count() AS n FROM ivf_{sid} "
            "WHERE generation = {g:UInt32} GROUP BY cell)",
            {"g": generation},
        )[0]
        return float(largest or 0) / float(mean or 1)

    def train_soon(self, sid: int, metric: str, only_if_lopsided: bool = False) -> None:
        """Train the space in the background. While it is already being trained or its
        cells looked at, a training asked for meanwhile is remembered, and the running
        thread looks again once it is done."""
        with self._asking:
            running = self._training.get(sid)
            if running is not None and running.is_alive():
                if not only_if_lopsided:
                    self._asked.add(sid)
                return
            thread = threading.Thread(
                target=self._train_logged,
                args=(sid, metric, only_if_lopsided),
                name=f"chroma-ivf-{sid}",
                daemon=True,
            )
            self._training[sid] = thread
            thread.start()

    def _train_logged(self, sid: int, metric: str, only_if_lopsided: bool = False) -> None:
        while not self._closing.is_set():
            try:
                self._train_once(sid, metric, only_if_lopsided)
            except Exception:
                if not self._closing.is_set():
                    log.exception("training the inverted file of space %s failed", sid)
                return
            with self._asking:
                if sid not in self._asked:
                    return
                self._asked.discard(sid)
            # a training asked for while this one ran: due if the space has grown enough
            if not self.grown(sid, self.store._current_max_seq(sid)):
                return
            only_if_lopsided = False

    def _train_once(self, sid: int, metric: str, only_if_lopsided: bool) -> None:
        if only_if_lopsided:
            ratio = self.lopsided(sid)
            if ratio < LOPSIDED:
                return
            log.info("space %s: its largest cell holds %.1f times an average one; "
                     "training its inverted file again", sid, ratio)  # fmt: skip
        self.train(sid, metric)

    def train(self, sid: int, metric: str) -> int:
        """Build a new generation of the space's inverted file and make it current; returns
        it (0 when the space holds no rows). Writes wait only for the last step."""
        with self._building:
            return self._train(sid, metric)

    def _train(self, sid: int, metric: str) -> int:
        for statement in tables(sid):
            self.store._command(statement)
        snapshot = self.store._current_max_seq(sid)
        rows = self.store._query(
            f"SELECT count() FROM rows_{sid} AS r WHERE r.seq <= {{s:UInt64}} "
            f"AND r.seq NOT IN (SELECT seq FROM deleted_{sid})",
            {"s": snapshot},
        )[0][0]
        if not rows:
            return 0
        generation = self._next_generation(sid)
        current = self.state(sid, fresh=True)[0]
        # generations a crash cut short are never read, and go now; their numbers are not
        # given again (their centroids stay), so neither are their deduplication tokens
        for (left,) in self.store._query(
            f"SELECT DISTINCT generation FROM ivf_{sid} WHERE generation > {{c:UInt32}}",
            {"c": current},
        ):
            self.store._command(f"ALTER TABLE ivf_{sid} DROP PARTITION {int(left)}")
        sample = self._sample(sid, snapshot, quantizer.sample_size(rows))
        cells = quantizer.train(sample, quantizer.cell_count(rows), metric, seed=generation)
        self.store._client().insert_arrow(
            f"ivf_centroids_{sid}",
            pa.table(
                {
                    "generation": pa.array(np.full(len(cells), generation, np.uint32)),
                    "cell": pa.array(cells.numbers.astype(np.uint32)),
                    "centroid": pa.array(list(cells.centroids), pa.list_(pa.float32())),
                }
            ),
        )
        self._centroids[(sid, generation)] = cells
        after = self._assign_range(sid, generation, metric, 0, snapshot)
        # one part, so a probe finds each cell's rows in one run of granules, not in each of
        # the parts the assignment wrote (still out of sight: nobody reads this generation)
        if not self._closing.is_set():
            self.store._command(f"OPTIMIZE TABLE ivf_{sid} PARTITION {int(generation)} FINAL")
        with self.store._lock:
            if self._closing.is_set():
                return 0
            # rows added while the generation was built join it before it is switched to
            self._assign_range(sid, generation, metric, after, self.store._current_max_seq(sid))
            self._switch(sid, generation, len(cells), rows)
        # the generation before stays for readers that took it just before the switch
        # (the one current until now: numbers a crash cut short lie between the two)
        for (old,) in self.store._query(
            f"SELECT DISTINCT generation FROM ivf_{sid} WHERE generation < {{c:UInt32}}",
            {"c": current},
        ):
            self.store._command(f"ALTER TABLE ivf_{sid} DROP PARTITION {int(old)}")
        log.info("space %s: inverted file generation %d, %d cells, %d rows", sid, generation,
                 len(cells), rows)  # fmt: skip
        return generation

    def _switch(self, sid: int, generation: int, cells: int, rows: int) -> None:
        """Make ``generation`` the space's current one: one insert, read by every server."""
        self._checked.pop(sid, None)
        self._epoch += 1
        self._state.pop(sid, None)
        self.store._client().insert(
            "ivf_state",
            [[sid, generation, cells, rows, time.time_ns()]],
            column_names=["space_id", "generation", "cells", "trained_rows", "version"],
        )
        self._epoch += 1
        self._state.pop(sid, None)

    def _next_generation(self, sid: int) -> int:
        current = self.state(sid, fresh=True)[0]
        built = self.store._query(f"SELECT max(generation) FROM ivf_centroids_{sid}")[0][0]
        return max(current, int(built or 0)) + 1

    def _sample(self, sid: int, snapshot: int, n: int) -> np.ndarray:
        """About ``n`` stored rows' vectors, spread over the space by a hash of their seq."""
        total = max(snapshot, 1)
        keep = max(1, total // max(n, 1))
        table = self.store._arrow(
            f"SELECT embedding FROM rows_{sid} AS r WHERE r.seq <= {{s:UInt64}} "
            f"AND cityHash64(r.seq) % {{m:UInt64}} = 0 LIMIT {{n:UInt64}}",
            {"s": snapshot, "m": keep, "n": n},
        )
        return matrix(table.column("embedding"))

    def _assign_range(
        self, sid: int, generation: int, metric: str, after: int, upto: int, why: str = "train"
    ) -> int:
        """Assign the stored rows with a seq above ``after`` and at most ``upto``, a range of
        seqs at a time (the rows' minmax index on seq finds each range's granules); returns
        ``upto``, or where it stopped when the store closes."""
        while after < upto and not self._closing.is_set():
            end = min(after + PAGE_ROWS, upto)
            page = self.store._arrow(
                f"SELECT seq, embedding, {', '.join(CATALOGUE)} FROM rows_{sid} "
                "WHERE seq > {a:UInt64} AND seq <= {e:UInt64} ORDER BY seq",
                {"a": after, "e": end},
            )
            if page.num_rows:
                self._insert(sid, generation, metric, page.column("seq").to_numpy(), page, why)
            after = end
        return after

    def complete(self, sid: int, metric: str) -> None:
        """Assign the rows a crash left out of the current generation: those stored after
        the last row it holds (adds are assigned in seq order, right after they are
        stored)."""
        generation = self.state(sid, fresh=True)[0]
        if not generation:
            return
        last = self.store._query(
            f"SELECT max(seq) FROM ivf_{sid} WHERE generation = {{g:UInt32}}", {"g": generation}
        )[0][0]
        upto = self.store._current_max_seq(sid)
        if int(last or 0) < upto:
            log.warning("space %s: assigning rows stored after its inverted file's last", sid)
            self._assign_range(sid, generation, metric, int(last or 0), upto, "complete")

    def close(self) -> None:
        self._closing.set()
        for thread in list(self._training.values()):
            thread.join(timeout=60)

    # --- search ---------------------------------------------------------------
    def search(
        self,
        sid: int,
        metric: str,
        queries: np.ndarray,
        k: int,
        probes: int | None = None,
        where: Filter | None = None,
    ) -> Neighbors | None:
        """The k nearest stored rows of each query from the cells nearest it, or None when
        the space has no generation yet, or when a filter is better answered exactly.

        A filter on catalogue fields goes into the same query. It matches a share of the
        rows, so the cells probed grow by its inverse, which reads about as many matching
        rows as an unfiltered query does. That costs more than an exact scan of the matches
        while they are fewer than ``rows·√(probes/cells)`` (the two read as many rows
        there), and then the store scans them exactly instead. A filter on metadata, which
        the cells do not hold, is always answered exactly."""
        generation, cells, _ = self.state(sid)
        if not generation:
            return None
        probes = min(probes or self.probes, cells)
        meta: dict = {"method": "clickhouse_ivf", "generation": generation, "cells": cells}
        condition, params = "", dict[str, Any]()
        if where is not None:
            if not all(c.catalogue for c in comparisons(where)):
                return None
            rows = max(self.store._current_max_seq(sid), 1)
            matches = self.store._count(sid, where)
            if matches <= rows * np.sqrt(probes / cells):
                return None
            share = matches / rows
            probes = min(cells, int(np.ceil(probes / share)))
            condition, params = compile_where(where, alias="v")
            condition = f" AND {condition}"
            meta["filtered_share"] = round(share, 4)
        meta["probes"] = probes
        plan = _Search(sid, generation, metric, k, meta, condition, params)
        probed = self.centroids(sid, generation).nearest(queries, probes, metric)
        if len(queries) == 1:
            return self._search_one(plan, queries[0], probed[0])
        return self._search_many(plan, queries, probed)

    def _search_one(self, plan: _Search, query: np.ndarray, cells: np.ndarray) -> Neighbors:
        """One query: one statement, the catalogue of its k read with them (lazily, for the
        k rows only)."""
        catalogue = ", ".join(f"v.{name} AS {name}" for name in CATALOGUE)
        table = self.store._client().query_arrow(
            f"SELECT v.seq AS seq, {_DISTANCE[plan.metric]} AS d, {catalogue} "
            f"FROM ivf_{plan.sid} AS v {plan.where('{cells:Array(UInt32)}')} "
            f"ORDER BY d ASC, v.seq ASC LIMIT {int(plan.k)}",
            parameters={**plan.parameters, "cells": cells.tolist(), "q": query.tolist()},
        )
        seqs = np.full((1, plan.k), -1, dtype=np.int64)
        dists = np.full((1, plan.k), np.inf, dtype=np.float32)
        seqs[0, : table.num_rows] = table.column("seq").to_numpy()
        dists[0, : table.num_rows] = table.column("d").to_numpy()
        rows = strings(table).select(["seq", *CATALOGUE])
        return Neighbors(seqs, dists, plan.meta, rows=rows)

    def _search_many(self, plan: _Search, queries: np.ndarray, probed: np.ndarray) -> Neighbors:
        """Many queries: ``BATCH_QUERIES`` at a time in one statement, the rows of every
        probed cell joined with the queries that probe it (one pipeline instead of one
        statement per query, which is most of a single query's cost), then the catalogue
        of all their neighbours by key."""
        n, k = len(queries), plan.k
        seqs = np.full((n, k), -1, dtype=np.int64)
        dists = np.full((n, k), np.inf, dtype=np.float32)
        cells = np.full((n, k), -1, dtype=np.int64)
        distance = _DISTANCE[plan.metric].replace("{q:Array(Float32)}", "p.vector")
        sql = (
            f"SELECT p.i AS i, v.seq AS seq, v.cell AS cell, {distance} AS d "
            f"FROM ivf_{plan.sid} AS v INNER JOIN ("
            "SELECT x.1 AS i, x.2 AS cell, {q:Array(Array(Float32))}[i + 1] AS vector FROM ("
            "SELECT arrayJoin(arrayFlatten(arrayMap((cs, i) -> arrayMap(c -> (i, c), cs), "
            "{c:Array(Array(UInt32))}, range(length({c:Array(Array(UInt32))}))))) AS x)"
            f") AS p ON v.cell = p.cell {plan.where('{all:Array(UInt32)}')} "
            f"ORDER BY i, d, seq LIMIT {int(k)} BY i"
        )
        client = self.store._client()
        for start in range(0, n, BATCH_QUERIES):
            part = probed[start : start + BATCH_QUERIES]
            table = client.query_arrow(
                sql,
                parameters={
                    **plan.parameters, "q": queries[start : start + BATCH_QUERIES].tolist(),
                    "c": part.tolist(), "all": np.unique(part).tolist(),
                },
            )  # fmt: skip
            which = start + table.column("i").to_numpy().astype(np.int64)
            # rows come ordered by query, then distance: a row's rank is its place in its run
            rank = np.arange(len(which)) - np.searchsorted(which, which)
            seqs[which, rank] = table.column("seq").to_numpy()
            dists[which, rank] = table.column("d").to_numpy()
            cells[which, rank] = table.column("cell").to_numpy()
        found = seqs >= 0
        if not found.any():
            return Neighbors(seqs, dists, plan.meta, rows=None)
        keys = np.unique(np.stack([cells[found], seqs[found]], axis=1), axis=0)
        catalogue = ", ".join(CATALOGUE)
        table = client.query_arrow(
            f"SELECT DISTINCT seq, {catalogue} FROM ivf_{plan.sid} WHERE generation = {{g:UInt32}} "
            f"AND (cell, seq) IN {listed('{keys:Array(Tuple(UInt32, UInt64))}')}",
            parameters={"g": plan.generation, "keys": [tuple(key) for key in keys.tolist()]},
        )
        return Neighbors(seqs, dists, plan.meta, rows=strings(table))


@dataclass(frozen=True)
class _Search:
    """What a query needs beside its vectors and cells: the space, the generation it reads,
    the metric, k, the answer's meta, and a catalogue filter (SQL and parameters)."""

    sid: int
    generation: int
    metric: str
    k: int
    meta: dict
    condition: str
    params: dict[str, Any]

    @property
    def parameters(self) -> dict[str, Any]:
        return {**self.params, "g": self.generation}

    def where(self, cells: str) -> str:
        """The rows of the generation in ``cells`` (a parameter), not deleted, matching the
        filter."""
        return (
            f"PREWHERE v.generation = {{g:UInt32}} AND v.cell IN {cells} "
            f"WHERE v.seq NOT IN (SELECT seq FROM deleted_{self.sid}){self.condition}"
        )
