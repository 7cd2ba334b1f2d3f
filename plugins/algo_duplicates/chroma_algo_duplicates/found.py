"""What either search hands the ``duplicates`` answer: the rows' catalogue and the pairs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from chroma_algo_duplicates.pairs import merge, uri_pairs

TRAINING = "training"
# The order pairs are listed in: leakage first.
KINDS = ("leakage", "across_datasets", "within_dataset")
CATALOGUE = ("id", "dataset", "context", "input_uri", "label")


@dataclass
class Found:
    """``pairs`` (p, 2) of row positions in ``catalogue`` (lower first), how each was found
    (``by``, a bit mask) and its exact ``distance``; ``catalogue`` None for an empty space."""

    meta: dict
    catalogue: dict[str, np.ndarray] | None = None
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    by: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    distance: np.ndarray = field(default_factory=lambda: np.zeros(0))


def catalogue_of(table: pa.Table) -> dict[str, np.ndarray]:
    """The columns a pair is described with, as numpy object arrays."""
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in CATALOGUE}


def checked_rows(store, space: str, where, seqs: np.ndarray) -> np.ndarray:
    """Which of the rows ``seqs`` (the space's, ascending) match ``where``: all without one."""
    if where is None:
        return np.ones(len(seqs), dtype=bool)
    matching, _ = store.vectors(space, where=where, with_vectors=False)
    return np.isin(seqs, matching)


def with_uri_pairs(
    near: np.ndarray, catalogue: dict[str, np.ndarray], checked: np.ndarray, meta: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The embedding pairs ``near`` (positions) joined by the pairs of rows sharing an
    input_uri, each pair once with how it was found; counts the starred uri groups in
    ``meta``."""
    codes = pd.Series(catalogue["input_uri"], dtype=object).factorize()[0]
    by_uri, starred = uri_pairs(codes, checked)
    meta["uri_groups_starred"] = starred
    return merge(near, by_uri, len(checked))


def calibrated(metric: str, ratio: float, median: float, of_training: bool, rows: int) -> dict:
    """The meta of a threshold calibrated from the median nearest-neighbour distance."""
    return {
        "threshold_from": (
            "median nearest-neighbour distance of "
            f"{'training' if of_training else 'all'} rows x ratio"
            + (" squared (cosine)" if metric == "cosine" else "")
        ),
        "ratio": ratio,
        "median_nn_distance": median,
        "calibration_rows": rows,
    }
