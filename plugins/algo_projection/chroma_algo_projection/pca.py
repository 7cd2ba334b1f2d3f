"""Principal component analysis onto two axes, in numpy.

The axes are fitted on at most ``FIT_ROWS`` rows drawn at random (their estimate from
25,000 rows differs from the one from all rows by sampling noise of order 1/sqrt(25,000),
far below what a map shows), then every row is mapped onto them. The products run in
single precision, several times faster than double on BLAS, with sums kept in double.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: rows the axes are fitted on at most
FIT_ROWS = 25_000
#: up to this dimension the covariance is formed and decomposed exactly
EXACT_DIM = 512
#: columns beyond the two wanted that the subspace iteration carries, and its iterations
OVERSAMPLE = 14
ITERATIONS = 10
#: rows centred at a time while mapping
SLICE_ROWS = 16384


@dataclass
class Components:
    """The two leading principal axes of some rows and the map of those rows onto them."""

    #: (n, 2) float32: each row's coordinates along ``axes``
    coordinates: np.ndarray
    #: (2, d) float64 unit vectors, sign fixed so the largest loading of each is positive
    axes: np.ndarray
    #: (d,) float64 mean of the rows fitted on
    mean: np.ndarray
    #: variance along each axis (sample variance, n - 1)
    variance: np.ndarray
    #: share of the total variance each axis explains
    variance_ratio: np.ndarray
    #: "exact" (covariance eigendecomposition) or "subspace iteration"
    solver: str
    #: rows the axes were fitted on
    fitted_rows: int


def principal_components(
    x: np.ndarray, *, seed: int = 0, fit_rows: int = FIT_ROWS, exact_dim: int = EXACT_DIM
) -> Components:
    """The first two principal components of the rows of ``x`` (n, d).

    Up to ``exact_dim`` dimensions the d x d covariance is decomposed exactly; above it a
    seeded block subspace iteration on the covariance (never formed) finds the leading
    axes, which agrees with the exact answer to working precision when the spectrum has a
    gap after its second value (without one, the two axes are not unique and any plane of
    nearly the same variance is as good a map). Fewer than two rows or dimensions give
    zero coordinates on the missing axes.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array, got shape {x.shape}")
    n, d = x.shape
    if n <= fit_rows:
        fit = x.astype(np.float32, copy=True)
    else:
        rng = np.random.default_rng(seed)
        fit = np.asarray(x[np.sort(rng.choice(n, fit_rows, replace=False))], dtype=np.float32)
    mean = fit.mean(axis=0, dtype=np.float64) if len(fit) else np.zeros(d)
    fit -= mean.astype(np.float32)
    total = float(np.einsum("ij,ij->", fit, fit, dtype=np.float64))
    if len(fit) == 0 or d == 0:
        values, vectors, solver = np.zeros(0), np.zeros((d, 0)), "exact"
    elif d <= max(exact_dim, 2 + OVERSAMPLE):
        values, vectors = _exact(fit)
        solver = "exact"
    else:
        values, vectors = _subspace_iteration(fit, seed)
        solver = "subspace iteration"
    keep = min(2, vectors.shape[1])
    axes = np.zeros((2, d))
    axes[:keep] = vectors[:, :keep].T
    scatter = np.zeros(2)
    scatter[:keep] = np.clip(values[:keep], 0.0, None)
    for axis in axes:
        if axis.any() and axis[np.argmax(np.abs(axis))] < 0:
            axis *= -1
    coordinates = np.empty((n, 2), np.float32)
    mean32, axes32 = mean.astype(np.float32), axes.T.astype(np.float32)
    for start in range(0, n, SLICE_ROWS):
        centred = np.subtract(x[start : start + SLICE_ROWS], mean32, dtype=np.float32)
        coordinates[start : start + SLICE_ROWS] = centred @ axes32
    ratio = scatter / total if total > 0 else np.zeros(2)
    variance = scatter / max(len(fit) - 1, 1)
    return Components(coordinates, axes, mean, variance, ratio, solver, len(fit))


def _exact(centred: np.ndarray):
    scatter = (centred.T @ centred).astype(np.float64)
    values, vectors = np.linalg.eigh((scatter + scatter.T) / 2)
    return values[::-1], vectors[:, ::-1]


def _subspace_iteration(centred: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((centred.shape[1], 2 + OVERSAMPLE)))
    for _ in range(ITERATIONS):
        product = centred.T @ (centred @ basis.astype(np.float32))
        basis, _ = np.linalg.qr(product.astype(np.float64))
    # Rayleigh-Ritz: the best axes within the subspace found
    projected = (centred @ basis.astype(np.float32)).astype(np.float64)
    small = projected.T @ projected
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    return values[::-1], basis @ vectors[:, ::-1]
