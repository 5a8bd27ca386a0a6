"""SpectralCallback options end to end: resume, every_n_steps / every_n_epochs, layer filters,
lazy layers, NaN weights, the drop policy, and both Lightning packages' Trainer.

Each test is one short fit (two for resume); the analysis worker takes a few seconds to start, so
the TensorBoard sink (which imports torch in the worker) is off where it is not under test.
"""

from __future__ import annotations

import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run


def fit(tiny, root: Path, callbacks: list, *, model=None, loader=None, ckpt_path=None, **trainer_kwargs):
    """Fit TinyNet; returns the trainer, the model and the SpectralWarnings raised."""
    model = model if model is not None else tiny.make_model()
    trainer = tiny.make_trainer(root, callbacks, **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, loader if loader is not None else tiny.make_loader(), ckpt_path=ckpt_path)
    spectral = [w for w in caught if issubclass(w.category, SpectralWarning)]
    return trainer, model, spectral


# -- resume -----------------------------------------------------------------------------------------
def test_resume_from_checkpoint_appends_to_the_same_run_file(tmp_path: Path, tiny) -> None:
    log_dir = tmp_path / "spectral"
    checkpoints = tmp_path / "checkpoints"

    first = SpectralCallback(log_dir=log_dir, tensorboard=False)
    saver = ModelCheckpoint(dirpath=checkpoints, filename="{epoch}", every_n_epochs=1, save_top_k=-1)
    _, _, caught = fit(tiny, tmp_path, [first, saver], max_epochs=2, enable_checkpointing=True)
    assert caught == []
    with open_run(log_dir) as run:
        assert run.epochs.tolist() == [0, 1, 2]
        run_id = run.attributes["run_id"]
    checkpoint = checkpoints / "epoch=1.ckpt"  # after two epochs
    assert checkpoint.is_file(), sorted(p.name for p in checkpoints.iterdir())

    second = SpectralCallback(log_dir=log_dir, tensorboard=False)
    recorder = tiny.WeightRecorder()
    saver = ModelCheckpoint(dirpath=checkpoints, filename="resumed-{epoch}", every_n_epochs=1, save_top_k=-1)
    trainer, model, caught = fit(
        tiny, tmp_path, [second, recorder, saver], model=tiny.make_model(seed=1), ckpt_path=checkpoint,
        max_epochs=4, enable_checkpointing=True,
    )  # fmt: skip
    assert [str(w.message) for w in caught] == []
    assert trainer.current_epoch == 4
    assert second.run_path == first.run_path

    with open_run(log_dir) as run:
        assert run.attributes["run_id"] == run_id
        index = run.snapshots()
        assert index["epoch"].tolist() == [0, 1, 2, 3, 4]  # no epoch twice
        assert index["step"].tolist() == [0, 4, 8, 12, 16]
        assert set(index["status"]) == {"analyzed"}
        assert run.epochs.tolist() == [0, 1, 2, 3, 4]
        saved = torch.load(checkpoint, weights_only=True)["state_dict"]
        final = tiny.weights_of(model)
        for name in tiny.LAYERS:
            assert run.metric("alpha", name).shape == (5,)
            assert len(run.layer_status(name)) == 5
            np.testing.assert_array_equal(run.weights(name, 2), saved[f"{name}.weight"].numpy())
            np.testing.assert_array_equal(run.weights(name, 3), recorder.at_epoch[3][name])
            np.testing.assert_array_equal(run.weights(name, 4), final[name])
            np.testing.assert_array_equal(
                run.svals(name, 4), run.svals(name, step=16)
            )  # one row per snapshot


# -- when snapshots are taken -----------------------------------------------------------------
def test_every_n_steps(tmp_path: Path, tiny) -> None:
    callback = SpectralCallback(every_n_steps=3, log_dir=tmp_path / "spectral", tensorboard=False)
    recorder = tiny.WeightRecorder()
    _, _, caught = fit(tiny, tmp_path, [callback, recorder], max_epochs=2)  # 8 steps
    assert caught == []
    with open_run(callback.run_path) as run:
        assert run.steps.tolist() == [0, 3, 6]
        assert run.epochs.tolist() == [0, 0, 1]  # the epoch each step falls in
        assert len(run.snapshots()["step"]) == 3  # no extra epoch-end snapshots
        for step in (0, 3, 6):
            for name in tiny.LAYERS:
                np.testing.assert_array_equal(run.weights(name, step=step), recorder.at_step[step][name])


@pytest.fixture(scope="module", params=["lightning.pytorch", "pytorch_lightning"])
def package_run(request, tmp_path_factory: pytest.TempPathFactory, tiny) -> types.SimpleNamespace:
    """``every_n_epochs=2`` over 3 epochs, under each package's own Trainer, model and logger."""
    package = request.param
    root = tmp_path_factory.mktemp(package.replace(".", "_"))
    logger = tiny.lightning_package(package).loggers.TensorBoardLogger(save_dir=str(root), name="tb")
    callback = SpectralCallback(every_n_epochs=2, tensorboard=False)
    trainer, model, caught = fit(
        tiny, root, [callback], model=tiny.make_model(package), package=package, max_epochs=3, logger=logger,
    )  # fmt: skip
    return types.SimpleNamespace(
        package=package, callback=callback, trainer=trainer, model=model, warnings=caught, logger=logger
    )


def test_each_lightning_package_trainer_accepts_the_callback(package_run: types.SimpleNamespace) -> None:
    trainer = package_run.trainer
    assert type(trainer).__module__.startswith(package_run.package)
    assert trainer.state.finished
    assert trainer.current_epoch == 3
    assert package_run.warnings == []
    assert package_run.callback.run_path == Path(package_run.logger.log_dir) / "spectra.h5"
    with open_run(package_run.callback.run_path) as run:
        assert run.attributes["framework"] == "lightning"
        assert sorted(run.layers) == ["conv", "fc1", "fc2", "head"]


def test_every_n_epochs(package_run: types.SimpleNamespace, tiny) -> None:
    with open_run(package_run.callback.run_path) as run:
        assert run.epochs.tolist() == [0, 2]
        assert run.steps.tolist() == [0, 2 * tiny.NUM_BATCHES]
        assert len(run.snapshots()["epoch"]) == 2
        assert run.config["every_n_epochs"] == 2


# -- which layers ------------------------------------------------------------------------------
def test_layer_filters_choose_the_run_files_layers(tmp_path: Path, tiny) -> None:
    """Names, regular expressions, classes and exclusions together; weights not saved."""
    callback = SpectralCallback(
        layers=[r"fc\d", nn.Conv2d, "head"], exclude="fc2", save_weights=False,
        log_dir=tmp_path / "spectral", tensorboard=False,
    )  # fmt: skip
    _, _, caught = fit(tiny, tmp_path, [callback], max_epochs=1, limit_train_batches=2)
    assert caught == []
    with open_run(callback.run_path) as run:
        assert sorted(run.layers) == ["conv", "fc1", "head"]
        assert sorted(run.parameters) == ["conv", "fc1", "head"]
        assert run.epochs.tolist() == [0, 1]
        assert run.metric("alpha", "fc1").shape == (2,)
        with pytest.raises(KeyError, match="save_weights=False"):
            run.weights("fc1", 1)


def test_lazy_layers_are_snapshot_once_materialized(tmp_path: Path, tiny) -> None:
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    recorder = tiny.WeightRecorder()
    model = tiny.make_model(lazy=True)
    _, model, caught = fit(tiny, tmp_path, [callback, recorder], model=model, max_epochs=1)
    assert caught == []
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1]
        assert sorted(run.layers) == sorted(tiny.LAYERS)
        assert run.weights("fc1", 0).shape == tiny.LAYERS["fc1"]
        for name in tiny.LAYERS:  # epoch 0: the materialized initialization, before any update
            np.testing.assert_array_equal(run.weights(name, 0), recorder.at_step[0][name])
        np.testing.assert_array_equal(run.weights("fc1", 1), model.fc1.weight.detach().numpy())


# -- robustness ---------------------------------------------------------------------------------
class PoisonAux(Callback):
    """Sets the weights of the ``aux`` layer (outside the forward pass) to NaN after epoch 0."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            with torch.no_grad():
                pl_module.aux.weight[0, 0] = float("nan")


def test_nan_weights_are_skipped_rows_with_one_warning(tmp_path: Path, tiny) -> None:
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    # PoisonAux runs first, so the epoch-1 snapshot already holds the NaN
    trainer, _, caught = fit(
        tiny, tmp_path, [PoisonAux(), callback], model=tiny.make_model(aux=True), max_epochs=3
    )
    assert trainer.state.finished
    assert trainer.current_epoch == 3
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "aux" in message
    assert "skipped" in message
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2, 3]
        statuses = run.layer_status("aux")
        assert statuses[0][0] != "skipped"
        for status, reason in statuses[1:]:
            assert status == "skipped"
            assert "NaN" in reason
        assert np.isnan(run.metric("alpha", "aux")[1:]).all()
        assert np.isnan(run.svals("aux", 2)).all()
        assert np.isnan(run.weights("aux", 2)[0, 0])
        for name in tiny.LAYERS:  # the other layers are analyzed as usual
            assert all(status != "skipped" for status, _ in run.layer_status(name))
            assert np.isfinite(run.metric("log_norm", name)).all()


def test_drop_policy_loses_no_snapshot(tmp_path: Path, tiny) -> None:
    """With a queue of one and a snapshot per step, the worker falls behind; every snapshot is
    either analyzed or listed as dropped, never lost, and never both."""
    callback = SpectralCallback(
        every_n_steps=1, queue_size=1, on_full="drop", log_dir=tmp_path / "spectral", tensorboard=False
    )
    _, _, caught = fit(tiny, tmp_path, [callback], loader=tiny.make_loader(num_batches=10), max_epochs=2)
    expected_steps = set(range(21))  # the initialization and 20 optimizer steps
    with open_run(callback.run_path) as run:
        index = run.snapshots()
        assert set(index["status"]) <= {"analyzed", "dropped"}
        analyzed = run.steps.tolist()
        dropped = [step for _, step, _ in run.dropped]
        assert len(analyzed) == len(set(analyzed))
        assert len(dropped) == len(set(dropped))
        assert not set(analyzed) & set(dropped)
        assert set(analyzed) | set(dropped) == expected_steps
        assert len(index["step"]) == len(expected_steps)
        assert 0 in analyzed
        assert all("queue" in reason for _, _, reason in run.dropped)
        for name in tiny.LAYERS:
            assert run.metric("alpha", name).shape == (len(analyzed),)
    if dropped:
        assert len(caught) == 1
        assert f"{len(dropped)} snapshot(s) dropped" in str(caught[0].message)
    else:
        assert caught == []


@pytest.mark.parametrize("lend_threads", [True, False])
def test_torch_threads_are_lent_while_the_worker_is_busy(
    tmp_path: Path, tiny, torch_thread_resizes, lend_threads: bool
) -> None:
    """The worker takes seconds to start, so the first snapshot is pending during this short fit:
    torch's pool runs one thread short, then has its two threads again once the fit is over."""
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False, lend_threads=lend_threads)
    _, _, caught = fit(tiny, tmp_path, [callback], max_epochs=2)
    assert caught == []
    assert torch.get_num_threads() == 2
    assert torch_thread_resizes.lent_and_given_back() if lend_threads else torch_thread_resizes == []
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]


def test_no_thread_is_lent_under_deterministic_algorithms(tmp_path: Path, tiny, torch_thread_resizes) -> None:
    """``Trainer(deterministic=True)``: a pool resized mid-training would round its reductions
    differently, so the pool keeps its size (the fit of the test above resizes it)."""
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    try:
        _, _, caught = fit(tiny, tmp_path, [callback], max_epochs=2, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)  # the Trainer turned them on for the process
    assert caught == [] and torch_thread_resizes == []
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]


class FailAfterFirstEpoch(Callback):
    """Training that raises once an epoch is done, with the first snapshot still pending."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        raise RuntimeError("training failed")


def test_lent_threads_come_back_when_training_raises(tmp_path: Path, tiny, torch_thread_resizes) -> None:
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    with pytest.raises(RuntimeError, match="training failed"):
        fit(tiny, tmp_path, [callback, FailAfterFirstEpoch()], max_epochs=3)
    assert torch.get_num_threads() == 2
    assert torch_thread_resizes.lent_and_given_back()
    with open_run(callback.run_path) as run:  # the snapshots taken before the failure are analyzed
        assert run.epochs.tolist() == [0, 1]


class SlowValidation(Callback):
    """Validation batches that take 50 ms each; records torch's pool size at each of them."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        time.sleep(0.05)
        self.threads.append(torch.get_num_threads())


def test_lent_threads_come_back_during_validation(tmp_path: Path, tiny, torch_thread_resizes) -> None:
    """The first snapshot, pending as training starts, is analyzed while 100 validation batches
    run (5 s; the worker needs well under 1 s): the thread comes back before validation ends."""
    model = tiny.make_model()
    model.validation_step = lambda batch, batch_idx: None
    callback, probe = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False), SlowValidation()
    trainer = tiny.make_trainer(tmp_path, [callback, probe], max_epochs=1)
    trainer.fit(model, tiny.make_loader(), tiny.make_loader(num_batches=100))
    assert probe.threads[0] == 1 and probe.threads[-1] == 2
    assert torch_thread_resizes.lent_and_given_back()


class TakenAtValidation(Callback):
    """Records, at each validation's start, how many snapshots the spectral callback has taken."""

    def __init__(self, spectral: SpectralCallback) -> None:
        self.spectral = spectral
        self.taken: list[int] = []

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.taken.append(self.spectral.costs.taken)


def test_the_epoch_end_snapshot_is_taken_as_validation_starts_with_the_epochs_weights(
    tmp_path: Path, tiny
) -> None:
    """Validation after the last batch holds the epoch's final weights: the snapshot is taken there,
    so its analysis overlaps validation; a validation in the middle of an epoch takes none."""
    model = tiny.make_model()
    model.validation_step = lambda batch, batch_idx: None
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    probe, recorder = TakenAtValidation(callback), tiny.WeightRecorder()
    loader = tiny.make_loader(num_batches=8)
    trainer = tiny.make_trainer(tmp_path, [callback, probe, recorder], max_epochs=2, val_check_interval=0.5)
    trainer.fit(model, loader, tiny.make_loader(num_batches=2))
    # per epoch: a validation mid-epoch (nothing new), then one after the last batch (the epoch's)
    assert probe.taken == [1, 2, 2, 3]
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]
        for epoch in (1, 2):
            for name, weight in recorder.at_epoch[epoch].items():
                np.testing.assert_array_equal(run.weights(name, epoch=epoch), weight)
