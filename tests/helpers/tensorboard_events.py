"""TensorBoard event files read back by TensorBoard's own reader, as its UI reads them, and
checked against the run file they were written from."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

# Per-layer scalars ("<metric>/<layer>") compared value by value with the run file.
TB_SCALARS = (
    "alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank",
    "frame_potential", "rank_loss", "lambda_min", "relative_delta", "delta_W",
)  # fmt: skip


def read_events(path: str | Path) -> event_accumulator.EventAccumulator:
    """Every scalar and histogram event in ``path`` (an event file, or a directory of them).

    TensorBoard keeps a sample of each tag by default; a size guidance of 0 keeps every event, so
    tests can compare each step with the run file.
    """
    accumulator = event_accumulator.EventAccumulator(
        str(path),
        size_guidance={
            event_accumulator.HISTOGRAMS: 0,
            event_accumulator.SCALARS: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    return accumulator.Reload()


def assert_esd_histograms(
    events: event_accumulator.EventAccumulator,
    reader: Any,
    layers: Iterable[str],
    epochs: Sequence[int],
    steps: Sequence[int],
) -> None:
    """Each layer's "esd/<layer>" histogram holds, at each snapshot's step, the log10 of the
    eigenvalues the run file stores for that epoch: same count, range and sum."""
    histograms = events.Tags()["histograms"]
    for name in layers:
        tag = f"esd/{name}"
        assert tag in histograms, histograms
        recorded = events.Histograms(tag)
        assert [event.step for event in recorded] == list(steps)
        for event, epoch in zip(recorded, epochs, strict=True):
            logs = np.log10(reader.esd(name, epoch))
            histogram = event.histogram_value
            assert histogram.num == logs.size
            assert histogram.min == pytest.approx(logs.min(), rel=1e-6, abs=1e-9)
            assert histogram.max == pytest.approx(logs.max(), rel=1e-6, abs=1e-9)
            assert histogram.sum == pytest.approx(logs.sum(), rel=1e-6, abs=1e-6)
            assert sum(histogram.bucket) == logs.size


def assert_layer_scalars(
    events: event_accumulator.EventAccumulator,
    reader: Any,
    layers: Iterable[str],
    steps: Sequence[int],
    metrics: Iterable[str] = TB_SCALARS,
) -> None:
    """Each finite value the run file stores for a layer and metric is the scalar
    "<metric>/<layer>" at its snapshot's step; a NaN (no fit) is no event at all."""
    scalars = events.Tags()["scalars"]
    for name in layers:
        for metric in metrics:
            stored = reader.metric(metric, name)
            finite = [
                (step, value) for step, value in zip(steps, stored, strict=True) if math.isfinite(value)
            ]
            assert finite, (name, metric)
            tag = f"{metric}/{name}"
            assert tag in scalars, scalars
            recorded = events.Scalars(tag)
            assert [event.step for event in recorded] == [step for step, _ in finite]
            assert [event.value for event in recorded] == pytest.approx(
                [value for _, value in finite], rel=1e-6, abs=1e-30
            )
