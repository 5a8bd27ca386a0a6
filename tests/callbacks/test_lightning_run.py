"""One end-to-end fit with SpectralCallback and a TensorBoard logger, checked from every side.

The run file must hold epochs 0..E with the right shapes, numbers equal to a recomputation on the
saved weights, weights equal to the model's, and TensorBoard events readable by TensorBoard itself.
"""

from __future__ import annotations

import math
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing import event_accumulator
from tensorboard_events import assert_esd_histograms, assert_layer_scalars, read_events

from spectral_callbacks import SpectralCallback, SpectralWarning, analyze_matrix, open_run
from spectral_callbacks.analysis.averages import AVERAGED_METRICS
from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.spectra import METRIC_NAMES

MAX_EPOCHS = 3
EPOCHS = list(range(MAX_EPOCHS + 1))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny: types.SimpleNamespace) -> types.SimpleNamespace:
    root = tmp_path_factory.mktemp("main_run")
    logger = TensorBoardLogger(save_dir=str(root), name="tb")
    callback = SpectralCallback()
    recorder = tiny.WeightRecorder()
    model = tiny.make_model()
    trainer = tiny.make_trainer(root, [callback, recorder], max_epochs=MAX_EPOCHS, logger=logger)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=tiny.make_datamodule())
    reader = open_run(callback.run_path)
    yield types.SimpleNamespace(
        root=root, logger=logger, callback=callback, recorder=recorder, model=model, trainer=trainer,
        reader=reader, warnings=[w for w in caught if issubclass(w.category, SpectralWarning)],
        steps=[epoch * tiny.NUM_BATCHES for epoch in EPOCHS],
    )  # fmt: skip
    reader.close()


def test_fit_finishes_without_spectral_warnings(run: types.SimpleNamespace) -> None:
    assert run.trainer.state.finished
    assert run.trainer.current_epoch == MAX_EPOCHS
    assert [str(w.message) for w in run.warnings] == []


def test_run_file_is_in_the_loggers_directory(run: types.SimpleNamespace) -> None:
    log_dir = Path(run.logger.log_dir)
    assert run.callback.run_path == log_dir / "spectra.h5"
    assert run.callback.run_path.is_file()
    assert not [path.name for path in log_dir.iterdir() if "write-test" in path.name]  # probe removed
    assert run.reader.attributes["framework"] == "lightning"
    assert run.reader.config["every_n_epochs"] == 1


def test_every_epoch_is_analyzed_once(run: types.SimpleNamespace) -> None:
    index = run.reader.snapshots()
    assert index["epoch"].tolist() == EPOCHS
    assert index["step"].tolist() == run.steps
    assert set(index["status"]) == {"analyzed"}
    assert run.reader.epochs.tolist() == EPOCHS
    assert run.reader.steps.tolist() == run.steps
    assert run.reader.dropped == []


def test_layers_and_shapes(run: types.SimpleNamespace, tiny: types.SimpleNamespace) -> None:
    reader = run.reader
    assert sorted(reader.layers) == sorted(tiny.LAYERS)
    assert sorted(reader.parameters) == sorted(tiny.LAYERS)
    for name, shape in tiny.LAYERS.items():
        info = reader.layer_info(name)
        expected_slices = 9 if name == "conv" else 1
        assert info["num_slices"] == expected_slices
        assert (info["N"], info["M"]) == (max(shape[:2]), min(shape[:2]))
        assert info["kind"] == ("conv2d" if name == "conv" else "linear")
        for epoch in EPOCHS:
            weights = reader.weights(name, epoch)
            assert weights.shape == shape
            assert weights.dtype == np.float32
            assert reader.svals(name, epoch).shape == (expected_slices, info["M"])
            assert reader.esd(name, epoch).shape == (expected_slices * info["M"],)
        for metric in METRIC_NAMES:
            assert reader.metric(metric, name).shape == (len(EPOCHS),)
        assert len(reader.layer_status(name)) == len(EPOCHS)
        assert all(status != "skipped" for status, _ in reader.layer_status(name))


def test_saved_weights_are_the_models_at_each_epoch(run: types.SimpleNamespace, tiny) -> None:
    final = tiny.weights_of(run.model)
    for name in tiny.LAYERS:
        np.testing.assert_array_equal(run.reader.weights(name, MAX_EPOCHS), final[name])
        np.testing.assert_array_equal(run.reader.weights(name), final[name])
        for epoch in EPOCHS:
            np.testing.assert_array_equal(run.reader.weights(name, epoch), run.recorder.at_epoch[epoch][name])
    # and the snapshots differ: training moved the weights
    assert not np.array_equal(run.reader.weights("fc1", 0), run.reader.weights("fc1", MAX_EPOCHS))


def test_numbers_equal_a_recomputation_on_the_saved_weights(run: types.SimpleNamespace, tiny) -> None:
    reader = run.reader
    for name in tiny.LAYERS:
        kind = reader.layer_info(name)["kind"]
        stored = reader.metrics(name)
        statuses = reader.layer_status(name)
        for row, epoch in enumerate(EPOCHS):
            weights = reader.weights(name, epoch)
            previous = {name: reader.weights(name, epoch - 1)} if epoch else None
            (expected,) = analyze_weights([(name, weights, kind)], reference=previous)
            assert statuses[row] == (expected.status, expected.reason or "")
            np.testing.assert_allclose(reader.svals(name, epoch), expected.svals, rtol=1e-10)
            np.testing.assert_allclose(reader.esd(name, epoch), expected.evals, rtol=1e-10)
            for metric in METRIC_NAMES:
                assert stored[metric][row] == pytest.approx(
                    expected.metrics()[metric], rel=1e-6, nan_ok=True
                ), (name, epoch, metric)
            if expected.status != "no-fit":
                alpha = analyze_matrix(weights, kind=kind, name=name).alpha
                assert stored["alpha"][row] == pytest.approx(alpha, rel=1e-6)


def test_each_layers_movement_is_its_relative_step_between_snapshots(
    run: types.SimpleNamespace, tiny
) -> None:
    """relative_delta = ||W_t - W_(t-1)||_F / ||W_(t-1)||_F from the saved weights (NaN at the
    first snapshot, which has nothing before it)."""
    for name in tiny.LAYERS:
        stored = run.reader.metric("relative_delta", name)
        assert math.isnan(stored[0])
        for row, epoch in enumerate(EPOCHS[1:], start=1):
            before = run.reader.weights(name, epoch - 1).astype(np.float64)
            after = run.reader.weights(name, epoch).astype(np.float64)
            expected = np.linalg.norm(after - before) / np.linalg.norm(before)
            assert stored[row] == pytest.approx(expected, rel=1e-9)
            assert run.reader.metric("delta_W", name)[row] == pytest.approx(
                np.linalg.norm(after - before), rel=1e-9
            )


@pytest.fixture(scope="module")
def events(run: types.SimpleNamespace) -> event_accumulator.EventAccumulator:
    return read_events(run.logger.log_dir)


def test_tensorboard_event_files_are_in_the_loggers_directory(run: types.SimpleNamespace) -> None:
    files = sorted(path.name for path in Path(run.logger.log_dir).iterdir() if "tfevents" in path.name)
    assert any(name.endswith(".spectral") for name in files), files


def test_tensorboard_esd_histograms(run: types.SimpleNamespace, events, tiny) -> None:
    assert_esd_histograms(events, run.reader, tiny.LAYERS, EPOCHS, run.steps)


def test_tensorboard_scalars_per_layer(run: types.SimpleNamespace, events, tiny) -> None:
    assert_layer_scalars(events, run.reader, tiny.LAYERS, run.steps)


def test_tensorboard_model_averages_leave_out_the_last_layer(run, events, tiny) -> None:
    layers = list(tiny.LAYERS)  # model order; the last one (the classifier) is left out
    for metric in AVERAGED_METRICS:
        recorded = events.Scalars(f"model/{metric}")
        assert [event.step for event in recorded] == run.steps
        for event, row in zip(recorded, range(len(EPOCHS)), strict=True):
            fitted = [name for name in layers if run.reader.layer_status(name)[row][0] in ("ok", "warning")]
            if len(fitted) > 1 and fitted[-1] == layers[-1]:
                fitted = fitted[:-1]
            values = [run.reader.metric(metric, name)[row] for name in fitted]
            expected = np.mean([value for value in values if math.isfinite(value)])
            assert event.value == pytest.approx(expected, rel=1e-6)
