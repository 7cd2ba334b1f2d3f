"""Two-sample drift statistics on embedding matrices: the numerical core, pure numpy.

Every function takes float rows in Euclidean geometry (the caller normalises them first in a
cosine space) and works on samples whose size the caller bounds, so its cost is bounded too.
The meaning and the limits of each statistic are written up in the package README.
"""

from __future__ import annotations

import numpy as np

# Rows of the pooled sample whose pairwise distances set the kernel bandwidth.
BANDWIDTH_ROWS = 1000
# Rows of one block of a distance or kernel matrix: 1024 x 4000 float64 is 32 MiB.
BLOCK_ROWS = 1024


def median_distance(z: np.ndarray, rng: np.random.Generator) -> float:
    """The median Euclidean distance between distinct rows of ``z`` (on a sample of them)."""
    if len(z) > BANDWIDTH_ROWS:
        z = z[np.sort(rng.choice(len(z), BANDWIDTH_ROWS, replace=False))]
    upper = np.triu_indices(len(z), k=1)
    distances = np.sqrt(_squared_distances(z, z)[upper])
    positive = distances[distances > 0]
    # Mostly repeated rows: any positive scale will do, the kernel is then nearly constant.
    return float(np.median(positive)) if len(positive) else 1.0


def mmd_test(
    x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """``(mmd2, p_value)``: the unbiased squared MMD of ``x`` and ``y`` under an RBF kernel
    whose bandwidth is the median pooled distance, and its permutation p-value.

    ``p_value = (1 + #{permuted >= observed}) / (1 + permutations)``. Needs two rows a side.
    """
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("the MMD needs at least two rows on each side")
    z = np.vstack([x, y]).astype(np.float64)
    z -= z.mean(axis=0)
    total = n + m
    bandwidth = median_distance(z, rng)
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)
    # Column 0 is the observed split, then one column per permutation, then all ones: one
    # pass over the kernel matrix gives every split's block sums.
    member = np.zeros((total, permutations + 2))
    member[:n, 0] = 1.0
    for column in range(1, permutations + 1):
        member[rng.permutation(total)[:n], column] = 1.0
    member[:, -1] = 1.0
    kernel_member = np.empty_like(member)
    squared_norms = np.einsum("ij,ij->i", z, z)
    for start in range(0, total, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, total)
        block = _squared_distances(z[start:stop], z, squared_norms[start:stop], squared_norms)
        np.multiply(block, -gamma, out=block)
        np.exp(block, out=block)
        kernel_member[start:stop] = block @ member
    splits = member[:, :-1]
    row_sums = kernel_member[:, -1]
    within_x = np.einsum("ij,ij->j", splits, kernel_member[:, :-1])
    x_to_all = splits.T @ row_sums
    across = x_to_all - within_x
    within_y = row_sums.sum() - 2.0 * x_to_all + within_x
    # The kernel's diagonal is 1: the unbiased estimate leaves it out.
    mmd2 = (within_x - n) / (n * (n - 1)) + (within_y - m) / (m * (m - 1)) - 2.0 * across / (n * m)
    observed = float(mmd2[0])
    # A relative tolerance keeps permutations equal to the observed split up to rounding
    # counted as equal.
    tolerance = 1e-12 * max(abs(observed), 1e-300) + 1e-15
    exceed = int(np.count_nonzero(mmd2[1:] >= observed - tolerance))
    return observed, (1.0 + exceed) / (1.0 + permutations)


def nn_distances(queries: np.ndarray, reference: np.ndarray, *, leave_one_out: bool) -> np.ndarray:
    """Euclidean distance of each query to its nearest reference row. With
    ``leave_one_out`` the queries are the reference and each row's own entry is skipped."""
    queries = np.asarray(queries, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    centre = reference.mean(axis=0)
    queries = queries - centre
    reference = reference - centre
    reference_norms = np.einsum("ij,ij->i", reference, reference)
    out = np.empty(len(queries))
    for start in range(0, len(queries), BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, len(queries))
        block = _squared_distances(queries[start:stop], reference, None, reference_norms)
        if leave_one_out:
            rows = np.arange(stop - start)
            block[rows, rows + start] = np.inf
        out[start:stop] = np.sqrt(block.min(axis=1))
    return out


def ood_threshold(reference: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of the reference rows' leave-one-out nearest-neighbour distances."""
    if len(reference) < 2:
        raise ValueError("a leave-one-out distance needs at least two reference rows")
    return float(np.quantile(nn_distances(reference, reference, leave_one_out=True), quantile))


def ood_rate(queries: np.ndarray, reference: np.ndarray, threshold: float) -> float:
    """The fraction of queries whose nearest reference row lies farther than ``threshold``."""
    if len(queries) == 0:
        return float("nan")
    return float(np.mean(nn_distances(queries, reference, leave_one_out=False) > threshold))


def mean_shift(mean: np.ndarray, reference_mean: np.ndarray, reference_trace: float) -> float:
    """``||mean - reference_mean|| / sqrt(reference_trace / d)``: the move of the mean in
    units of the reference's root-mean per-dimension standard deviation."""
    distance = float(np.linalg.norm(np.asarray(mean) - np.asarray(reference_mean)))
    scale = np.sqrt(max(reference_trace, 0.0) / len(reference_mean))
    if scale == 0:
        return 0.0 if distance == 0 else float("inf")
    return distance / float(scale)


def _squared_distances(
    a: np.ndarray,
    b: np.ndarray,
    a_norms: np.ndarray | None = None,
    b_norms: np.ndarray | None = None,
) -> np.ndarray:
    if a_norms is None:
        a_norms = np.einsum("ij,ij->i", a, a)
    if b_norms is None:
        b_norms = np.einsum("ij,ij->i", b, b)
    out = a @ b.T
    out *= -2.0
    out += a_norms[:, None]
    out += b_norms[None, :]
    return np.maximum(out, 0.0, out=out)
