"""One end-to-end ``model.fit`` with KerasSpectralCallback (torch backend), checked from every side.

The run file must hold epochs 0..E with the Lightning callback's layout, weights equal to the
model's at each epoch, numbers equal to a recomputation on those weights, and TensorBoard events
readable by TensorBoard itself.
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_tiny as tiny  # noqa: E402
from dashboard_client import client_of  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from tensorboard_events import assert_esd_histograms, assert_layer_scalars, read_events  # noqa: E402

from spectral_callbacks import KerasSpectralCallback, SpectralWarning, analyze_matrix, open_run  # noqa: E402
from spectral_callbacks.analysis.averages import AVERAGED_METRICS  # noqa: E402
from spectral_callbacks.analysis.model import analyze_weights  # noqa: E402
from spectral_callbacks.spectra import METRIC_NAMES  # noqa: E402

MAX_EPOCHS = 3
EPOCHS = list(range(MAX_EPOCHS + 1))
STEPS = [epoch * tiny.NUM_BATCHES for epoch in EPOCHS]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    log_dir = tmp_path_factory.mktemp("keras_run") / "logs" / "run1"  # parents created by the callback
    callback = KerasSpectralCallback(log_dir)
    recorder = tiny.WeightRecorder()
    model = tiny.make_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = tiny.fit(model, [callback, recorder], epochs=MAX_EPOCHS)
    reader = open_run(callback.run_path)
    yield types.SimpleNamespace(
        log_dir=log_dir, callback=callback, recorder=recorder, model=model, history=history,
        reader=reader, warnings=[w for w in caught if issubclass(w.category, SpectralWarning)],
    )  # fmt: skip
    reader.close()


def test_fit_finishes_without_spectral_warnings(run: types.SimpleNamespace) -> None:
    assert len(run.history.history["loss"]) == MAX_EPOCHS
    assert [str(w.message) for w in run.warnings] == []


def test_run_file_and_events_are_in_log_dir(run: types.SimpleNamespace) -> None:
    assert run.callback.run_path == run.log_dir / "spectra.h5"
    assert run.callback.run_path.is_file()
    names = [path.name for path in run.log_dir.iterdir()]
    assert not [name for name in names if "write-test" in name]  # the probe is removed
    assert any("tfevents" in name and name.endswith(".spectral") for name in names), names
    assert run.reader.attributes["framework"] == "keras"
    assert run.reader.config["every_n_epochs"] == 1
    assert run.reader.config["every_n_steps"] is None


def test_every_epoch_is_analyzed_once(run: types.SimpleNamespace) -> None:
    index = run.reader.snapshots()
    assert index["epoch"].tolist() == EPOCHS
    assert index["step"].tolist() == STEPS
    assert set(index["status"]) == {"analyzed"}
    assert run.reader.dropped == []


def test_layout_is_the_lightning_callbacks(run: types.SimpleNamespace) -> None:
    """Same layer names, kinds and torch-layout shapes as TinyNet's run under SpectralCallback."""
    reader = run.reader
    assert reader.layers == list(tiny.TINY_LAYERS)  # model order, BatchNormalization left out
    assert reader.parameters == list(tiny.TINY_LAYERS)
    for name, shape in tiny.TINY_LAYERS.items():
        info = reader.layer_info(name)
        assert info["kind"] == tiny.KINDS[name]
        assert info["num_slices"] == (9 if name == "conv" else 1)
        assert (info["N"], info["M"]) == (max(shape[:2]), min(shape[:2]))
        for epoch in EPOCHS:
            weights = reader.weights(name, epoch)
            assert weights.shape == shape
            assert weights.dtype == np.float32
            assert reader.svals(name, epoch).shape == (info["num_slices"], info["M"])


def test_saved_weights_are_the_models_at_each_epoch(run: types.SimpleNamespace) -> None:
    final = tiny.weights_of(run.model)
    assert sorted(run.recorder.at_epoch) == EPOCHS
    for name in tiny.TINY_LAYERS:
        np.testing.assert_array_equal(run.reader.weights(name), final[name])
        for epoch in EPOCHS:
            np.testing.assert_array_equal(run.reader.weights(name, epoch), run.recorder.at_epoch[epoch][name])
    assert not np.array_equal(run.reader.weights("fc1", 0), run.reader.weights("fc1", MAX_EPOCHS))


def test_alphas_equal_analyze_matrix_on_the_models_matrices(run: types.SimpleNamespace) -> None:
    for name in tiny.TINY_LAYERS:
        kind = tiny.KINDS[name]
        stored = run.reader.metrics(name)
        for row, epoch in enumerate(EPOCHS):
            matrix = run.recorder.at_epoch[epoch][name]
            expected = analyze_matrix(matrix, kind=kind, name=name)
            assert stored["alpha"][row] == pytest.approx(expected.alpha, rel=1e-6, nan_ok=True), (name, epoch)
            previous = {name: run.recorder.at_epoch[epoch - 1][name]} if row else None
            (recomputed,) = analyze_weights([(name, matrix, kind)], reference=previous)
            for metric in METRIC_NAMES:
                assert stored[metric][row] == pytest.approx(
                    recomputed.metrics()[metric], rel=1e-6, nan_ok=True
                ), (name, epoch, metric)


@pytest.fixture(scope="module")
def events(run: types.SimpleNamespace) -> event_accumulator.EventAccumulator:
    return read_events(run.log_dir)


def test_tensorboard_esd_histograms(run: types.SimpleNamespace, events) -> None:
    assert_esd_histograms(events, run.reader, tiny.TINY_LAYERS, EPOCHS, STEPS)


def test_tensorboard_scalars_per_layer(run: types.SimpleNamespace, events) -> None:
    assert_layer_scalars(events, run.reader, tiny.TINY_LAYERS, STEPS)
    for metric in AVERAGED_METRICS:
        assert [event.step for event in events.Scalars(f"model/{metric}")] == STEPS


def test_the_callback_is_a_keras_callback(run: types.SimpleNamespace) -> None:
    assert isinstance(run.callback, keras.callbacks.Callback)
    assert run.callback.run_dir == Path(run.log_dir)


def test_the_dashboard_shows_the_keras_run(run: types.SimpleNamespace) -> None:
    get = client_of(run.log_dir.parent)
    listing = get("/runs")[1]
    assert [(r["name"], r["framework"]) for r in listing["runs"]] == [("run1", "keras")]
    overview = get("/overview", run="run1")[1]
    assert overview["layers"] == run.reader.layers
    assert [s["epoch"] for s in overview["snapshots"]] == run.reader.epochs.tolist()
    esd = get("/esd", run="run1", layer="fc1", epoch=1)[1]
    np.testing.assert_array_equal(esd["evals"], run.reader.esd("fc1", 1))
