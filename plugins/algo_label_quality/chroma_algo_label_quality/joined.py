"""Label quality through the store's own neighbour search, for spaces too big to read at
once.

A store with :class:`chroma_core.store.NeighborJoin` (ClickHouse, once its inverted file is
trained) joins the labelled training rows with their nearest others where they are stored
and hands them over a page at a time, with each row's id, dataset and label. Only those
columns, the neighbours' seqs and their distances are kept; the vectors never are. The
votes, thresholds and verdicts are then those of
:func:`chroma_algo_label_quality.confident_learning.from_neighbors`, as in memory.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_algo_label_quality.confident_learning import LabelIssues, from_neighbors
from chroma_core.filters import Filter
from chroma_core.seqs import locate
from chroma_core.store import JoinQuery, NeighborJoin
from chroma_wire.types import SpaceInfo

COLUMNS = ("id", "dataset", "label")


def label_issues(
    store, space: SpaceInfo, scored: Filter | None, settings: dict
) -> tuple[pa.Table, LabelIssues | None] | None:
    """The rows ``scored`` selects (labelled ones only), each voted on by its nearest others
    among them, or None when the store cannot join them (then the caller reads the vectors
    and searches in memory). The table holds ``COLUMNS``, a row per scored row; the issues
    are None when there is nothing to score (no rows, or one class)."""
    if not isinstance(store, NeighborJoin):
        return None
    k = settings["k"]
    fetch = 2 * k if settings["exclude_duplicates"] else k
    query = JoinQuery(scored, scored, fetch, rows_labelled=True, among_labelled=True,
                      columns=COLUMNS)  # fmt: skip
    joined = store.join_neighbors(space, query)
    if joined is None:
        return None
    seq_pages: list[np.ndarray] = []
    neighbor_pages: list[np.ndarray] = []
    distance_pages: list[np.ndarray] = []
    tables: list[pa.Table] = []
    for page in joined.pages:
        seq_pages.append(page.seqs)
        neighbor_pages.append(page.neighbors)
        distance_pages.append(page.distances.astype(np.float32))
        tables.append(page.columns)
    rows = pa.concat_tables(tables) if tables else pa.table(
        {name: pa.array([], pa.string()) for name in COLUMNS}
    )  # fmt: skip
    seqs = np.concatenate(seq_pages) if seq_pages else np.zeros(0, dtype=np.int64)
    found = np.concatenate(neighbor_pages) if neighbor_pages else np.zeros((0, fetch), np.int64)
    distances = np.concatenate(distance_pages) if distance_pages else np.zeros((0, fetch))
    # a row deleted after the join found it has no catalogue left: it is not scored
    kept = pc.is_valid(rows.column("label")).to_numpy(zero_copy_only=False)
    if not kept.all():
        rows, seqs, found, distances = rows.filter(kept), seqs[kept], found[kept], distances[kept]
    if rows.num_rows == 0:
        return rows, None  # the caller says why nothing can be scored
    classes, given = _classes(rows.column("label"))
    if len(classes) < 2:
        return rows, None
    found = _positions(seqs, found)
    issues = from_neighbors(
        classes, given, found, distances.astype(np.float64),
        k=int(min(k, rows.num_rows - 1)), weighting=settings["weighting"],
        exclude_duplicates=settings["exclude_duplicates"], search=joined.described(),
    )  # fmt: skip
    return rows, issues


def _classes(labels: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The classes, sorted, and each row's code into them (as ``np.unique`` gives them)."""
    encoded = pc.dictionary_encode(labels).combine_chunks()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return names[order], rank[encoded.indices.to_numpy()]


def _positions(seqs: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """The neighbours' seqs as row positions in ``seqs``, -1 for none found or a row not
    among them (deleted since)."""
    order = np.argsort(seqs, kind="stable")
    ordered = seqs[order]
    at, known = locate(ordered, neighbors)
    return np.where(known & (neighbors >= 0), order[at], -1)
