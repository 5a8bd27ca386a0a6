"""DDP with 2 CPU processes (gloo): one run file, written by global rank zero, as a single process.

Two ranks, each on half of the data with gradients averaged, take the same steps as one process
on all of it when every step is full-batch (a model without batch statistics, plain SGD): then
how the sampler splits the data does not matter. So the DDP run file must hold the same
snapshots and, up to float rounding, the same weights and spectra as the single-process one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spectral_callbacks import analyze_matrix, open_run

pytestmark = pytest.mark.slow

EPOCHS = 4
LAYERS = ("fc1", "fc2", "head")

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from torch import nn
    from torch.nn import functional
    import lightning.pytorch as pl
    from spectral_callbacks import SpectralCallback, SpectralMonitor

    root, devices, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    weight_decay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0  # > 0: into rank collapse
    torch.set_num_threads(1)


    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.head = nn.Linear(32, 48), nn.Linear(48, 24), nn.Linear(24, 10)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.head(functional.relu(self.fc2(functional.relu(self.fc1(x)))))
            return functional.cross_entropy(logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, weight_decay=weight_decay)


    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 32, generator=generator), torch.randint(0, 10, (64,), generator=generator)
    # one full-batch step per epoch: each rank's half of the data in one batch
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64 // devices)
    torch.manual_seed(0)
    trainer = pl.Trainer(
        default_root_dir=root, max_epochs=epochs, accelerator="cpu", devices=devices,
        strategy="ddp" if devices > 1 else "auto", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[SpectralCallback(
            log_dir=os.path.join(root, "spectral"), tensorboard=False, queue_size=1,
            monitor=SpectralMonitor(alpha_range=None, stop=True) if weight_decay else None,
        )],
    )
    trainer.fit(Net(), data)
    print("DONE", trainer.global_rank, trainer.current_epoch, flush=True)
    """
)


def fit(root: Path, devices: int, epochs: int = EPOCHS, weight_decay: float = 0.0) -> str:
    script = root / "train.py"  # DDP re-runs the script for rank 1, so it must be a file
    root.mkdir(parents=True)
    script.write_text(_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(root), str(devices), str(epochs), str(weight_decay)],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    output = result.stdout + result.stderr[-4000:]
    assert result.returncode == 0, output
    return output


def test_ddp_writes_one_run_file_like_a_single_process(tmp_path: Path) -> None:
    ddp_output = fit(tmp_path / "ddp", devices=2)
    assert "DONE 0" in ddp_output and "DONE 1" in ddp_output, ddp_output  # both ranks trained
    fit(tmp_path / "single", devices=1)

    run_files = sorted(path.relative_to(tmp_path / "ddp") for path in (tmp_path / "ddp").rglob("*.h5"))
    assert run_files == [Path("spectral/spectra.h5")]  # one file: rank 1 wrote nothing
    with open_run(tmp_path / "ddp" / "spectral") as ddp, open_run(tmp_path / "single" / "spectral") as single:
        assert ddp.layers == single.layers == list(LAYERS)
        assert ddp.epochs.tolist() == single.epochs.tolist() == list(range(EPOCHS + 1))
        assert ddp.steps.tolist() == single.steps.tolist()
        for layer in LAYERS:
            for epoch in range(EPOCHS + 1):
                weights = ddp.weights(layer, epoch)
                np.testing.assert_allclose(weights, single.weights(layer, epoch), rtol=1e-4, atol=1e-6)
            # the stored analysis is that of the stored weights
            expected = analyze_matrix(ddp.weights(layer, EPOCHS).astype(np.float64))
            assert ddp.metric("log_norm", layer)[-1] == pytest.approx(expected.log_norm, rel=1e-6)
            np.testing.assert_allclose(
                ddp.metric("log_norm", layer), single.metric("log_norm", layer), rtol=1e-4
            )


def test_an_alert_that_stops_training_stops_every_rank_together(tmp_path: Path) -> None:
    """Weight decay 9.9 (lr 0.1) shrinks the weights 100x per step, one step an epoch: lambda_min
    falls 10^4-fold between snapshots and rank_collapse fires at epoch 1. Rank zero alone receives
    the alert; both ranks must stop at the same epoch (a rank that stopped alone would hang the
    other's collectives)."""
    epochs = 40
    output = fit(tmp_path / "ddp", devices=2, epochs=epochs, weight_decay=9.9)
    stopped = sorted(line.split()[1:] for line in output.splitlines() if line.startswith("DONE"))
    assert [rank for rank, _ in stopped] == ["0", "1"], output
    assert stopped[0][1] == stopped[1][1], output  # the same epoch on both ranks
    assert int(stopped[0][1]) < epochs - 1, output
    with open_run(tmp_path / "ddp" / "spectral") as run:
        assert any(alert["rule"] == "rank_collapse" for alert in run.alerts())
