import numpy as np
import pytest

from chroma_algo_drift import statistics


def test_mean_shift_in_training_standard_deviations():
    reference_mean = np.zeros(4)
    # trace 4 * 2.25: a per-dimension standard deviation of 1.5
    assert statistics.mean_shift(np.array([3.0, 0, 0, 0]), reference_mean, 9.0) == 2.0
    assert statistics.mean_shift(reference_mean, reference_mean, 0.0) == 0.0
    assert statistics.mean_shift(np.ones(4), reference_mean, 0.0) == np.inf


def test_nearest_neighbor_distances_match_brute_force():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((50, 5)) + 100.0
    queries = rng.standard_normal((20, 5)) + 100.0
    full = np.linalg.norm(queries[:, None] - reference[None], axis=2)
    found = statistics.nn_distances(queries, reference, leave_one_out=False)
    np.testing.assert_allclose(found, full.min(axis=1), rtol=1e-9)
    own = np.linalg.norm(reference[:, None] - reference[None], axis=2)
    np.fill_diagonal(own, np.inf)
    found = statistics.nn_distances(reference, reference, leave_one_out=True)
    np.testing.assert_allclose(found, own.min(axis=1), rtol=1e-9)


def test_ood_rate_counts_rows_beyond_the_threshold():
    reference = np.array([[0.0], [1.0], [2.0], [3.0]])  # every leave-one-out distance is 1
    assert statistics.ood_threshold(reference, 0.95) == pytest.approx(1.0)
    queries = np.array([[1.5], [5.0], [-0.5], [10.0]])
    assert statistics.ood_rate(queries, reference, 1.0) == 0.5


def test_mmd_separates_shifted_samples_and_not_equal_ones():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 8))
    same = rng.standard_normal((200, 8))
    moved = rng.standard_normal((200, 8)) + 1.0
    mmd_same, p_same = statistics.mmd_test(x, same, 200, np.random.default_rng(0))
    mmd_moved, p_moved = statistics.mmd_test(x, moved, 200, np.random.default_rng(0))
    assert p_same > 0.05
    assert p_moved == pytest.approx(1 / 201)
    assert mmd_moved > 10 * abs(mmd_same)


def test_mmd_of_identical_points_is_never_significant():
    x = np.ones((10, 3))
    mmd, p_value = statistics.mmd_test(x, x.copy(), 50, np.random.default_rng(0))
    assert mmd == pytest.approx(0.0, abs=1e-12)
    assert p_value == 1.0


def test_mmd_needs_two_rows_a_side():
    with pytest.raises(ValueError, match="two rows"):
        statistics.mmd_test(np.zeros((1, 2)), np.zeros((5, 2)), 10, np.random.default_rng(0))
