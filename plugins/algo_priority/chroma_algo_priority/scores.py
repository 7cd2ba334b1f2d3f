"""Retraining priority of non-training inputs: the numerical core.

Pure numpy and hnswlib, independent of the rest of Chroma. The formulas, defaults and edge-case
rules are written up in ``docs/priority.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import hnswlib
import numpy as np

METRICS = ("l2", "cosine", "ip")
EXACT_LIMIT = 50_000_000

_CHUNK_BYTES = 256 * 2**20
_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 200

# Query codes below zero: the model gave no inference, or one no training row carries.
_MISSING = -1
_UNKNOWN = -2
_NONE = np.array(None, dtype=object)
_SCORE_KEYS = (
    "priority",
    "disagreement",
    "distance",
    "distance_pct",
    "mahalanobis",
    "mahalanobis_pct",
)


@dataclass(frozen=True)
class PriorityParams:
    """Knobs of ``priority_scores``.

    ``k`` neighbours per input; ``shrinkage`` pulls the pooled covariance toward a scaled
    identity; above ``exact_limit`` (n_train * n_queries) neighbours come from hnswlib.
    """

    k: int = 10
    shrinkage: float = 0.1
    exact_limit: int = EXACT_LIMIT


DEFAULT_PARAMS = PriorityParams()


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
    _check_metric(metric)
    train = _as_matrix(train, "train")
    queries = _as_matrix(queries, "queries", dim=train.shape[1])
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if exclude_self and queries.shape != train.shape:
        raise ValueError(
            "exclude_self=True needs the queries to be the training rows themselves, "
            f"got shapes {queries.shape} and {train.shape}"
        )
    if len(train) == 0:
        raise ValueError("train has no rows to search")
    return _NeighbourSearch(train, metric, exact_limit).query(queries, k, exclude_self)


def priority_scores(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    query_x: np.ndarray,
    query_inferences: np.ndarray,
    *,
    metric: str = "l2",
    params: PriorityParams = DEFAULT_PARAMS,
) -> dict[str, np.ndarray]:
    """Score how much each query input deserves relabelling and retraining, in [0, 1].

    Returns float64 (n_queries,) arrays ``priority``, ``disagreement``, ``distance``,
    ``distance_pct``, ``mahalanobis`` and ``mahalanobis_pct``, and ``neighbors``, the int64
    (n_queries, k) indices into the training rows the scores were computed from.
    """
    _check_metric(metric)
    if params.k < 1:
        raise ValueError(f"params.k must be at least 1, got {params.k}")
    if not 0.0 <= params.shrinkage <= 1.0:
        raise ValueError(f"params.shrinkage must lie in [0, 1], got {params.shrinkage}")
    train_x = _as_matrix(train_x, "train_x")
    if len(train_x) < 2:
        raise ValueError(f"priority needs at least 2 labelled training rows, got {len(train_x)}")
    query_x = _as_matrix(query_x, "query_x", dim=train_x.shape[1])
    classes, train_codes = _encode_labels(train_labels, len(train_x))
    query_codes = _encode_inferences(query_inferences, classes, len(query_x))

    # One k for the queries and the leave-one-out reference, so their mean distances compare.
    k = min(params.k, len(train_x) - 1)
    if len(query_x) == 0:
        empty = {key: np.zeros(0) for key in _SCORE_KEYS}
        return {**empty, "neighbors": np.zeros((0, k), dtype=np.int64)}

    search = _NeighbourSearch(train_x, metric, params.exact_limit)
    _, reference_distances = search.query(train_x, k, exclude_self=True)
    reference_distance = np.sort(reference_distances.mean(axis=1))
    neighbors, distances = search.query(query_x, k, exclude_self=False)

    distance = distances.mean(axis=1)
    distance_pct = _percentile(reference_distance, distance)
    disagreement = _disagreement(train_codes[neighbors], query_codes)

    model = _Mahalanobis(train_x, train_codes, len(classes), params.shrinkage)
    reference_mahalanobis = np.sort(model.to_class(train_x, train_codes))
    mahalanobis = model.to_class(query_x, query_codes)
    mahalanobis_pct = _percentile(reference_mahalanobis, mahalanobis)
    mahalanobis_pct[query_codes == _UNKNOWN] = 1.0

    priority = (disagreement + distance_pct + mahalanobis_pct) / 3.0
    return {
        "priority": priority,
        "disagreement": disagreement,
        "distance": distance,
        "distance_pct": distance_pct,
        "mahalanobis": mahalanobis,
        "mahalanobis_pct": mahalanobis_pct,
        "neighbors": neighbors,
    }


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}, expected one of {', '.join(METRICS)}")


def _as_matrix(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
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


def _encode_labels(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=object)
    if labels.shape != (n,):
        raise ValueError(f"train_labels must have shape ({n},), got {labels.shape}")
    if np.equal(labels, _NONE).any():
        raise ValueError("train_labels contains None; drop unlabelled training rows first")
    try:
        classes, codes = np.unique(labels, return_inverse=True)
    except TypeError as exc:
        raise ValueError("train_labels must be mutually comparable, e.g. all str") from exc
    return classes, codes.reshape(-1).astype(np.int64)


def _encode_inferences(inferences: np.ndarray, classes: np.ndarray, n: int) -> np.ndarray:
    inferences = np.asarray(inferences, dtype=object)
    if inferences.shape != (n,):
        raise ValueError(f"query_inferences must have shape ({n},), got {inferences.shape}")
    codes = np.full(n, _MISSING, dtype=np.int64)
    present = ~np.equal(inferences, _NONE)
    values = inferences[present]
    try:
        position = np.searchsorted(classes, values)
    except TypeError as exc:
        raise ValueError(
            "query_inferences must be comparable with train_labels, e.g. all str"
        ) from exc
    clipped = np.minimum(position, len(classes) - 1)
    known = np.equal(classes[clipped], values).astype(bool)
    codes[present] = np.where(known, clipped, _UNKNOWN)
    return codes


def _percentile(sorted_reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_reference, values, side="right") / len(sorted_reference)


def _disagreement(neighbour_codes: np.ndarray, query_codes: np.ndarray) -> np.ndarray:
    result = (neighbour_codes != query_codes[:, None]).mean(axis=1)
    missing = query_codes == _MISSING
    if missing.any():
        result[missing] = 1.0 - _mode_share(neighbour_codes[missing])
    return result


def _mode_share(codes: np.ndarray) -> np.ndarray:
    """Share of each row taken by its most common value."""
    rows, width = codes.shape
    if rows == 0:
        return np.zeros(0)
    ordered = np.sort(codes, axis=1)
    column = np.broadcast_to(np.arange(width), ordered.shape)
    run_starts = np.ones(ordered.shape, dtype=bool)
    run_starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_start_column = np.maximum.accumulate(np.where(run_starts, column, 0), axis=1)
    longest_run = (column - run_start_column + 1).max(axis=1)
    return longest_run / width


class _NeighbourSearch:
    """k-NN against one training matrix; a needed hnswlib graph is built once and reused."""

    def __init__(self, train: np.ndarray, metric: str, exact_limit: int) -> None:
        self.train = train
        self.metric = metric
        self.exact_limit = exact_limit
        self._graph: hnswlib.Index | None = None

    def query(
        self, queries: np.ndarray, k: int, exclude_self: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        n_train = len(self.train)
        k = min(k, n_train - 1 if exclude_self else n_train)
        if len(queries) == 0 or k < 1:
            shape = (len(queries), max(k, 0))
            return np.zeros(shape, dtype=np.int64), np.zeros(shape)
        if n_train * len(queries) <= self.exact_limit:
            return _exact_knn(self.train, queries, k, self.metric, exclude_self)
        return self._approximate(queries, k, exclude_self)

    def _approximate(
        self, queries: np.ndarray, k: int, exclude_self: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        graph = self._build()
        wanted = k + 1 if exclude_self else k
        graph.set_ef(max(2 * k, 100))
        try:
            labels, raw = graph.knn_query(np.ascontiguousarray(queries, np.float32), k=wanted)
        except RuntimeError:
            # hnswlib gives up when a search ends with fewer than k results, as on tiny or
            # heavily duplicated graphs; the exact search always answers.
            return _exact_knn(self.train, queries, k, self.metric, exclude_self)
        indices = labels.astype(np.int64)
        distances = raw.astype(np.float64)
        if self.metric == "l2":
            distances = np.sqrt(np.maximum(distances, 0.0))
        if exclude_self:
            indices, distances = _drop_self(indices, distances)
        return indices, distances

    def _build(self) -> hnswlib.Index:
        if self._graph is None:
            n, dim = self.train.shape
            graph = hnswlib.Index(space=self.metric, dim=dim)
            graph.init_index(
                max_elements=n, M=_HNSW_M, ef_construction=_HNSW_EF_CONSTRUCTION, random_seed=0
            )
            graph.add_items(np.ascontiguousarray(self.train, np.float32), np.arange(n))
            self._graph = graph
        return self._graph


def _drop_self(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, width = indices.shape
    is_self = indices == np.arange(rows)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), width - 1)
    keep = np.ones(indices.shape, dtype=bool)
    keep[np.arange(rows), drop] = False
    return indices[keep].reshape(rows, width - 1), distances[keep].reshape(rows, width - 1)


def _exact_knn(
    train: np.ndarray, queries: np.ndarray, k: int, metric: str, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.result_type(train.dtype, queries.dtype)
    train = train.astype(dtype, copy=False)
    queries = queries.astype(dtype, copy=False)
    if metric == "cosine":
        train = _unit_rows(train)
        queries = _unit_rows(queries)
    n_train, dim = train.shape
    # Budget covers the score matrix, argpartition's int64 copy of it, and the float64
    # gathered neighbour rows used to recompute distances.
    rows = min(
        _CHUNK_BYTES // (n_train * (dtype.itemsize + 8)),
        _CHUNK_BYTES // (k * dim * 8 * 2),
    )
    rows = max(int(rows), 1)
    train_sq = np.einsum("ij,ij->i", train, train) if metric == "l2" else None
    indices = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float64)
    for start in range(0, len(queries), rows):
        chunk = queries[start : start + rows]
        # Only the ranking matters here; the exact distances are recomputed below.
        scores = chunk @ train.T
        if train_sq is not None:
            scores *= -2.0
            scores += train_sq
        else:
            np.negative(scores, out=scores)
        if exclude_self:
            local = np.arange(len(chunk))
            scores[local, start + local] = np.inf
        if k < n_train:
            candidates = np.argpartition(scores, k - 1, axis=1)[:, :k]
        else:
            candidates = np.broadcast_to(np.arange(n_train), (len(chunk), n_train))
        exact = _pair_distances(chunk, train, candidates, metric)
        order = np.lexsort((candidates, exact), axis=1)
        indices[start : start + rows] = np.take_along_axis(candidates, order, axis=1)
        distances[start : start + rows] = np.take_along_axis(exact, order, axis=1)
    return indices, distances


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector stays zero, so its cosine distance to anything is 1, as in hnswlib.
    return x / np.where(norms > 0, norms, 1)


def _pair_distances(
    queries: np.ndarray, train: np.ndarray, candidates: np.ndarray, metric: str
) -> np.ndarray:
    # Direct float64 arithmetic: the expanded |q|^2 + |t|^2 - 2 q.t used for ranking cancels
    # badly for near-identical points.
    neighbours = train[candidates].astype(np.float64)
    chunk = queries.astype(np.float64)[:, None, :]
    if metric == "l2":
        neighbours -= chunk
        return np.sqrt(np.einsum("ijk,ijk->ij", neighbours, neighbours))
    return 1.0 - np.einsum("ijk,ijk->ij", neighbours, chunk)


class _Mahalanobis:
    """Distances to class means under one shrunk, pooled within-class covariance."""

    def __init__(self, x: np.ndarray, codes: np.ndarray, n_classes: int, shrinkage: float) -> None:
        n, dim = x.shape
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=n_classes)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        x64 = x.astype(np.float64)
        self.means = np.add.reduceat(x64[order], starts, axis=0) / counts[:, None]

        centred = x64 - self.means[codes]
        covariance = centred.T @ centred / max(n - n_classes, 1)
        if np.trace(covariance) <= _tiny(x64):
            # Every class is a singleton or repeats one point: with no within-class spread to
            # learn from, the spread of the data as a whole stands in.
            centred = x64 - x64.mean(axis=0)
            covariance = centred.T @ centred / (n - 1)
        if np.trace(covariance) <= _tiny(x64):
            covariance = np.eye(dim)
        scale = np.trace(covariance) / dim
        covariance = (1.0 - shrinkage) * covariance + shrinkage * scale * np.eye(dim)

        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        # Only reachable with shrinkage 0 and a rank-deficient covariance: a floor keeps
        # the unseen directions very far instead of infinitely far.
        floor = max(eigenvalues.max(), 0.0) * dim * np.finfo(np.float64).eps
        eigenvalues = np.maximum(eigenvalues, max(floor, np.finfo(np.float64).tiny))
        self.whiten = eigenvectors / np.sqrt(eigenvalues)
        # Centring keeps the expanded squared distances in to_class free of cancellation
        # when the embeddings sit far from the origin.
        self.centre = x64.mean(axis=0)
        self.white_means = (self.means - self.centre) @ self.whiten
        self.white_means_sq = np.einsum("ij,ij->i", self.white_means, self.white_means)

    def to_class(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Distance of each row to the mean of its class, or to the nearest mean if unknown."""
        result = np.empty(len(x))
        n_classes, dim = self.white_means.shape
        rows = max(_CHUNK_BYTES // (8 * 2 * max(n_classes, dim)), 1)
        for start in range(0, len(x), rows):
            white = (x[start : start + rows].astype(np.float64) - self.centre) @ self.whiten
            chunk_codes = codes[start : start + rows]
            known = chunk_codes >= 0
            out = np.empty(len(white))
            diff = white[known] - self.white_means[chunk_codes[known]]
            out[known] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            if not known.all():
                other = white[~known]
                squared = (
                    np.einsum("ij,ij->i", other, other)[:, None]
                    + self.white_means_sq[None, :]
                    - 2.0 * other @ self.white_means.T
                )
                out[~known] = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
            result[start : start + rows] = out
        return result


def _tiny(x: np.ndarray) -> float:
    # Variance this small relative to the data's magnitude is rounding noise, not spread.
    magnitude = float(np.abs(x).max()) if x.size else 0.0
    return (magnitude**2) * x.shape[1] * 1e-24
