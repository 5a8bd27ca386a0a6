"""Training-time overhead of SpectralCallback: the same run with and without it, interleaved.

A ~1M-parameter MLP trains on synthetic data. Epoch times come from a timing callback placed
after SpectralCallback, so they include the capture at the epoch's end; the worker's start-up
(in the first epoch, left out in both arms) and the final drain at fit end are not epoch time,
so the ratio of whole ``fit`` times (start-up and drain included) is printed as well.
Runs alternate (plain, callback, plain, ...) so drift in the machine's speed hits both. Prints,
per epoch length, the ratio of median epoch times (target <= 1.03) and the snapshots dropped
with ``on_full="drop"`` at one snapshot per epoch (target: none).

The worker's work per snapshot is fixed (an SVD of each layer: ~0.25 CPU-seconds for this
model), so the ratio depends on how long an epoch is: pass several ``--samples``.
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
    """Epoch times, the whole fit's time and dropped snapshots (0 without the callback)."""
    torch.manual_seed(0)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as directory:
        callbacks: list[pl.Callback] = []
        if with_callback:
            spectral = SpectralCallback(on_full="drop", save_weights=True, log_dir=directory)
            callbacks.append(spectral)
        callbacks.append(timer)  # after the spectral callback: an epoch's time includes its capture
        trainer = pl.Trainer(
            max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=directory,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit(MLP(), data)
        fit_time = time.perf_counter() - start
        dropped = 0
        if with_callback:
            with open_run(spectral.run_path) as reader:
                dropped = len(reader.dropped)
                assert len(reader.epochs) + dropped == epochs + 1, "a snapshot was lost"
    return timer.times, fit_time, dropped


def measure(samples: int, epochs: int, repeats: int) -> tuple[float, float, float, int]:
    """Median epoch time without and with the callback, median fit-time ratio, snapshots dropped."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(samples, 784, generator=generator)
    targets = torch.randint(0, 10, (samples,), generator=generator)
    data = DataLoader(TensorDataset(inputs, targets), batch_size=64, shuffle=True, generator=generator)
    plain, spectral, fit_ratios, dropped = [], [], [], 0
    for _ in range(repeats):
        plain_times, plain_fit, _ = run(epochs, data, with_callback=False)
        spectral_times, spectral_fit, lost = run(epochs, data, with_callback=True)
        # the first epoch holds the worker's start-up (imports) and warms caches in both arms
        plain.extend(plain_times[1:])
        spectral.extend(spectral_times[1:])
        fit_ratios.append(spectral_fit / plain_fit)
        dropped += lost
    return statistics.median(plain), statistics.median(spectral), statistics.median(fit_ratios), dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[60000],
        help="samples per epoch, one measurement each (default: 60000, an MNIST-sized epoch)",
    )  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    params = sum(p.numel() for p in MLP().parameters())
    print(f"MLP with {params:,} parameters, batch 64, torch threads {torch.get_num_threads()}, "
          f"{args.epochs} epochs x {args.repeats} repeats per arm, one snapshot per epoch")  # fmt: skip
    print(f"{'samples':>8} {'epoch without':>14} {'epoch with':>11} {'ratio':>6} {'fit ratio':>9} "
          f"{'dropped':>8}  verdict")  # fmt: skip
    for samples in args.samples:
        without, with_, fit_ratio, dropped = measure(samples, args.epochs, args.repeats)
        ratio = with_ / without
        verdict = "PASS" if ratio <= 1.03 and dropped == 0 else "FAIL"
        print(f"{samples:>8} {without:>13.3f}s {with_:>10.3f}s {ratio:>6.3f} {fit_ratio:>9.3f} {dropped:>8}  "
              f"{verdict} (target: epoch-time ratio <= 1.03, no snapshot dropped)")  # fmt: skip


if __name__ == "__main__":
    main()
