"""Duplicates through the store's own neighbour search, for spaces too big to read at once.

A store with :class:`chroma_core.store.NeighborJoin` (ClickHouse, once its inverted file is
trained) joins the checked rows with their nearest others where they are stored, a page
at a time. The server holds the rows' catalogue (no vectors), and reads the vectors of
candidate pairs only, to measure them exactly: the join ranks in float32, which cannot
tell a duplicate at distance 0 from one at a thousandth of a cell's width. The calibrated
threshold comes from a second join of a sample of the training rows with their nearest
other training row. An ``ip`` space, whose duplicates are measured in l2, is searched in
memory.
"""

from __future__ import annotations

import numpy as np

from chroma_algo_duplicates.found import (
    TRAINING,
    Found,
    calibrated,
    catalogue_of,
    checked_rows,
    with_uri_pairs,
)
from chroma_algo_duplicates.pairs import (
    CALIBRATION_ROWS,
    pair_distances,
    search_metric,
    threshold_of,
)
from chroma_core.filters import parse
from chroma_core.seqs import locate
from chroma_core.store import JoinQuery, NeighborJoin, Store
from chroma_wire.types import SpaceInfo

# a neighbour is measured exactly when the join puts it within the threshold plus this
# share of the row's k-th neighbour distance (the join's float32 error is far below it)
SLACK = 1e-3
# pairs whose vectors are read at once
PAIRS_AT_ONCE = 50_000


def pairs(store, space: SpaceInfo, settings: dict) -> Found | None:
    """Every pair :mod:`chroma_algo_duplicates.plugin` reports, found through the store's
    join; None when the store cannot join the space (then the caller reads the vectors)."""
    if not isinstance(store, NeighborJoin) or not isinstance(store, Store):
        return None
    if space.metric == "ip":
        return None
    metric = search_metric(space.metric)
    main = store.join_neighbors(space, JoinQuery(settings["where"], None, settings["k"]))
    if main is None:
        return None
    table = store.get(space.name)
    n = table.num_rows
    seqs = table.column("seq").to_numpy().astype(np.int64)
    catalogue = catalogue_of(table)
    del table
    checked = checked_rows(store, space.name, settings["where"], seqs)
    meta: dict = {"metric": metric, "k": settings["k"], "rows": n,
                  "rows_checked": int(checked.sum())}  # fmt: skip
    if n == 0:
        return Found(meta)
    if settings["threshold"] is not None:
        threshold = settings["threshold"]
        meta |= {"threshold": threshold, "threshold_from": "given"}
    else:
        training = int((catalogue["context"] == TRAINING).sum())
        of_training = training >= 2
        median, rows = _median_nearest(store, space, of_training, training if of_training else n)
        threshold = threshold_of(median, settings["ratio"], metric)
        meta |= calibrated(metric, settings["ratio"], median, of_training, rows)
        meta["threshold"] = threshold
    meta["method"] = main.described()
    near = _positions(seqs, _embedding_pairs(store, space, main.pages, threshold, metric))
    both, by = with_uri_pairs(near, catalogue, checked, meta)
    distance = _distances(store, space, seqs, both, metric)
    # a row deleted since the catalogue was read has no vector left: its pairs go
    kept = np.isfinite(distance)
    return Found(meta, catalogue, both[kept], by[kept], distance[kept])


def _median_nearest(store, space: SpaceInfo, of_training: bool, count: int) -> tuple[float, int]:
    """The median distance from a sample of the training rows (all rows when fewer than
    two are training; ``count`` of them) to their nearest other one, and the sample's
    size."""
    reference = parse({"context": TRAINING}) if of_training else None
    share = min(1.0, CALIBRATION_ROWS / max(count, 1))
    joined = store.join_neighbors(space, JoinQuery(reference, reference, 1, share))
    if joined is None:
        return 0.0, 0
    nearest = np.concatenate([page.distances[:, 0] for page in joined.pages] or [np.zeros(0)])
    nearest = nearest[np.isfinite(nearest)]
    return (float(np.median(nearest)) if len(nearest) else 0.0), len(nearest)


def _embedding_pairs(store, space, pages, threshold: float, metric: str) -> np.ndarray:
    """(p, 2) seqs of each checked row and a neighbour within ``threshold``, measured
    exactly."""
    found = []
    for page in pages:
        d = page.distances
        farthest = np.where(np.isfinite(d), d, -np.inf).max(axis=1, keepdims=True)
        slack = SLACK * np.where(np.isfinite(farthest), farthest, 0.0)
        row, column = np.nonzero((page.neighbors >= 0) & (d <= threshold + slack))
        if not len(row):
            continue
        other = page.neighbors[row, column]
        got, vectors = store.vectors(space.name, seqs=np.unique(other))
        at, present = locate(got, other)
        row, other, at = row[present], other[present], at[present]
        stacked = np.vstack([page.vectors[row], vectors[at]]) if len(row) else page.vectors[:0]
        m = len(row)
        exact = pair_distances(stacked, np.arange(m), m + np.arange(m), metric)
        close = exact <= threshold
        found.append(np.stack([page.seqs[row[close]], other[close]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def _positions(seqs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pairs of seqs as unordered pairs of positions in ``seqs`` (ascending), each once;
    pairs naming a row not in ``seqs`` are left out."""
    at, known = locate(seqs, pairs)
    at = np.sort(at[known.all(axis=1)], axis=1)
    return np.unique(at, axis=0) if len(at) else at.reshape(0, 2)


def _distances(store, space, seqs: np.ndarray, pairs: np.ndarray, metric: str) -> np.ndarray:
    """The exact distance of every pair (positions in ``seqs``); +inf where a row's vector
    is gone."""
    out = np.full(len(pairs), np.inf)
    for start in range(0, len(pairs), PAIRS_AT_ONCE):
        part = pairs[start : start + PAIRS_AT_ONCE]
        wanted = np.unique(seqs[part])
        got, vectors = store.vectors(space.name, seqs=wanted)
        at, found = locate(got, seqs[part])
        present = found.all(axis=1)
        if not present.any():
            continue
        a, b = at[present, 0], at[present, 1]
        out[start : start + PAIRS_AT_ONCE][present] = pair_distances(vectors, a, b, metric)
    return out
