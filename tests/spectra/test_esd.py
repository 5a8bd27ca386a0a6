"""ESD: squared singular values against numpy.linalg.svd, conv2d halving, normalization, histograms."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_callbacks.spectra import eigenvalues, log10_histogram, matrices_of, singular_values
from spectral_callbacks.spectra.esd import GRAM_RTOL

# the SVD is backward stable (1e-12 here); the Gram path keeps every eigenvalue within GRAM_RTOL
SVALS_RTOL = {"svd": 1e-12, "auto": GRAM_RTOL / 2}


def view_of(weight: np.ndarray, kind: str | None = None):
    views = matrices_of("w", weight, kind)
    assert isinstance(views, list)
    return views[0]


def esd_of(view, **options) -> np.ndarray:
    """The view's ESD through the public two-step API (SVD path: these tests check the ESD's
    bookkeeping to 1e-12; the Gram path's accuracy is tested in test_gram.py)."""
    return eigenvalues(singular_values(view, method="svd"), kind=view.kind, N=view.N, **options)


@pytest.mark.parametrize("shape", [(80, 30), (30, 80), (40, 40)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", ["svd", "auto"])
def test_linear_eigenvalues_are_squared_singular_values(shape: tuple[int, int], dtype, method: str) -> None:
    weight = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    view = view_of(weight)
    svals = singular_values(view, method=method)
    reference = np.linalg.svd(weight.astype(np.float64), compute_uv=False)
    assert svals.shape == (1, min(shape))
    assert svals.dtype == np.float64
    np.testing.assert_allclose(svals[0], reference, rtol=SVALS_RTOL[method])
    evals = eigenvalues(svals, kind=view.kind, N=view.N)
    np.testing.assert_allclose(evals, np.sort(reference**2), rtol=2 * SVALS_RTOL[method])
    assert np.all(np.diff(evals) >= 0)
    # and they are the eigenvalues of W^T W (the smaller Gram matrix)
    w = weight.astype(np.float64)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(evals, np.linalg.eigvalsh(gram), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind_shape", [("linear", (30, 80)), ("conv2d", (12, 32, 3, 3))])
@pytest.mark.parametrize("method", ["svd", "auto"])
def test_a_wide_matrix_and_its_transpose_give_the_same_singular_values_bit_for_bit(
    kind_shape, method: str
) -> None:
    """Wide slices are analyzed as their (tall) transposes: W and W^T are one computation."""
    kind, shape = kind_shape
    weight = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    transposed = np.ascontiguousarray(np.swapaxes(weight, 0, 1))
    wide = singular_values(view_of(weight, kind), method=method)
    tall = singular_values(view_of(transposed, kind), method=method)
    np.testing.assert_array_equal(wide, tall)
    first_slice = weight if kind == "linear" else weight[:, :, 0, 0]
    reference = np.linalg.svd(first_slice.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(wide[0], reference, rtol=SVALS_RTOL[method])


def _pooled_reference(weight: np.ndarray) -> np.ndarray:
    pooled = []
    for index in np.ndindex(*weight.shape[2:]):
        pooled.extend(np.linalg.svd(weight[(slice(None), slice(None), *index)], compute_uv=False) ** 2)
    return np.sort(np.array(pooled))


def test_conv2d_eigenvalues_are_pooled_and_halved_by_default() -> None:
    weight = np.random.default_rng(1).standard_normal((32, 12, 3, 3))
    view = view_of(weight)
    svals = singular_values(view, method="svd")
    assert svals.shape == (9, 12)
    reference = _pooled_reference(weight)
    assert reference.size == 9 * 12
    np.testing.assert_allclose(esd_of(view), 0.5 * reference, rtol=1e-12)
    np.testing.assert_allclose(esd_of(view, conv2d_norm=False), reference, rtol=1e-12)


def test_conv1d_eigenvalues_are_pooled_not_halved() -> None:
    weight = np.random.default_rng(2).standard_normal((16, 10, 5))
    view = view_of(weight)
    np.testing.assert_allclose(esd_of(view), _pooled_reference(weight), rtol=1e-12)


@pytest.mark.parametrize("shape", [(90, 30), (30, 90)])
def test_normalize_n_divides_by_the_larger_side(shape: tuple[int, int]) -> None:
    weight = np.random.default_rng(3).standard_normal(shape)
    view = view_of(weight)
    reference = np.sort(np.linalg.svd(weight, compute_uv=False) ** 2)
    np.testing.assert_allclose(esd_of(view, normalize="N"), reference / 90, rtol=1e-12)


def test_conv2d_normalize_n_and_halving_combine() -> None:
    weight = np.random.default_rng(4).standard_normal((20, 8, 2, 2))
    view = view_of(weight)
    got = esd_of(view, normalize="N")
    np.testing.assert_allclose(got, 0.5 * _pooled_reference(weight) / 20, rtol=1e-12)


def test_invalid_normalize_raises() -> None:
    view = view_of(np.eye(10))
    with pytest.raises(ValueError, match="normalize"):
        esd_of(view, normalize="M")


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (np.where(np.eye(10) > 0, np.nan, 1.0), "NaN or Inf"),
        (np.where(np.eye(10) > 0, np.inf, 1.0), "NaN or Inf"),
        (np.ones((10, 10), dtype=np.int64), "dtype int64"),
        (np.ones((10, 10), dtype=np.complex128), "dtype complex128"),
        (np.ones((10, 10), dtype=bool), "dtype bool"),
    ],
    ids=["nan", "inf", "int", "complex", "bool"],
)
def test_singular_values_reject_bad_weights(weight: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        singular_values(view_of(weight))


def test_log10_histogram_is_numpy_histogram_of_log10() -> None:
    evals = np.random.default_rng(5).pareto(2.0, 500) + 1
    counts, edges = log10_histogram(evals, bins=20)
    ref_counts, ref_edges = np.histogram(np.log10(evals), bins=20)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(edges, ref_edges)
    assert counts.sum() == evals.size


def test_log10_histogram_clips_zeros_to_the_floor() -> None:
    counts, edges = log10_histogram(np.array([0.0, 1e-20, 1.0, 10.0]), bins=4, floor=1e-6)
    assert counts.sum() == 4
    assert edges[0] == pytest.approx(-6.0)
    assert edges[-1] == pytest.approx(1.0)
    assert counts[0] == 2
