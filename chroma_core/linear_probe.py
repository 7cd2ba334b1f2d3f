"""A linear probe: class probabilities from one linear model of all the labelled
embeddings, and out-of-fold probabilities for the rows it was fitted on.

The model is regularised linear discriminant analysis: each class a Gaussian with its own
mean and a covariance shared by all, shrunk towards a multiple of the identity,

    Sigma_a = (1 - a) S + a (tr S / d) I,
    z_c(x)  = x' Sigma_a^-1 mu_c - mu_c' Sigma_a^-1 mu_c / 2 + log pi_c,
    p(c|x)  = softmax_c(z_c(x) / T).

Its boundaries are linear, as those of multinomial logistic regression, and it is fitted
in closed form from sufficient statistics (counts, class sums, the scatter matrix): the
fit without one fold is the statistics of all rows less those of the fold, so K-fold
out-of-fold probabilities cost K solves of a d x d system, not K optimisations, and the
statistics can be summed a page at a time. The shrinkage ``a`` and the temperature ``T``
are chosen by the out-of-fold log loss of the given labels over a fixed grid, on at most
``CHECK_ROWS`` rows (an inner check on the training labels alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOLDS = 5
SHRINKAGES = (0.01, 0.05, 0.2, 0.5, 0.8)
#: temperatures tried, then refined around the best: log-spaced
TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 25))
#: probabilities are kept away from 0 so a log loss stays finite
EPSILON = 1e-9
#: scores this far below a row's best count as that far: exp(-60) is 1e-26
FLOOR_SCORE = 60.0
_BLOCK_ROWS = 65_536
#: rows at most the shrinkage and temperature are chosen on
CHECK_ROWS = 20_000


@dataclass
class Probe:
    """A fitted probe: ``out_of_fold`` (n, C) holds each fitted row's probabilities from
    the fit without its fold; :meth:`probabilities` scores new rows with the fit on all."""

    n_classes: int
    shrinkage: float
    temperature: float
    folds: int
    #: the mean out-of-fold log loss of the given labels at the chosen settings
    log_loss: float
    out_of_fold: np.ndarray
    weights: np.ndarray  # (d, C)
    bias: np.ndarray  # (C,)
    metric: str = "l2"

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.n_classes))
        for start in range(0, len(x), _BLOCK_ROWS):
            block = as_compared(np.asarray(x[start : start + _BLOCK_ROWS], np.float64), self.metric)
            out[start : start + len(block)] = _softmax_in_place(
                (block @ self.weights + self.bias) / self.temperature
            )
        return out


@dataclass
class _Statistics:
    counts: np.ndarray  # (C,)
    sums: np.ndarray  # (C, d)
    scatter: np.ndarray  # (d, d): the sum of x x'

    def __sub__(self, other: _Statistics) -> _Statistics:
        return _Statistics(
            self.counts - other.counts, self.sums - other.sums, self.scatter - other.scatter
        )


def fit(
    x: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    *,
    metric: str = "l2",
    folds: int = FOLDS,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> Probe:
    """Fit a probe on rows ``x`` (n, d) of classes ``codes`` (n,) in ``0..n_classes-1``, as
    ``metric`` compares them (unit length for cosine, as they are for l2 and ip).

    ``out_of_fold`` holds the out-of-fold probabilities of every row, or of ``rows`` alone
    (indices, in their order) when given: (len(rows), C) instead of (n, C), for callers that
    need only a sample. Folds are stratified by class (each class's rows dealt out in a
    seeded random order). ``ValueError`` when fewer than two classes have rows or a row is
    not finite."""
    x = as_compared(np.asarray(x), metric)
    codes = np.asarray(codes, dtype=np.int64)
    n, d = x.shape
    if len(codes) != n:
        raise ValueError(f"codes must have one value per row of x: {len(codes)} vs {n}")
    if len(np.unique(codes)) < 2:
        raise ValueError("a linear probe needs rows of at least two classes")
    folds = int(max(2, min(folds, np.bincount(codes, minlength=n_classes).max(), n)))
    fold_of = _folds(codes, folds, seed)
    # centred on the overall mean: the scatter of centred rows loses less to rounding
    centre = x.mean(axis=0, dtype=np.float64)
    per_fold = [_statistics(x, codes, fold_of == f, n_classes, centre) for f in range(folds)]
    total = per_fold[0]
    for part in per_fold[1:]:
        total = _Statistics(
            total.counts + part.counts, total.sums + part.sums, total.scatter + part.scatter
        )
    # each fold's fit at every shrinkage: d x C weights, small
    fits = [[_linear(total - per_fold[f], a) for a in SHRINKAGES] for f in range(folds)]

    # the settings are chosen on a sample: the choice needs far fewer rows than the fit,
    # and scores of every row at every shrinkage would take memory for nothing
    check = _sample(n, CHECK_ROWS)
    check_scores = [
        _out_of_fold(x, check, fold_of, fits, i, centre) for i in range(len(SHRINKAGES))
    ]
    best: tuple[int, float, float] | None = None
    for i, scores in enumerate(check_scores):
        temperature, loss = _temperature(scores, codes[check])
        if best is None or loss < best[2] - 1e-12:
            best = (i, temperature, loss)
    assert best is not None
    chosen, temperature, loss = best
    wanted = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    scores = _out_of_fold(x, wanted, fold_of, fits, chosen, centre)
    scores /= temperature
    out_of_fold = _softmax_in_place(scores)
    weights, bias = _linear(total, SHRINKAGES[chosen])
    # scores of raw rows: fold the centring into the bias
    bias = bias - centre @ weights
    return Probe(n_classes, SHRINKAGES[chosen], temperature, folds, loss, out_of_fold, weights,
                 bias, metric)  # fmt: skip


def _out_of_fold(
    x: np.ndarray,
    rows: np.ndarray,
    fold_of: np.ndarray,
    fits: list,
    shrinkage: int,
    centre: np.ndarray,
) -> np.ndarray:
    """(len(rows), C) scores of ``rows``, each from the fit without its fold, at the
    ``shrinkage``-th setting; a block of rows at a time."""
    n_classes = fits[0][0][0].shape[1]
    out = np.empty((len(rows), n_classes))
    for start in range(0, len(rows), _BLOCK_ROWS):
        part = rows[start : start + _BLOCK_ROWS]
        block = _centred(x, part, centre)
        folds = fold_of[part]
        for f in np.unique(folds):
            mine = np.flatnonzero(folds == f)
            weights, bias = fits[f][shrinkage]
            out[start + mine] = block[mine] @ weights + bias
    return out


def as_compared(x: np.ndarray, metric: str) -> np.ndarray:
    """Rows as ``metric`` compares them: unit length for cosine, as they are otherwise."""
    if metric != "cosine":
        return x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _sample(n: int, limit: int) -> np.ndarray:
    """Every row, or a seeded sample of ``limit`` of them, in order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def _folds(codes: np.ndarray, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(codes), dtype=np.int64)
    for c in np.unique(codes):
        members = np.flatnonzero(codes == c)
        rng.shuffle(members)
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of


def _centred(x: np.ndarray, rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return np.asarray(x[rows], dtype=np.float64) - centre


def _statistics(
    x: np.ndarray, codes: np.ndarray, mask: np.ndarray, n_classes: int, centre: np.ndarray
) -> _Statistics:
    d = x.shape[1]
    counts = np.bincount(codes[mask], minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, d))
    scatter = np.zeros((d, d))
    rows = np.flatnonzero(mask)
    for start in range(0, len(rows), _BLOCK_ROWS):
        part = rows[start : start + _BLOCK_ROWS]
        block = _centred(x, part, centre)
        # class sums: the block sorted by class, each class's run summed
        order = np.argsort(codes[part], kind="stable")
        ordered = codes[part][order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sums[ordered[starts]] += np.add.reduceat(block[order], starts, axis=0)
        scatter += block.T @ block
    return _Statistics(counts, sums, scatter)


def _linear(stats: _Statistics, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """The discriminant's weights (d, C) and bias (C,) from ``stats``."""
    counts = stats.counts
    present = counts > 0
    n = counts.sum()
    d = stats.scatter.shape[0]
    means = np.divide(stats.sums, counts[:, None], out=np.zeros_like(stats.sums),
                      where=present[:, None])  # fmt: skip
    within = stats.scatter - (means * counts[:, None]).T @ means
    covariance = within / max(n - present.sum(), 1.0)
    scale = max(np.trace(covariance) / d, 1e-12)
    shrunk = (1 - shrinkage) * covariance + shrinkage * scale * np.eye(d)
    weights = np.linalg.solve(shrunk, means.T)
    bias = -0.5 * np.einsum("cd,dc->c", means, weights)
    log_prior = np.full(len(counts), -np.inf)
    log_prior[present] = np.log(counts[present] / n)
    bias = bias + log_prior
    # a class with no rows in this fit gets no probability: a large negative score
    bias[~present] = -1e12
    weights[:, ~present] = 0.0
    return weights, bias


def _temperature(scores: np.ndarray, codes: np.ndarray) -> tuple[float, float]:
    """The temperature of the grid, refined once around the best, with the least mean log
    loss of ``codes`` under softmax(scores / T)."""
    candidates = TEMPERATURES
    best_t, best_loss = 1.0, np.inf
    for _ in range(2):
        for t in candidates:
            loss = _log_loss(scores / t, codes)
            if loss < best_loss:
                best_t, best_loss = float(t), loss
        candidates = best_t * np.exp(np.linspace(-0.15, 0.15, 7))
    return best_t, best_loss


def _log_loss(scores: np.ndarray, codes: np.ndarray) -> float:
    shifted = _shifted(scores)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_z - shifted[np.arange(len(codes)), codes]))


def _shifted(scores: np.ndarray) -> np.ndarray:
    """Scores less each row's largest, no lower than -FLOOR_SCORE: exp of less would be a
    subnormal number, many times slower to compute, and weighs nothing beside exp(0)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    return np.maximum(shifted, -FLOOR_SCORE, out=shifted)


def _softmax_in_place(scores: np.ndarray) -> np.ndarray:
    # fresh pages cost more than the arithmetic here
    scores -= scores.max(axis=1, keepdims=True)
    np.maximum(scores, -FLOOR_SCORE, out=scores)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return np.maximum(scores, EPSILON, out=scores)


#: rows at most in the check that mixes the probe with another signal
MIX_CHECK_ROWS = 20_000


def mix_weight(
    first: np.ndarray, second: np.ndarray, codes: np.ndarray, weights: tuple[float, ...]
) -> tuple[float, dict[float, float]]:
    """The weight w of ``weights`` for which ``w first + (1 - w) second`` (two (n, C)
    matrices of class probabilities, each out of sample for its row) best tells each row's
    own class ``codes`` from the others: the AUROC of p(own class) against p(other class)
    over every (row, class) pair, on at most ``MIX_CHECK_ROWS`` rows. A ranking, so that
    a signal is not chosen for being better calibrated, only for ranking labels better; a
    tie goes to the larger w. Returns the weight and the AUROC of each."""
    n, n_classes = first.shape
    rows = _sample(n, MIX_CHECK_ROWS)
    own = np.zeros((len(rows), n_classes), dtype=bool)
    own[np.arange(len(rows)), codes[rows]] = True
    quality = {}
    for w in weights:
        mixed = w * first[rows] + (1 - w) * second[rows]
        quality[w] = _auroc(mixed[own], mixed[~own])
    best = max(weights, key=lambda w: (quality[w], w))
    return best, quality


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half."""
    if len(positive) == 0 or len(negative) == 0:
        return 0.5
    values = np.concatenate([positive, negative])
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    # average ranks over ties
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, ends - starts)
    n_pos = len(positive)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * len(negative)))
