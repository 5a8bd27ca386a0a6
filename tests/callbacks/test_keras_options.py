"""KerasSpectralCallback options end to end: every_n_batches / every_n_epochs with layer filters,
attention and embedding layers, and continuing a run (a second fit, resume=True).

Each test is one short fit (three for resume); the analysis worker takes a few seconds to start.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_tiny as tiny  # noqa: E402

from spectral_callbacks import KerasSpectralCallback, SpectralWarning, open_run  # noqa: E402
from spectral_callbacks.capture.keras import analyzable_layers, copy_weights  # noqa: E402


def test_every_n_batches_snapshots_by_optimizer_step(tmp_path: Path) -> None:
    callback = KerasSpectralCallback(tmp_path, every_n_batches=3)
    recorder = tiny.WeightRecorder()
    model = tiny.make_model()
    tiny.fit(model, [callback, recorder], epochs=2)  # 8 steps
    with open_run(callback.run_path) as run:
        assert run.steps.tolist() == [0, 3, 6]
        assert run.epochs.tolist() == [0, 0, 1]  # the epoch each step belongs to (0-based)
        for step in (0, 3, 6):
            for name in tiny.TINY_LAYERS:
                np.testing.assert_array_equal(run.weights(name, step=step), recorder.at_step[step][name])


def test_every_n_epochs_layer_filters_and_max_evals(tmp_path: Path) -> None:
    callback = KerasSpectralCallback(
        tmp_path, every_n_epochs=2, layers=[keras.layers.Conv2D, r"fc\d", "head"], exclude="fc2",
        save_weights=False, max_evals=12,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny.fit(tiny.make_model(), [callback], epochs=3)
    messages = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    assert any("fc1 is not captured" in text and "max_evals" in text for text in messages), messages
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 2]
        assert run.steps.tolist() == [0, 2 * tiny.NUM_BATCHES]
        assert run.layers == ["conv", "head"]  # fc1: 16 eigenvalues > max_evals=12
        assert "max_evals=12" in json.loads(run.attributes["skipped_parameters"])["fc1"]
        with pytest.raises(KeyError, match="save_weights=False"):
            run.weights("conv", 0)


def test_attention_and_embedding_layers(tmp_path: Path) -> None:
    model = tiny.transformer_model()
    model.compile(optimizer="sgd", loss="mse")
    weights = analyzable_layers(model)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 40, size=(16, 6))
    callback = KerasSpectralCallback(tmp_path, min_evals=4)
    model.fit(tokens, rng.normal(size=(16, 4)), batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    final = copy_weights(weights)
    with open_run(callback.run_path) as run:
        assert run.parameters == [w.name for w in weights]
        assert run.layer_info("emb")["kind"] == "embedding"
        assert run.layer_info("mha.query")["kind"] == "linear"
        assert (run.layer_info("mha.output")["N"], run.layer_info("mha.output")["M"]) == (16, 16)
        for name, array in final.items():
            np.testing.assert_array_equal(run.weights(name, 1), array)
        statuses = {status for layer in run.layers for status, _ in run.layer_status(layer)}
        assert statuses <= {"ok", "warning", "no-fit"}  # every matrix analyzed


def test_a_run_continues_across_fits_and_with_resume(tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    model = tiny.make_model()
    callback = KerasSpectralCallback(log_dir)
    tiny.fit(model, [callback], epochs=2)
    tiny.fit(model, [callback], epochs=3, initial_epoch=2)  # the same callback: the same run file
    with open_run(log_dir) as run:
        run_id = run.attributes["run_id"]
        assert run.epochs.tolist() == [0, 1, 2, 3]
        assert run.steps.tolist() == [0, 4, 8, 12]
    weights = model.get_weights()

    # as after a restart from a checkpoint of weights only: a fresh model and optimizer, resumed
    # at initial_epoch=2 while the run file already has epoch 3
    restarted = tiny.make_model(seed=1)
    restarted.set_weights(weights)
    resumed = KerasSpectralCallback(log_dir, resume=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny.fit(restarted, [resumed], epochs=4, initial_epoch=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    assert len(messages) == 1 and "epochs up to 3 are in the run file" in messages[0]
    with open_run(log_dir) as run:
        assert run.attributes["run_id"] == run_id
        assert run.epochs.tolist() == [0, 1, 2, 3, 4]  # epoch 3 not repeated
        assert run.steps.tolist() == [0, 4, 8, 12, 20]  # steps never go back
        np.testing.assert_array_equal(run.weights("fc1", 4), tiny.weights_of(restarted)["fc1"])
    other = tiny.transformer_model()  # the same callback on a model with other layers
    other.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"Cannot continue the run.*other layers than the previous fit's"):
        other.fit(np.zeros((8, 6), "int32"), np.zeros((8, 4)), epochs=1, verbose=0, callbacks=[resumed])


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="threads are lent from torch's pool only")
def test_torch_threads_are_lent_while_the_worker_is_busy(tmp_path: Path, torch_thread_resizes) -> None:
    """As with SpectralCallback: during this short fit the first snapshot is pending (the worker
    takes seconds to start), so torch's pool runs one thread short until the fit is over."""
    import torch

    callback = KerasSpectralCallback(tmp_path, tensorboard=False)
    tiny.fit(tiny.make_model(), [callback], epochs=2)
    assert torch.get_num_threads() == 2
    assert torch_thread_resizes.lent_and_given_back()
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]
