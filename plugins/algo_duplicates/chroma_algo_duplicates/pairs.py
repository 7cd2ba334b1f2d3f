"""Near-duplicate pairs: the numerical core, numpy only.

Rows are compared in the space's metric when it is ``l2`` or ``cosine``. An ``ip`` space is
compared by Euclidean distance: under an inner product a row is not its own nearest point,
so "close to each other" has no meaning there. Calibration and its measurement: README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chroma_core.distance import exact_knn
from chroma_core.neighbor_search import knn

# Query rows times data rows up to which neighbours come from an exact scan.
EXACT_PAIRS = 400_000_000
# Training rows whose nearest-neighbour distance sets the calibrated threshold.
CALIBRATION_ROWS = 2_000
# Rows sharing one input_uri: all pairs up to this many, beyond it each row pairs with the
# group's first row, so one repeated uri cannot produce a quadratic number of pairs.
URI_GROUP_PAIRS = 16
# Working memory of one block of candidate distances recomputed in float64.
_BLOCK_BYTES = 32 * 2**20

BY_EMBEDDING = 1
BY_URI = 2


def search_metric(space_metric: str) -> str:
    """The metric duplicates are measured in for a space of ``space_metric``."""
    return "cosine" if space_metric == "cosine" else "l2"


@dataclass
class Neighbors:
    """``indices`` (n, k) into the data rows, nearest first, -1 where there are fewer;
    ``distances`` (n, k) float64 (inf where -1); ``method`` "exact" or "inverted lists"."""

    indices: np.ndarray
    distances: np.ndarray
    method: str


def neighbors(
    x: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    *,
    exact_pairs: int = EXACT_PAIRS,
) -> Neighbors:
    """The ``k`` nearest other rows of ``x`` for the rows of ``x`` at ``queries``."""
    queries = np.asarray(queries, dtype=np.int64)
    n, m = len(x), len(queries)
    k = max(0, min(k, n - 1))
    if m == 0 or k == 0:
        return Neighbors(np.full((m, k), -1, np.int64), np.full((m, k), np.inf), "exact")
    # One more than asked for, so the query's own row can be dropped.
    if n * m <= exact_pairs:
        method = "exact"
        indices = np.empty((m, k + 1), dtype=np.int64)
        step = max(1, _BLOCK_BYTES // (8 * n))
        for start in range(0, m, step):
            chunk = queries[start : start + step]
            indices[start : start + step] = exact_knn(x[chunk], x, k + 1, metric)[0]
    else:
        method = "inverted lists"
        indices = knn(x, x[queries], k + 1, metric, exact_limit=0)[0]
    indices = _drop_own(indices, queries)
    distances = pair_distances(x, np.repeat(queries, k), indices.reshape(-1), metric).reshape(m, k)
    # The scan ranks in float32; order by the exact float64 distances, ties to the lower row.
    order = np.lexsort((indices, distances), axis=1)
    return Neighbors(
        np.take_along_axis(indices, order, axis=1),
        np.take_along_axis(distances, order, axis=1),
        method,
    )


def _drop_own(indices: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(m, k) from (m, k + 1): each row's own index removed, else its last candidate (the
    own row was crowded out by at least k + 1 exact copies of it)."""
    m, width = indices.shape
    is_own = indices == own[:, None]
    missing = ~is_own.any(axis=1)
    is_own[missing, width - 1] = True
    # A row whose own index appears twice cannot happen: candidates are distinct.
    return indices[~is_own].reshape(m, width - 1)


def pair_distances(x: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances between rows ``a[i]`` and ``b[i]`` of ``x``, computed directly (the
    expanded form cancels badly for near-identical rows)."""
    out = np.empty(len(a))
    step = max(1, _BLOCK_BYTES // (16 * max(x.shape[1], 1)))
    for start in range(0, len(a), step):
        left = x[a[start : start + step]].astype(np.float64)
        right = x[b[start : start + step]].astype(np.float64)
        if metric == "cosine":
            dot = np.einsum("ij,ij->i", left, right)
            norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
            # A zero vector is at distance 1 from everything, as in chroma_core.distance.
            cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
            out[start : start + step] = np.maximum(1.0 - cosine, 0.0)
        else:
            left -= right
            out[start : start + step] = np.sqrt(np.einsum("ij,ij->i", left, left))
    return out


def calibrate(
    x: np.ndarray, reference: np.ndarray, ratio: float, metric: str
) -> tuple[float, float]:
    """``(threshold, median)``: the median distance from a row of ``reference`` (indices into
    ``x``; at most :data:`CALIBRATION_ROWS` of them, drawn with seed 0) to its nearest other
    reference row, times ``ratio``. In a cosine space the ratio applies to the chord length
    between unit vectors, so the cosine distance threshold is ``median * ratio ** 2``."""
    reference = np.asarray(reference, dtype=np.int64)
    if len(reference) < 2:
        return 0.0, 0.0
    sample = np.arange(len(reference))
    if len(reference) > CALIBRATION_ROWS:
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(reference), CALIBRATION_ROWS, replace=False))
    found = neighbors(x[reference], sample, 1, metric)
    median = float(np.median(found.distances[:, 0]))
    return threshold_of(median, ratio, metric), median


def threshold_of(median: float, ratio: float, metric: str) -> float:
    """The threshold calibrated from a median nearest-neighbour distance: ``median`` times
    ``ratio``, squared for cosine (the ratio applies to the chord between unit vectors)."""
    return median * (ratio**2 if metric == "cosine" else ratio)


def embedding_pairs(found: Neighbors, queries: np.ndarray, threshold: float) -> np.ndarray:
    """(p, 2) int64 unordered pairs (lower index first, each once) of a query row and a
    neighbour within ``threshold``."""
    close = (found.indices >= 0) & (found.distances <= threshold)
    rows = np.repeat(np.asarray(queries, dtype=np.int64), found.indices.shape[1])[close.ravel()]
    other = found.indices[close]
    pairs = np.stack([np.minimum(rows, other), np.maximum(rows, other)], axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def uri_pairs(codes: np.ndarray, checked: np.ndarray) -> tuple[np.ndarray, int]:
    """``(pairs, starred)``: (p, 2) unordered pairs of rows with the same code (codes < 0 are
    missing uris) of which at least one is ``checked`` (bool mask), and how many groups were
    larger than :data:`URI_GROUP_PAIRS` and so paired with their first row only."""
    codes = np.asarray(codes, dtype=np.int64)
    rows = np.flatnonzero(codes >= 0)
    if len(rows) < 2:
        return np.zeros((0, 2), dtype=np.int64), 0
    rows = rows[np.argsort(codes[rows], kind="stable")]
    sorted_codes = codes[rows]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    found = []
    for size in np.unique(sizes[(sizes >= 2) & (sizes <= URI_GROUP_PAIRS)]):
        members = rows[starts[sizes == size][:, None] + np.arange(size)]
        left, right = np.triu_indices(size, 1)
        found.append(np.stack([members[:, left], members[:, right]], axis=2).reshape(-1, 2))
    large = np.flatnonzero(sizes > URI_GROUP_PAIRS)
    for group in large:
        members = rows[starts[group] : starts[group] + sizes[group]]
        found.append(np.stack([np.full(len(members) - 1, members[0]), members[1:]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64), 0
    pairs = np.concatenate(found)
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[checked[pairs[:, 0]] | checked[pairs[:, 1]]]
    return pairs, len(large)


def merge(embedding: np.ndarray, uri: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs, by)``: the union of both pair sets, each pair once, ``by`` a bit mask of
    :data:`BY_EMBEDDING` and :data:`BY_URI`."""
    pairs = np.concatenate([embedding, uri]).astype(np.int64)
    flags = np.r_[
        np.full(len(embedding), BY_EMBEDDING, np.int64), np.full(len(uri), BY_URI, np.int64)
    ]
    keys = pairs[:, 0] * n + pairs[:, 1]
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    by = np.zeros(len(unique), dtype=np.int64)
    np.bitwise_or.at(by, inverse.reshape(-1), flags)
    return pairs[first].reshape(-1, 2), by
