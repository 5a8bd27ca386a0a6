"""Conv operator spectra over training, with a learning-rate decay halfway (anonymous, 2019).

The anonymous manuscript (2019) trains a squeeze_net on ImageNet with plain SGD, cuts the learning
rate to 10% after 30 and again after 60 epochs, and estimates each conv layer's spectrum as the
linear map it applies to whole feature maps after every epoch (ARPACK spikes + a KPM histogram of
the bulk). It reports that the largest eigenvalues "grow steadily" for 30 epochs and that "as soon
as the learning rate is reduced to 10%, the operator norms of the linear maps start to decrease",
and that spectra decay faster (heavier tails) as training goes on. Here a Conv-2-style net (two 3x3
convs, max pooling, one hidden FC layer) trains on the synthetic 3x32x32 stand-in for CIFAR-10 with
SGD and momentum, ``StepLR(gamma=0.1)`` halfway, once per weight decay, with
``SpectralCallback(operators="auto")``; the section reports each conv's spectral norm
``sigma_max(A)`` per epoch, whether it rises and then falls after the decay, the KPM histograms at
a few epochs and the validation accuracy.

Run: ``python -m experiments.conv_operator_spectra`` (about 3 minutes on 2 busy cores; ``--smoke``:
seconds, into ``runs/smoke/``; ``--report-only``: rewrite the section from existing runs).

References:
    Anonymous, "Evolution of eigenvalue decay in deep networks", manuscript under anonymous review
    (2019), section 3 and figure 2.
    H. Sedghi, V. Gupta, P. M. Long, "The singular values of convolutional layers", ICLR 2019.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from experiments.conv_operator_report import (
    CSV_COLUMNS,
    Schedule,
    csv_rows,
    esd_figure,
    layer_trend,
    norm_figure,
    section,
)
from experiments.data import SyntheticImagesDataModule
from experiments.models import Classifier, ConvNet
from experiments.results import (
    parse_study,
    save_figure,
    single_threaded,
    study_parser,
    write_csv,
    write_section,
)
from spectral_callbacks import SpectralCallback, open_run

__all__ = [
    "REAL",
    "SMOKE",
    "STUDY",
    "Size",
    "StepDecayClassifier",
    "main",
    "read_accuracy",
    "schedule",
    "train",
]

STUDY = "conv_operator_spectra"
LR, MOMENTUM, GAMMA = 0.01, 0.9, 0.1  # the Conv-2 config's SGD; the manuscript's cut to 10%
NOISE = 3.0  # pixel noise of the synthetic images, fixed per image
INPUT_NOISE = 4.0  # fresh pixel noise per training batch: no image is seen twice, as in ImageNet training
WEIGHT_DECAYS = ("0", "1e-2")
ACCURACY_FILE = "val_accuracy.json"
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Size:
    """How big a run is: epochs (the decay halfway), examples, image size and network widths."""

    epochs: int
    num_samples: int
    image_size: int
    channels: tuple[int, int]
    hidden: int
    batch_size: int

    @property
    def decay_epoch(self) -> int:
        """Epochs trained at the initial learning rate; snapshot ``decay_epoch`` is the last one."""
        return self.epochs // 2


REAL = Size(epochs=20, num_samples=3000, image_size=32, channels=(16, 32), hidden=128, batch_size=32)
SMOKE = Size(epochs=2, num_samples=200, image_size=8, channels=(4, 8), hidden=16, batch_size=32)


class StepDecayClassifier(Classifier):
    """:class:`Classifier` with the learning rate multiplied by ``gamma`` after ``decay_epoch`` epochs,
    and fresh Gaussian noise of standard deviation ``input_noise`` added to every training batch."""

    def __init__(
        self,
        network: torch.nn.Module,
        decay_epoch: int,
        gamma: float = GAMMA,
        input_noise: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(network, **kwargs)
        self.decay_epoch, self.gamma, self.input_noise = decay_epoch, gamma, input_noise

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        if self.input_noise:
            inputs = inputs + self.input_noise * torch.randn_like(inputs)
        return super().training_step((inputs, targets), batch_idx)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = super().configure_optimizers()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.decay_epoch, gamma=self.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class _ValidationAccuracy(pl.Callback):
    """The validation accuracy after each training epoch (epoch ``e + 1`` in snapshot numbering)."""

    def __init__(self) -> None:
        self.accuracy: dict[int, float] = {}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.accuracy[trainer.current_epoch + 1] = float(trainer.callback_metrics["val/accuracy"])


def train(run_dir: Path, size: Size, weight_decay: float, seed: int = 0) -> dict[int, float]:
    """Train one run into ``run_dir`` (emptied first): run file, TensorBoard events with the
    operator histograms. Returns the validation accuracy per epoch."""
    shutil.rmtree(run_dir, ignore_errors=True)
    pl.seed_everything(seed, verbose=False)
    data = SyntheticImagesDataModule(
        num_samples=size.num_samples, size=size.image_size, noise=NOISE, batch_size=size.batch_size,
        val_fraction=VAL_FRACTION, test_fraction=0.0, seed=seed,
    )  # fmt: skip
    network = ConvNet(data.input_shape, data.num_classes, channels=[size.channels], hidden=(size.hidden,))
    model = StepDecayClassifier(
        network,
        size.decay_epoch,
        input_noise=INPUT_NOISE,
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=weight_decay,
    )
    accuracy = _ValidationAccuracy()
    trainer = pl.Trainer(
        max_epochs=size.epochs,
        callbacks=[SpectralCallback(operators="auto"), accuracy],
        logger=pl.loggers.TensorBoardLogger(str(run_dir.parent), name=run_dir.name, version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, data)
    (run_dir / ACCURACY_FILE).write_text(json.dumps(accuracy.accuracy))
    return accuracy.accuracy


def read_accuracy(run_dir: Path) -> dict[int, float]:
    """The validation accuracy per epoch that :func:`train` saved with the run (empty if none)."""
    path = run_dir / ACCURACY_FILE
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def schedule(size: Size) -> Schedule:
    """The runs' training schedule, for the report."""
    train_examples = int((1 - VAL_FRACTION) * size.num_samples)
    return Schedule(
        epochs=size.epochs, decay_epoch=size.decay_epoch, lr=LR, gamma=GAMMA, momentum=MOMENTUM,
        steps_per_epoch=math.ceil(train_examples / size.batch_size),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> Path:
    """Train one run per weight decay (unless ``--report-only``), write figures, CSV and section.

    Returns:
        The directory of the figures.
    """
    parser = study_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weight-decays", nargs="+", help=f"the runs' weight decays (default: {' '.join(WEIGHT_DECAYS)})"
    )
    parser.add_argument("--report-only", action="store_true", help="write the section from existing runs")
    args = parse_study(parser, argv)
    size = SMOKE if args.smoke else REAL
    decays = tuple(args.weight_decays or WEIGHT_DECAYS)
    run_dirs = {value: args.runs / STUDY / f"wd_{value}" for value in decays}
    if not args.report_only:
        for value, run_dir in run_dirs.items():
            with single_threaded():  # the analysis worker gets the other core
                train(run_dir, size, float(value))
    accuracy = {value: read_accuracy(run_dir) for value, run_dir in run_dirs.items()}
    plan = schedule(size)
    trends = {}
    for value, run_dir in run_dirs.items():
        with open_run(run_dir) as run:
            trends[value] = {layer: layer_trend(run, layer, size.decay_epoch) for layer in run.operators}
    out = args.out / STUDY
    write_csv(out / "spectral_norm.csv", CSV_COLUMNS, csv_rows(trends, accuracy, plan))
    figures = {
        "spectral_norm": save_figure(norm_figure(trends, plan), out / "spectral_norm.png"),
        "esd": save_figure(esd_figure(run_dirs, plan), out / "esd.png"),
    }
    command = " ".join(
        ["python -m experiments.conv_operator_spectra", *(["--smoke"] if args.smoke else []),
         *(["--weight-decays", *decays] if args.weight_decays else [])]
    )  # fmt: skip
    write_section(
        STUDY, section(trends, accuracy, plan, figures, args.results, _setup(size, command)), args.results
    )
    print(f"wrote the {STUDY} section of {args.results} and its figures in {out}")
    return out


def _setup(size: Size, command: str) -> str:
    first, second = size.channels
    return (
        f"`{command}`: a Conv-2-style net (3x3 convs with {first} and {second} channels, 2x2 max pooling, "
        f"FC {size.hidden}) on {size.num_samples} synthetic 3x{size.image_size}x{size.image_size} images "
        f"({100 * (1 - VAL_FRACTION):g}% train; pixel noise {NOISE:g}, plus fresh noise {INPUT_NOISE:g} on "
        f"every training batch so that no image is seen twice, as in ImageNet training), SGD lr {LR:g} "
        f"with momentum {MOMENTUM:g}, batch {size.batch_size}, for {size.epochs} epochs; the learning rate "
        f"is cut to {GAMMA:g}x after epoch {size.decay_epoch} (`StepLR`), once per weight decay. "
        '`SpectralCallback(operators="auto")` estimates each conv\'s spectrum as the linear map on whole '
        "feature maps after every epoch: the 8 largest eigenvalues of `A^T A` by Lanczos and a 50-bin KPM "
        "histogram (256 moments, 8 probes). `sigma` is the operator's spectral norm `sqrt(lambda_1)`; "
        "`shrinkage` is what weight decay alone would leave of the weights by the decay."
    )


if __name__ == "__main__":
    main()
