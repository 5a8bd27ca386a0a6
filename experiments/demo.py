"""The README demo: train an MLP and a small CNN on scikit-learn's digits with SpectralCallback.

Both runs write ``spectra.h5`` and TensorBoard events into ``demo_runs/<model>/version_N``;
at the end a per-layer table is printed, and the ``tensorboard`` command to look at it all.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from experiments.data import DigitsDataModule
from experiments.models import Classifier, mlp, small_cnn
from spectral_callbacks import SpectralCallback, open_run, run_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default="demo_runs", help="directory for the runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialization and the data split")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="the optimizer's weight decay")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="lightning")
    pl.seed_everything(args.seed, verbose=False)
    # the CNN's convolutions are also analyzed as whole operators on its 8x8 inputs
    runs = {"mlp": (mlp(), True, None), "cnn": (small_cnn(), False, "auto")}
    for name, (network, flatten, operators) in runs.items():
        started = time.perf_counter()
        callback = SpectralCallback(esd_figures=True, operators=operators)
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            callbacks=[callback],
            logger=TensorBoardLogger(args.out, name=name),
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        model = Classifier(network, weight_decay=args.weight_decay)
        trainer.fit(model, DigitsDataModule(flatten=flatten, seed=args.seed))
        accuracy = float(trainer.callback_metrics["val/accuracy"])
        print(f"\n== {name}: {args.epochs} epochs in {time.perf_counter() - started:.1f} s, "
              f"validation accuracy {accuracy:.3f}; run file {callback.run_path}")  # fmt: skip
        with open_run(callback.run_path) as run:
            print(run_table(run))
    print(f"\nSee the spectra evolve (alpha of every layer over training, the ESD and its fit at every\n"
          f"epoch, runs side by side):\n"
          f"  .venv/bin/tensorboard --logdir {Path(args.out)} --port 6006\n"
          f"and open http://localhost:6006/#spectra (the SPECTRA tab; SCALARS, HISTOGRAMS and IMAGES\n"
          f"show the same numbers in TensorBoard's own charts).")  # fmt: skip


if __name__ == "__main__":
    main()
