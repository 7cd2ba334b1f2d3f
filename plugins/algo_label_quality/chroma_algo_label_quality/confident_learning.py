"""Training labels that are likely wrong: confident learning on out-of-fold class
probabilities, from the votes of each row's k nearest other rows and, when given, a linear
probe's out-of-fold probabilities (:mod:`chroma_core.linear_probe`), mixed with the weight
that best ranks the given labels above the others.

Pure numpy. The neighbour search is ``chroma_core.neighbours.knn``: an exact chunked scan on
small sets and checked inverted lists on large ones. The method is written up in the
"Label quality" section of ``docs/priority.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chroma_core import linear_probe
from chroma_core.neighbor_search import EXACT_LIMIT, knn

METRICS = ("l2", "cosine", "ip")
WEIGHTINGS = ("distance", "uniform")
# Pseudo-votes spread evenly over the classes, so no class has probability 0.
SMOOTHING = 1.0
# Distance weights are 1 / (d / mean d + FLOOR), free of the embedding's scale: an exact
# duplicate weighs 11 times a neighbour at the row's mean distance, never infinitely more.
FLOOR = 0.1
# Two probabilities this close count as equal (thresholds are means of the same values).
TOLERANCE = 1e-9
_BLOCK_BYTES = 64 * 2**20


#: the weights of the neighbour vote tried against the probe (1 - weight)
VOTE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class LabelIssues:
    """Per labelled row: the given and suggested class (codes into ``classes``),
    ``label_quality`` p(given | x), ``issue_score`` 1 - p(given | x), ``is_issue``,
    ``neighbors`` (n, k) int64 row indices that voted (-1 where fewer voted), and the two
    signals' own p(given | x): ``vote_quality`` and ``probe_quality`` (None without a
    probe). Per class: ``thresholds`` t_c and ``counts``. ``search`` says how neighbours
    were found; ``vote_weight`` is the neighbour vote's share of the mix and ``log_loss``
    the mean log loss of the given labels under each signal and the mix."""

    classes: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    label_quality: np.ndarray
    issue_score: np.ndarray
    is_issue: np.ndarray
    neighbors: np.ndarray
    thresholds: np.ndarray
    counts: np.ndarray
    k: int
    search: str
    vote_quality: np.ndarray | None = None
    probe_quality: np.ndarray | None = None
    vote_weight: float = 1.0
    log_loss: dict | None = None
    #: the fitted probe, when one was
    probe: linear_probe.Probe | None = None


def label_issues(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    metric: str = "l2",
    k: int = 10,
    weighting: str = "distance",
    exclude_duplicates: bool = False,
    exact_limit: int = EXACT_LIMIT,
    probe: bool = True,
) -> LabelIssues:
    """Score how likely each row's label is wrong from the labels of its k nearest other
    rows and, with ``probe``, a linear probe's out-of-fold probabilities (fitted on the
    rows as the metric compares them: unit length for cosine).

    ``x`` is (n, d), ``labels`` (n,) with no None and at least two distinct values. With
    ``exclude_duplicates`` rows whose embedding is identical to the row's (distance 0) do not
    vote for it either. Raises ``ValueError`` naming the problem.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a float (n, d) matrix, got {x.dtype} of shape {x.shape}")
    labels = np.asarray(labels, dtype=object)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have one value per row of x: {labels.shape} vs {len(x)}")
    if any(label is None for label in labels):
        raise ValueError("labels contain None: leave unlabelled rows out")
    classes, given = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"label quality needs at least 2 classes, got {len(classes)}")
    n = len(x)
    k = int(min(k, n - 1))
    fetch = min(n - 1, 2 * k) if exclude_duplicates else k
    found, distances = knn(x, x, fetch, metric, exclude_self=True, exact_limit=exact_limit)
    search = "exact" if n * n <= exact_limit else "inverted lists"
    fitted = linear_probe.fit(x, given, len(classes), metric=metric) if probe else None
    issues = from_neighbors(
        classes, given, found, distances, k=k, weighting=weighting,
        exclude_duplicates=exclude_duplicates, search=search,
        probe=None if fitted is None else fitted.out_of_fold,
    )  # fmt: skip
    issues.probe = fitted
    return issues


def from_neighbors(
    classes: np.ndarray,
    given: np.ndarray,
    found: np.ndarray,
    distances: np.ndarray,
    *,
    k: int,
    weighting: str,
    exclude_duplicates: bool,
    search: str,
    probe: np.ndarray | None = None,
) -> LabelIssues:
    """Confident learning on the votes of neighbours found by any search: ``found`` (n, m)
    row indices nearest first, -1 where fewer were found, ``distances`` theirs; ``given``
    the rows' class codes into ``classes``. The first ``k`` that may vote do. With
    ``probe`` (n, C) out-of-fold probabilities, each row's p(c | x) is the mix
    ``w votes + (1 - w) probe`` whose ``w`` in ``VOTE_WEIGHTS`` best ranks each row's given
    label above its other classes (:func:`chroma_core.linear_probe.mix_weight`)."""
    n, n_classes = len(given), len(classes)
    voters = found >= 0
    if exclude_duplicates:
        voters &= distances > 0
    voters &= np.cumsum(voters, axis=1) <= k
    front = np.argsort(~voters, axis=1, kind="stable")[:, :k]
    neighbors = np.take_along_axis(found, front, axis=1)
    distances = np.take_along_axis(distances, front, axis=1)
    voters = np.take_along_axis(voters, front, axis=1)
    neighbors[~voters] = -1
    del found, front

    weights = _weights(distances, voters, weighting)
    votes_of = np.where(voters, given[np.maximum(neighbors, 0)], 0)
    blocks = _blocks(n, n_classes)

    vote_quality = np.empty(n)
    for block in blocks:
        p = _probabilities(votes_of[block], weights[block], n_classes)
        vote_quality[block] = p[np.arange(len(p)), given[block]]
    vote_weight, losses = 1.0, None
    probe_quality = None
    if probe is not None:
        probe_quality = probe[np.arange(n), given]
        losses = {w: _mix_loss(w, vote_quality, probe_quality) for w in VOTE_WEIGHTS}
        check = linear_probe._sample(n, linear_probe.MIX_CHECK_ROWS)
        votes = _probabilities(votes_of[check], weights[check], n_classes)
        vote_weight, _ = linear_probe.mix_weight(votes, probe[check], given[check], VOTE_WEIGHTS)

    def mixed(block: slice) -> np.ndarray:
        p = _probabilities(votes_of[block], weights[block], n_classes)
        if probe is None:
            return p
        return vote_weight * p + (1.0 - vote_weight) * probe[block]

    # p(given) of the mix is the mix of each signal's p(given)
    label_quality = vote_quality
    if probe_quality is not None:
        label_quality = vote_weight * vote_quality + (1.0 - vote_weight) * probe_quality
    counts = np.bincount(given, minlength=n_classes)
    thresholds = np.bincount(given, weights=label_quality, minlength=n_classes) / counts

    suggested = np.empty(n, dtype=np.int64)
    is_issue = np.empty(n, dtype=bool)
    for block in blocks:
        p = mixed(block)
        rows, own = np.arange(len(p)), given[block]
        eligible = p >= thresholds[None, :] - TOLERANCE
        confident = np.where(eligible, p, -1.0)
        best = confident.argmax(axis=1)
        # a tie with the given label goes to the given label
        keep = eligible[rows, own] & (confident[rows, own] >= confident[rows, best] - TOLERANCE)
        best = np.where(keep, own, best)
        any_eligible = eligible.any(axis=1)
        suggested[block] = np.where(any_eligible, best, p.argmax(axis=1))
        is_issue[block] = any_eligible & (best != own)

    return LabelIssues(
        classes=classes,
        given=given,
        suggested=suggested,
        label_quality=label_quality,
        issue_score=1.0 - label_quality,
        is_issue=is_issue,
        neighbors=neighbors,
        thresholds=thresholds,
        counts=counts,
        k=k,
        search=search,
        vote_quality=vote_quality,
        probe_quality=probe_quality,
        vote_weight=vote_weight,
        log_loss=None if losses is None else {
            "votes": losses[1.0], "probe": losses[0.0], "mixed": losses[vote_weight],
        },
    )  # fmt: skip


def _mix_loss(weight: float, votes: np.ndarray, probe: np.ndarray) -> float:
    """The mean log loss of the given labels when p(given) is the mix."""
    return float(-np.mean(np.log(np.maximum(weight * votes + (1 - weight) * probe, 1e-12))))


def _weights(distances: np.ndarray, voters: np.ndarray, weighting: str) -> np.ndarray:
    """Each voter's weight, scaled so a row's weights sum to its number of voters."""
    count = voters.sum(axis=1, keepdims=True).astype(np.float64)
    if weighting == "uniform":
        return voters.astype(np.float64)
    d = np.where(voters, distances, 0.0)
    # ip distances can be negative: shift such rows so their nearest voter is at 0
    low = np.where(voters, d, np.inf).min(axis=1, keepdims=True)
    d = np.where(voters, d - np.minimum(np.where(np.isfinite(low), low, 0.0), 0.0), 0.0)
    mean = d.sum(axis=1, keepdims=True) / np.maximum(count, 1.0)
    relative = np.divide(d, mean, out=np.zeros_like(d), where=mean > 0)
    w = np.where(voters, 1.0 / (relative + FLOOR), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w * count, total, out=np.zeros_like(w), where=total > 0)


def _probabilities(codes: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """p(c | x) per row: weighted votes plus SMOOTHING pseudo-votes spread over the classes."""
    n, k = codes.shape
    flat = (np.arange(n)[:, None] * n_classes + codes).ravel()
    votes = np.bincount(flat, weights=weights.ravel(), minlength=n * n_classes)
    votes = votes.reshape(n, n_classes)
    return (votes + SMOOTHING / n_classes) / (weights.sum(axis=1, keepdims=True) + SMOOTHING)


def _blocks(n: int, n_classes: int) -> list[slice]:
    step = max(1, _BLOCK_BYTES // (8 * n_classes))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]
