"""Spectral alert rules on sequences of layer rows: when each fires, and only then."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spectral_callbacks import SpectralMonitor
from spectral_callbacks.analysis.model import analyze_weights


@pytest.fixture(scope="module")
def row():
    """A real layer row (100x60 Gaussian) whose metrics the tests then change one at a time."""
    weight = np.random.default_rng(0).standard_normal((100, 60)).astype(np.float32)
    (spectrum,) = analyze_weights([("fc", weight, "linear")])
    return dataclasses.replace(spectrum, alpha=4.0, rank_loss=0, lambda_min=1.0, spectral_norm=10.0)


def run(monitor: SpectralMonitor, rows: list) -> list[tuple[int, str, str]]:
    state = monitor.state()
    fired = []
    for epoch, layer_row in enumerate(rows):
        for alert in state.check(epoch, 10 * epoch, [layer_row]):
            assert alert.layer == "fc" and alert.step == 10 * epoch
            fired.append((epoch, alert.rule, alert.metric))
    return fired


def test_rank_loss_reaching_its_threshold_fires_once_until_it_clears(row) -> None:
    """M = 60: 1% is below one singular value, so one lost singular value fires."""
    losses = [0, 0, 1, 3, 3, 0, 2]
    rows = [dataclasses.replace(row, rank_loss=loss) for loss in losses]
    expected = [(2, "rank_collapse", "rank_loss"), (6, "rank_collapse", "rank_loss")]
    assert run(SpectralMonitor(), rows) == expected
    # a tenth of the 60: six lost singular values are needed
    assert run(SpectralMonitor(rank_loss_fraction=0.1), rows) == []


def test_lambda_min_falling_by_the_factor_fires(row) -> None:
    values = [1.0, 0.5, 1e-4, 1e-5, 1e-9]
    rows = [dataclasses.replace(row, lambda_min=value) for value in values]
    expected = [(2, "rank_collapse", "lambda_min"), (4, "rank_collapse", "lambda_min")]
    assert run(SpectralMonitor(), rows) == expected
    assert run(SpectralMonitor(lambda_min_drop=None), rows) == []


def test_alpha_leaving_the_range_fires_but_not_a_starting_value_outside_it(row) -> None:
    alphas = [7.0, 7.5, 5.0, 1.8, 1.5, 3.0, 6.5]
    rows = [dataclasses.replace(row, alpha=alpha) for alpha in alphas]
    fired = run(SpectralMonitor(), rows)
    assert fired == [(3, "alpha_range", "alpha"), (6, "alpha_range", "alpha")]
    assert run(SpectralMonitor(alpha_range=(1.0, 8.0)), rows) == []


def test_spectral_norm_growth_is_per_epoch_between_snapshots(row) -> None:
    state = SpectralMonitor().state()
    assert state.check(0, 0, [row]) == []
    # 3.5x over two epochs is less than 2x per epoch; 3x over the next one is more
    assert state.check(2, 20, [dataclasses.replace(row, spectral_norm=35.0)]) == []
    (alert,) = state.check(3, 30, [dataclasses.replace(row, spectral_norm=105.0)])
    assert (alert.rule, alert.value, alert.previous) == ("spectral_norm_growth", 105.0, 35.0)
    message = alert.message()
    assert "fc" in message and "epoch 3" in message and "spectral_norm = 105" in message


def test_traps_appearing_fire(row) -> None:
    counts = [0.0, 0.0, 2.0, 2.0]
    if not hasattr(row, "num_traps"):
        pytest.skip("this version has no correlation traps")
    rows = [dataclasses.replace(row, num_traps=count) for count in counts]
    assert run(SpectralMonitor(), rows) == [(2, "traps", "num_traps")]


def test_skipped_layers_are_not_watched(row) -> None:
    skipped = dataclasses.replace(row, status="skipped", rank_loss=50)
    assert run(SpectralMonitor(), [row, skipped, row]) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rank_collapse": 1}, "rank_collapse=1"),
        ({"rank_loss_fraction": 0.0}, "rank_loss_fraction=0.0"),
        ({"lambda_min_drop": 0.5}, "lambda_min_drop=0.5"),
        ({"alpha_range": (6, 2)}, r"alpha_range=\(6, 2\)"),
        ({"alpha_range": 2.0}, "alpha_range=2.0"),
        ({"spectral_norm_growth": "2"}, "spectral_norm_growth='2'"),
        ({"stop": "yes"}, "stop='yes'"),
    ],
)
def test_bad_rule_arguments_are_named(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid value for {message}"):
        SpectralMonitor(**arguments)
