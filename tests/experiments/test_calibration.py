"""Calibration study: Pareto sampling, recovery of a known exponent, and the smoke run's outputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_png, read_csv, section_of

from experiments.calibration import SUMMARY_COLUMNS, calibrate, pareto_sample


def test_pareto_sample_has_the_power_law_survival_function():
    alpha, xmin = 2.5, 3.0
    sample = pareto_sample(alpha, 200_000, np.random.default_rng(1), xmin=xmin)
    assert sample.min() >= xmin
    for x in (4.0, 10.0, 50.0):  # P(X > x) = (x / xmin)^(1 - alpha)
        assert np.mean(sample > x) == pytest.approx((x / xmin) ** (1 - alpha), rel=0.03)
    with pytest.raises(ValueError, match=r"alpha=1\.0"):
        pareto_sample(1.0, 10, np.random.default_rng(0))


def test_calibration_recovers_alpha_within_its_error_bars():
    (point,) = calibrate([2.5], n=1000, repeats=20, seed=3)
    error = abs(point.alpha.mean() - 2.5)
    assert error <= point.std  # inside the plotted error bar
    assert error <= 3 * point.std / np.sqrt(point.alpha.size)  # no bias at 3 standard errors of the mean
    assert 0.03 < point.std < 0.15  # about (alpha - 1) / sqrt(n): 0.05 for the whole sample
    assert np.all(point.n_tail <= 1000) and point.n_tail.mean() > 300


def test_smoke_run_writes_well_formed_outputs(smoke):
    _, out, results = smoke
    rows = read_csv(out / "calibration.csv", SUMMARY_COLUMNS)
    assert [float(row["alpha_true"]) for row in rows] == [1.5, 2.5, 4.0]
    assert all(float(row["alpha_std"]) >= 0 and 0 < float(row["n_tail_mean"]) <= 300 for row in rows)
    read_csv(out / "fits.csv", ["alpha_true", "repeat", "alpha", "sigma", "n_tail"])
    assert_png(out / "calibration.png")
    section = section_of(results, "calibration")
    assert "(results/calibration/calibration.png)" in section
    assert "| alpha_true |" in section and "Agreement with Martin & Mahoney (2021)" in section
