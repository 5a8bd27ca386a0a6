"""Mistakes are reported before training starts, with what is wrong and where.

None of these tests gets as far as starting the analysis worker, so they are fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from training_checks import fails_before_training

from spectral_callbacks import SpectralCallback, open_run
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter


def fit_fails_before_training(tmp_path: Path, tiny, callback: SpectralCallback, match: str) -> str:
    """Fit a fresh tiny model; the callback must raise before the first step. Returns the message."""
    model = tiny.make_model()
    trainer = tiny.make_trainer(tmp_path, [callback])
    return fails_before_training(
        lambda: trainer.fit(model, tiny.make_loader()),
        weights=lambda: tiny.weights_of(model),
        steps=lambda: trainer.global_step,
        error=MisconfigurationException,
        match=match,
    )


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_epochs": -1}, "every_n_epochs"),
        ({"every_n_epochs": 1.5}, "every_n_epochs"),
        ({"every_n_epochs": True}, "every_n_epochs"),
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"on_full": "x"}, "on_full"),
        ({"queue_size": 0}, "queue_size"),
        ({"min_evals": 0}, "min_evals"),
        ({"histogram_bins": 1}, "histogram_bins"),
        ({"blas_threads": 0}, "blas_threads"),
        ({"weights_dtype": "int8"}, "weights_dtype"),
        ({"normalize": "M"}, "normalize"),
        ({"xmax": "min"}, "xmax"),
        ({"close_timeout": 0}, "close_timeout"),
    ],
)
def test_invalid_settings_name_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(MisconfigurationException, match=argument) as error:
        SpectralCallback(**kwargs)
    value = next(iter(kwargs.values()))
    assert repr(value) in str(error.value) or str(value) in str(error.value)


def test_valid_settings_are_kept() -> None:
    callback = SpectralCallback(every_n_epochs=3, every_n_steps=5, on_full="drop", queue_size=2, xmax="max")
    config = json.loads(callback.config.to_json())
    assert (config["every_n_epochs"], config["every_n_steps"], config["on_full"]) == (3, 5, "drop")


# -- layer filters at set-up -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"layers": "encoder"}, "'encoder'"),
        ({"layers": ["fc1", r"block\.\d+"]}, "block"),
        ({"layers": nn.LSTM}, "LSTM"),
        ({"exclude": "decoder"}, "'decoder'"),
    ],
)
def test_filter_matching_nothing_fails_at_setup(tmp_path: Path, tiny, kwargs: dict, culprit: str) -> None:
    callback = SpectralCallback(log_dir=tmp_path / "spectral", **kwargs)
    message = fit_fails_before_training(tmp_path, tiny, callback, "matches no analyzable layer")
    assert culprit in message
    assert all(name in message for name in tiny.LAYERS), message  # the available layer names
    assert not (tmp_path / "spectral" / "spectra.h5").exists()


def test_model_without_analyzable_layers_fails_at_setup(tmp_path: Path, tiny) -> None:
    model = tiny.make_model()
    for name in tiny.LAYERS:  # leave only the BatchNorm
        setattr(model, name, nn.Identity())
    trainer = tiny.make_trainer(tmp_path, [SpectralCallback(log_dir=tmp_path / "spectral")])
    with pytest.raises(MisconfigurationException, match="no analyzable layer") as error:
        trainer.fit(model, tiny.make_loader())
    assert "BatchNorm1d" in str(error.value)


@pytest.mark.parametrize("package", ["lightning.pytorch", "pytorch_lightning"])
def test_errors_are_the_trainers_own_misconfiguration_exception(tmp_path: Path, tiny, package: str) -> None:
    """A pytorch_lightning user catches pytorch_lightning's MisconfigurationException."""
    expected = tiny.lightning_package(package).utilities.exceptions.MisconfigurationException
    with pytest.raises(expected, match="every_n_epochs"):
        SpectralCallback(every_n_epochs=0)
    trainer = tiny.make_trainer(tmp_path, [SpectralCallback(layers="encoder")], package=package)
    with pytest.raises(expected, match="encoder"):
        trainer.fit(tiny.make_model(package), tiny.make_loader())


# -- where the run goes ----------------------------------------------------------------------------
def test_unwritable_log_dir_fails_before_training(tmp_path: Path, tiny) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    log_dir = blocker / "spectral"
    message = fit_fails_before_training(tmp_path, tiny, SpectralCallback(log_dir=log_dir), "cannot write")
    assert str(log_dir) in message
    assert blocker.read_text() == "a regular file"


def test_run_file_of_another_run_is_refused(tmp_path: Path, tiny) -> None:
    log_dir = tmp_path / "spectral"
    other = RunWriter.open(
        log_dir / "spectra.h5", run_id="another-run", parameters=[ParameterSpec("fc1", "linear", (16, 512))],
        config_json="{}", framework="lightning", weights_dtype="float32",
    )  # fmt: skip
    other.append_index(0, 0, "analyzed")
    other.close()
    before = (log_dir / "spectra.h5").read_bytes()

    message = fit_fails_before_training(tmp_path, tiny, SpectralCallback(log_dir=log_dir), "already exists")
    assert str(log_dir / "spectra.h5") in message
    assert "log_dir" in message and "ckpt_path" in message  # what to do about it
    assert (log_dir / "spectra.h5").read_bytes() == before
    with open_run(log_dir) as run:
        assert run.attributes["run_id"] == "another-run"
