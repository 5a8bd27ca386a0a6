"""Marchenko-Pastur fit against the closed-form bulk edges of large Gaussian matrices, and phase labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectral_callbacks.spectra import (
    PHASES,
    MPFit,
    analyze_matrix,
    fit_marchenko_pastur,
    fit_power_law,
    phase_label,
)
from spectral_callbacks.spectra.mp import spike_threshold

SCALE = 2.0  # element standard deviation s, variance s^2 = 4


def mp_edges(s: float, q: float) -> tuple[float, float]:
    """Closed-form MP bulk edges of ``W^T W / N``."""
    return s * s * (1 - 1 / math.sqrt(q)) ** 2, s * s * (1 + 1 / math.sqrt(q)) ** 2


def planted_signal(n: int, m: int, strengths: tuple[float, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((n, len(strengths))))[0]
    v = np.linalg.qr(rng.standard_normal((m, len(strengths))))[0]
    return (u * np.asarray(strengths)) @ v.T


def gram_evals(weight: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``W^T W / N`` by numpy's symmetric eigensolver (independent of our SVD path)."""
    n = weight.shape[0]
    return np.linalg.eigvalsh(weight.T @ weight) / n


@pytest.fixture(scope="module")
def gaussian_4000x1000() -> np.ndarray:
    return SCALE * np.random.default_rng(0).standard_normal((4000, 1000))


def test_mp_fit_of_large_gaussian_matrix(gaussian_4000x1000: np.ndarray) -> None:
    n, m = gaussian_4000x1000.shape
    evals = gram_evals(gaussian_4000x1000)
    fit = fit_marchenko_pastur(evals, n, m)
    lower, upper = mp_edges(SCALE, n / m)
    assert abs(fit.s - SCALE) < 0.02 * SCALE
    assert abs(fit.lambda_plus - upper) < 0.03 * upper
    assert abs(fit.lambda_minus - lower) < 0.03 * upper
    # the MP theorem: the empirical spectrum fills the predicted interval
    assert abs(evals.max() - upper) < 0.03 * upper
    assert abs(evals.min() - lower) < 0.05 * lower
    assert fit.num_spikes == 0
    assert fit.spike_threshold > fit.lambda_plus
    assert fit.mp_softrank == pytest.approx(fit.lambda_plus / evals.max(), rel=1e-12)
    alpha = fit_power_law(evals * n).alpha
    assert phase_label(fit, alpha, rank_loss=0, num_evals=m) == "random-like"


def test_mp_fit_counts_planted_spikes(gaussian_4000x1000: np.ndarray) -> None:
    n, m = gaussian_4000x1000.shape
    weight = gaussian_4000x1000 + planted_signal(n, m, (400.0, 300.0, 250.0), seed=1)
    evals = gram_evals(weight)
    fit = fit_marchenko_pastur(evals, n, m)
    _, upper = mp_edges(SCALE, n / m)
    assert fit.num_spikes == 3
    assert abs(fit.s - SCALE) < 0.02 * SCALE
    assert abs(fit.lambda_plus - upper) < 0.03 * upper
    assert np.count_nonzero(evals > fit.spike_threshold) == 3
    assert fit.mp_softrank == pytest.approx(fit.lambda_plus / evals.max(), rel=1e-12)
    assert fit.mp_softrank < 0.5


@pytest.mark.parametrize(("n", "m"), [(1000, 1000), (1500, 500), (3000, 300)])
def test_mp_edge_for_several_aspect_ratios(n: int, m: int) -> None:
    weight = 0.5 * np.random.default_rng(n + m).standard_normal((n, m))
    evals = gram_evals(weight)
    fit = fit_marchenko_pastur(evals, n, m)
    _, upper = mp_edges(0.5, n / m)
    assert abs(fit.s - 0.5) < 0.01
    assert abs(fit.lambda_plus - upper) < 0.03 * upper
    assert fit.num_spikes == 0


def test_mp_fit_rejects_empty_or_zero_spectra() -> None:
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        fit_marchenko_pastur(np.array([]), 10, 5)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        fit_marchenko_pastur(np.zeros(5), 10, 5)


@pytest.mark.parametrize(
    ("normalize", "factor"),
    [(None, 1000.0), ("N", 1.0)],
    ids=["ww-scale", "normalized"],
)
def test_analyze_reports_the_mp_edge_in_the_esd_scale(normalize: str | None, factor: float) -> None:
    weight = SCALE * np.random.default_rng(2).standard_normal((1000, 250))
    result = analyze_matrix(weight, normalize=normalize)
    _, upper = mp_edges(SCALE, 4.0)
    assert abs(result.mp_s - SCALE) < 0.02 * SCALE
    assert abs(result.lambda_plus - factor * upper) < 0.03 * factor * upper
    assert result.num_spikes == 0
    assert result.phase == "random-like"


def test_analyze_reports_the_mp_edge_of_halved_conv2d_eigenvalues() -> None:
    weight = SCALE * np.random.default_rng(3).standard_normal((400, 100, 2, 2))
    result = analyze_matrix(weight)
    _, upper = mp_edges(SCALE, 4.0)
    assert abs(result.lambda_plus - 0.5 * 400 * upper) < 0.03 * 0.5 * 400 * upper
    assert result.num_spikes == 0
    assert result.lambda_plus == pytest.approx(
        result.evals.max() * result.mp_softrank, rel=1e-9
    )  # mp_softrank = lambda_plus / lambda_max in any common scale


@pytest.mark.parametrize("strength", [150.0, 300.0])
def test_gaussian_bulk_with_few_strong_spikes_is_bulk_plus_spikes(strength: float) -> None:
    """Martin & Mahoney's (2021) Bulk+Spikes: an MP bulk and a few separated outliers (here 3 of 250)."""
    weight = SCALE * np.random.default_rng(0).standard_normal((1000, 250))
    weight += planted_signal(1000, 250, (strength, 0.8 * strength, 0.7 * strength), seed=4)
    result = analyze_matrix(weight)
    assert result.num_spikes == 3
    assert result.mp_softrank < 0.5
    assert result.phase == "bulk+spikes"


def test_heavy_tailed_and_rank_collapse_phases() -> None:
    rng = np.random.default_rng(5)
    heavy = analyze_matrix(rng.standard_t(1.5, size=(1000, 250)))
    assert heavy.alpha < 4
    assert heavy.phase == "heavy-tailed"
    collapsed = analyze_matrix(rng.standard_normal((300, 40)) @ rng.standard_normal((40, 100)))
    assert collapsed.rank_loss == 60
    assert collapsed.phase == "rank-collapse"


def test_phase_rule_order() -> None:
    few = MPFit(s=1.0, lambda_plus=4.0, lambda_minus=0.0, spike_threshold=4.5, num_spikes=2, mp_softrank=0.3)
    edge = MPFit(s=1.0, lambda_plus=4.0, lambda_minus=0.0, spike_threshold=4.5, num_spikes=2, mp_softrank=0.9)
    many = MPFit(
        s=1.0, lambda_plus=4.0, lambda_minus=0.0, spike_threshold=4.5, num_spikes=30, mp_softrank=0.1
    )
    none = MPFit(s=1.0, lambda_plus=4.0, lambda_minus=0.0, spike_threshold=4.5, num_spikes=0, mp_softrank=1.0)
    assert phase_label(few, 2.5, rank_loss=1, num_evals=100) == "rank-collapse"
    assert phase_label(none, 8.0, rank_loss=0, num_evals=100) == "random-like"
    assert phase_label(many, 8.0, rank_loss=0, num_evals=100) == "bulk-decay"
    assert phase_label(few, 8.0, rank_loss=0, num_evals=100) == "bulk+spikes"
    assert phase_label(edge, 8.0, rank_loss=0, num_evals=100) == "bleeding-out"
    assert phase_label(None, float("nan"), rank_loss=0, num_evals=100) == "unknown"
    labels = {phase_label(mp, a, 0, 100) for mp in (few, edge, many, none) for a in (2.0, 8.0, float("nan"))}
    assert labels <= set(PHASES)


@pytest.mark.parametrize(("N", "M", "spikes"), [(400, 100, 3), (256, 256, 1), (300, 40, 0)])
def test_the_spike_threshold_follows_from_the_edge(N: int, M: int, spikes: int) -> None:  # noqa: N803
    rng = np.random.default_rng(N + M)
    W = rng.standard_normal((N, M))  # noqa: N806
    for k in range(spikes):
        W += 3 * (k + 2) * np.outer(rng.standard_normal(N), rng.standard_normal(M)) / np.sqrt(M)  # noqa: N806
    evals = np.linalg.svd(W, compute_uv=False) ** 2 / N
    fit = fit_marchenko_pastur(evals, N, M)
    for scale in (1.0, float(N), 1e-3):  # the ESD's scale does not matter: both scale alike
        threshold = spike_threshold(fit.lambda_plus * scale, N, M)
        assert threshold == pytest.approx(fit.spike_threshold * scale, rel=1e-12)
        assert int(np.sum(evals * scale > threshold)) == fit.num_spikes
    assert fit.num_spikes == spikes
