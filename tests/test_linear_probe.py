"""The linear probe: a regularised linear discriminant fitted in closed form, its
out-of-fold probabilities from the statistics of every fold but one."""

from __future__ import annotations

import numpy as np
import pytest

from chroma_core import linear_probe


def gaussian_classes(n: int = 1500, d: int = 12, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.5, size=(classes, d))
    codes = rng.integers(0, classes, n)
    return (means[codes] + rng.normal(size=(n, d))).astype(np.float32), codes


def discriminant(x, codes, n_classes, shrinkage, temperature, rows):
    """The probe's model written out: class means, pooled covariance shrunk towards the
    scaled identity, linear scores, softmax at the temperature."""
    x = x.astype(np.float64)
    means = np.array([x[codes == c].mean(0) for c in range(n_classes)])
    centred = x - means[codes]
    pooled = centred.T @ centred / (len(x) - n_classes)
    d = x.shape[1]
    shrunk = (1 - shrinkage) * pooled + shrinkage * np.trace(pooled) / d * np.eye(d)
    weights = np.linalg.solve(shrunk, means.T)
    prior = np.log(np.bincount(codes, minlength=n_classes) / len(codes))
    scores = rows @ weights - 0.5 * np.einsum("cd,dc->c", means, weights) + prior
    scores = scores / temperature
    e = np.exp(scores - scores.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_fit_on_all_rows_is_the_regularised_discriminant():
    x, codes = gaussian_classes()
    probe = linear_probe.fit(x, codes, 3)
    assert probe.shrinkage in linear_probe.SHRINKAGES
    queries = np.random.default_rng(1).normal(size=(50, 12))
    expected = discriminant(x, codes, 3, probe.shrinkage, probe.temperature, queries)
    np.testing.assert_allclose(probe.probabilities(queries), expected, rtol=1e-6, atol=1e-9)


def test_out_of_fold_probabilities_come_from_fits_without_the_row():
    x, codes = gaussian_classes(n=600)
    probe = linear_probe.fit(x, codes, 3, folds=4)
    fold_of = linear_probe._folds(codes, 4, 0)
    for fold in range(4):
        held = fold_of == fold
        expected = discriminant(x[~held], codes[~held], 3, probe.shrinkage, probe.temperature,
                                x[held].astype(np.float64))  # fmt: skip
        np.testing.assert_allclose(probe.out_of_fold[held], expected, rtol=1e-6, atol=1e-9)
    # each fold holds a share of every class
    for c in range(3):
        assert len(np.unique(fold_of[codes == c])) == 4


def test_a_clean_linear_boundary_is_found_and_its_probabilities_are_calibrated():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 40)).astype(np.float32)
    true = (x @ rng.normal(size=40) > 0).astype(int)
    noisy = np.where(rng.random(4000) < 0.1, 1 - true, true)
    probe = linear_probe.fit(x, noisy, 2)
    assert (probe.out_of_fold.argmax(1) == true).mean() > 0.93
    # the temperature chosen gives the given labels a log loss no worse than none
    raw = linear_probe._log_loss(np.log(probe.out_of_fold) * probe.temperature, noisy)
    assert probe.log_loss <= raw + 1e-9
    # with a tenth of the labels flipped, a confident row is right about 90% of the time
    sure = probe.out_of_fold.max(1) > 0.85
    assert 0.85 < (probe.out_of_fold.argmax(1)[sure] == noisy[sure]).mean() < 0.97


def test_blocks_do_not_change_the_answer(monkeypatch):
    x, codes = gaussian_classes(n=700)
    whole = linear_probe.fit(x, codes, 3)
    monkeypatch.setattr(linear_probe, "_BLOCK_ROWS", 64)
    blocked = linear_probe.fit(x, codes, 3)
    np.testing.assert_allclose(blocked.out_of_fold, whole.out_of_fold, rtol=1e-9)
    np.testing.assert_allclose(blocked.probabilities(x), whole.probabilities(x), rtol=1e-9)


def test_small_classes_and_bad_input():
    x, codes = gaussian_classes(n=300)
    codes[:2] = 3  # a class of two rows: fewer folds than asked cannot all hold it
    probe = linear_probe.fit(x, codes, 4)
    assert probe.out_of_fold.shape == (300, 4)
    np.testing.assert_allclose(probe.out_of_fold.sum(1), 1.0, rtol=1e-6)
    assert (probe.out_of_fold > 0).all()
    with pytest.raises(ValueError, match="at least two classes"):
        linear_probe.fit(x, np.zeros(300, int), 1)
    with pytest.raises(ValueError, match="one value per row"):
        linear_probe.fit(x, codes[:10], 4)


def test_out_of_fold_of_some_rows_equals_those_rows_of_every_rows():
    x, codes = gaussian_classes(n=900)
    whole = linear_probe.fit(x, codes, 3)
    rows = np.array([899, 3, 500, 3, 17])
    some = linear_probe.fit(x, codes, 3, rows=rows)
    assert some.out_of_fold.shape == (5, 3)
    np.testing.assert_allclose(some.out_of_fold, whole.out_of_fold[rows], rtol=1e-12)
    assert (some.shrinkage, some.temperature) == (whole.shrinkage, whole.temperature)
    np.testing.assert_allclose(some.probabilities(x), whole.probabilities(x), rtol=1e-12)
