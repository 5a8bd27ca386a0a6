"""Training-time overhead of SpectralCallback: the same run with and without it, interleaved.

A ~1M-parameter MLP trains on synthetic data; epoch times come from a timing callback, so the
worker's start-up and the final drain at fit end are not counted as epoch time (they are
printed separately). Runs alternate (plain, callback, plain, ...) so drift in the machine's speed
hits both. Prints the ratio of median epoch times (target <= 1.03) and whether any snapshot was
dropped with ``on_full="drop"`` at one snapshot per epoch (target: none).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spectral_callbacks import SpectralCallback, open_run


class EpochTimer(pl.Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)


class MLP(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self.net(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def run(epochs: int, data: DataLoader, with_callback: bool) -> tuple[list[float], float, int]:
    """Epoch times, total fit time, and dropped snapshots (0 without the callback)."""
    torch.manual_seed(0)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as directory:
        callbacks: list[pl.Callback] = [timer]
        if with_callback:
            spectral = SpectralCallback(on_full="drop", save_weights=True, log_dir=directory)
            callbacks.append(spectral)
        trainer = pl.Trainer(
            max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=directory,
        )  # fmt: skip
        started = time.perf_counter()
        trainer.fit(MLP(), data)
        total = time.perf_counter() - started
        dropped = 0
        if with_callback:
            with open_run(spectral.run_path) as reader:
                dropped = len(reader.dropped)
                assert len(reader.epochs) + dropped == epochs + 1, "a snapshot was lost"
    return timer.times, total, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8192)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(args.samples, 784, generator=generator)
    targets = torch.randint(0, 10, (args.samples,), generator=generator)
    data = DataLoader(TensorDataset(inputs, targets), batch_size=64, shuffle=True, generator=generator)
    params = sum(p.numel() for p in MLP().parameters())
    print(f"MLP with {params:,} parameters, {args.samples} samples, torch threads {torch.get_num_threads()}")
    plain, spectral, totals, dropped = [], [], {False: [], True: []}, 0
    for _ in range(args.repeats):
        for with_callback in (False, True):
            times, total, lost = run(args.epochs, data, with_callback)
            # the first epoch warms up caches and the allocator in both arms
            (spectral if with_callback else plain).extend(times[1:])
            totals[with_callback].append(total)
            dropped += lost
    ratio = statistics.median(spectral) / statistics.median(plain)
    without, with_ = statistics.median(plain), statistics.median(spectral)
    print(f"median epoch time: without {without:.3f} s, with callback {with_:.3f} s")
    fit_without, fit_with = statistics.median(totals[False]), statistics.median(totals[True])
    print(f"median fit time (worker start, final drain): without {fit_without:.2f} s, with {fit_with:.2f} s")
    print(
        f"epoch-time ratio with/without: {ratio:.3f}  (target <= 1.03: {'PASS' if ratio <= 1.03 else 'FAIL'})"
    )
    print(
        f"snapshots dropped with on_full='drop': {dropped}  (target 0: {'PASS' if dropped == 0 else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
