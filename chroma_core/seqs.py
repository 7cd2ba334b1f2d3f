"""Finding rows by seq among seqs held in ascending order, as bulk look-ups do: the
neighbours of a page among the rows read, stored rows among those asked for."""

from __future__ import annotations

import numpy as np


def locate(ordered: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(at, found)`` for ``wanted`` (any shape): the place in ``ordered`` (ascending) of
    each wanted seq, and whether it is there (``at`` is a valid index only where found)."""
    wanted = np.asarray(wanted)
    if len(ordered) == 0:
        return np.zeros(wanted.shape, dtype=np.int64), np.zeros(wanted.shape, dtype=bool)
    at = np.minimum(np.searchsorted(ordered, wanted), len(ordered) - 1)
    return at, ordered[at] == wanted
