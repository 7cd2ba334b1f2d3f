"""The cells of an inverted file: a two-level quantizer, trained on a sample, that puts each
row in the cell of its nearest centroid.

A space of N rows gets about ``4·√N`` cells (fewer rows per cell, so a query reads fewer
rows for the same recall). Finding the nearest of that many centroids for every row would
cost more than storing it, so the cells are grouped: about ``√cells`` groups are trained
first (k-means on the sample), then each group's own cells on its share of the sample, in
proportion to it. A row is routed to its ``ROUTE`` nearest groups and put in the nearest
cell among theirs: ``N·(√cells + ROUTE·√cells)`` distances instead of ``N·cells``. A query
ranks every cell's centroid (a few thousand, cheap for one query) and reads the ``probes``
nearest.

A cell's number says its group: ``group << GROUP_BITS | place``. Groups route by the mean
of their cells' centroids, so nothing besides the centroids is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chroma_core.distance import smallest
from chroma_core.neighbor_search import kmeans

#: bits of a cell number that give its place within its group
GROUP_BITS = 12
#: the most cells one group may have
MAX_PER_GROUP = (1 << GROUP_BITS) - 1
#: groups each row is compared against when it is put in a cell
ROUTE = 4
#: cells of a space of N rows: about CELLS_PER_ROOT·√N, never fewer than MIN_CELLS
CELLS_PER_ROOT = 4
MIN_CELLS = 16
#: rows of the sample the centroids are trained on, per cell
SAMPLE_PER_CELL = 32
# a matrix of distances is worked on in blocks of about this many bytes
_BLOCK_BYTES = 32 << 20


def cell_count(rows: int) -> int:
    """Cells for a space of ``rows`` rows."""
    return max(MIN_CELLS, round(CELLS_PER_ROOT * np.sqrt(rows)))


def sample_size(rows: int) -> int:
    """Rows of the sample a space of ``rows`` rows is trained on."""
    return min(rows, SAMPLE_PER_CELL * min(cell_count(rows), rows))


def prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as the centroids compare them: unit rows for cosine, where Euclidean nearness
    of unit vectors is cosine nearness; as they are for l2 and inner product."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if metric != "cosine":
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _scores(vectors: np.ndarray, centroids: np.ndarray, metric: str) -> np.ndarray:
    """Smaller is nearer: squared Euclidean distance less the row's own norm (constant per
    row), or the negated inner product for ip. ``vectors`` are prepared."""
    products = vectors @ centroids.T
    if metric == "ip":
        return -products
    return np.einsum("ij,ij->i", centroids, centroids) - 2 * products


def nearest_cells(vectors: np.ndarray, centroids: np.ndarray, n: int, metric: str) -> np.ndarray:
    """``(len(vectors), n)`` indices of the ``n`` centroids nearest each vector, in no order:
    Euclidean for l2 and cosine (on unit rows), largest inner product for ip."""
    vectors = prepared(vectors, metric)
    n = min(n, len(centroids))
    out = np.empty((len(vectors), n), dtype=np.int64)
    step = max(1, _BLOCK_BYTES // (4 * max(len(centroids), 1)))
    for start in range(0, len(vectors), step):
        scores = _scores(vectors[start : start + step], centroids, metric)
        if n == len(centroids):
            out[start : start + step] = np.arange(n)
        elif n == 1:
            out[start : start + step, 0] = scores.argmin(axis=1)
        else:
            out[start : start + step] = smallest(scores, n)
    return out


@dataclass(frozen=True)
class Cells:
    """One generation's centroids, in order of their cell numbers."""

    #: ``(cells, dim)`` float32
    centroids: np.ndarray
    #: ``(cells,)`` the cell number of each centroid, ascending
    numbers: np.ndarray

    @classmethod
    def of(cls, numbers: np.ndarray, centroids: np.ndarray) -> Cells:
        order = np.argsort(numbers, kind="stable")
        return cls(
            np.ascontiguousarray(centroids[order], dtype=np.float32),
            np.asarray(numbers, dtype=np.int64)[order],
        )

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """The start of each group's run of centroids, and the groups' routing centroids
        (the mean of their cells' centroids)."""
        found = self.__dict__.get("_groups")
        if found is None:
            group = self.numbers >> GROUP_BITS
            starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            means = np.add.reduceat(self.centroids.astype(np.float64), starts, axis=0)
            means /= np.diff(np.r_[starts, len(group)])[:, None]
            found = (starts, means.astype(np.float32))
            object.__setattr__(self, "_groups", found)
        return found

    def nearest(self, vectors: np.ndarray, probes: int, metric: str) -> np.ndarray:
        """``(len(vectors), probes)`` cell numbers nearest each query, compared with every
        centroid."""
        return self.numbers[nearest_cells(vectors, self.centroids, probes, metric)]

    def near_own(
        self, vectors: np.ndarray, own: np.ndarray, probes: int, metric: str, around: int
    ) -> np.ndarray:
        """``(len(vectors), probes)`` places (in ``numbers``) of the cells nearest each
        vector, looked for among the ``around`` cells nearest the centroid of its own cell
        (``own``, the cell numbers the vectors are stored in): a batch of rows compares
        each with ``around`` centroids instead of every one."""
        probes = min(probes, len(self))
        around = min(max(around, probes), len(self))
        if around == len(self):
            return np.searchsorted(self.numbers, self.nearest(vectors, probes, metric))
        vectors = prepared(vectors, metric)
        mine = np.searchsorted(self.numbers, own)
        out = np.empty((len(vectors), probes), dtype=np.int64)
        order = np.argsort(mine, kind="stable")
        bounds = np.flatnonzero(np.r_[True, mine[order][1:] != mine[order][:-1], True])
        centres = mine[order][bounds[:-1]]
        # the cells nearest each centroid that some vector is in
        neighbourhood = nearest_cells(self.centroids[centres], self.centroids, around, metric)
        for at, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
            rows = order[lo:hi]
            candidates = neighbourhood[at]
            out[rows] = candidates[nearest_cells(vectors[rows], self.centroids[candidates],
                                                 probes, metric)]  # fmt: skip
        return out

    def assign(self, vectors: np.ndarray, metric: str) -> np.ndarray:
        """The cell number of each vector: the nearest cell of its ``ROUTE`` nearest
        groups."""
        vectors = prepared(vectors, metric)
        starts, means = self.groups
        ends = np.r_[starts[1:], len(self.numbers)]
        routes = nearest_cells(vectors, means, ROUTE, metric)
        best = np.full(len(vectors), np.inf, dtype=np.float32)
        chosen = np.zeros(len(vectors), dtype=np.int64)
        # the rows routed to each group, from one sort of every (group, row) pair
        flat = routes.ravel()
        order = np.argsort(flat, kind="stable")
        routed = order // routes.shape[1]
        bounds = np.searchsorted(flat[order], np.arange(len(starts) + 1))
        for group in np.flatnonzero(np.diff(bounds)):
            rows = routed[bounds[group] : bounds[group + 1]]
            start, end = starts[group], ends[group]
            step = max(1, _BLOCK_BYTES // (4 * (end - start)))
            for at in range(0, len(rows), step):
                part = rows[at : at + step]
                scores = _scores(vectors[part], self.centroids[start:end], metric)
                place = scores.argmin(axis=1)
                score = scores[np.arange(len(part)), place]
                nearer = score < best[part]
                best[part[nearer]] = score[nearer]
                chosen[part[nearer]] = start + place[nearer]
        return self.numbers[chosen]


def train(sample: np.ndarray, cells: int, metric: str, seed: int) -> Cells:
    """About ``cells`` cells trained on ``sample`` (rows, as stored): ``√cells`` groups,
    then each group's cells in proportion to its share of the sample."""
    sample = prepared(sample, metric)
    cells = max(1, min(cells, len(sample)))
    n_groups = max(1, min(round(np.sqrt(cells)), len(sample)))
    coarse = kmeans(sample, n_groups, seed=seed)
    member = nearest_cells(sample, coarse, 1, metric)[:, 0]
    counts = np.bincount(member, minlength=n_groups)
    numbers: list[np.ndarray] = []
    centroids: list[np.ndarray] = []
    for group in np.flatnonzero(counts):
        rows = sample[member == group]
        n = int(np.clip(round(cells * len(rows) / len(sample)), 1, min(len(rows), MAX_PER_GROUP)))
        numbers.append((len(numbers) << GROUP_BITS) + np.arange(n))
        centroids.append(kmeans(rows, n, seed=seed + 1 + int(group)) if n > 1 else coarse[[group]])
    return Cells.of(np.concatenate(numbers), np.concatenate(centroids))
