"""Diverse selection: priority first, spread over the space, never two near-copies."""

from __future__ import annotations

import numpy as np

from chroma_core.selection import diverse, pool_size


def test_the_first_pick_is_the_top_priority_and_copies_are_skipped():
    rng = np.random.default_rng(0)
    spread = rng.normal(0, 10, size=(20, 4))
    copies = spread[3] + rng.normal(0, 1e-4, size=(6, 4))
    vectors = np.vstack([spread, copies])
    priorities = np.r_[np.linspace(0.5, 0.4, 20), np.full(6, 0.9)]
    chosen = diverse(vectors, priorities, 10, "l2")
    assert chosen.picked[0] in range(20, 26)
    picked_copies = [i for i in chosen.picked if i == 3 or i >= 20]
    assert len(picked_copies) == 1
    # every copy left out is named with the pick it duplicates
    assert set(chosen.duplicates) | set(picked_copies) == {3, *range(20, 26)}
    assert set(chosen.duplicates.values()) == set(picked_copies)
    assert len(chosen.picked) == 10 and len(set(chosen.picked)) == 10


def test_picks_cover_the_space_rather_than_one_dense_region():
    rng = np.random.default_rng(1)
    dense = rng.normal(0, 1, size=(50, 2))
    far = np.array([[50.0, 0.0], [0.0, 50.0], [-50.0, 0.0]])
    vectors = np.vstack([dense, far])
    priorities = np.r_[np.full(50, 1.0), np.full(3, 0.8)]
    chosen = diverse(vectors, priorities, 4, "l2")
    # a slightly lower priority far away beats another point of the dense region
    assert set(chosen.picked[1:]) == {50, 51, 52}


def test_an_explicit_radius_and_a_budget_larger_than_the_pool():
    vectors = np.array([[0.0], [0.5], [2.0], [2.4], [9.0]])
    chosen = diverse(vectors, np.ones(5), 10, "l2", duplicate_radius=1.0)
    assert chosen.duplicate_radius == 1.0
    # equal priorities: the first row, then the farthest, then the farther of 2 and 3
    assert chosen.picked == [0, 4, 3]
    assert chosen.duplicates == {1: 0, 2: 3}


def test_pool_size():
    assert pool_size(10, 10_000) == 110
    assert pool_size(100, 10_000) == 500
    assert pool_size(100, 50) == 50
