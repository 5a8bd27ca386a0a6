"""The up-front estimate of operator-spectrum cost and the warning when it outgrows training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectral_callbacks.analysis.operators import (
    OperatorOptions,
    OperatorSpec,
    estimate_operator_seconds,
    operator_budget_warning,
)
from spectral_callbacks.spectra import ConvOperator


def conv_spec(channels: int = 8, size: int = 12) -> tuple[OperatorSpec, np.ndarray]:
    kernel = np.random.default_rng(0).standard_normal((channels, channels, 3, 3))
    operator = ConvOperator(kernel, input_hw=(size, size), padding=(1, 1))
    return OperatorSpec.of("conv", operator, (1, 1)), kernel


def test_estimate_is_a_positive_time_that_grows_with_the_work() -> None:
    spec, kernel = conv_spec()
    small = OperatorOptions(num_moments=16, num_probes=2, top_k=2)
    large = OperatorOptions(num_moments=1024, num_probes=16, top_k=2)
    estimates = [estimate_operator_seconds(spec, kernel, options) for options in (small, large)]
    assert all(math.isfinite(value) and value > 0 for value in estimates)
    assert estimates[1] > estimates[0]  # 64 times the block products, each 8 times wider


def test_estimate_accepts_a_grouped_kernel_as_captured() -> None:
    kernel = np.random.default_rng(1).standard_normal((4, 2, 2, 3, 3))  # (groups, out/g, in/g, kh, kw)
    operator = ConvOperator(kernel.reshape(8, 2, 3, 3), input_hw=(10, 10), padding=(1, 1), groups=4)
    spec = OperatorSpec.of("grouped", operator, (1, 1))
    assert estimate_operator_seconds(spec, kernel, OperatorOptions(num_moments=8, num_probes=2)) > 0


@pytest.mark.parametrize(("estimate", "epoch", "every", "warned"), [
    (10.0, 20.0, 1, False),
    (30.0, 20.0, 1, True),
    (30.0, 20.0, 2, False),  # two epochs of training between operator snapshots
])  # fmt: skip
def test_warning_when_a_snapshot_outlasts_the_training_it_shadows(
    estimate: float, epoch: float, every: int, warned: bool
) -> None:
    message = operator_budget_warning(estimate, epoch, OperatorOptions(every_n_epochs=every))
    assert (message is not None) == warned
    if warned:
        assert "30 s of one core per snapshot" in message
        assert "operator_every_n_epochs=1" in message and "operator_moments=256" in message
