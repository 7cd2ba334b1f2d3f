"""Exact distances and k-NN with numpy, shared by every plugin that needs ground truth.

Distances: ``l2`` is the Euclidean distance, ``cosine`` is 1 - cosine similarity and
``ip`` is 1 - inner product, the conventions hnswlib uses (its l2 is squared; we take
the root so every path reports the same numbers).
"""

from __future__ import annotations

import numpy as np

METRICS = ("l2", "cosine", "ip")
CHUNK_BYTES = 256 << 20


def normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def pairwise(queries: np.ndarray, data: np.ndarray, metric: str) -> np.ndarray:
    """Distances (len(queries), len(data)) in float32."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    q = np.asarray(queries, dtype=np.float32)
    x = np.asarray(data, dtype=np.float32)
    if metric == "cosine":
        return (1.0 - normalized(q) @ normalized(x).T).astype(np.float32)
    if metric == "ip":
        return (1.0 - q @ x.T).astype(np.float32)
    sq = (q * q).sum(1)[:, None] - 2.0 * (q @ x.T) + (x * x).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0, out=sq)).astype(np.float32)


def smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """(m, k) column indices of the ``k`` smallest values of each row of ``scores`` (m, n),
    in no particular order (all n columns when k >= n). Which of several values tied at
    the k-th is taken is not defined.

    ``np.argpartition`` along rows does the same several times slower: it selects with an
    index array beside the values. Here the k-th value of each row comes from
    ``np.partition`` of the values alone, and the columns at or below it are read back from
    a mask; rows where more than k are (ties at the k-th value) or fewer (NaN) go to
    ``np.argpartition``."""
    m, n = scores.shape
    if k >= n:
        return np.broadcast_to(np.arange(n), (m, n)).copy()
    kth = np.partition(scores, k - 1, axis=1)[:, k - 1 : k]
    rows, columns = np.nonzero(scores <= kth)
    counts = np.bincount(rows, minlength=m)
    exact = counts == k
    if exact.all():
        return columns.reshape(m, k)
    out = np.empty((m, k), dtype=np.int64)
    out[exact] = columns[exact[rows]].reshape(-1, k)
    other = np.flatnonzero(~exact)
    out[other] = np.argpartition(scores[other], k - 1, axis=1)[:, :k]
    return out


def exact_knn(queries: np.ndarray, data: np.ndarray, k: int, metric: str):
    """``(indices (n, k) int64, distances (n, k) float32)`` into ``data``, nearest first.

    ``k`` is clipped to ``len(data)``. Queries go in chunks so memory stays bounded.
    """
    n, m = len(queries), len(data)
    k = min(k, m)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    if k == 0 or n == 0:
        return indices, distances
    step = max(1, CHUNK_BYTES // (4 * max(m, 1)))
    for start in range(0, n, step):
        d = pairwise(queries[start : start + step], data, metric)
        part = smallest(d, k)
        part_d = np.take_along_axis(d, part, axis=1)
        order = np.argsort(part_d, axis=1, kind="stable")
        indices[start : start + step] = np.take_along_axis(part, order, axis=1)
        distances[start : start + step] = np.take_along_axis(part_d, order, axis=1)
    return indices, distances
