"""Retraining priority of non-training inputs: the numerical core.

Pure numpy; neighbours come from :mod:`chroma_core.neighbours`. The formulas, defaults and
edge-case rules are written up in ``docs/priority.md``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from chroma_core import linear_probe
from chroma_core.neighbor_search import (
    EXACT_LIMIT,
    NeighborSearch,
    Workers,
    as_matrix,
    check_metric,
    group_sums,
)

log = logging.getLogger("chroma.priority")

REFERENCE_ROWS = 100_000
#: the shares of the neighbour vote tried against the linear probe (1 - the share)
VOTE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: ``novelty`` starts at this quantile of the training rows' own neighbour distances
NOVELTY_QUANTILE = 0.99

# Query codes below zero: the model gave no inference, or one no training row carries.
_MISSING = -1
_UNKNOWN = -2
_NONE = np.array(None, dtype=object)
_SCORE_KEYS = (
    "priority",
    "support",
    "probe_support",
    "vote_weight",
    "novelty",
    "disagreement",
    "distance",
    "distance_pct",
    "mahalanobis",
    "mahalanobis_pct",
    "from_votes",
    "from_probe",
    "from_confidence",
    "from_novelty",
)
#: each signal's share of a priority (:func:`contributions`)
CONTRIBUTIONS = ("from_votes", "from_probe", "from_confidence", "from_novelty")
# logarithms of backings and of 1 - novelty are taken no lower than of this
_TINY = 1e-12


@dataclass(frozen=True)
class PriorityParams:
    """Knobs of ``priority_scores``.

    ``k`` neighbours per input; ``shrinkage`` pulls the pooled covariance toward a scaled
    identity; above ``exact_limit`` (n_train * n_queries) neighbours come from inverted lists
    instead of an exact scan; ``distance_pct`` is measured against at most ``reference_rows``
    training rows, drawn at random when there are more.
    """

    k: int = 10
    shrinkage: float = 0.1
    exact_limit: int = EXACT_LIMIT
    reference_rows: int = REFERENCE_ROWS


DEFAULT_PARAMS = PriorityParams()


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

    Returns float64 (n_queries,) arrays ``priority``, ``support``, ``probe_support``,
    ``vote_weight``, ``novelty``, ``disagreement``, ``distance``, ``distance_pct``,
    ``mahalanobis``, ``mahalanobis_pct``, the signals' shares of the priority
    (:data:`CONTRIBUTIONS`), and ``neighbors``, the int64 (n_queries, k) indices into the
    training rows the scores were computed from. ``priority`` here is
    ``1 - inputs * (1 - novelty)`` (:func:`backing_inputs`); with the model's outputs,
    :func:`combine` folds its confidence in.
    """
    check_metric(metric)
    if params.k < 1:
        raise ValueError(f"params.k must be at least 1, got {params.k}")
    if not 0.0 <= params.shrinkage <= 1.0:
        raise ValueError(f"params.shrinkage must lie in [0, 1], got {params.shrinkage}")
    if params.reference_rows < 1:
        raise ValueError(f"params.reference_rows must be at least 1, got {params.reference_rows}")
    train_x = as_matrix(train_x, "train_x")
    if len(train_x) < 2:
        raise ValueError(f"priority needs at least 2 labelled training rows, got {len(train_x)}")
    query_x = as_matrix(query_x, "query_x", dim=train_x.shape[1])
    classes, train_codes = _encode_labels(train_labels, len(train_x))
    query_codes = encode_inferences(query_inferences, classes, len(query_x))

    # One k for the queries and the leave-one-out reference, so their mean distances compare.
    k = min(params.k, len(train_x) - 1)
    if len(query_x) == 0:
        empty = {key: np.zeros(0) for key in _SCORE_KEYS}
        return {**empty, "neighbors": np.zeros((0, k), dtype=np.int64)}

    with Workers() as workers:
        search = NeighborSearch(train_x, metric, params.exact_limit, workers)
        reference = _reference_rows(len(train_x), params.reference_rows)
        reference_neighbors, reference_distances = search.query(
            train_x[reference], k, own=reference
        )
        neighbors, distances = search.query(query_x, k)
        del search

        model = Mahalanobis.of_rows(train_x, train_codes, len(classes), params.shrinkage, workers)
        reference_mahalanobis = np.sort(model.to_class(train_x, train_codes))
        mahalanobis = model.to_class(query_x, query_codes)

    reference_mean = np.sort(reference_distances.mean(axis=1))
    scores = evidence(train_codes[neighbors], distances, query_codes, reference_mean, len(classes))
    scores.update(class_evidence(mahalanobis, query_codes, reference_mahalanobis))
    probe = fit_probe(train_x, train_codes, len(classes), metric, reference)
    weight = vote_weight(
        train_codes[reference_neighbors], train_codes[reference], probe, len(classes)
    )
    scores.update(probe_evidence(probe, query_x, query_codes, weight))
    scores["priority"] = combine(backing_inputs(scores), scores["novelty"])
    scores.update(contributions(scores))
    return {**scores, "neighbors": neighbors}


def fit_probe(
    train_x: np.ndarray, train_codes: np.ndarray, n_classes: int, metric: str, rows: np.ndarray
) -> linear_probe.Probe:
    """The linear probe of the labelled training rows, as the metric compares them, with the
    out-of-fold probabilities of ``rows`` (the reference sample the vote's share is chosen
    on) alone."""
    return linear_probe.fit(train_x, train_codes, n_classes, metric=metric, rows=rows)


def vote_weight(
    neighbor_codes: np.ndarray,
    own_codes: np.ndarray,
    probe: linear_probe.Probe,
    n_classes: int,
) -> float:
    """The neighbours' share of an input's backing: of ``VOTE_WEIGHTS``, the mix of the
    neighbour vote (each reference training row voted on by its neighbours
    ``neighbor_codes``, itself left out; p(c) = (votes for c + 1) / (k + C), as ``support``)
    and the probe (its out-of-fold probabilities of the same rows, ``probe.out_of_fold``)
    that best ranks the rows' own labels ``own_codes`` above their other classes
    (:func:`chroma_core.linear_probe.mix_weight`). A check on the training labels alone."""
    n, k = neighbor_codes.shape
    valid = neighbor_codes >= 0
    cells = np.nonzero(valid)[0] * n_classes + neighbor_codes[valid]
    counts = np.bincount(cells, minlength=n * n_classes).reshape(n, n_classes)
    votes = (counts + 1.0) / (k + n_classes)
    weight, _ = linear_probe.mix_weight(votes, probe.out_of_fold, own_codes, VOTE_WEIGHTS)
    return weight


def probe_evidence(
    probe: linear_probe.Probe, x: np.ndarray, query_codes: np.ndarray, weight: float
) -> dict[str, np.ndarray]:
    """``probe_support``: the probe's p(inference | x) (with no inference, its most likely
    class's; an inference no training row carries, none), and ``vote_weight``."""
    p = probe.probabilities(x)
    n = len(x)
    support = np.zeros(n)
    known = query_codes >= 0
    support[known] = p[np.flatnonzero(known), query_codes[known]]
    missing = query_codes == _MISSING
    support[missing] = p[missing].max(axis=1) if missing.any() else 0.0
    return {"probe_support": support, "vote_weight": np.full(n, weight)}


def backing_inputs(scores: dict[str, np.ndarray]) -> np.ndarray:
    """How far the training inputs back each inference: the neighbours' ``support`` and
    the probe's, mixed by ``vote_weight`` (the neighbours alone where there is no probe)."""
    support = scores["support"]
    probe = scores.get("probe_support")
    if probe is None:
        return support
    weight = scores["vote_weight"]
    known = ~np.isnan(probe)
    return np.where(known, weight * support + (1 - weight) * np.where(known, probe, 0.0), support)


def evidence(
    neighbor_codes: np.ndarray,
    distances: np.ndarray,
    query_codes: np.ndarray,
    reference_mean: np.ndarray,
    n_classes: int,
) -> dict[str, np.ndarray]:
    """``support``, ``novelty``, ``disagreement``, ``distance`` and ``distance_pct`` of each
    query from its k neighbours' label codes and distances, given the training rows' own
    mean neighbour distances (``reference_mean``, sorted)."""
    distance = distances.mean(axis=1)
    disagreement = _disagreement(neighbor_codes, query_codes)
    return {
        "support": _support(disagreement, neighbor_codes.shape[1], n_classes),
        "novelty": _novelty(distance, reference_mean),
        "disagreement": disagreement,
        "distance": distance,
        "distance_pct": percentile(reference_mean, distance),
    }


def class_evidence(
    mahalanobis: np.ndarray, query_codes: np.ndarray, reference: np.ndarray
) -> dict[str, np.ndarray]:
    """``mahalanobis`` and its percentile among the training rows' own (``reference``,
    sorted); an inference no training row carries is as far as any."""
    mahalanobis_pct = percentile(reference, mahalanobis)
    mahalanobis_pct[query_codes == _UNKNOWN] = 1.0
    return {"mahalanobis": mahalanobis, "mahalanobis_pct": mahalanobis_pct}


def combine(
    support: np.ndarray, novelty: np.ndarray, confidence: np.ndarray | None = None
) -> np.ndarray:
    """Priority from its evidence, in [0, 1].

    The inference is taken as right when the evidence backs it: ``support`` from the
    training neighbours and, where the model sent outputs, its own ``confidence``, joined
    by their geometric mean so that either one doubting is enough. An input is worth a look
    when its inference is not backed or when it lies outside the training data
    (``novelty``): ``1 - backing * (1 - novelty)``.
    """
    backing = support
    if confidence is not None:
        known = ~np.isnan(confidence)
        backing = np.where(known, np.sqrt(support * np.where(known, confidence, 1.0)), support)
    return np.clip(1.0 - backing * (1.0 - novelty), 0.0, 1.0)


def contributions(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each signal's share of a priority, shares summing to 1 (all 0 at priority 0).

    ``1 - priority`` is a product of backings, so ``-log(1 - priority)`` is a sum:

        -log(1 - priority) = h (-log inputs) + (1 - h) (-log confidence) - log(1 - novelty)

    with ``h`` 1/2 where the model sent outputs, else 1 (and no confidence term). The
    training inputs' term is split between the neighbour vote and the probe as their
    doubts split ``1 - inputs = w (1 - support) + (1 - w) (1 - probe_support)``. Each term
    over the sum is ``from_votes``, ``from_probe``, ``from_confidence``, ``from_novelty``."""
    support, novelty = scores["support"], scores["novelty"]
    n = len(support)
    probe = scores.get("probe_support")
    if probe is None:
        probe = np.full(n, np.nan)
    probe_known = ~np.isnan(probe)
    weight = np.where(probe_known, scores.get("vote_weight", np.ones(n)), 1.0)
    vote_doubt = weight * (1.0 - support)
    probe_doubt = np.where(probe_known, (1.0 - weight) * (1.0 - np.nan_to_num(probe)), 0.0)
    confidence = scores.get("confidence")
    sent = np.zeros(n, dtype=bool) if confidence is None else ~np.isnan(confidence)
    share = np.where(sent, 0.5, 1.0)
    inputs_term = share * -np.log(np.maximum(1.0 - vote_doubt - probe_doubt, _TINY))
    confidence_term = np.zeros(n)
    if confidence is not None:
        confidence_term[sent] = 0.5 * -np.log(np.maximum(confidence[sent], _TINY))
    novelty_term = -np.log(np.maximum(1.0 - novelty, _TINY))
    total = inputs_term + confidence_term + novelty_term
    doubt = vote_doubt + probe_doubt
    vote_share = np.divide(vote_doubt, doubt, out=weight.copy(), where=doubt > 0)

    def part(term: np.ndarray) -> np.ndarray:
        return np.divide(term, total, out=np.zeros(n), where=total > 0)

    return {
        "from_votes": part(inputs_term * vote_share),
        "from_probe": part(inputs_term * (1.0 - vote_share)),
        "from_confidence": part(confidence_term),
        "from_novelty": part(novelty_term),
    }


def filled_distances(distances: np.ndarray) -> np.ndarray:
    """Distances with the slots no neighbour filled (the search found fewer than k) given
    the row's farthest found distance, so that the mean is that of the found ones; a row
    with none found is infinitely far."""
    missing = ~np.isfinite(distances)
    if not missing.any():
        return distances
    farthest = np.where(missing, -np.inf, distances).max(axis=1, keepdims=True)
    return np.where(missing, np.where(np.isfinite(farthest), farthest, np.inf), distances)


def training_version(seqs, labelled: np.ndarray) -> str:
    """A short name for the labelled training rows: rows are never changed in place, only
    added and deleted, so their seqs name the set, and so what any score was computed from."""
    used = np.asarray(seqs, dtype=np.int64)[labelled]
    digest = hashlib.blake2b(np.sort(used).tobytes(), digest_size=8)
    return digest.hexdigest()


def _support(disagreement: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """The neighbours' vote for the inference, add-one smoothed over the classes, so that
    10 of 10 votes count for more than 1 of 1 and no inference is ruled out entirely."""
    agreeing = np.rint((1.0 - disagreement) * k)
    return (agreeing + 1.0) / (k + n_classes)


def _novelty(distance: np.ndarray, reference_sorted: np.ndarray) -> np.ndarray:
    """0 up to the training rows' own ``NOVELTY_QUANTILE`` neighbour distance, rising
    linearly to 1 at twice that distance."""
    edge = float(np.quantile(reference_sorted, NOVELTY_QUANTILE))
    if edge <= 0.0:  # the training rows sit on top of each other
        return (distance > 0.0).astype(np.float64)
    return np.clip(distance / edge - 1.0, 0.0, 1.0)


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


def encode_inferences(inferences: np.ndarray, classes: np.ndarray, n: int) -> np.ndarray:
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


def _reference_rows(n: int, limit: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def percentile(sorted_reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_reference, values, side="right") / len(sorted_reference)


def _disagreement(neighbor_codes: np.ndarray, query_codes: np.ndarray) -> np.ndarray:
    result = (neighbor_codes != query_codes[:, None]).mean(axis=1)
    missing = query_codes == _MISSING
    if missing.any():
        result[missing] = 1.0 - _mode_share(neighbor_codes[missing])
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


class Mahalanobis:
    """Distances to class means under one shrunk, pooled within-class covariance.

    ``means`` (classes, d) and ``centre`` (d,) are the class means and the overall mean of
    ``n`` rows, ``within`` their pooled within-class scatter (a sum of outer products), and
    ``total()`` their scatter about ``centre``, asked for only when ``within`` is empty.
    """

    def __init__(
        self,
        means: np.ndarray,
        centre: np.ndarray,
        within: np.ndarray,
        total: Callable[[], np.ndarray],
        n: int,
        shrinkage: float,
        workers: Workers,
        tiny: float,
    ) -> None:
        n_classes, dim = means.shape
        self.workers = workers
        self.means = means
        # Centring keeps the expanded squared distances in to_class free of cancellation
        # when the embeddings sit far from the origin.
        self.centre = centre
        covariance = within / max(n - n_classes, 1)
        if np.trace(covariance) <= tiny:
            # Every class is a singleton or repeats one point: with no within-class spread to
            # learn from, the spread of the data as a whole stands in.
            covariance = total() / max(n - 1, 1)
        if np.trace(covariance) <= tiny:
            covariance = np.eye(dim)
        scale = np.trace(covariance) / dim
        covariance = (1.0 - shrinkage) * covariance + shrinkage * scale * np.eye(dim)

        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        # Only reachable with shrinkage 0 and a rank-deficient covariance: a floor keeps
        # the unseen directions very far instead of infinitely far.
        floor = max(eigenvalues.max(), 0.0) * dim * np.finfo(np.float64).eps
        eigenvalues = np.maximum(eigenvalues, max(floor, np.finfo(np.float64).tiny))
        self.whiten = eigenvectors / np.sqrt(eigenvalues)
        self.white_means = (self.means - self.centre) @ self.whiten
        self.white_means_sq = np.einsum("ij,ij->i", self.white_means, self.white_means)

    @classmethod
    def of_rows(
        cls, x: np.ndarray, codes: np.ndarray, n_classes: int, shrinkage: float, workers: Workers
    ) -> Mahalanobis:
        """The model of the rows ``x`` with class ``codes``."""
        n = len(x)
        sums = group_sums(x, codes, n_classes, workers)
        means = sums / np.bincount(codes, minlength=n_classes)[:, None]
        centre = sums.sum(axis=0) / n
        within = _scatter(x, codes, means, workers)
        everywhere = np.zeros(n, dtype=np.int64)
        total = lambda: _scatter(x, everywhere, centre[None, :], workers)  # noqa: E731
        return cls(means, centre, within, total, n, shrinkage, workers, tiny(x))

    @classmethod
    def of_moments(cls, moments: Moments, shrinkage: float, workers: Workers) -> Mahalanobis:
        """The model of rows summed up page by page in ``moments``."""
        n = int(moments.counts.sum())
        means = moments.sums / moments.counts[:, None]
        centre = moments.sums.sum(axis=0) / n
        # Σ (x-m)(x-m)ᵀ over a class is Σ (x-s)(x-s)ᵀ less n (m-s)(m-s)ᵀ, for any shift s
        shift = moments.shift if moments.shift is not None else np.zeros(len(centre))
        apart = means - shift
        within = moments.second - (apart * moments.counts[:, None]).T @ apart
        off = centre - shift
        total = lambda: moments.second - n * np.outer(off, off)  # noqa: E731
        magnitude = moments.magnitude
        dim = means.shape[1]
        return cls(means, centre, within, total, n, shrinkage, workers,
                   magnitude**2 * dim * 1e-24)  # fmt: skip

    def using(self, workers: Workers) -> Mahalanobis:
        """The same model computing with ``workers`` (a model kept beyond the block of the
        workers it was fitted with)."""
        model = copy.copy(self)
        model.workers = workers
        return model

    def to_class(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Distance of each row to the mean of its class, or to the nearest mean if unknown."""
        result = np.empty(len(x))
        n_classes, dim = self.white_means.shape

        def distances(chunk: slice) -> None:
            white = x[chunk].astype(np.float64)
            white -= self.centre
            white = white @ self.whiten
            chunk_codes = codes[chunk]
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
            result[chunk] = out

        self.workers.map(distances, self.workers.blocks(len(x), 8 * 3 * max(n_classes, dim)))
        return result


def tiny(x: np.ndarray) -> float:
    """Variance this small relative to the data's magnitude is rounding noise, not spread."""
    magnitude = max(abs(float(x.max())), abs(float(x.min()))) if x.size else 0.0
    return (magnitude**2) * x.shape[1] * 1e-24


def _scatter(x: np.ndarray, codes: np.ndarray, means: np.ndarray, workers: Workers) -> np.ndarray:
    """Sum over rows of (x - mean of its code)(x - mean of its code)ᵀ."""

    def scatter(chunk: slice) -> np.ndarray:
        centred = x[chunk].astype(np.float64)
        centred -= means[codes[chunk]]
        return centred.T @ centred

    return np.sum(workers.map(scatter, workers.blocks(len(x), x.shape[1] * 16)), 0)


class Moments:
    """Class sums and the second moment of rows added a page at a time, about a shift (the
    first page's mean) that keeps the float64 sums free of cancellation."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.sums = np.zeros((0, dim))
        self.counts = np.zeros(0, dtype=np.int64)
        self.second = np.zeros((dim, dim))
        self.shift: np.ndarray | None = None
        self.magnitude = 0.0

    def add(self, x: np.ndarray, codes: np.ndarray, n_classes: int, workers: Workers) -> None:
        """Rows ``x`` of classes ``codes`` (below ``n_classes``, the classes seen so far)."""
        if not len(x):
            return
        if self.shift is None:
            self.shift = x.mean(axis=0, dtype=np.float64)
        grown = n_classes - len(self.counts)
        if grown > 0:
            self.sums = np.vstack([self.sums, np.zeros((grown, self.dim))])
            self.counts = np.r_[self.counts, np.zeros(grown, dtype=np.int64)]
        self.sums += group_sums(x, codes, n_classes, workers)
        self.counts += np.bincount(codes, minlength=n_classes)
        self.second += _scatter(x, np.zeros(len(x), dtype=np.int64), self.shift[None], workers)
        self.magnitude = max(self.magnitude, float(np.abs(x).max()))

    def reorder(self, order: np.ndarray) -> None:
        """Classes renumbered: class ``order[i]`` becomes class ``i``."""
        self.sums, self.counts = self.sums[order], self.counts[order]
