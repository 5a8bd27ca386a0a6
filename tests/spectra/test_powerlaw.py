"""Power-law fit against independent references: the powerlaw package, WeightWatcher's WWFit, closed forms."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import scipy.optimize

from spectral_callbacks.spectra import compare_distributions, fit_power_law

powerlaw = pytest.importorskip("powerlaw")

WIDE = {"alpha": [1, 1e6]}
TOL = 1e-6


def reference_fit(data: np.ndarray, **kwargs):
    """``powerlaw.Fit`` with the wide alpha range, silenced (it warns and prints to stderr)."""
    kwargs.setdefault("parameter_ranges", WIDE)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(data, verbose=False, **kwargs)
        fit.power_law.alpha  # noqa: B018 - force the lazy fit inside the silenced block
    return fit


def esd(matrix: np.ndarray) -> np.ndarray:
    """Squared singular values, from numpy."""
    return np.linalg.svd(matrix, compute_uv=False) ** 2


def pareto(alpha: float, n: int, seed: int) -> np.ndarray:
    """``n`` samples with pdf ``~ x^-alpha`` on ``[1, inf)``."""
    return np.random.default_rng(seed).pareto(alpha - 1.0, n) + 1.0


def gaussian_esd(n: int, m: int, seed: int) -> np.ndarray:
    return esd(np.random.default_rng(seed).standard_normal((n, m)))


def student_esd(df: float, n: int, m: int, seed: int) -> np.ndarray:
    return esd(np.random.default_rng(seed).standard_t(df, size=(n, m)))


def spiked_esd(n: int, m: int, strengths: tuple[float, ...], seed: int) -> np.ndarray:
    """A Gaussian matrix plus strong rank-one spikes (a trained-like ESD: bulk and outliers)."""
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, m))
    for strength in strengths:
        u, v = rng.standard_normal(n), rng.standard_normal(m)
        matrix += strength * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * math.sqrt(n)
    return esd(matrix)


def pareto_singular_values(n: int, m: int, exponent: float, seed: int) -> np.ndarray:
    """ESD of ``U diag(s) V^T`` with Pareto-distributed singular values ``s``."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((n, m)))[0]
    v = np.linalg.qr(rng.standard_normal((m, m)))[0]
    s = rng.pareto(exponent, m) + 1.0
    return esd(u @ np.diag(s) @ v.T)


DATASETS = {
    **{f"pareto-alpha{a}": (lambda a=a: pareto(a, 600, seed=int(10 * a))) for a in (1.5, 2.0, 2.5, 3.0)},
    **{f"pareto-alpha{a}": (lambda a=a: pareto(a, 400, seed=int(10 * a))) for a in (3.5, 4.0, 5.0)},
    "gaussian-200x100": lambda: gaussian_esd(200, 100, seed=1),
    "gaussian-300x300": lambda: gaussian_esd(300, 300, seed=2),
    "gaussian-500x125": lambda: gaussian_esd(500, 125, seed=3),
    "gaussian-64x40": lambda: gaussian_esd(64, 40, seed=4),
    "student2-400x100": lambda: student_esd(2, 400, 100, seed=5),
    "student3-300x150": lambda: student_esd(3, 300, 150, seed=6),
    "student3-256x256": lambda: student_esd(3, 256, 256, seed=7),
    "student4-250x200": lambda: student_esd(4, 250, 200, seed=8),
    "student5-300x100": lambda: student_esd(5, 300, 100, seed=9),
    "student2.5-120x60": lambda: student_esd(2.5, 120, 60, seed=10),
    "spiked-300x150": lambda: spiked_esd(300, 150, (8.0, 5.0, 3.0, 2.0), seed=11),
    "spiked-student3": lambda: esd(
        np.random.default_rng(12).standard_t(3, (200, 100))
        + 20 * np.outer(np.ones(200), np.linspace(-1, 1, 100))
    ),
    "pareto-svals-300x200": lambda: pareto_singular_values(300, 200, 2.0, seed=13),
    "pareto-svals-200x100": lambda: pareto_singular_values(200, 100, 1.0, seed=14),
}
TIED = {
    "ties-pareto-1dec": lambda: np.round(pareto(2.5, 500, seed=20), 1),
    "ties-pareto-2dec": lambda: np.round(pareto(2.0, 500, seed=21), 2),
    "ties-esd-rounded": lambda: np.round(student_esd(3, 200, 100, seed=22), -1),
    "ties-integers": lambda: np.floor(10 * pareto(2.2, 400, seed=23)).astype(np.int64),
    "ties-repeated-block": lambda: np.concatenate([pareto(2.5, 200, seed=24)] * 3),
}
TINY = {f"tiny-n{n}": (lambda n=n: pareto(2.5, n, seed=30 + n)) for n in (4, 5, 10, 20)}
WITH_NONPOSITIVE = {
    "zeros-and-negatives": lambda: np.concatenate([pareto(2.5, 300, seed=40), np.zeros(20), -np.ones(5)]),
}
ALL = {**DATASETS, **TIED, **TINY, **WITH_NONPOSITIVE}


@pytest.mark.parametrize("name", list(ALL))
def test_fit_matches_powerlaw_with_wide_alpha_range(name: str) -> None:
    data = ALL[name]()
    fit = fit_power_law(data)
    ref = reference_fit(data)
    assert fit.xmin == pytest.approx(ref.xmin, rel=0, abs=TOL)
    assert fit.alpha == pytest.approx(ref.power_law.alpha, rel=0, abs=TOL)
    assert abs(fit.D - ref.power_law.D) < TOL
    assert fit.n_tail == ref.n_tail
    assert fit.sigma == pytest.approx(ref.power_law.standard_err, rel=1e-9)
    assert fit.xmax is None


@pytest.mark.parametrize("true_alpha", [1.5, 2.0, 2.5, 3.0, 3.5])
def test_fit_recovers_known_pareto_exponent(true_alpha: float) -> None:
    """Martin & Mahoney's (2021) calibration: on Pareto samples the estimator is good for alpha in 1.5-3.5."""
    data = pareto(true_alpha, 2000, seed=100 + int(10 * true_alpha))
    fit = fit_power_law(data)
    assert abs(fit.alpha - true_alpha) < 5 * fit.sigma
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail), rel=1e-12)


@pytest.mark.parametrize("true_alpha", [1.7, 2.5, 4.0])
def test_fixed_xmin_alpha_is_the_closed_form_mle(true_alpha: float) -> None:
    data = pareto(true_alpha, 3000, seed=7)
    fit = fit_power_law(data, xmin=1.0)
    expected = 1.0 + data.size / np.sum(np.log(data))
    assert fit.alpha == pytest.approx(expected, rel=1e-12)
    assert fit.n_tail == data.size
    assert abs(fit.alpha - true_alpha) < 4 * (true_alpha - 1) / math.sqrt(data.size)


def test_ks_distance_is_the_closed_form_sup_distance() -> None:
    """D recomputed by brute force from the fitted alpha and xmin (Clauset et al. eq. 3.9)."""
    data = student_esd(3, 200, 100, seed=50)
    fit = fit_power_law(data)
    tail = np.sort(data[data >= fit.xmin])
    n = tail.size
    model_cdf = 1.0 - (tail / fit.xmin) ** (1.0 - fit.alpha)
    empirical_below = np.arange(n) / n
    assert abs(fit.D - np.max(np.abs(model_cdf - empirical_below))) < 1e-12
    # and the chosen xmin is the minimizer over every candidate (brute force)
    values = np.unique(data)
    best = np.inf
    for candidate in values[:-2]:
        part = np.sort(data[data >= candidate])
        alpha = 1 + part.size / np.sum(np.log(part / candidate))
        cdf = 1.0 - (part / candidate) ** (1.0 - alpha)
        best = min(best, np.max(np.abs(cdf - np.arange(part.size) / part.size)))
    assert abs(fit.D - best) < 1e-12


@pytest.mark.parametrize(
    "data_factory",
    [lambda: student_esd(4, 400, 200, seed=0), lambda: gaussian_esd(200, 100, seed=3)],
    ids=["student4-400x200", "gaussian-200x100"],
)
def test_does_not_reproduce_powerlaw_default_range_cap(data_factory) -> None:
    """powerlaw 2.0's default alpha range [0, 3] caps ESD alphas below 3; ours must not."""
    data = data_factory()
    capped = reference_fit(data, parameter_ranges=None).power_law.alpha
    wide = reference_fit(data).power_law.alpha
    ours = fit_power_law(data).alpha
    assert capped < 3.0
    assert wide > 3.0
    assert ours > 3.0
    assert ours == pytest.approx(wide, abs=TOL)


TRUNCATED = {
    name: ALL[name]
    for name in (
        "pareto-alpha2.0",
        "pareto-alpha3.5",
        "gaussian-200x100",
        "student2-400x100",
        "student3-300x150",
        "spiked-300x150",
        "pareto-svals-300x200",
        "ties-pareto-2dec",
        "tiny-n20",
    )
}


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_fit_matches_powerlaw(name: str) -> None:
    data = TRUNCATED[name]().astype(float)
    top = float(data.max())
    fit = fit_power_law(data, xmax=top)
    ref = reference_fit(data, xmax=top)
    assert fit.xmax == top
    assert fit.xmin == ref.xmin
    # powerlaw's numerical MLE is a Nelder-Mead with tol 1e-4
    assert fit.alpha == pytest.approx(ref.power_law.alpha, abs=1e-4)
    assert abs(fit.D - ref.power_law.D) < 1e-4


def test_truncated_fit_below_the_maximum_matches_powerlaw() -> None:
    data = student_esd(3, 300, 150, seed=60)
    cut = float(np.sort(data)[-4])
    fit = fit_power_law(data, xmax=cut)
    ref = reference_fit(data, xmax=cut)
    assert fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.power_law.alpha, abs=1e-4)
    assert fit.n_total == np.count_nonzero(data <= cut)


def _truncated_mle(tail: np.ndarray, xmin: float, xmax: float) -> float:
    """Exact MLE of a power law truncated to [xmin, xmax], by scipy's bounded scalar minimizer."""
    logs = np.log(tail / xmin)
    span = math.log(xmax / xmin)

    def negative_loglikelihood(alpha: float) -> float:
        b = alpha - 1.0
        return -(tail.size * math.log(b / (-math.expm1(-b * span))) - b * logs.sum())

    result = scipy.optimize.minimize_scalar(
        negative_loglikelihood, bounds=(1.0 + 1e-9, 60.0), method="bounded", options={"xatol": 1e-12}
    )
    return float(result.x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truncated_alpha_at_fixed_xmin_is_the_exact_truncated_mle(seed: int) -> None:
    """Where the closed form is outside (1.5, 3] the truncated likelihood is maximized exactly."""
    data = gaussian_esd(300, 150, seed=seed)
    xmin = float(np.quantile(data, 0.8))
    top = float(data.max())
    tail = data[data >= xmin]
    assert 1 + tail.size / np.sum(np.log(tail / xmin)) > 3  # the numerical branch
    fit = fit_power_law(data, xmin=xmin, xmax=top)
    assert fit.alpha == pytest.approx(_truncated_mle(tail, xmin, top), abs=1e-6)
    assert fit.alpha == pytest.approx(reference_fit(data, xmin=xmin, xmax=top).power_law.alpha, abs=1e-4)


FIXED_XMIN = ("pareto-alpha2.5", "student3-300x150", "spiked-300x150", "ties-pareto-1dec", "gaussian-500x125")


@pytest.mark.parametrize("name", FIXED_XMIN)
@pytest.mark.parametrize("where", ["data-value", "between-values"])
def test_fixed_xmin_matches_powerlaw(name: str, where: str) -> None:
    data = ALL[name]()
    values = np.unique(data)
    k = values.size // 3
    xmin = float(values[k]) if where == "data-value" else float(math.sqrt(values[k] * values[k + 1]))
    fit = fit_power_law(data, xmin=xmin)
    ref = reference_fit(data, xmin=xmin)
    assert fit.xmin == xmin
    assert fit.alpha == pytest.approx(ref.power_law.alpha, abs=TOL)
    assert abs(fit.D - ref.power_law.D) < TOL
    assert fit.n_tail == np.count_nonzero(data >= xmin)


WW_DATASETS = [name for name in (*DATASETS, "tiny-n20") if name in ALL]


@pytest.mark.parametrize("name", WW_DATASETS)
def test_fit_matches_weightwatcher_wwfit(name: str) -> None:
    pytest.importorskip("weightwatcher")
    from weightwatcher.WW_powerlaw import WWFit

    data = ALL[name]()
    assert np.unique(data).size == data.size >= 20  # WWFit's candidates are every value: untied only
    fit = fit_power_law(data)
    ref = WWFit(data)
    assert fit.xmin == pytest.approx(ref.xmin, rel=0, abs=TOL)
    assert fit.alpha == pytest.approx(ref.alpha, rel=0, abs=TOL)
    assert abs(fit.D - ref.D) < TOL
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-9)


LARGE = {
    "pareto-n4000": lambda: pareto(2.5, 4000, seed=90),
    "lognormal-n4000": lambda: np.random.default_rng(91).lognormal(0.0, 2.0, 4000),
    "uniform-bulk-plus-pareto-tail": lambda: np.r_[
        np.random.default_rng(92).uniform(0.5, 1.0, 3000), pareto(3.0, 1000, seed=93)
    ],
}


@pytest.mark.parametrize("name", list(LARGE))
def test_fit_matches_wwfit_on_large_inputs(name: str) -> None:
    """Thousands of candidates: every refinement level of the exact KS search is exercised."""
    pytest.importorskip("weightwatcher")
    from weightwatcher.WW_powerlaw import WWFit

    data = LARGE[name]()
    fit = fit_power_law(data)
    ref = WWFit(data)
    assert fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.alpha, rel=0, abs=TOL)
    assert abs(fit.D - ref.D) < TOL


@pytest.mark.parametrize(
    "data_factory",
    [
        lambda: pareto(2.5, 1000, seed=70),
        lambda: np.random.default_rng(71).lognormal(0.0, 1.0, 1000),
        lambda: student_esd(3, 300, 150, seed=72),
    ],
    ids=["pareto", "lognormal", "student3-esd"],
)
def test_compare_distributions_matches_powerlaw(data_factory) -> None:
    data = data_factory()
    fit = fit_power_law(data)
    ours = compare_distributions(data, fit)
    assert set(ours) == {"truncated_power_law", "lognormal", "exponential"}
    reference = reference_fit(data, xmin=reference_fit(data).xmin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for alternative, result in ours.items():
            r, p = reference.distribution_compare("power_law", alternative, normalized_ratio=True)
            assert result.alternative == alternative
            assert abs(result.R - r) < 1e-6
            assert result.p == pytest.approx(p, abs=1e-6)


def test_compare_distributions_favours_power_law_on_pareto_over_exponential() -> None:
    data = pareto(2.5, 1000, seed=73)
    result = compare_distributions(data, fit_power_law(data), alternatives=("exponential",))
    assert set(result) == {"exponential"}
    assert result["exponential"].R > 0
    assert result["exponential"].p < 0.05


def test_truncated_fit_is_compared_on_the_truncated_range() -> None:
    data = student_esd(3, 200, 100, seed=74)
    top = float(data.max())
    fit = fit_power_law(data, xmax=top)
    ours = compare_distributions(data, fit, alternatives=("exponential",))
    reference = reference_fit(data, xmin=fit.xmin, xmax=top)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r, p = reference.distribution_compare("power_law", "exponential", normalized_ratio=True)
    assert abs(ours["exponential"].R - r) < 1e-6
    assert ours["exponential"].p == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.array([1.0, 2.0, np.nan, 4.0, 5.0]), "NaN or Inf"),
        (np.array([1.0, 2.0, np.inf, 4.0, 5.0]), "NaN or Inf"),
        (np.array([1.0, 2.0, -np.inf, 4.0, 5.0]), "NaN or Inf"),
        (np.array([]), "0 distinct positive value"),
        (np.ones((4, 4)), "one-dimensional"),
        (np.full(50, 3.0), "1 distinct positive value"),
        (np.array([1.0, 2.0, 1.0, 2.0]), "2 distinct positive value"),
        (np.array([-1.0, -2.0, 0.0, -3.0]), "0 distinct positive value"),
        (np.arange(1, 10) + 1j, "real numbers"),
        (np.array(["1", "2", "3", "4"]), "real numbers"),
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "empty",
        "2-d",
        "all-equal",
        "two-values",
        "non-positive",
        "complex",
        "strings",
    ],
)
def test_bad_input_raises_clear_value_error(data: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_power_law(data)


def test_bad_xmin_raises() -> None:
    data = pareto(2.5, 100, seed=80)
    with pytest.raises(ValueError, match="xmin must be positive"):
        fit_power_law(data, xmin=0.0)
    with pytest.raises(ValueError, match="fewer than two distinct values"):
        fit_power_law(data, xmin=float(data.max()))


@pytest.mark.parametrize(
    "data",
    [np.logspace(-300, 300, 7), 1.0 + 1e-9 * np.arange(10)],
    ids=["alpha-below-1.01", "alpha-above-1e6"],
)
def test_values_without_a_valid_exponent_raise(data: np.ndarray) -> None:
    """Every candidate tail has alpha outside (1.01, 1e6 - 0.01): no power law to report."""
    with pytest.raises(ValueError, match="exponent"):
        fit_power_law(data)


def test_doubtful_fits_carry_a_warning() -> None:
    tiny = fit_power_law(pareto(2.5, 6, seed=81))
    assert tiny.status == "warning"
    assert "tail of only" in tiny.warning
    steep = fit_power_law(gaussian_esd(300, 300, seed=2))
    assert steep.alpha > 6
    assert steep.status == "warning"
    assert "outside [1.5, 6]" in steep.warning
    good = fit_power_law(pareto(2.5, 1000, seed=82))
    assert good.status == "ok"
    assert good.warning is None


def test_input_order_and_list_input_do_not_matter() -> None:
    data = student_esd(3, 150, 100, seed=83)
    shuffled = np.random.default_rng(0).permutation(data)
    a, b = fit_power_law(data), fit_power_law(list(shuffled))
    assert (a.alpha, a.xmin, a.D) == (b.alpha, b.xmin, b.D)
