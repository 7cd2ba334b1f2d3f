import numpy as np
import pytest

from chroma_algo_projection.pca import principal_components


def gapped(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows whose covariance has two clear leading directions, rotated off the axes and
    moved away from the origin."""
    rng = np.random.default_rng(seed)
    scales = np.r_[[6.0, 3.0], np.linspace(1.0, 0.1, d - 2)]
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return ((rng.standard_normal((n, d)) * scales) @ rotation + 3.0).astype(np.float32)


def svd_reference(x: np.ndarray):
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    return u[:, :2] * s[:2], vt[:2], s**2


@pytest.mark.parametrize("exact_dim,solver", [(512, "exact"), (10, "subspace iteration")])
def test_coordinates_match_the_svd_of_the_centred_rows(exact_dim, solver):
    x = gapped(2000, 120)
    found = principal_components(x, exact_dim=exact_dim)
    assert found.solver == solver
    reference, axes, spectrum = svd_reference(x)
    # principal axes are defined up to sign
    signs = np.sign(np.sum(found.coordinates * reference, axis=0))
    scale = np.abs(reference).max()
    assert np.abs(found.coordinates * signs - reference).max() < 1e-4 * scale
    assert np.allclose(np.sum(found.axes * axes, axis=1) * signs, 1.0, atol=1e-6)
    assert np.allclose(found.variance_ratio, spectrum[:2] / spectrum.sum(), rtol=1e-4)
    assert np.allclose(found.variance, spectrum[:2] / (len(x) - 1), rtol=1e-4)


def test_signs_are_fixed_so_the_same_rows_give_the_same_map():
    x = gapped(500, 30, seed=3)
    first = principal_components(x)
    again = principal_components(x[::-1].copy())
    for axis in first.axes:
        assert axis[np.argmax(np.abs(axis))] > 0
    assert np.allclose(first.axes, again.axes, atol=1e-6)
    assert np.allclose(first.coordinates[::-1], again.coordinates, atol=1e-4)


def test_axes_fitted_on_a_subsample_agree_with_all_rows():
    x = gapped(20_000, 40, seed=5)
    whole = principal_components(x)
    part = principal_components(x, fit_rows=4000)
    assert whole.fitted_rows == 20_000 and part.fitted_rows == 4000
    assert part.coordinates.shape == (20_000, 2)
    cosines = np.sum(whole.axes * part.axes, axis=1)
    assert (np.abs(cosines) > 0.999).all()
    aligned = part.coordinates * np.sign(cosines)
    assert np.abs(aligned - whole.coordinates).max() < 0.05 * np.abs(whole.coordinates).max()


def test_degenerate_inputs_give_zero_coordinates_where_an_axis_is_missing():
    one_row = principal_components(np.ones((1, 4), np.float32))
    assert np.array_equal(one_row.coordinates, np.zeros((1, 2), np.float32))
    line = principal_components(np.arange(10, dtype=np.float32)[:, None])
    assert np.allclose(np.abs(line.coordinates[:, 0]), np.abs(np.arange(10) - 4.5))
    assert np.array_equal(line.coordinates[:, 1], np.zeros(10, np.float32))
    empty = principal_components(np.zeros((0, 3), np.float32))
    assert empty.coordinates.shape == (0, 2)
    with pytest.raises(ValueError):
        principal_components(np.zeros(3))
