"""Uncertainty from the model's own outputs, for rows sent with them (the ``outputs`` field).

An output row is taken as probabilities when its values lie in [0, 1] and sum to 1 (within
1e-3), otherwise as logits and passed through a softmax. Three scores in [0, 1]:

- ``confidence``: the largest probability, the model's own belief in its inference.
- ``margin``: 1 - (p1 - p2), the gap between the two most likely classes, turned around.
- ``entropy``: the entropy of p divided by log(number of classes).

Neither looks at the embedding or at any label, so they add what the model itself says to
what the geometry says. Rows without outputs get NaN.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def uncertainty(
    outputs: pa.ChunkedArray | pa.Array,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(confidence, margin, entropy)``, float64 arrays with NaN where a row has no output
    or fewer than two values."""
    column = outputs.combine_chunks() if isinstance(outputs, pa.ChunkedArray) else outputs
    n = len(column)
    confidence = np.full(n, np.nan)
    margin = np.full(n, np.nan)
    entropy = np.full(n, np.nan)
    if n == 0 or column.null_count == n:
        return confidence, margin, entropy
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    starts = column.offsets.to_numpy()[:-1]
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float64)
    # rows of one width at a time, so each group is one matrix gathered by offsets
    for width in np.unique(lengths[lengths >= 2]):
        rows = np.nonzero(lengths == width)[0]
        p = _probabilities(values[starts[rows, None] + np.arange(width)])
        top = -np.sort(-p, axis=1)
        confidence[rows] = top[:, 0]
        margin[rows] = 1.0 - (top[:, 0] - top[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
        entropy[rows] = h / np.log(width)
    return tuple(np.clip(x, 0.0, 1.0) for x in (confidence, margin, entropy))  # type: ignore[return-value]


def _probabilities(x: np.ndarray) -> np.ndarray:
    is_probability = (x >= 0).all(axis=1) & (x <= 1).all(axis=1)
    is_probability &= np.abs(x.sum(axis=1) - 1.0) <= 1e-3
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    softmax = shifted / shifted.sum(axis=1, keepdims=True)
    return np.where(is_probability[:, None], x, softmax)
