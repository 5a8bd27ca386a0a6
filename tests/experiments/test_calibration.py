"""Calibration study: the source's sampler is numpy's Lomax law, the pure Pareto null is a power law,
the rules can fail, and the smoke run writes its outputs and verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_png, read_csv, section_of

from experiments.calibration import (
    CLAIMS,
    calibrate,
    draw,
    judge_bias_pattern,
    judge_good_range,
    pareto_sample,
)
from experiments.calibration_report import SUMMARY_COLUMNS
from experiments.verdicts import Evidence, derive_verdicts, read_evidence, verdicts_markdown


def test_the_sources_sampler_is_numpys_lomax_law():
    mu = 2.0
    sample = draw("lomax", mu, 200_000, seed=1, repeat=0)
    assert sample.min() >= 0 and sample.min() < 1e-3  # support from 0, not from 1 as a pure Pareto law
    for x in (0.5, 2.0, 10.0):  # P(X > x) = (1 + x)^-mu; the pure Pareto law would give x^-mu
        assert np.mean(sample > x) == pytest.approx((1 + x) ** -mu, rel=0.03)
    rng = np.random.default_rng([1, 0, round(mu * 1000), 0])
    assert np.array_equal(draw("lomax", mu, 50, seed=1, repeat=0), rng.pareto(mu, 50))


def test_the_null_is_the_pure_power_law_of_exponent_mu_plus_one():
    sample = draw("pareto", 1.5, 200_000, seed=1, repeat=0)  # alpha = 2.5, xmin = 1
    assert sample.min() >= 1.0
    for x in (2.0, 10.0, 50.0):  # P(X > x) = x^(1 - alpha)
        assert np.mean(sample > x) == pytest.approx(x**-1.5, rel=0.03)
    with pytest.raises(ValueError, match=r"alpha=1\.0"):
        pareto_sample(1.0, 10, np.random.default_rng(0))


def test_pure_pareto_is_recovered_and_lomax_bends_large_exponents_down():
    (pareto,) = calibrate("pareto", [1.5], n=1000, repeats=20, seed=3)
    error = abs(pareto.alpha.mean() - 2.5)
    assert error <= 3 * pareto.alpha.std(ddof=1) / np.sqrt(20)  # no bias at 3 standard errors
    (lomax,) = calibrate("lomax", [3.0], n=1000, repeats=20, seed=3)  # true alpha 4
    assert lomax.alpha.mean() < 4 - 5 * lomax.alpha.std(ddof=1) / np.sqrt(20)
    with pytest.raises(ValueError, match="law='cauchy'"):
        calibrate("cauchy", [1.0], n=10, repeats=1)


def biases(
    law: str, per_alpha: dict[float, float], spread: float = 0.01
) -> list[tuple[str, str, int, float]]:
    noise = np.random.default_rng(0).normal(0, spread, size=10)
    return [("bias", f"{law} alpha={a:g}", r, b + noise[r]) for a, b in per_alpha.items() for r in range(10)]


def test_the_rules_can_fail_and_the_null_can_pass():
    crossing = {1.5: 0.3, 2.0: 0.2, 4.0: -0.5, 5.0: -1.0}
    flat = dict.fromkeys(crossing, 0.0)
    agrees = judge_bias_pattern(Evidence(biases("lomax", crossing) + biases("pareto", flat)))
    assert (agrees.verdict, agrees.null_passes) == ("agrees", False)
    only_under = judge_bias_pattern(
        Evidence(biases("lomax", {**crossing, 1.5: 0.0, 2.0: -0.2}) + biases("pareto", flat))
    )
    assert only_under.verdict == "partly"
    null_passes = judge_bias_pattern(Evidence(biases("lomax", crossing) + biases("pareto", crossing)))
    assert null_passes.null_passes is True
    edge = {1.5: 0.0, 2.0: 0.0, 3.0: 0.0, 4.0: -1.0}
    good = judge_good_range(Evidence(biases("lomax", edge) + biases("pareto", dict.fromkeys(edge, 0.0))))
    assert (good.verdict, good.null_passes) == ("agrees", False)
    bad = judge_good_range(
        Evidence(biases("lomax", {1.5: 0.0, 2.0: -0.5, 3.0: -0.9}) + biases("pareto", edge))
    )
    assert bad.verdict == "disagrees" and bad.null_passes is True


def test_smoke_run_writes_outputs_and_verdicts(smoke):
    _, out, results = smoke
    rows = read_csv(out / "calibration.csv", SUMMARY_COLUMNS)
    assert {(row["law"], float(row["alpha_true"])) for row in rows} == {
        (law, a) for law in ("lomax", "pareto") for a in (1.5, 2.0, 4.0)
    }
    read_csv(out / "fits.csv", ["law", "mu", "alpha_true", "repeat", "alpha", "sigma", "n_tail", "xmin"])
    read_csv(out / "student_t.csv", ["condition", "repeat", "alpha"])
    assert_png(out / "calibration.png")
    section = section_of(results, "calibration")
    assert "(results/calibration/calibration.png)" in section
    assert "alpha_true = mu + 1" in section
    evidence = read_evidence(out / "evidence.csv")
    assert verdicts_markdown(derive_verdicts(CLAIMS, evidence)) in section
    for claim in CLAIMS:
        assert f"**Claim `{claim.key}` (Martin & Mahoney, 2021).**" in section
