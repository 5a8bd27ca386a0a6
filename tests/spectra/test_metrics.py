"""Rank, norms, stable rank, entropy and frame potential against numpy/scipy and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from spectral_callbacks.spectra import (
    analyze_matrix,
    frame_potential,
    matrices_of,
    matrix_entropy,
    metrics,
    norm_metrics,
    rank_metrics,
    singular_values,
)

EPS64 = float(np.finfo(np.float64).eps)


def low_rank(n: int, m: int, rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))


def orthonormal_columns(n: int, m: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, m)))[0]


# --- numerical rank ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "rank"), [((120, 60), 20), ((60, 120), 35), ((80, 80), 79), ((90, 40), 40)]
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rank_matches_numpy_matrix_rank(shape: tuple[int, int], rank: int, dtype) -> None:
    weight = low_rank(*shape, rank, seed=rank).astype(dtype)
    expected = int(np.linalg.matrix_rank(weight))  # SVD and eps of the weights' own dtype
    assert expected == rank
    result = analyze_matrix(weight)
    assert result.rank == expected
    assert result.rank_loss == min(shape) - expected
    svals = np.linalg.svd(weight.astype(np.float64), compute_uv=False)
    assert result.lambda_min == pytest.approx(svals.min() ** 2, abs=1e-12 * svals.max() ** 2)
    assert result.sv_max == pytest.approx(svals.max(), rel=1e-12)


def test_rank_of_pooled_conv_slices_is_the_sum_over_slices() -> None:
    rng = np.random.default_rng(3)
    weight = np.empty((30, 12, 2, 2))
    ranks = {(0, 0): 12, (0, 1): 5, (1, 0): 9, (1, 1): 1}
    for (i, j), r in ranks.items():
        weight[:, :, i, j] = rng.standard_normal((30, r)) @ rng.standard_normal((r, 12))
    (view,) = matrices_of("conv.weight", weight)
    metrics = rank_metrics(singular_values(view), view.N, view.M, EPS64)
    expected = sum(int(np.linalg.matrix_rank(weight[:, :, i, j])) for i in range(2) for j in range(2))
    assert expected == sum(ranks.values())
    assert metrics.rank == expected
    assert metrics.rank_loss == 4 * 12 - expected


def test_numerical_recipes_tolerance_differs_from_numpys() -> None:
    """Singular values planted between the two tolerances (100 eps * sigma_max) count only for NR."""
    n, m = 400, 100
    u = orthonormal_columns(n, m, seed=4)
    v = orthonormal_columns(m, m, seed=5)
    planted = np.r_[np.geomspace(1, 10, 85), np.full(10, 1000 * EPS64), np.zeros(5)]
    weight = (u * planted) @ v.T
    sigma_max = np.linalg.norm(weight, 2)
    numpy_rank = int(np.linalg.matrix_rank(weight))
    nr_rank = int(np.linalg.matrix_rank(weight, tol=0.5 * math.sqrt(m + n + 1) * sigma_max * EPS64))
    assert (numpy_rank, nr_rank) == (85, 95)
    result = analyze_matrix(weight)
    assert result.rank == numpy_rank
    assert result.rank_nr == nr_rank
    assert result.rank_loss == m - numpy_rank
    assert result.rank_loss_nr == m - nr_rank


def test_rank_metrics_direct_with_float32_epsilon() -> None:
    """float32 tolerance (eps 1.2e-7) zeroes singular values that float64's keeps."""
    svals = np.r_[np.ones(10), np.full(3, 1e-9)]
    loose = rank_metrics(svals, 20, 13, float(np.finfo(np.float32).eps))
    tight = rank_metrics(svals, 20, 13, EPS64)
    assert (loose.rank, loose.rank_loss) == (10, 3)
    assert (tight.rank, tight.rank_loss) == (13, 0)
    assert loose.sv_min == 1e-9
    assert loose.sv_max == 1.0


# --- norms and stable rank -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(100, 40), (40, 100)])
def test_norm_metrics_match_closed_forms(shape: tuple[int, int]) -> None:
    weight = np.random.default_rng(6).standard_t(3, size=shape)
    evals = np.linalg.svd(weight, compute_uv=False) ** 2
    alpha = 2.7
    metrics = norm_metrics(evals, alpha)
    frobenius2 = float(np.sum(weight**2))
    spectral2 = float(np.linalg.norm(weight, 2) ** 2)
    assert metrics.norm == pytest.approx(frobenius2, rel=1e-12)
    assert metrics.log_norm == pytest.approx(math.log10(frobenius2), rel=1e-12)
    assert metrics.spectral_norm == pytest.approx(spectral2, rel=1e-12)
    assert metrics.log_spectral_norm == pytest.approx(math.log10(spectral2), rel=1e-12)
    assert metrics.alpha_weighted == pytest.approx(alpha * math.log10(spectral2), rel=1e-12)
    sv = np.linalg.svd(weight, compute_uv=False)
    assert metrics.log_alpha_norm == pytest.approx(math.log10(np.sum(sv ** (2 * alpha))), rel=1e-12)
    assert metrics.stable_rank == pytest.approx(
        np.linalg.norm(weight, "fro") ** 2 / np.linalg.norm(weight, 2) ** 2, rel=1e-12
    )
    assert 1.0 <= metrics.stable_rank <= min(shape)


def test_norm_metrics_without_alpha_are_nan_only_where_alpha_is_needed() -> None:
    metrics = norm_metrics(np.array([1.0, 2.0, 4.0]), float("nan"))
    assert math.isnan(metrics.alpha_weighted)
    assert math.isnan(metrics.log_alpha_norm)
    assert metrics.norm == 7.0
    assert metrics.stable_rank == 7.0 / 4.0


def test_stable_rank_extremes() -> None:
    rank_one = np.outer(np.arange(1.0, 31.0), np.arange(1.0, 11.0))
    assert norm_metrics(np.linalg.svd(rank_one, compute_uv=False) ** 2, 2.0).stable_rank == pytest.approx(1.0)
    q = orthonormal_columns(50, 20, seed=7)
    assert norm_metrics(np.linalg.svd(q, compute_uv=False) ** 2, 2.0).stable_rank == pytest.approx(20.0)


# --- matrix entropy ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(30, 30), (60, 25)])
def test_entropy_of_orthogonal_matrix_is_one(shape: tuple[int, int]) -> None:
    q = orthonormal_columns(*shape, seed=8)
    assert matrix_entropy(np.linalg.svd(q, compute_uv=False), shape[0]) == pytest.approx(1.0, abs=1e-12)


def test_entropy_matches_scipy_entropy_over_log_rank() -> None:
    weight = np.random.default_rng(9).standard_t(2.5, size=(70, 30))
    sv = np.linalg.svd(weight, compute_uv=False)
    expected = scipy.stats.entropy(sv**2) / math.log(np.linalg.matrix_rank(weight))
    assert matrix_entropy(sv, 70) == pytest.approx(expected, rel=1e-12)
    assert 0 < matrix_entropy(sv, 70) < 1


def test_entropy_of_rank_deficient_matrix_uses_the_rank() -> None:
    weight = low_rank(60, 30, 10, seed=10)
    sv = np.linalg.svd(weight, compute_uv=False)
    nonzero = sv[:10]
    expected = scipy.stats.entropy(nonzero**2) / math.log(10)
    assert matrix_entropy(sv, 60) == pytest.approx(expected, rel=1e-9)


def test_entropy_of_rank_one_is_nan() -> None:
    assert math.isnan(matrix_entropy(np.array([3.0, 0.0, 0.0]), 5))


# --- frame potential -----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d"), [(5, 5), (8, 20), (1, 3)])
def test_frame_potential_of_orthonormal_set_is_n(n: int, d: int) -> None:
    rows = orthonormal_columns(d, n, seed=n + d).T  # n orthonormal rows in R^d
    scales = np.random.default_rng(11).uniform(0.1, 10.0, size=(n, 1))  # row length does not matter
    fp = frame_potential(rows * scales)
    assert fp.frame_potential == pytest.approx(n, rel=1e-12)
    assert fp.frame_potential_normalized == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("n", [3, 5, 8, 13])
def test_frame_potential_of_roots_of_unity_frame_is_n_squared_over_d(n: int) -> None:
    """The n-th roots of unity in R^2 are a unit-norm tight frame: FP = n^2 / 2."""
    angles = 2 * np.pi * np.arange(n) / n
    rows = np.column_stack([np.cos(angles), np.sin(angles)])
    fp = frame_potential(rows)
    assert fp.frame_potential == pytest.approx(n * n / 2, rel=1e-12)
    assert fp.frame_potential_normalized == pytest.approx(1.0, rel=1e-12)


def test_frame_potential_of_harmonic_frame() -> None:
    """Rows of a harmonic frame (DFT columns 1..d/2, real form): equal-norm tight, FP = n^2 / d."""
    n, d = 12, 6
    k = np.arange(n)[:, None]
    freqs = np.arange(1, d // 2 + 1)[None, :]
    rows = np.hstack([np.cos(2 * np.pi * k * freqs / n), np.sin(2 * np.pi * k * freqs / n)])
    fp = frame_potential(rows)
    assert fp.frame_potential == pytest.approx(n * n / d, rel=1e-12)
    assert fp.frame_potential_normalized == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("shape", [(30, 10), (10, 30), (16, 4, 3, 3)])
def test_frame_potential_matches_gram_matrix(shape: tuple[int, ...]) -> None:
    weight = np.random.default_rng(12).standard_normal(shape)
    rows = weight.reshape(shape[0], -1)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    expected = float(np.sum((unit @ unit.T) ** 2))
    n, d = unit.shape
    fp = frame_potential(weight)
    assert fp.frame_potential == pytest.approx(expected, rel=1e-12)
    assert fp.frame_potential == pytest.approx(np.sum(np.linalg.svd(unit, compute_uv=False) ** 4), rel=1e-10)
    assert fp.frame_potential_normalized == pytest.approx(expected / max(n, n * n / d), rel=1e-12)
    assert fp.frame_potential_normalized > 1.0


@pytest.mark.parametrize("shape", [(70, 13), (13, 70)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_frame_potential_over_many_blocks_equals_one_block(monkeypatch, shape, dtype) -> None:
    """Blocks of 4 rows (tall) or columns (wide), the last one partial, sum to the whole Gram."""
    weight = np.random.default_rng(13).standard_normal(shape).astype(dtype)
    whole = frame_potential(weight)  # one block at these sizes
    monkeypatch.setattr(metrics, "FRAME_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(metrics, "FRAME_BLOCK_MIN", 4)
    blocked = frame_potential(weight)
    unit = weight.astype(np.float64) / np.linalg.norm(weight.astype(np.float64), axis=1, keepdims=True)
    expected = float(np.sum((unit @ unit.T) ** 2))
    tolerance = 1e-12 if dtype == np.float64 else 1e-6
    assert blocked.frame_potential == pytest.approx(whole.frame_potential, rel=tolerance)
    assert blocked.frame_potential == pytest.approx(expected, rel=tolerance)
    normalized = whole.frame_potential_normalized
    assert blocked.frame_potential_normalized == pytest.approx(normalized, rel=tolerance)


def test_frame_potential_of_repeated_vector_and_zero_rows() -> None:
    rows = np.tile([[1.0, 2.0, 2.0, 0.0, 0.0]], (4, 1))
    fp = frame_potential(rows)
    assert fp.frame_potential == pytest.approx(16.0)  # every pair has <w_i, w_j>^2 = 1
    assert fp.frame_potential_normalized == pytest.approx(16.0 / 4.0)
    with_zeros = frame_potential(np.vstack([rows, np.zeros((3, 5))]))
    assert with_zeros.frame_potential == pytest.approx(16.0)
    empty = frame_potential(np.zeros((3, 5)))
    assert math.isnan(empty.frame_potential)
    assert math.isnan(empty.frame_potential_normalized)
