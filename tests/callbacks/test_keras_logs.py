"""KerasSpectralCallback's scalars in Keras' epoch-end ``logs``, read back from ``CSVLogger``'s file.

The analysis runs in another process, so which snapshot's results have arrived by an epoch's end
depends on timing. What is deterministic, and checked: every key is there from the first epoch
on; each row holds the values of one snapshot analyzed by then (never a later one, never a mix),
NaN only where that snapshot has no finite value or before any result arrived; rows never go back
to an earlier snapshot. The test holds the run file's writer lock until the first epoch has been
logged, so the worker cannot have analyzed anything then: that row is all NaN. From the second
epoch on, a callback before ours waits until the run file has that epoch's snapshot, so results
do arrive during the fit and the last row is not empty.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_tiny as tiny  # noqa: E402
from logged_names import AVERAGED, LAYER_METRICS  # noqa: E402

from spectral_callbacks import KerasSpectralCallback, open_run  # noqa: E402
from spectral_callbacks.runfile.lock import WriterLock  # noqa: E402

EPOCHS = 3
ARRIVAL_SECONDS = 0.5  # the results travel after the run file has the snapshot
WAIT_TIMEOUT_SECONDS = 60.0


class WaitForSnapshot(keras.callbacks.Callback):
    """At the end of Keras' epoch ``e``, waits until the run file has snapshot ``e`` analyzed."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:  # the worker waits for the writer lock the test holds
            return
        deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if (self.log_dir / "spectra.h5").exists():  # the worker creates it once started
                with open_run(self.log_dir) as run:
                    if epoch in run.epochs.tolist():
                        time.sleep(ARRIVAL_SECONDS)
                        return
            time.sleep(0.05)
        raise TimeoutError(f"snapshot {epoch} not analyzed within {WAIT_TIMEOUT_SECONDS}s")


class ReleaseAfterFirstEpoch(keras.callbacks.Callback):
    """Releases the run file's writer lock at the end of the first epoch (listed last)."""

    def __init__(self, lock: WriterLock) -> None:
        super().__init__()
        self.lock = lock

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.lock.release()


def expected_by_epoch(run_path: Path) -> dict[int, dict[str, float]]:
    """Epoch -> {name: value} of every analyzed snapshot, from the run file; NaN where not finite.

    Model averages: the mean over the fitted layers (status ok or warning), the last layer left out.
    """
    with open_run(run_path) as run:
        epochs = run.epochs.tolist()
        layers = run.layers
        values = {layer: {m: run.metric(m, layer) for m in LAYER_METRICS} for layer in layers}
        statuses = {layer: [status for status, _ in run.layer_status(layer)] for layer in layers}
    expected = {}
    for i, epoch in enumerate(epochs):
        scalars = {f"{m}/{layer}": float(values[layer][m][i]) for layer in layers for m in LAYER_METRICS}
        fitted = [layer for layer in layers if statuses[layer][i] in ("ok", "warning")]
        if len(fitted) > 1 and fitted[-1] == layers[-1]:
            fitted = fitted[:-1]
        for m in AVERAGED:
            finite = [values[layer][m][i] for layer in fitted if math.isfinite(values[layer][m][i])]
            scalars[f"model/{m}"] = float(np.mean(finite)) if finite else math.nan
        expected[epoch] = scalars
    return expected


def matching_snapshot(row: dict[str, float], expected: dict[int, dict[str, float]]) -> int | None:
    """The epoch of the snapshot whose values the row holds (``None``: none arrived yet)."""
    names = sorted(next(iter(expected.values())))
    got = np.array([row[name] for name in names])
    if np.isnan(got).all():
        return None
    for epoch, scalars in expected.items():
        want = np.array([scalars[name] for name in names])
        if np.allclose(got, want, rtol=1e-12, atol=0, equal_nan=True):
            return epoch
    raise AssertionError(f"row {row} holds the values of no snapshot")


def test_csv_logger_after_the_callback_gets_every_key_from_the_first_epoch(tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    csv_path = tmp_path / "log.csv"
    callback = KerasSpectralCallback(log_dir)
    lock = WriterLock.acquire(log_dir / "spectra.h5", timeout=10)
    callbacks = [WaitForSnapshot(log_dir), callback, keras.callbacks.CSVLogger(str(csv_path))]
    try:
        history = tiny.fit(tiny.make_model(), [*callbacks, ReleaseAfterFirstEpoch(lock)], epochs=EPOCHS)
    finally:
        lock.release()
    expected = expected_by_epoch(callback.run_path)
    assert sorted(expected) == list(range(EPOCHS + 1))
    names = {f"{m}/{layer}" for layer in tiny.TINY_LAYERS for m in LAYER_METRICS}
    names |= {f"model/{m}" for m in AVERAGED}
    assert set(expected[0]) == names

    with csv_path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))
    assert names <= set(rows[0])  # the columns CSVLogger fixed at the first epoch
    snapshots = []
    for epoch, row in enumerate(rows):
        snapshot = matching_snapshot({name: float(row[name]) for name in names}, expected)
        assert snapshot is None or snapshot <= epoch  # snapshot e+1 is taken at this epoch's end
        snapshots.append(-1 if snapshot is None else snapshot)
    assert snapshots[0] == -1  # every key, all NaN: the worker could not open the run file yet
    assert snapshots == sorted(snapshots)
    assert snapshots[-1] >= 0, "no results arrived although the run file had them"
    # the same floats in fit()'s history, which Keras appends after the user's callbacks
    for name in names:
        assert len(history.history[name]) == EPOCHS
        assert all(isinstance(value, float) for value in history.history[name])
    np.testing.assert_array_equal(history.history["alpha/fc1"], [float(row["alpha/fc1"]) for row in rows])


def test_a_fit_after_its_run_file_was_deleted_starts_a_new_one(tmp_path: Path) -> None:
    """The new run's session is the one that snapshots (and its results reach the logs)."""
    from spectral_callbacks import SpectralWarning

    callback = KerasSpectralCallback(tmp_path / "run")
    model = tiny.make_model()
    tiny.fit(model, [callback], epochs=1)
    callback.run_path.unlink()
    with pytest.warns(SpectralWarning, match="previous fit is gone; starting a new run file"):
        history = tiny.fit(model, [callback], epochs=1)
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1]
        assert run.steps.tolist() == [tiny.NUM_BATCHES, 2 * tiny.NUM_BATCHES]
    assert set(history.history) >= {"alpha/fc1", "model/alpha"}
