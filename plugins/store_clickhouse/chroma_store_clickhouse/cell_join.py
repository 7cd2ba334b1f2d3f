"""The neighbours of whole data sets, searched cell by cell in the inverted file.

An analysis such as priority asks, for every row of one set (the triage rows), its k
nearest rows of another (the labelled training rows). Here that runs over the cells of the
space's current generation, a page of neighbouring cells at a time:

- the searching rows of a run of cells are read (the table is ordered by cell, so a run of
  cells is a run of granules), with ``PAGE_QUERIES`` rows at most;
- each is given its ``probes`` nearest cells; the rows of the other set in those cells are
  read, those a page before already read kept rather than read again;
- every probed cell is scanned once against the queries that probe it
  (:class:`chroma_core.neighbor_search.ListScan`), and the best k of each query ranked by
  exact distance.

Memory holds a page of queries and the rows of the cells they probe (at most
``PAGE_ROWS`` of them, the page split until it fits), never the data set. The generation
is fixed when the join starts: rows added after that wait for the next join.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from chroma_core.filters import comparisons
from chroma_core.neighbor_search import ListScan, Workers
from chroma_core.store import JoinedNeighbors, JoinQuery, NeighborPage
from chroma_store_clickhouse.arrow import matrix, strings
from chroma_store_clickhouse.cells import Cells, prepared
from chroma_store_clickhouse.where import compile_where, listed

log = logging.getLogger("chroma.clickhouse.join")

#: searching rows read and searched at once
PAGE_QUERIES = 20_000
#: rows of the probed cells held at once (a page is split until its cells fit)
PAGE_ROWS = 400_000
#: cells probed by each searching row unless the query says otherwise: a neighbour vote
#: over k rows needs most of the true neighbours, not every one (recall near 0.95 on
#: clustered data, measured by ``bench/clickhouse_ivf.py --join``)
PROBES = 8
_SHARE_SCALE = 1 << 32


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
    probes = min(n_cells, int(np.ceil((query.probes or PROBES) / min(share, 1.0))))
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
        return (
            f"SELECT {columns} FROM ivf_{self.sid} AS v PREWHERE v.generation = {{g:UInt32}} "
            f"AND {cells} WHERE {self.condition}"
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
    """Pages of neighbours, one run of cells at a time (a generator: nothing is read until
    the caller asks for the first page)."""
    held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with Workers() as workers:
        for first, last in _runs(cells.numbers, searching, PAGE_QUERIES):
            table = store._arrow(
                side.sql(
                    "v.seq AS seq, v.cell AS cell, v.embedding AS embedding",
                    "v.cell BETWEEN {lo:UInt32} AND {hi:UInt32}",
                )
                + " ORDER BY seq",
                {**side.params, "lo": int(first), "hi": int(last)},
            )
            if table.num_rows == 0:
                continue
            seqs = table.column("seq").to_numpy().astype(np.int64)
            vectors = matrix(table.column("embedding"))
            del table
            probed = cells.nearest(vectors, probes, metric)
            parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            for part in _fitting(probed, cells.numbers, found, PAGE_ROWS):
                held = _held(store, among, cells, np.unique(probed[part]), held)
                parts.append((part, *_search(held, vectors[part], seqs[part], probed[part],
                                             cells, metric, query.k, workers)))  # fmt: skip
            neighbors = np.empty((len(seqs), query.k), dtype=np.int64)
            distances = np.empty((len(seqs), query.k), dtype=np.float64)
            for part, part_neighbors, part_distances in parts:
                neighbors[part], distances[part] = part_neighbors, part_distances
            columns = _columns(store, side, seqs, query.columns)
            yield NeighborPage(seqs, vectors, neighbors, distances, columns)


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


def _fitting(probed, numbers, found, limit) -> Iterator[np.ndarray]:
    """The page's queries in parts whose probed cells hold at most ``limit`` rows (halved
    until they do; a single query always goes)."""
    pending = [np.arange(len(probed))]
    while pending:
        part = pending.pop()
        rows = found[np.searchsorted(numbers, np.unique(probed[part]))].sum()
        if rows <= limit or len(part) == 1:
            yield part
        else:
            half = len(part) // 2
            pending += [part[half:], part[:half]]


def _held(store, among, cells, needed, held):
    """The rows of the ``needed`` cells (seqs and prepared vectors by cell): those already
    held are kept, the others read; cells no longer needed are let go."""
    kept = {cell: held[cell] for cell in needed.tolist() if cell in held}
    missing = [cell for cell in needed.tolist() if cell not in kept]
    if missing:
        table = store._arrow(
            among.sql(
                "v.cell AS cell, v.seq AS seq, v.embedding AS embedding",
                "v.cell IN {cells:Array(UInt32)}",
            )
            + " ORDER BY cell, seq",
            {**among.params, "cells": missing},
        )
        cell_of = table.column("cell").to_numpy().astype(np.int64)
        seqs = table.column("seq").to_numpy().astype(np.int64)
        vectors = matrix(table.column("embedding"), cells.centroids.shape[1])
        starts = np.searchsorted(cell_of, missing)
        ends = np.searchsorted(cell_of, missing, side="right")
        for cell, lo, hi in zip(missing, starts, ends, strict=True):
            kept[cell] = (seqs[lo:hi], vectors[lo:hi])
    return kept


def _search(held, queries, query_seqs, probed, cells, metric, k, workers):
    """The k nearest held rows of each query among its probed cells: their seqs (-1 when
    fewer) and distances (+inf)."""
    order = np.unique(probed)
    seqs = np.concatenate([held[cell][0] for cell in order.tolist()])
    neighbors = np.full((len(queries), k), -1, dtype=np.int64)
    distances = np.full((len(queries), k), np.inf)
    if not len(seqs):
        return neighbors, distances
    rows = prepared(np.concatenate([held[cell][1] for cell in order.tolist()]), metric)
    bounds = np.r_[0, np.cumsum([len(held[cell][0]) for cell in order.tolist()])]
    centroids = cells.centroids[np.searchsorted(cells.numbers, order)].astype(np.float64)
    origins = centroids if metric != "ip" else np.zeros_like(centroids)
    scan = ListScan(rows, bounds, origins, metric, workers)
    # a row is never its own neighbour
    own = np.full(len(query_seqs), -1, dtype=np.int64)
    by_seq = np.argsort(seqs, kind="stable")
    at = by_seq[np.minimum(np.searchsorted(seqs[by_seq], query_seqs), len(seqs) - 1)]
    mine = seqs[at] == query_seqs
    own[mine] = at[mine]
    indices, found = scan.search(prepared(queries, metric), np.searchsorted(order, probed), k, own)
    hit = indices >= 0
    neighbors[hit], distances[hit] = seqs[indices[hit]], found[hit]
    return neighbors, distances


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
    at = np.minimum(np.searchsorted(stored, seqs), max(len(stored) - 1, 0))
    present = stored[at] == seqs if len(stored) else np.zeros(len(seqs), dtype=bool)
    return table.select(list(names)).take(pa.array(at, mask=~present))
