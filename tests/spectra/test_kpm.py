"""Lanczos top eigenvalues and KPM histograms against exact spectra (FFT, dense eigvalsh)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from spectral_callbacks.spectra import (
    ConvOperator,
    MatvecBudgetWarning,
    exact_circular_conv_svals,
    kpm_density,
    top_eigenvalues,
)
from spectral_callbacks.spectra import kpm as kpm_module


def random_kernel(channels: int, seed: int) -> np.ndarray:
    """He-like Gaussian initialization."""
    return np.random.default_rng(seed).standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)


def trained_like_kernel(channels: int, seed: int) -> np.ndarray:
    """Heavy-tailed entries (Student-t, df=2.5) plus a few strong rank-one spikes."""
    rng = np.random.default_rng(seed)
    bulk = rng.standard_t(2.5, (channels, channels, 3, 3)) / np.sqrt(9 * channels)
    u, v = rng.standard_normal((channels, 3)), rng.standard_normal((3, 9 * channels))
    return bulk + ((u * [4.0, 2.5, 1.5]) @ v / (9 * channels)).reshape(bulk.shape)


def circular(weight: np.ndarray, hw: int) -> ConvOperator:
    return ConvOperator(weight, input_hw=(hw, hw), padding=1, padding_mode="circular")


def rotated_diagonal(evals: np.ndarray, seed: int) -> np.ndarray:
    """``Q diag(evals) Q^T`` with a random orthogonal ``Q`` (Rademacher probes are exact on diagonals)."""
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((evals.size, evals.size)))[0]
    return (q * evals) @ q.T


class Counted(LinearOperator):
    def __init__(self, operator: LinearOperator) -> None:
        super().__init__(operator.dtype, operator.shape)
        self.operator, self.count = operator, 0

    def _matmat(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        self.count += X.shape[1]
        return self.operator.matmat(X)


# --- top eigenvalues ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [random_kernel, trained_like_kernel])
def test_top_eigenvalues_are_the_exact_fft_spectrum(kernel) -> None:
    weight = kernel(8, seed=0)
    exact = exact_circular_conv_svals(weight, (12, 12)) ** 2
    top = top_eigenvalues(circular(weight, 12), 6)
    assert top.shape == (6,)
    np.testing.assert_allclose(top, exact[:6], rtol=1e-9)  # pairs of frequencies +-f: double eigenvalues


def test_top_eigenvalues_of_a_strided_zero_padded_conv_are_the_dense_ones() -> None:
    op = ConvOperator(random_kernel(6, seed=1), input_hw=(9, 10), stride=2, padding=1)
    dense = op.matmat(np.eye(op.shape[1]))
    expected = np.linalg.svd(dense, compute_uv=False) ** 2
    np.testing.assert_allclose(top_eigenvalues(op, 4), expected[:4], rtol=1e-9)


def test_top_eigenvalues_of_arrays_and_tiny_operators() -> None:
    evals = np.linspace(0.0, 3.0, 60) ** 2
    np.testing.assert_allclose(top_eigenvalues(rotated_diagonal(evals, 2), 3), evals[::-1][:3], rtol=1e-9)
    tiny = np.diag([3.0, 1.0, 2.0])  # k >= n - 1: ARPACK cannot, a dense solver does
    np.testing.assert_allclose(top_eigenvalues(tiny, 2), [3.0, 2.0])
    np.testing.assert_allclose(top_eigenvalues(tiny, 3), [3.0, 2.0, 1.0])


def test_an_exhausted_budget_warns_returns_what_converged_and_keeps_it() -> None:
    weight = random_kernel(8, seed=3)
    exact = exact_circular_conv_svals(weight, (12, 12)) ** 2
    for budget in (9, 30, 80, 150):
        counted = Counted(circular(weight, 12).gram())
        with pytest.warns(MatvecBudgetWarning, match=f"max_matvecs={budget}"):
            top = top_eigenvalues(counted, 6, max_matvecs=budget, tol=0)
        assert counted.count <= budget
        assert top.size < 6
        for value in top:  # whatever converged is an eigenvalue
            assert np.min(np.abs(exact - value)) < 1e-8 * exact[0]


@pytest.mark.parametrize(
    ("k", "options", "match"),
    [(0, {}, "k=0"), (200, {}, "k=200"), (6, {"max_matvecs": 8}, "max_matvecs=8")],
)
def test_top_eigenvalues_refuse_bad_arguments(k: int, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        top_eigenvalues(np.eye(100), k, **options)


def test_non_square_operators_are_refused() -> None:
    with pytest.raises(ValueError, match=r"square.*\(3, 4\)"):
        top_eigenvalues(np.ones((3, 4)))


# --- KPM histograms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [random_kernel, trained_like_kernel])
def test_kpm_histogram_matches_the_exact_fft_spectrum(kernel) -> None:
    weight = kernel(16, seed=4)
    exact = exact_circular_conv_svals(weight, (16, 16)) ** 2
    density = kpm_density(circular(weight, 16), 20, num_moments=128, num_probes=16, seed=4)
    assert density.dimension == exact.size == 4096
    assert exact[0] <= density.lambda_max <= 1.0101 * exact[0]  # Lanczos' top eigenvalue + 1%
    np.testing.assert_allclose(density.edges, np.linspace(0.0, density.lambda_max, 21))
    reference = np.histogram(exact, density.edges)[0]
    assert density.counts.sum() == pytest.approx(exact.size, rel=1e-9)
    assert np.abs(density.counts - reference).sum() / exact.size < 0.05  # measured 0.011-0.031
    np.testing.assert_allclose(np.sum(density.density * np.diff(density.edges)), 1.0, rtol=1e-9)


def test_kpm_counts_sum_to_the_smaller_side_of_a_strided_conv() -> None:
    op = ConvOperator(random_kernel(8, seed=5), input_hw=(12, 12), stride=2, padding=1)  # 1152 -> 288
    svals = np.linalg.svd(op.matmat(np.eye(op.shape[1])), compute_uv=False)
    density = kpm_density(op, 8, num_moments=96, num_probes=32)
    assert density.dimension == 288
    reference = np.histogram(svals**2, density.edges)[0]
    assert np.abs(density.counts - reference).sum() / 288 < 0.1


def test_kpm_without_noise_is_the_jackson_smoothed_exact_histogram() -> None:
    """On a diagonal matrix Rademacher probes are exact, so KPM reduces to its closed form:
    ``n sum_k b_k g_k mean_i T_k(x_i)``, computed here independently of the implementation."""
    evals = np.random.default_rng(6).gamma(2.0, 1.0, 500)
    edges = np.linspace(0.0, 12.0, 13)
    density = kpm_density(np.diag(evals), edges, num_moments=64, num_probes=2, lambda_max=12.0)
    x, m = evals / 6.0 - 1.0, 64
    k = np.arange(m)
    moments = np.cos(np.outer(k, np.arccos(x))).mean(axis=1)
    a = np.pi / (m + 1)
    jackson = ((m - k + 1) * np.cos(a * k) + np.sin(a * k) / np.tan(a)) / (m + 1)
    angles = np.arccos(edges / 6.0 - 1.0)
    expected = []
    for lower, upper in itertools.pairwise(angles):
        b = 2 * (np.sin(k * lower) - np.sin(k * upper)) / (np.pi * np.maximum(k, 1))
        b[0] = (lower - upper) / np.pi
        expected.append(500 * np.sum(b * jackson * moments))
    np.testing.assert_allclose(density.counts, expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(density.count_errors, 0.0, atol=1e-9)


def test_kpm_count_errors_are_the_probe_noise() -> None:
    """Standardized deviations from the noiseless (exact-moment) histogram are about N(0, 1)."""
    n = 400
    evals = np.sort(np.random.default_rng(7).uniform(0.0, 4.0, n))
    matrix = rotated_diagonal(evals, 8)
    exact = kpm_density(np.diag(evals), 10, num_moments=64, num_probes=2, lambda_max=4.0)
    z = []
    for seed in range(6):
        noisy = kpm_density(matrix, 10, num_moments=64, num_probes=24, lambda_max=4.0, seed=seed)
        z.extend((noisy.counts - exact.counts) / noisy.count_errors)
    assert 0.6 < np.sqrt(np.mean(np.square(z))) < 1.5


def test_kpm_is_deterministic_for_a_seed_and_blocking() -> None:
    op = circular(random_kernel(8, seed=9), 12)
    first = kpm_density(op, 10, num_moments=32, num_probes=4, seed=11)
    again = kpm_density(op, 10, num_moments=32, num_probes=4, seed=11, block_size=1)
    other = kpm_density(op, 10, num_moments=32, num_probes=4, seed=12)
    np.testing.assert_allclose(again.counts, first.counts, rtol=1e-12)
    assert first.lambda_max == again.lambda_max
    assert not np.allclose(other.counts, first.counts)
    assert first.num_matvecs > 4 * 16  # Lanczos, then 16 products per probe for 32 moments


def test_rebin_is_the_estimate_on_other_bins() -> None:
    weight = trained_like_kernel(8, seed=10)
    top = 1.1 * exact_circular_conv_svals(weight, (12, 12))[0] ** 2
    op = circular(weight, 12)
    direct = kpm_density(op, np.geomspace(1e-3 * top, top, 15), lambda_max=top, num_moments=64, num_probes=4)
    rebinned = kpm_density(op, 50, lambda_max=top, num_moments=64, num_probes=4).rebin(direct.edges)
    np.testing.assert_allclose(rebinned.counts, direct.counts, rtol=1e-12)
    np.testing.assert_allclose(rebinned.count_errors, direct.count_errors, rtol=1e-12)


def test_one_probe_has_no_error_estimate() -> None:
    density = kpm_density(rotated_diagonal(np.arange(50.0), 12), 5, num_probes=1, num_moments=16)
    assert np.all(np.isnan(density.count_errors))


def test_lambda_max_below_the_spectrum_is_refused() -> None:
    op = circular(random_kernel(8, seed=13), 12)
    true_max = exact_circular_conv_svals(random_kernel(8, seed=13), (12, 12))[0] ** 2
    with pytest.raises(ValueError, match="diverge"):
        kpm_density(op, 10, lambda_max=0.5 * true_max, num_moments=64, num_probes=2)


def test_a_zero_operator_is_refused() -> None:
    with pytest.raises(ValueError, match=r"lambda_max=0\.0 must exceed lambda_min=0\.0"):
        kpm_density(circular(np.zeros((2, 2, 3, 3)), 6), 5)


def test_unconverged_lanczos_falls_back_to_the_fft_norm_bound(monkeypatch) -> None:
    def no_convergence(*args, **kwargs):
        warnings.warn("Lanczos used its budget", MatvecBudgetWarning, stacklevel=2)
        return np.empty(0)

    monkeypatch.setattr(kpm_module, "top_eigenvalues", no_convergence)
    op = ConvOperator(random_kernel(4, seed=14), input_hw=(6, 6), padding=1)
    with pytest.warns(MatvecBudgetWarning, match="FFT bound"):
        density = kpm_density(op, 5, num_moments=16, num_probes=2)
    assert density.lambda_max == pytest.approx(op.norm_bound() ** 2, rel=1e-8)
    with pytest.raises(RuntimeError, match="Pass lambda_max"):
        kpm_density(np.eye(40), 5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_moments": 1}, "num_moments=1"),
        ({"num_probes": 0}, "num_probes=0"),
        ({"bins": 0}, "bins=0"),
        ({"bins": [1.0, 0.5, 2.0]}, "increasing edges"),
        ({"lambda_max": float("nan")}, "must exceed"),
    ],
)
def test_kpm_refuses_bad_arguments(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        kpm_density(np.eye(30), **options)


def test_kpm_of_an_array_matches_its_eigenvalues() -> None:
    evals = np.random.default_rng(15).gamma(1.5, 1.0, 800)
    density = kpm_density(rotated_diagonal(evals, 16), 12, num_moments=128, num_probes=32)
    assert density.lambda_max == pytest.approx(1.01 * evals.max(), rel=1e-6)
    reference = np.histogram(evals, density.edges)[0]
    assert np.abs(density.counts - reference).sum() / 800 < 0.08
    assert scipy.linalg.issymmetric(rotated_diagonal(evals[:5], 0), atol=1e-12)
