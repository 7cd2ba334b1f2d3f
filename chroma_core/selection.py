"""Choosing which scored inputs a retraining trigger holds.

``top_priority`` takes the highest priorities. ``diverse`` spends the same budget so that it
is not used up on many copies of one hard case: from a pool of the highest-priority
candidates it picks, one at a time, the candidate with the largest priority times distance
to everything picked so far (priority-weighted farthest-point, the k-center greedy rule with
the priority as a weight), and never one within ``duplicate_radius`` of a pick. The first
pick is the highest priority. The radius, unless given, is a quarter of the median distance
from a pool member to its nearest other member: copies and near-copies sit far below it,
ordinary neighbours above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chroma_core.distance import pairwise

STRATEGIES = ("top_priority", "diverse")
#: candidates considered per input picked, for ``diverse``
POOL_FACTOR = 5
RADIUS_OF_MEDIAN_SPACING = 0.25
#: duplicates named in the trigger's record at most
NAMED_DUPLICATES = 1000


@dataclass
class Selection:
    """Indices into the pool in the order picked, the duplicates skipped (index -> the pick
    it duplicates) and the radius used."""

    picked: list[int]
    duplicates: dict[int, int] = field(default_factory=dict)
    duplicate_radius: float = 0.0


def pool_size(n: int, available: int) -> int:
    return min(available, max(POOL_FACTOR * n, n + 100))


def diverse(
    vectors: np.ndarray,
    priorities: np.ndarray,
    n: int,
    metric: str,
    duplicate_radius: float | None = None,
) -> Selection:
    """Pick up to ``n`` of the pool rows (``vectors`` with their ``priorities``)."""
    m = len(vectors)
    distances = pairwise(vectors, vectors, metric).astype(np.float64)
    np.fill_diagonal(distances, np.inf)
    if duplicate_radius is None:
        spacing = distances.min(axis=1)
        finite = spacing[np.isfinite(spacing)]
        duplicate_radius = (
            RADIUS_OF_MEDIAN_SPACING * float(np.median(finite)) if len(finite) else 0.0
        )
    weight = np.maximum(np.asarray(priorities, dtype=np.float64), 0.0) + 1e-12
    available = np.ones(m, dtype=bool)
    # distance from each candidate to its nearest pick; before the first pick all are equal,
    # so the first pick is the highest priority
    nearest_pick = np.ones(m)
    selection = Selection([], {}, float(duplicate_radius))
    while len(selection.picked) < n and available.any():
        choice = int(np.argmax(np.where(available, weight * nearest_pick, -np.inf)))
        selection.picked.append(choice)
        available[choice] = False
        row = distances[choice]
        nearest_pick = row if len(selection.picked) == 1 else np.minimum(nearest_pick, row)
        close = np.nonzero(available & (row <= duplicate_radius))[0]
        selection.duplicates.update((int(i), choice) for i in close)
        available[close] = False
    return selection
