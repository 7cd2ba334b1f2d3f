"""k nearest neighbours for whole data sets: an exact scan when it is small enough, checked
inverted lists over k-means groups above that.

For analyses that search many rows against many (priority, label quality, near-duplicates),
not for single queries (the similarity plugin's index answers those). Work is spread over one
thread per core with BLAS held to one thread (threadpoolctl), which keeps small matrix
products from waiting on each other. The exact path and the inverted lists, and the recall
check between them, are described in docs/priority.md.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from chroma_core.distance import METRICS, smallest

log = logging.getLogger("chroma.neighbor_search")

#: above this value of n_train * n_queries, neighbours come from inverted lists
EXACT_LIMIT = 50_000_000
_CHUNK_BYTES = 256 * 2**20
# Candidates of one batch of queries: small enough that the allocator reuses the memory
# from batch to batch rather than mapping (and zeroing) it afresh.
_CANDIDATE_BYTES = 64 * 2**20
# Working memory of one thread's block: small enough to be reused rather than mapped afresh.
_BLOCK_BYTES = 16 * 2**20
# Inverted lists: about sqrt(n) lists of about sqrt(n) rows each; a query scans _PROBES of them.
_PROBES = 8
# Recall@k the probes must reach on a sample of each search's queries, else more are probed.
_RECALL_TARGET = 0.9
_RECALL_SAMPLE = 256
_KMEANS_SAMPLE_PER_LIST = 32
_KMEANS_ITERATIONS = 8
_T = TypeVar("_T")
_R = TypeVar("_R")


def knn(
    train: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    *,
    exclude_self: bool = False,
    exact_limit: int = EXACT_LIMIT,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``train`` for each row of ``queries``, nearest first.

    Returns int64 indices into ``train`` and float64 distances, both (n_queries, k). With
    ``exclude_self`` the queries are the training rows themselves, in the same order, and each
    row's own index is left out. ``k`` is clipped to the rows available.
    """
    check_metric(metric)
    train = as_matrix(train, "train")
    queries = as_matrix(queries, "queries", dim=train.shape[1])
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if exclude_self and queries.shape != train.shape:
        raise ValueError(
            "exclude_self=True needs the queries to be the training rows themselves, "
            f"got shapes {queries.shape} and {train.shape}"
        )
    if len(train) == 0:
        raise ValueError("train has no rows to search")
    own = np.arange(len(train)) if exclude_self else None
    with Workers() as workers:
        return NeighborSearch(train, metric, exact_limit, workers).query(queries, k, own)


def kmeans(x: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """float32 ``(n_clusters, d)`` k-means centroids (Euclidean) of the rows of ``x``, from
    a seeded start: the coarse quantizer of an inverted file."""
    x = as_matrix(x, "x")
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters must be from 1 to {len(x)} rows, got {n_clusters}")
    with Workers() as workers:
        rows = np.array(x, dtype=np.float32)
        centroids = _kmeans(rows, n_clusters, np.random.default_rng(seed), workers)
    return centroids.astype(np.float32)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}, expected one of {', '.join(METRICS)}")


def as_matrix(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1 and x.size == 0 and dim is not None:
        x = x.reshape(0, dim)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dimensions), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"dimension mismatch: {name} has {x.shape[1]} dimensions, the training rows {dim}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


class _BlasThreads:
    """Holds BLAS to one thread while any run needs it; the last run to finish restores it.

    The limit is global to the process, so overlapping runs share one hold rather than each
    restoring what the other set.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._limits: threadpool_limits | None = None

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._limits = threadpool_limits(limits=1, user_api="blas")
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._limits is not None:
                self._limits.restore_original_limits()
                self._limits = None


_BLAS_THREADS = _BlasThreads()


class Workers:
    """One thread per core, each running BLAS single-threaded, while the block lasts.

    Many independent products split over threads keep every core busy, where BLAS's own
    threads spend much of their time waiting on each other, worst of all on a busy machine.
    """

    def __init__(self) -> None:
        self.size = _cores()

    def __enter__(self) -> Workers:
        _BLAS_THREADS.hold()
        self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="chroma-priority")
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()
        _BLAS_THREADS.release()

    def map(self, task: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
        """``task`` of every item, in the items' order."""
        return list(self._pool.map(task, items))

    def blocks(self, n: int, row_bytes: int, budget: int = _BLOCK_BYTES) -> list[slice]:
        """Row ranges covering ``n`` rows, each within ``budget`` bytes of working memory."""
        rows = max(budget // max(row_bytes, 1), 1)
        return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


class NeighborSearch:
    """k-NN against one training matrix; inverted lists, when needed, are built once."""

    def __init__(self, train: np.ndarray, metric: str, exact_limit: int, workers: Workers):
        self.train = train
        self.metric = metric
        self.exact_limit = exact_limit
        self.workers = workers
        self._lists: _InvertedLists | None = None

    def query(
        self, queries: np.ndarray, k: int, own: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``own``: each query's own index in the training rows, kept out of its neighbours."""
        n_train = len(self.train)
        k = min(k, n_train - 1 if own is not None else n_train)
        if len(queries) == 0 or k < 1:
            shape = (len(queries), max(k, 0))
            return np.zeros(shape, dtype=np.int64), np.zeros(shape)
        if n_train * len(queries) <= self.exact_limit:
            return _exact_knn(self.train, queries, k, self.metric, own, self.workers)
        if self._lists is None:
            self._lists = _InvertedLists(self.train, self.metric, self.workers)
        return self._lists.search(queries, k, own)


class ListScan:
    """Rows grouped in lists, searched through the lists each query names: the scan behind
    inverted lists, whoever grouped the rows (k-means here, a store's cells elsewhere).

    ``rows`` (n, d) are prepared for the metric (unit rows for cosine); list ``i`` holds
    ``order[bounds[i]:bounds[i + 1]]``, or that range of ``rows`` itself when ``order`` is
    None; ``origins`` (lists, d) are the points each list is scanned relative to, so that
    data far from the origin keeps its float32 precision. Each scan is one matrix product:
    all the queries that probe a list against that list's rows. The chosen candidates are
    then ranked exactly as the exact search ranks its own.
    """

    def __init__(
        self,
        rows: np.ndarray,
        bounds: np.ndarray,
        origins: np.ndarray,
        metric: str,
        workers: Workers,
        order: np.ndarray | None = None,
    ) -> None:
        self.rows = rows
        self.bounds = bounds
        self.origins = origins
        self.metric = metric
        # Cosine distance on unit rows ranks as Euclidean distance does; inner product does not.
        self.euclidean = metric != "ip"
        self.workers = workers
        self.order = np.arange(len(rows)) if order is None else order
        # Where each row sits in the lists' order, to leave a query's own row out.
        self.place = np.empty(len(rows), dtype=np.int64)
        self.place[self.order] = np.arange(len(rows))

    def search(
        self, queries: np.ndarray, lists: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest rows of each query among the rows of the lists it names in ``lists``
        ((n, probes) list numbers, the query's nearest list first): int64 indices into the
        rows, float64 distances, nearest first; -1 and +inf where those lists held fewer than
        k rows. ``exclude`` (n,) is the index of a row each query must not be given (its
        own), or -1."""
        indices = np.empty((len(queries), k), dtype=np.int64)
        distances = np.empty((len(queries), k), dtype=np.float64)
        # Candidates of a batch: an int64 index and a float32 score per probed list and k.
        for batch in self.workers.blocks(len(queries), lists.shape[1] * k * 12, _CANDIDATE_BYTES):
            part = None if exclude is None else exclude[batch]
            found, scores = self.candidates(queries[batch], lists[batch], k, part)
            indices[batch], distances[batch] = self.rank(queries[batch], found, scores, k)
        return indices, distances

    def candidates(
        self, queries: np.ndarray, lists: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best k rows of every probed list: (n, probes * k) indices and ranking scores.

        Scores are float32 squared distances, or negated inner products for ``ip``. Slots that
        a probed list could not fill hold index -1 and score +inf.

        Two passes: each query's first list gives its best k, and so a bound, the k-th
        score; its other lists then offer only rows scoring below that bound. Near the
        query's own list those are few, so most scores are compared with the bound rather
        than selected among, which costs several times less.
        """
        n, probes = lists.shape
        found = np.full((n, probes, k), -1, dtype=np.int64)
        found_scores = np.full((n, probes, k), np.inf, dtype=np.float32)
        excluded = None if exclude is None else np.where(exclude >= 0, self.place[exclude], -1)
        bound: np.ndarray | None = None

        def keep_below(scores, offset, which, slots, members, width) -> None:
            """Into the slots: the best ``width`` of the rows scoring below the bound, each
            score plus its query's ``offset``."""
            assert bound is not None
            passing = scores < (bound[which] - offset)[:, None]
            counts = np.count_nonzero(passing, axis=1)
            many = np.flatnonzero(counts > width)
            if len(many):
                pick = smallest(scores[many], width)
                found[which[many], slots[many], :width] = members[pick]
                kept = np.take_along_axis(scores[many], pick, axis=1)
                found_scores[which[many], slots[many], :width] = kept + offset[many, None]
            few = np.flatnonzero((counts > 0) & (counts <= width))
            if len(few):
                row, column = np.nonzero(passing[few])
                place = np.arange(len(row)) - np.searchsorted(row, row)  # rank in its row
                at = few[row]
                found[which[at], slots[at], place] = members[column]
                found_scores[which[at], slots[at], place] = scores[at, column] + offset[at]

        def scan_pairs(columns: slice) -> None:
            """Scan the (query, probe) pairs of the probe ``columns``, list by list."""
            sub = lists[:, columns]
            by_list = np.argsort(sub, axis=None, kind="stable")
            starts = np.searchsorted(sub.reshape(-1)[by_list], np.arange(len(self.bounds)))
            query_of, probe_of = np.divmod(by_list, sub.shape[1])
            probe_of += columns.start

            def scan(list_id: int) -> None:
                lo, hi = self.bounds[list_id], self.bounds[list_id + 1]
                members = self.order[lo:hi]
                origin = self.origins[list_id]
                block = (self.rows[members] - origin).astype(np.float32)
                # scores |t|^2 - 2 q.t (squared distance less |q|^2), or -q.t for ip: one
                # product with the rows scaled beforehand, plus the rows' squared norms
                sq_norms = np.einsum("ij,ij->i", block, block) if self.euclidean else None
                block *= -2.0 if self.euclidean else -1.0
                width = min(k, hi - lo)
                # Each scan writes its own (query, probe) slots, so scans run concurrently.
                pairs = np.arange(starts[list_id], starts[list_id + 1])
                for part in self.workers.blocks(len(pairs), (hi - lo) * 16):
                    which, slots = query_of[pairs[part]], probe_of[pairs[part]]
                    local = (queries[which] - origin).astype(np.float32)
                    scores = local @ block.T
                    if sq_norms is not None:
                        scores += sq_norms
                    # |q|^2 makes squared distances, comparable across lists; it is added to
                    # the scores kept only
                    offset = (
                        np.einsum("ij,ij->i", local, local)
                        if self.euclidean
                        else np.zeros(len(which), np.float32)
                    )
                    if excluded is not None:
                        at = excluded[which]
                        mine = np.flatnonzero((at >= lo) & (at < hi))
                        scores[mine, at[mine] - lo] = np.inf
                    if bound is not None:
                        keep_below(scores, offset, which, slots, members, width)
                        continue
                    if width < hi - lo:
                        pick = smallest(scores, width)
                        scores = np.take_along_axis(scores, pick, axis=1)
                        found[which, slots, :width] = members[pick]
                    else:
                        found[which, slots, :width] = members
                    found_scores[which, slots, :width] = scores + offset[:, None]

            work = (starts[1:] - starts[:-1]) * (self.bounds[1:] - self.bounds[:-1])
            # Longest scans first, so that the threads finish together.
            order = np.argsort(-work, kind="stable")
            self.workers.map(scan, [int(i) for i in order if work[i]])

        scan_pairs(slice(0, 1))
        if probes > 1:
            bound = found_scores[:, 0, :].max(axis=1)
            scan_pairs(slice(1, probes))
        return found.reshape(n, -1), found_scores.reshape(n, -1)

    def rank(
        self, queries: np.ndarray, found: np.ndarray, scores: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best-scored candidates, with exact distances, nearest first."""
        indices = np.empty((len(queries), k), dtype=np.int64)
        distances = np.empty((len(queries), k), dtype=np.float64)

        def rank(chunk: slice) -> None:
            pick = smallest(scores[chunk], k)
            empty = np.isinf(np.take_along_axis(scores[chunk], pick, axis=1))
            candidates = np.where(empty, -1, np.take_along_axis(found[chunk], pick, axis=1))
            indices[chunk], distances[chunk] = _sorted_neighbors(
                queries[chunk], self.rows, candidates, self.metric
            )

        self.workers.map(rank, self.workers.blocks(len(queries), k * queries.shape[1] * 16))
        return indices, distances


class _InvertedLists:
    """Training rows grouped by their nearest k-means centroid; a query scans a few groups."""

    def __init__(self, train: np.ndarray, metric: str, workers: Workers) -> None:
        self.metric = metric
        self.workers = workers
        self.train = _unit_rows(train) if metric == "cosine" else train
        self.euclidean = metric != "ip"
        # Rows are scanned in float32 relative to a nearby point: the data's mean here, each
        # list's centroid in a scan.
        self.centre = self.train.mean(axis=0, dtype=np.float64)
        if not self.euclidean:
            self.centre[:] = 0.0
        n = len(train)
        self.n_lists = max(1, min(n, round(np.sqrt(n))))
        rng = np.random.default_rng(0)
        sample = np.sort(
            rng.choice(n, min(n, _KMEANS_SAMPLE_PER_LIST * self.n_lists), replace=False)
        )
        sample_rows = (self.train[sample] - self.centre).astype(np.float32)
        self.centroids = _kmeans(sample_rows, self.n_lists, rng, workers)
        list_of = self._nearest_lists(self.train, 1, "l2")[:, 0]
        order = np.argsort(list_of, kind="stable")
        bounds = np.searchsorted(list_of[order], np.arange(self.n_lists + 1))
        origins = self.centre + (self.centroids if self.euclidean else 0.0)
        origins = np.broadcast_to(origins, (self.n_lists, train.shape[1]))
        self.scan = ListScan(self.train, bounds, origins, metric, workers, order)

    def _nearest_lists(self, x: np.ndarray, n: int, metric: str) -> np.ndarray:
        return _nearest_centroids(x, self.centre, self.centroids, n, metric, self.workers)

    def search(
        self, queries: np.ndarray, k: int, own: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = _unit_rows(queries) if self.metric == "cosine" else queries
        probes = self._probes_needed(queries, k, own)
        if probes is None:
            return _exact_knn(self.train, queries, k, self.metric, own, self.workers)
        lists = self._nearest_lists(queries, probes, "l2" if self.euclidean else "ip")
        indices, distances = self.scan.search(queries, lists, k, own)
        short = np.flatnonzero((indices < 0).any(axis=1))
        if len(short):
            # The probed lists held fewer than k rows between them: tiny or lopsided data.
            indices[short], distances[short] = _exact_knn(
                self.train,
                queries[short],
                k,
                self.metric,
                None if own is None else own[short],
                self.workers,
            )
        return indices, distances

    def _probes_needed(self, queries: np.ndarray, k: int, own: np.ndarray | None) -> int | None:
        """Lists to probe per query for a recall of at least ``_RECALL_TARGET``.

        Measured on a sample of the queries against an exact scan, doubling from ``_PROBES``.
        None when that would take more than a quarter of the lists: the exact scan is then as
        quick.
        """
        rng = np.random.default_rng(1)
        sample = np.sort(rng.choice(len(queries), min(len(queries), _RECALL_SAMPLE), replace=False))
        sample_own = None if own is None else own[sample]
        _, truth = _exact_knn(self.train, queries[sample], k, self.metric, sample_own, self.workers)
        # A neighbour counts when it is no further than the true k-th: ties are not misses.
        reach = truth[:, -1:] * (1 + 1e-9) + 1e-12
        probes = min(_PROBES, self.n_lists)
        metric = "l2" if self.euclidean else "ip"
        while True:
            lists = self._nearest_lists(queries[sample], probes, metric)
            _, distances = self.scan.search(queries[sample], lists, k, sample_own)
            recall = float((distances <= reach).mean())
            if recall >= _RECALL_TARGET:
                log.debug("%d of %d lists probed, recall@%d %.3f", probes, self.n_lists, k, recall)
                return probes
            probes *= 2
            if probes > self.n_lists / 4:
                log.debug("recall@%d %.3f with %d lists probed: exact scan", k, recall, probes // 2)
                return None


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def _ranking(queries: np.ndarray, rows: np.ndarray, sq_norms: np.ndarray | None) -> np.ndarray:
    """Scores that order ``rows`` for each query, lowest first: given the rows' squared norms,
    |t|^2 - 2 q.t (the squared Euclidean distance less |q|^2), else -q.t."""
    scores = queries @ rows.T
    if sq_norms is not None:
        scores *= -2.0
        scores += sq_norms
    else:
        np.negative(scores, out=scores)
    return scores


def _nearest_centroids(
    x: np.ndarray,
    centre: np.ndarray | None,
    centroids: np.ndarray,
    n: int,
    metric: str,
    workers: Workers,
) -> np.ndarray:
    """(len(x), n) indices of the ``n`` best centroids of each row of ``x`` (less ``centre``),
    the best first."""
    out = np.empty((len(x), n), dtype=np.int64)
    sq_norms = np.einsum("ij,ij->i", centroids, centroids) if metric == "l2" else None

    def nearest(chunk: slice) -> None:
        rows = x[chunk] if centre is None else x[chunk] - centre
        rows = rows.astype(np.float32, copy=False)
        scores = _ranking(rows, centroids, sq_norms)
        if n == 1:
            out[chunk, 0] = scores.argmin(axis=1)
        else:
            pick = smallest(scores, n)
            order = np.argsort(np.take_along_axis(scores, pick, axis=1), axis=1, kind="stable")
            out[chunk] = np.take_along_axis(pick, order, axis=1)

    workers.map(nearest, workers.blocks(len(x), len(centroids) * 16))
    return out


def _kmeans(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, workers: Workers
) -> np.ndarray:
    centroids = x[rng.choice(len(x), n_clusters, replace=False)].copy()
    for _ in range(_KMEANS_ITERATIONS):
        assignment = _nearest_centroids(x, None, centroids, 1, "l2", workers)[:, 0]
        counts = np.bincount(assignment, minlength=n_clusters)
        filled = counts > 0
        centroids[filled] = (
            group_sums(x, assignment, n_clusters, workers)[filled] / (counts[filled, None])
        )
        # An emptied cluster starts again from a random row rather than staying unused.
        empty = np.flatnonzero(~filled)
        centroids[empty] = x[rng.choice(len(x), len(empty), replace=False)]
    return centroids


def group_sums(x: np.ndarray, codes: np.ndarray, n_groups: int, workers: Workers) -> np.ndarray:
    """float64 (n_groups, d) sums of the rows of ``x`` by their code."""

    def block_sums(chunk: slice) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(codes[chunk], kind="stable")
        ordered = codes[chunk][order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        return ordered[starts], np.add.reduceat(x[chunk][order].astype(np.float64), starts)

    sums = np.zeros((n_groups, x.shape[1]))
    for groups, partial in workers.map(block_sums, workers.blocks(len(x), x.shape[1] * 24)):
        sums[groups] += partial
    return sums


def _exact_knn(
    train: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    own: np.ndarray | None,
    workers: Workers,
) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.result_type(train.dtype, queries.dtype)
    train = train.astype(dtype, copy=False)
    queries = queries.astype(dtype, copy=False)
    if metric == "cosine":
        train = _unit_rows(train)
        queries = _unit_rows(queries)
    n_train, dim = train.shape
    train_sq = np.einsum("ij,ij->i", train, train) if metric == "l2" else None
    indices = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float64)

    def search(chunk: slice) -> None:
        # Only the ranking matters here; the exact distances are recomputed after.
        scores = _ranking(queries[chunk], train, train_sq)
        if own is not None:
            scores[np.arange(len(scores)), own[chunk]] = np.inf
        if k < n_train:
            candidates = smallest(scores, k)
        else:
            candidates = np.broadcast_to(np.arange(n_train), scores.shape)
        indices[chunk], distances[chunk] = _sorted_neighbors(
            queries[chunk], train, candidates, metric
        )

    # Each block holds its scores, the selection's copy and mask of them, and the float64
    # neighbour rows gathered to recompute distances: _BLOCK_BYTES, so that its memory is
    # reused from block to block.
    row_bytes = max(n_train * (dtype.itemsize + 8), k * dim * 16)
    workers.map(search, workers.blocks(len(queries), row_bytes))
    return indices, distances


def _sorted_neighbors(
    queries: np.ndarray, train: np.ndarray, candidates: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates sorted by exact distance, ties to the lower index; -1 entries sort last."""
    exact = _pair_distances(queries, train, np.maximum(candidates, 0), metric)
    exact[candidates < 0] = np.inf
    order = np.lexsort((candidates, exact), axis=1)
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(exact, order, axis=1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector stays zero, so its cosine distance to anything is 1.
    return x / np.where(norms > 0, norms, 1)


def _pair_distances(
    queries: np.ndarray, train: np.ndarray, candidates: np.ndarray, metric: str
) -> np.ndarray:
    # Direct float64 arithmetic: the expanded |q|^2 + |t|^2 - 2 q.t used for ranking cancels
    # badly for near-identical points.
    neighbors = train[candidates].astype(np.float64)
    chunk = queries.astype(np.float64)[:, None, :]
    if metric == "l2":
        neighbors -= chunk
        return np.sqrt(np.einsum("ijk,ijk->ij", neighbors, neighbors))
    return 1.0 - np.einsum("ijk,ijk->ij", neighbors, chunk)
