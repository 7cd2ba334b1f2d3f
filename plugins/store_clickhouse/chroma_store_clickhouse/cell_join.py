"""The neighbours of whole data sets, searched cell by cell in the inverted file.

An analysis such as priority asks, for every row of one set (the triage rows), its k
nearest rows of another (the labelled training rows). Here that runs over the cells of the
space's current generation, as an inverted file searches a batch of queries:

- the searching rows of a run of cells are read, about ``QUERY_ROWS`` at most, in runs of
  about equal size (a run of cells is a run of granules), and each is given its ``probes``
  nearest cells (the store's ``clickhouse_ivf_probes``, as a k-NN query, unless the join
  says otherwise), among the cells around its own;
- the other set's rows are then read once, in runs of cells of ``CELL_ROWS`` rows at most
  (the next run read while this one is scanned), skipping cells no query probes; each
  cell is scanned against every query that probes it in one matrix product, and each
  query keeps its best k so far;
- the searching rows go back with their neighbours a page of ``PAGE_QUERIES`` at a time.

Distances are computed in float32 about each cell's centroid, so that data far from the
origin keeps its precision. Memory holds a run of searching rows and two runs of cells,
never the data set. The generation is fixed when the join starts: rows added later wait for the
next join.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from chroma_core.distance import smallest
from chroma_core.filters import comparisons
from chroma_core.neighbor_search import Workers
from chroma_core.seqs import locate
from chroma_core.store import JoinedNeighbors, JoinQuery, NeighborPage
from chroma_store_clickhouse.arrow import matrix, strings
from chroma_store_clickhouse.cells import Cells, prepared
from chroma_store_clickhouse.where import compile_where, listed

log = logging.getLogger("chroma.clickhouse.join")

#: searching rows held at once
QUERY_ROWS = 1_000_000
#: rows of the other set read at once
CELL_ROWS = 400_000
#: a searching row's probes are the nearest of the AROUND · probes cells nearest its own
AROUND = 4
#: searching rows handed over in one page
PAGE_QUERIES = 20_000
_SHARE_SCALE = 1 << 32
# a query with more than this many times k rows passing its k-th best in one cell has them
# ranked by a partition of the cell's row, fewer by a merge of just those
_FEW = 4


def join(ivf: Any, sid: int, metric: str, query: JoinQuery) -> JoinedNeighbors | None:
    """The join ``query`` asks for over the current generation of space ``sid``, or None
    when the space has none or a filter names metadata (the cells hold the catalogue
    only)."""
    generation, n_cells, _ = ivf.state(sid, fresh=True)
    if not generation:
        return None
    for where in (query.rows, query.among):
        if where is not None and not all(c.catalogue for c in comparisons(where)):
            return None
    side = _Side.of(sid, generation, query.rows, query.rows_labelled, query.share)
    among = _Side.of(sid, generation, query.among, query.among_labelled, 1.0)
    cells = ivf.centroids(sid, generation)
    searching = side.counts(ivf.store, cells)
    found = among.counts(ivf.store, cells)
    total = int(ivf.store._query(
        f"SELECT count() FROM ivf_{sid} WHERE generation = {{g:UInt32}}", {"g": generation}
    )[0][0])  # fmt: skip
    # a filtered set fills a share of each cell: more cells are probed to find as many rows
    share = max(found.sum(), 1) / max(total, 1)
    probes = min(n_cells, int(np.ceil((query.probes or ivf.probes) / min(share, 1.0))))
    meta = {"method": "clickhouse_ivf", "generation": generation, "cells": n_cells,
            "probes": probes}  # fmt: skip
    pages = _pages(ivf.store, side, among, cells, searching, found, metric, query, probes)
    return JoinedNeighbors(int(searching.sum()), pages, meta)


class _Side:
    """One side of a join: the rows of a generation matching a filter, as SQL."""

    def __init__(self, sid: int, generation: int, condition: str, params: dict[str, Any]):
        self.sid, self.generation = sid, generation
        self.condition, self.params = condition, params

    @classmethod
    def of(cls, sid, generation, where, labelled: bool, share: float) -> _Side:
        parts = [f"v.seq NOT IN (SELECT seq FROM deleted_{sid})"]
        params: dict[str, Any] = {"g": generation}
        if where is not None:
            sql, bound = compile_where(where, alias="v")
            parts.append(sql)
            params.update(bound)
        if labelled:
            parts.append("v.label IS NOT NULL")
        if share < 1.0:
            parts.append("cityHash64(v.seq) % {m:UInt64} < {s:UInt64}")
            params.update(m=_SHARE_SCALE, s=int(share * _SHARE_SCALE))
        return cls(sid, generation, " AND ".join(parts), params)

    def sql(self, columns: str, cells: str) -> str:
        # every condition before the embeddings are read: a side that is a small share of
        # the rows reads only its own vectors
        return (
            f"SELECT {columns} FROM ivf_{self.sid} AS v PREWHERE v.generation = {{g:UInt32}} "
            f"AND {cells} AND {self.condition}"
        )

    def counts(self, store: Any, cells: Cells) -> np.ndarray:
        """The side's rows in each cell, in the order of ``cells.numbers``."""
        table = store._arrow(
            f"{self.sql('v.cell AS cell, count() AS n', '1')} GROUP BY cell", self.params
        )
        counts = np.zeros(len(cells), dtype=np.int64)
        at = np.searchsorted(cells.numbers, table.column("cell").to_numpy().astype(np.int64))
        counts[at] = table.column("n").to_numpy()
        return counts


def _pages(store, side, among, cells, searching, found, metric, query, probes):
    """Pages of neighbours (a generator: nothing is read until the first page is asked
    for)."""
    # runs of about equal size: a run of few rows would still read most of the other set
    runs = max(1, int(np.ceil(searching.sum() / QUERY_ROWS)))
    limit = int(np.ceil(searching.sum() / runs)) + int(searching.max(initial=0))
    with Workers() as workers:
        for first, last in _runs(cells.numbers, searching, limit):
            started = time.perf_counter()
            table = store._arrow(
                side.sql("v.cell AS cell, v.seq AS seq, v.embedding AS embedding", _BETWEEN)
                + " ORDER BY seq",
                {**side.params, "lo": first, "hi": last},
            )
            if table.num_rows == 0:
                continue
            seqs = table.column("seq").to_numpy().astype(np.int64)
            own = table.column("cell").to_numpy().astype(np.int64)
            vectors = matrix(table.column("embedding"))
            del table
            search = _Search(cells, metric, query.k, seqs, vectors, own, probes, workers)
            read, scanned = time.perf_counter() - started, 0
            runs = _runs(cells.numbers, found * (search.probing > 0), CELL_ROWS)
            for cell_of, cell_seqs, cell_vectors in _ahead(store, among, runs, vectors.shape[1]):
                search.scan(cell_of, cell_seqs, cell_vectors)
                scanned += len(cell_seqs)
            neighbors, distances = search.result()
            log.info(
                "join of space %d: %d searching rows of cells %d-%d read and probed in %.1f s, "
                "%d rows of the other set scanned in %.1f s",
                side.sid,
                len(seqs),
                first,
                last,
                read,
                scanned,
                time.perf_counter() - started - read,
            )
            for at in range(0, len(seqs), PAGE_QUERIES):
                part = slice(at, at + PAGE_QUERIES)
                columns = _columns(store, side, seqs[part], query.columns)
                yield NeighborPage(
                    seqs[part], vectors[part], neighbors[part], distances[part], columns
                )


_BETWEEN = "v.cell BETWEEN {lo:UInt32} AND {hi:UInt32}"


def _ahead(store, among: _Side, runs, dim: int) -> Iterator[tuple[np.ndarray, ...]]:
    """The cells, seqs and vectors of the other set's rows in each run of cells, the next
    run read while the caller scans this one (ClickHouse decompresses while numpy
    multiplies)."""

    def read(run: tuple[int, int]) -> tuple[np.ndarray, ...]:
        rows = store._arrow(
            among.sql("v.cell AS cell, v.seq AS seq, v.embedding AS embedding", _BETWEEN)
            + " ORDER BY cell, seq",
            {**among.params, "lo": run[0], "hi": run[1]},
        )
        return (
            rows.column("cell").to_numpy().astype(np.int64),
            rows.column("seq").to_numpy().astype(np.int64),
            matrix(rows.column("embedding"), dim),
        )

    with ThreadPoolExecutor(1, thread_name_prefix="chroma-join-read") as reader:
        try:
            pending = None
            for run in runs:
                following = reader.submit(read, run)
                if pending is not None:
                    yield pending.result()
                pending = following
            if pending is not None:
                yield pending.result()
        finally:
            reader.submit(store._release_client).result()


class _Search:
    """A run of searching rows and the best k of each so far, as the cells they probe are
    scanned."""

    def __init__(self, cells: Cells, metric, k, seqs, vectors, own, probes, workers) -> None:
        self.cells, self.metric, self.k, self.workers = cells, metric, k, workers
        self.seqs = seqs
        self.queries = prepared(vectors, metric)
        self.euclidean = metric != "ip"
        probed = _probes(cells, vectors, own, probes, metric, workers)
        width = probed.shape[1]
        # the (query, cell) pairs, sorted by cell: the queries each cell is scanned for
        flat = probed.ravel()
        order = np.argsort(flat, kind="stable")
        self.query_of = (order // max(width, 1)).astype(np.int32)
        self.bounds = np.searchsorted(flat[order], np.arange(len(cells) + 1))
        del probed, flat, order
        self.probing = np.diff(self.bounds)
        self.best = np.full((len(seqs), k), np.inf, dtype=np.float32)
        self.found = np.full((len(seqs), k), -1, dtype=np.int64)

    def scan(self, cell_of: np.ndarray, seqs: np.ndarray, vectors: np.ndarray) -> None:
        """Scan the rows of a run of cells (ordered by cell, then seq) for the queries that
        probe each. Each worker takes its own share of the queries through every cell, so
        no two write the same query's best and a cell probed by few queries still keeps
        every core busy."""
        rows = prepared(vectors, self.metric)
        places = np.searchsorted(self.cells.numbers, cell_of)
        starts = np.flatnonzero(np.r_[True, places[1:] != places[:-1]])
        ends = np.r_[starts[1:], len(places)]
        runs = [(int(places[lo]), lo, hi) for lo, hi in zip(starts.tolist(), ends.tolist(),
                strict=True) if self.probing[places[lo]]]  # fmt: skip
        shares = np.linspace(0, len(self.seqs), self.workers.size + 1).astype(np.int64)
        self.workers.map(
            lambda share: self._scan_share(rows, seqs, runs, *share),
            list(zip(shares[:-1].tolist(), shares[1:].tolist(), strict=True)),
        )

    def _scan_share(self, rows, seqs, runs, first: int, last: int) -> None:
        """The queries numbered ``first`` to ``last`` (excluded) against the cells of
        ``runs``."""
        for place, lo, hi in runs:
            # a cell's queries are in ascending order
            queries = self.query_of[self.bounds[place] : self.bounds[place + 1]]
            begin, end = np.searchsorted(queries, (first, last))
            if begin == end:
                continue
            origin = self.cells.centroids[place] if self.euclidean else 0.0
            block = rows[lo:hi] - origin
            norms = np.einsum("ij,ij->i", block, block) if self.euclidean else None
            for at in range(begin, end, 2048):
                part = queries[at : min(at + 2048, end)]
                self._merge(part, block, norms, seqs[lo:hi], origin)

    def _merge(self, which, block, norms, cell_seqs, origin) -> None:
        """The best k of queries ``which`` among ``block`` merged into theirs so far."""
        local = self.queries[which] - origin
        scores = local @ block.T
        if self.euclidean:
            scores *= -2.0
            scores += norms
            scores += np.einsum("ij,ij->i", local, local)[:, None]
        else:
            np.negative(scores, out=scores)
        # a row is never its own neighbour
        at, own = locate(cell_seqs, self.seqs[which])
        mine = np.flatnonzero(own)
        scores[mine, at[mine]] = np.inf
        # only rows nearer than a query's k-th best so far can enter its best k: past the
        # first cells a query probes, few do, and only they are merged
        k = self.k
        passing = scores < self.best[which].max(axis=1)[:, None]
        counts = passing.sum(axis=1)
        many = counts > _FEW * k
        if many.any():
            top = min(k, scores.shape[1])
            pick = smallest(scores[many], top)
            self._keep(which[many], np.take_along_axis(scores[many], pick, axis=1), cell_seqs[pick])
        few = np.flatnonzero((counts > 0) & ~many)
        if len(few):
            row, column = np.nonzero(passing[few])
            place = np.arange(len(row)) - np.searchsorted(row, row)  # its rank in its row
            width = int(counts[few].max())
            found = np.full((len(few), width), np.inf, dtype=np.float32)
            seqs = np.full((len(few), width), -1, dtype=np.int64)
            found[row, place] = scores[few[row], column]
            seqs[row, place] = cell_seqs[column]
            self._keep(which[few], found, seqs)

    def _keep(self, which, scores, seqs) -> None:
        """Merge candidates (``scores``, ``seqs``, a row per query, +inf for none) into the
        best k of queries ``which``."""
        both = np.concatenate([self.best[which], scores], axis=1)
        ids = np.concatenate([self.found[which], np.where(np.isinf(scores), -1, seqs)], axis=1)
        keep = smallest(both, self.k)
        self.best[which] = np.take_along_axis(both, keep, axis=1)
        self.found[which] = np.take_along_axis(ids, keep, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Each query's neighbours nearest first (ties to the lower seq) and their
        distances in the metric; -1 and +inf where fewer than k were found."""
        found = np.where(np.isinf(self.best), -1, self.found)
        score = self.best.astype(np.float64)
        if self.metric == "l2":
            distance = np.sqrt(np.maximum(score, 0.0))
        elif self.metric == "cosine":
            distance = np.maximum(score, 0.0) / 2.0  # unit rows: |a-b|² = 2 - 2cos
        else:
            distance = 1.0 + score  # score is -a·b
        distance[found < 0] = np.inf
        order = np.lexsort((np.where(found < 0, np.iinfo(np.int64).max, found), distance), axis=1)
        return np.take_along_axis(found, order, axis=1), np.take_along_axis(distance, order, axis=1)


def _probes(cells: Cells, vectors, own, probes: int, metric: str, workers) -> np.ndarray:
    """``(len(vectors), probes)`` int32 places of the cells each vector probes, worked out
    for the vectors of a few cells at a time (they share the cells around their own)."""
    probed = np.empty((len(vectors), min(probes, len(cells))), dtype=np.int32)
    by_cell = np.argsort(own, kind="stable")
    step = 8192

    def probe(at: int) -> None:
        part = by_cell[at : at + step]
        probed[part] = cells.near_own(vectors[part], own[part], probes, metric, AROUND * probes)

    workers.map(probe, range(0, len(vectors), step))
    return probed


def _runs(numbers: np.ndarray, counts: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Runs of consecutive cells (first and last number) holding at most ``limit`` rows,
    or one cell when it alone holds more; cells without rows are skipped."""
    start = end = None
    total = 0
    for i in np.flatnonzero(counts):
        if start is not None and total + counts[i] > limit:
            yield int(numbers[start]), int(numbers[end])
            start, total = None, 0
        if start is None:
            start = i
        end, total = i, total + int(counts[i])
    if start is not None:
        yield int(numbers[start]), int(numbers[end])


def _columns(store, side, seqs: np.ndarray, names: tuple[str, ...]) -> pa.Table:
    """The columns ``names`` of the rows ``seqs`` (ascending), read from the space's rows;
    null for a row deleted since it was found."""
    if not names:
        return pa.table({})
    table = strings(store._arrow(
        f"SELECT seq, {', '.join(names)} FROM rows_{side.sid} AS r "
        f"WHERE r.seq IN {listed('{seqs:Array(UInt64)}')} "
        f"AND r.seq NOT IN (SELECT seq FROM deleted_{side.sid}) ORDER BY seq",
        {"seqs": seqs.tolist()},
    ))  # fmt: skip
    stored = table.column("seq").to_numpy()
    at, present = locate(stored, seqs)
    return table.select(list(names)).take(pa.array(at, mask=~present))
