"""The inverted file's two-level cells: trained in proportion, routed close to exact."""

from __future__ import annotations

import numpy as np
import pytest

from chroma_store_clickhouse import cells as quantizer
from chroma_store_clickhouse.cells import GROUP_BITS, Cells, nearest_cells


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(size=(60, dim)) * 3
    return (centres[rng.integers(0, 60, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def test_a_space_gets_about_four_cells_per_root_of_its_rows():
    assert quantizer.cell_count(1_000_000) == 4000
    assert quantizer.cell_count(10) == quantizer.MIN_CELLS
    # the sample never asks for more rows than the space has
    assert quantizer.sample_size(100) == 100
    assert quantizer.sample_size(1_000_000) == quantizer.SAMPLE_PER_CELL * 4000


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_rows_go_to_their_nearest_cell_or_one_as_near(metric):
    x = clustered(20_000)
    cells = quantizer.train(x[:8000], 400, metric, seed=1)
    # about as many cells as asked, numbered by group
    assert 300 <= len(cells) <= 500
    groups = cells.numbers >> GROUP_BITS
    assert len(np.unique(groups)) > 10 and np.all(np.diff(cells.numbers) > 0)
    assigned = cells.assign(x, metric)
    exact = cells.numbers[nearest_cells(x, cells.centroids, 1, metric)[:, 0]]
    # routing through the nearest groups finds the exact nearest cell for nearly every row
    assert np.mean(assigned == exact) > 0.95
    # and a row never lands in a cell that is not one of the trained ones
    assert np.isin(assigned, cells.numbers).all()


def test_a_query_ranks_every_cell():
    x = clustered(5000)
    cells = quantizer.train(x, 100, "l2", seed=0)
    probed = cells.nearest(x[:50], 5, "l2")
    assert probed.shape == (50, 5)
    # the nearest cell of each query is among its probes, whatever group it is in
    nearest = cells.numbers[nearest_cells(x[:50], cells.centroids, 1, "l2")[:, 0]]
    assert all(n in row for n, row in zip(nearest, probed, strict=True))


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_a_batch_probes_the_cells_around_its_own_nearly_as_an_exact_ranking(metric):
    x = clustered(20_000)
    cells = quantizer.train(x[:8000], 400, metric, seed=2)
    own = cells.assign(x[:3000], metric)
    exact = np.searchsorted(cells.numbers, cells.nearest(x[:3000], 8, metric))
    near = cells.near_own(x[:3000], own, 8, metric, around=32)
    assert near.shape == (3000, 8)
    overlap = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(exact, near, strict=True)])
    assert overlap > 0.9
    # the vector's own cell is always probed (it is nearest its own centroid)
    mine = np.searchsorted(cells.numbers, own)
    assert np.mean([m in row for m, row in zip(mine, near, strict=True)]) > 0.99
    # around every cell, the ranking is the exact one
    everything = cells.near_own(x[:3000], own, 8, metric, around=len(cells))
    assert np.array_equal(np.sort(everything, axis=1), np.sort(exact, axis=1))


def test_cells_read_back_in_any_order_are_the_same_cells():
    x = clustered(3000)
    cells = quantizer.train(x, 64, "l2", seed=3)
    shuffled = np.random.default_rng(0).permutation(len(cells))
    again = Cells.of(cells.numbers[shuffled], cells.centroids[shuffled])
    assert np.array_equal(again.assign(x, "l2"), cells.assign(x, "l2"))


def test_a_sample_smaller_than_the_cells_asked_gives_a_cell_per_row():
    x = clustered(10)
    cells = quantizer.train(x, 50, "l2", seed=0)
    assert len(cells) <= 10
    assert np.isin(cells.assign(x, "l2"), cells.numbers).all()
