"""Mistakes are reported before training starts, Keras style: what is wrong, then what was received.

None of these tests gets as far as starting the analysis worker, so they are fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_tiny as tiny  # noqa: E402
from training_checks import fails_before_training  # noqa: E402

from spectral_callbacks import KerasSpectralCallback, open_run  # noqa: E402
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter  # noqa: E402


def fit_fails_before_training(
    model: keras.Model, callback: KerasSpectralCallback, error: type, match: str, *, fit=tiny.fit
) -> str:
    """``fit(model, [callback])`` must raise before the first step; returns the message."""
    return fails_before_training(
        lambda: fit(model, [callback]),
        weights=lambda: dict(enumerate(model.get_weights())),
        steps=lambda: int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        error=error,
        match=match,
    )


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_epochs": 1.5}, "every_n_epochs"),
        ({"every_n_batches": 0}, "every_n_batches"),
        ({"every_n_batches": True}, "every_n_batches"),
        ({"on_full": "x"}, "on_full"),
        ({"queue_size": 0}, "queue_size"),
        ({"weights_dtype": "int8"}, "weights_dtype"),
        ({"xmax": "min"}, "xmax"),
    ],
)
def test_invalid_settings_name_the_argument_and_value(tmp_path: Path, kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument) as error:
        KerasSpectralCallback(tmp_path, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(error.value)


def test_every_n_batches_error_ends_with_what_was_received(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Received: every_n_batches=-2$"):
        KerasSpectralCallback(tmp_path, every_n_batches=-2)


def test_log_dir_must_be_a_path() -> None:
    with pytest.raises(TypeError, match=r"Received: log_dir=None$"):
        KerasSpectralCallback(None)


def test_valid_settings_are_kept(tmp_path: Path) -> None:
    callback = KerasSpectralCallback(str(tmp_path), every_n_batches=5, on_full="drop", xmax="max")
    assert (callback.config.every_n_steps, callback.config.on_full) == (5, "drop")
    assert callback.run_dir == tmp_path
    assert callback.run_path is None  # known once training starts


# -- Keras 2 / tf.keras ----------------------------------------------------------------------------
def test_keras_2_is_refused_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keras, "__version__", "2.15.0")
    with pytest.raises(ImportError, match=r"requires Keras 3.*Received: keras.__version__='2.15.0'"):
        KerasSpectralCallback(tmp_path)


def test_a_model_that_is_not_a_keras_3_model_is_refused(tmp_path: Path) -> None:
    class Keras2Model:  # what tf.keras' fit hands its callbacks
        pass

    Keras2Model.__module__ = "tf_keras.src.engine.training"
    with pytest.raises(TypeError, match=r"Keras 3 models.*Received: model of type tf_keras"):
        KerasSpectralCallback(tmp_path).set_model(Keras2Model())


# -- layers --------------------------------------------------------------------------------------------
def test_model_without_analyzable_layers_lists_its_layers(tmp_path: Path) -> None:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(name="flat"),
            keras.layers.BatchNormalization(name="bn"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    callback = KerasSpectralCallback(tmp_path / "spectral")
    x = np.ones((16, 8, 8, 3), "float32")

    def fit(model: keras.Model, callbacks: list) -> None:
        model.fit(x, x.reshape(16, -1), batch_size=8, epochs=1, verbose=0, callbacks=callbacks)

    message = fit_fails_before_training(model, callback, ValueError, "no analyzable layer", fit=fit)
    assert "Received: a model with layers flat (Flatten), bn (BatchNormalization)" in message
    assert not (tmp_path / "spectral").exists()


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"layers": "encoder"}, "'encoder'"),
        ({"layers": ["fc1", r"block/\d+"]}, "block"),
        ({"layers": keras.layers.LSTM}, "LSTM"),
        ({"exclude": "decoder"}, "'decoder'"),
    ],
)
def test_filter_matching_nothing_lists_the_layers(tmp_path: Path, kwargs: dict, culprit: str) -> None:
    callback = KerasSpectralCallback(tmp_path / "spectral", **kwargs)
    message = fit_fails_before_training(
        tiny.make_model(), callback, ValueError, "matches no analyzable layer"
    )
    assert culprit in message
    assert all(name in message for name in tiny.TINY_LAYERS), message
    assert not (tmp_path / "spectral" / "spectra.h5").exists()


# -- where the run goes ----------------------------------------------------------------------------
def test_log_dir_that_cannot_be_created_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    log_dir = blocker / "logs" / "run1"
    callback = KerasSpectralCallback(log_dir)
    message = fit_fails_before_training(tiny.make_model(), callback, ValueError, "cannot write")
    assert str(log_dir) in message
    assert blocker.read_text() == "a regular file"


def write_other_run(log_dir: Path, layers: dict[str, tuple[int, ...]]) -> bytes:
    specs = [ParameterSpec(name, tiny.KINDS.get(name, "linear"), shape) for name, shape in layers.items()]
    other = RunWriter.open(
        log_dir / "spectra.h5", run_id="another-run", framework="lightning", config_json="{}",
        parameters=specs, weights_dtype="float32",
    )  # fmt: skip
    other.append_index(0, 0, "analyzed")
    other.close()
    return (log_dir / "spectra.h5").read_bytes()


def test_run_file_of_another_run_is_refused_without_resume(tmp_path: Path) -> None:
    log_dir = tmp_path / "spectral"
    before = write_other_run(log_dir, tiny.TINY_LAYERS)
    callback = KerasSpectralCallback(log_dir)
    message = fit_fails_before_training(tiny.make_model(), callback, ValueError, "already exists")
    assert str(log_dir / "spectra.h5") in message
    assert "resume=True" in message and "initial_epoch" in message  # what to do about it
    assert (log_dir / "spectra.h5").read_bytes() == before
    with open_run(log_dir) as run:
        assert run.attributes["run_id"] == "another-run"


def test_resuming_a_run_file_of_other_layers_is_refused(tmp_path: Path) -> None:
    log_dir = tmp_path / "spectral"
    before = write_other_run(log_dir, {"encoder": (16, 16)})
    callback = KerasSpectralCallback(log_dir, resume=True)
    message = fit_fails_before_training(tiny.make_model(), callback, ValueError, "Cannot continue the run")
    assert "'encoder'" in message and "'fc1'" in message and message.endswith("Received: resume=True")
    assert (log_dir / "spectra.h5").read_bytes() == before
