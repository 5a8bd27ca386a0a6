"""analyze_matrix against WeightWatcher 0.7.x, powerlaw and closed forms; its errors and record shape."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
from weightwatcher_runs import weightwatcher_analysis

from spectral_callbacks.spectra import (
    EVALS_THRESH,
    METRIC_NAMES,
    LayerSpectrum,
    analyze_matrix,
    analyze_view,
    matrices_of,
)

WW_COLUMNS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")


@pytest.fixture(scope="module")
def ww_model_and_frame():
    """A small torch model (three Linear, one Conv2d; every layer >= 50 eigenvalues) and WW's analysis."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("weightwatcher")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(16, 48, kernel_size=3),
        torch.nn.Flatten(),
        torch.nn.Linear(400, 300),
        torch.nn.Linear(300, 200),
        torch.nn.Linear(200, 100),
    )
    heavy = np.random.default_rng(0).standard_t(2.0, size=(200, 300)) / 30
    with torch.no_grad():
        model[3].weight.copy_(torch.from_numpy(heavy.astype(np.float32)))  # a trained-like heavy tail
    frame = weightwatcher_analysis(model)
    weights = [layer.weight.detach().numpy() for layer in (model[0], model[2], model[3], model[4])]
    return weights, frame


def test_analyze_matrix_matches_weightwatcher(ww_model_and_frame) -> None:
    weights, frame = ww_model_and_frame
    assert len(frame) == len(weights)
    for weight, (_, ww_row) in zip(weights, frame.sort_values("layer_id").iterrows(), strict=True):
        ours = analyze_matrix(weight)
        assert ours.num_evals >= 50
        assert (ours.N, ours.M, ours.num_evals) == (ww_row["N"], ww_row["M"], ww_row["num_evals"])
        for column in WW_COLUMNS:
            assert getattr(ours, column) == pytest.approx(ww_row[column], abs=1e-4), column
        assert abs(ours.D - ww_row["D"]) < 1e-6
        assert ours.xmin == pytest.approx(ww_row["xmin"], rel=1e-9)
        assert ours.num_pl_spikes == ww_row["num_pl_spikes"]
        assert ours.log_alpha_norm == pytest.approx(ww_row["log_alpha_norm"], abs=1e-4)
        assert ours.spectral_norm == pytest.approx(ww_row["spectral_norm"], rel=1e-6)
        assert ours.norm == pytest.approx(ww_row["norm"], rel=1e-6)
        assert ours.rank_loss == ww_row["rank_loss"]
        assert ours.entropy == pytest.approx(ww_row["entropy"], abs=1e-6)  # WW adds 1e-10 to p


def test_weightwatcher_comparison_includes_a_heavy_tailed_layer(ww_model_and_frame) -> None:
    weights, _ = ww_model_and_frame
    alphas = [analyze_matrix(w).alpha for w in weights]
    assert alphas[2] < 4  # the planted Student-t layer
    assert max(alphas) > 4  # and random-like ones


def test_conv2d_norm_metrics_are_log10_of_half_the_pooled_sums() -> None:
    weight = np.random.default_rng(1).standard_normal((96, 48, 3, 3))
    pooled = np.concatenate(
        [np.linalg.svd(weight[:, :, i, j], compute_uv=False) ** 2 for i in range(3) for j in range(3)]
    )
    result = analyze_matrix(weight)
    assert result.kind == "conv2d"
    assert result.num_evals == 9 * 48
    assert result.log_norm == pytest.approx(math.log10(pooled.sum() / 2), rel=1e-12)
    assert result.log_spectral_norm == pytest.approx(math.log10(pooled.max() / 2), rel=1e-12)
    unscaled = analyze_matrix(weight, conv2d_norm=False)
    assert unscaled.log_norm == pytest.approx(math.log10(pooled.sum()), rel=1e-12)
    assert unscaled.alpha == pytest.approx(result.alpha, rel=1e-9)  # alpha does not depend on the scale


def test_power_law_fit_drops_tiny_eigenvalues_but_norms_keep_them() -> None:
    """WeightWatcher's EVALS_THRESH: eigenvalues <= 1e-5 are left out of the fit only."""
    powerlaw = pytest.importorskip("powerlaw")
    rng = np.random.default_rng(2)
    u = np.linalg.qr(rng.standard_normal((200, 100)))[0]
    v = np.linalg.qr(rng.standard_normal((100, 100)))[0]
    svals = np.r_[rng.pareto(1.5, 80) + 1.0, np.full(20, 1e-3)]  # 20 eigenvalues of 1e-6
    weight = (u * svals) @ v.T
    evals = np.sort(np.linalg.svd(weight, compute_uv=False) ** 2)
    assert EVALS_THRESH == 1e-5
    assert np.count_nonzero(evals <= EVALS_THRESH) == 20
    result = analyze_matrix(weight)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(evals[evals > EVALS_THRESH], parameter_ranges={"alpha": [1, 1e6]}, verbose=False)
        ref_alpha = ref.power_law.alpha
    assert result.alpha == pytest.approx(ref_alpha, abs=1e-6)
    assert result.xmin == pytest.approx(ref.xmin, rel=1e-12)
    assert result.norm == pytest.approx(np.sum(weight**2), rel=1e-10)
    assert result.lambda_min == pytest.approx(1e-6, rel=1e-6)
    assert result.num_evals == 100


def test_truncated_option_matches_powerlaw_truncated_fit() -> None:
    powerlaw = pytest.importorskip("powerlaw")
    weight = np.random.default_rng(3).standard_t(2.5, size=(300, 150))
    evals = np.linalg.svd(weight, compute_uv=False) ** 2
    result = analyze_matrix(weight, xmax="max")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(evals, xmax=evals.max(), parameter_ranges={"alpha": [1, 1e6]}, verbose=False)
        ref_alpha = ref.power_law.alpha
    assert result.alpha == pytest.approx(ref_alpha, abs=1e-4)
    assert result.xmin == pytest.approx(ref.xmin, rel=1e-12)
    assert result.xmax == pytest.approx(evals.max(), rel=1e-12)
    untruncated = analyze_matrix(weight)
    assert untruncated.xmax == pytest.approx(evals.max(), rel=1e-12)  # reported, not used, by default


@pytest.mark.parametrize(
    ("weight", "options", "match"),
    [
        (np.ones(10), {}, "at least 2 dimensions"),
        (np.ones((5, 3)), {}, "cannot be analyzed: 3 eigenvalues < min_evals=8"),
        (np.ones((30, 10)), {"kind": "attention"}, "splits into 4 matrices"),  # whole, q, k, v
        (np.zeros((30, 10)), {}, "all zeros"),
        (np.full((30, 10), np.nan), {}, "NaN or Inf"),
        (np.ones((30, 10), dtype=np.int32), {}, "dtype int32"),
        (np.ones((30, 10)), {}, "distinct positive value"),  # rank one: nothing to fit
        (np.ones((30, 10)), {"normalize": "sqrtN"}, "normalize"),
        (np.eye(30)[:, :10], {"method": "qr"}, "method='qr'"),
        (np.eye(30)[:, :10], {"gram_rtol": 0.0}, "rtol=0.0"),
    ],
    ids=[
        "1-d",
        "too-small",
        "attention",
        "zeros",
        "nan",
        "int",
        "no-fit",
        "bad-normalize",
        "bad-method",
        "bad-gram-rtol",
    ],
)
def test_analyze_matrix_errors(weight: np.ndarray, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        analyze_matrix(weight, **options)


def test_analyze_view_without_strict_reports_no_fit_and_keeps_the_other_metrics() -> None:
    (view,) = matrices_of("w", np.ones((30, 10)))
    result = analyze_view(view)
    assert result.status == "no-fit"
    assert "distinct positive value" in result.reason
    assert math.isnan(result.alpha)
    assert result.log_norm == pytest.approx(math.log10(300.0))
    assert result.rank == 1
    assert result.rank_loss == 9


def test_float32_weights_use_float32_rank_tolerance() -> None:
    rng = np.random.default_rng(4)
    weight = (rng.standard_normal((80, 20)) @ rng.standard_normal((20, 40))).astype(np.float32)
    assert analyze_matrix(weight).rank == np.linalg.matrix_rank(weight) == 20
    (view,) = matrices_of("w", weight)
    assert analyze_view(view, weights_dtype=np.float64).rank == 40  # float64 eps sees the rounding


def test_layer_spectrum_record() -> None:
    weight = np.random.default_rng(5).standard_t(3, size=(120, 60))
    result = analyze_matrix(weight, name="fc1.weight")
    assert isinstance(result, LayerSpectrum)
    assert result.name == "fc1.weight"
    assert result.status in ("ok", "warning")
    metrics = result.metrics()
    assert tuple(metrics) == METRIC_NAMES
    assert all(isinstance(value, float) for value in metrics.values())
    for name in ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank", "D"):
        assert name in METRIC_NAMES
    row = result.row()
    assert "evals" not in row
    assert "svals" not in row
    assert row["name"] == "fc1.weight"
    assert row["phase"] == result.phase
    reference = np.linalg.svd(weight, compute_uv=False)
    assert result.svals.shape == (1, 60)
    np.testing.assert_allclose(result.svals[0], reference, rtol=1e-12)
    np.testing.assert_allclose(result.evals, np.sort(reference**2), rtol=1e-12)
