import numpy as np
import pytest

from chroma_algo_projection.sampling import allocate, stratified_sample


def test_small_groups_are_kept_whole_and_the_rest_share_equally():
    assert allocate(np.array([90_000, 9_000, 1_000]), 10_000).tolist() == [4500, 4500, 1000]
    # what is left after equal shares goes to the largest groups, ties to the first
    assert allocate(np.array([10, 10, 10]), 20).tolist() == [7, 7, 6]
    assert allocate(np.array([3, 50, 40]), 40).tolist() == [3, 19, 18]
    assert allocate(np.array([5, 7]), 100).tolist() == [5, 7]
    assert allocate(np.array([5, 7]), 0).tolist() == [0, 0]


def test_allocation_is_max_min_fair_on_random_sizes():
    rng = np.random.default_rng(11)
    for _ in range(200):
        sizes = rng.integers(0, 1000, rng.integers(1, 12))
        cap = int(rng.integers(0, 3000))
        taken = allocate(sizes, cap)
        assert taken.sum() == min(cap, sizes.sum())
        assert (taken <= sizes).all() and (taken >= 0).all()
        # a group not taken whole got at least as much as any other group, less one
        cut = taken < sizes
        if cut.any():
            assert taken[cut].min() >= taken.max() - 1


def groups(sizes):
    codes = np.concatenate([np.full(size, code) for code, size in enumerate(sizes)])
    return np.random.default_rng(0).permutation(codes)


def test_the_sample_takes_each_group_s_allocation_without_repeats():
    sizes = [9000, 900, 100]
    codes = groups(sizes)
    keys = ["train\0training", "week1\0triage", "week2\0triage"]
    picked = stratified_sample(codes, keys, 1000, seed=0)
    assert np.array_equal(picked, np.unique(picked))
    assert np.bincount(codes[picked], minlength=3).tolist() == [450, 450, 100]
    again = stratified_sample(codes, keys, 1000, seed=0)
    other = stratified_sample(codes, keys, 1000, seed=1)
    assert np.array_equal(picked, again)
    assert not np.array_equal(picked, other)
    # the group kept whole is the same whatever the seed
    assert np.array_equal(picked[codes[picked] == 2], other[codes[other] == 2])


def test_everything_is_taken_when_the_cap_allows():
    codes = groups([3, 4])
    assert stratified_sample(codes, ["a", "b"], 7, seed=0).tolist() == list(range(7))
    with pytest.raises(ValueError):
        allocate(np.array([1]), -1)
