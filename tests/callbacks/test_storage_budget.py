"""Bounded disk and memory: a run whose weights would exceed max_run_file_bytes stays under it
(every snapshot has its spectra, the kept weights are listed, one warning says what was done and
how to change it), and the snapshot queue is shortened, or the start refused, when the available
memory cannot hold it."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run
from spectral_callbacks.live import session as session_module

EPOCHS = 10
BUDGET = 8 * 1024 * 1024  # two 512x512 float32 layers: 2 MiB of weights per snapshot


def wide_model(package: types.ModuleType) -> nn.Module:
    class Wide(package.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(512, 512), nn.Linear(512, 512)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return functional.mse_loss(self.fc2(torch.relu(self.fc1(x))), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    return Wide()


def test_a_run_over_the_budget_thins_weights_never_spectra(tmp_path: Path, tiny) -> None:
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(8, 512, generator=generator), torch.randn(8, 512, generator=generator)
    )
    callback = SpectralCallback(log_dir=tmp_path, max_run_file_bytes=BUDGET, tensorboard=False)
    trainer = tiny.make_trainer(tmp_path, [callback], max_epochs=EPOCHS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(wide_model(tiny.lightning_package()), torch.utils.data.DataLoader(data, batch_size=8))
    spectral = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    assert len(spectral) == 1, spectral
    assert "weights are kept for 3 of the 11 snapshots (every 4th), spectra for all" in spectral[0]
    assert callback.run_path.stat().st_size <= BUDGET
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == list(range(EPOCHS + 1))  # every snapshot analyzed
        alphas = run.metric("alpha", "fc1")
        assert len(alphas) == EPOCHS + 1
        kept = run.weight_epochs("fc1").tolist()
        assert kept == [0, 4, 8]
        with pytest.raises(KeyError, match="weights of epoch 1 were not kept"):
            run.weights("fc1", 1)


def test_the_callback_shortens_the_queue_with_one_warning(tmp_path: Path, tiny, monkeypatch) -> None:
    """TinyNet's snapshot is about 36 kB: 200 kB available makes half of it hold two."""
    monkeypatch.setattr(session_module, "available_memory", lambda: 200_000)
    callback = SpectralCallback(log_dir=tmp_path, tensorboard=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny.make_trainer(tmp_path, [callback], max_epochs=1).fit(
            tiny.make_model(), datamodule=tiny.make_datamodule()
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    assert len(messages) == 1 and "queue_size=4 snapshots" in messages[0] and "the queue holds" in messages[0]


def test_the_callback_refuses_to_start_when_a_snapshot_cannot_fit(tmp_path: Path, tiny, monkeypatch) -> None:
    monkeypatch.setattr(session_module, "available_memory", lambda: 50_000)
    callback = SpectralCallback(log_dir=tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="SpectralCallback cannot start: a snapshot's weights take"):
        tiny.make_trainer(tmp_path, [callback], max_epochs=1).fit(
            tiny.make_model(), datamodule=tiny.make_datamodule()
        )
