"""Conv operator spectra over training, with and without a learning-rate cut (anonymous, 2019).

The anonymous manuscript (2019) trains a squeeze_net on ImageNet with plain SGD, cuts the learning
rate to 10% after 30 and again after 60 epochs, and estimates each conv layer's spectrum as the
linear map it applies to whole feature maps after every epoch (ARPACK spikes + a KPM histogram of
the bulk). It reports that the largest eigenvalues "grow steadily" for 30 epochs and that "as soon
as the learning rate is reduced to 10%, the operator norms of the linear maps start to decrease",
and that spectra decay faster (heavier tails) as training goes on.

Here a Conv-2-style net (two 3x3 convs, max pooling, one hidden FC layer) trains on the synthetic
stand-in for CIFAR-10 with SGD and momentum, per weight decay and seed twice: with the cut to 10%
after :attr:`Size.decay_epoch` epochs, and with a constant learning rate (the null baseline of the
first claim: same seed, same batches, identical up to the cut). ``SpectralCallback(operators="auto")``
records each conv's spectral norm ``sigma_max(A)`` and KPM histogram after every epoch. The null of
the second claim puts the final kernels of the runs with the cut, their entries permuted at random,
through the same callback (:class:`KernelBank`). The claims and their rules are :data:`CLAIMS`; the
verdicts come from ``evidence.csv``.

Run: ``python -m experiments.conv_operator_spectra`` (about 6.5 CPU-minutes, training and analysis
processes together; ``--smoke``: seconds, into ``runs/smoke/``; ``--report-only``: rewrite the
CSVs, figures and section from existing runs).

References:
    Anonymous, "Evolution of eigenvalue decay in deep networks", manuscript under anonymous review
    (2019), section 3 and figure 2.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

from experiments import conv_operator_report as report
from experiments.data import SyntheticImagesDataModule
from experiments.models import Classifier, ConvNet
from experiments.results import parse_study, single_threaded, study_parser, write_csv, write_section
from experiments.verdicts import Evidence, evidence_path, write_evidence
from spectral_callbacks import SpectralCallback, open_run

__all__ = [
    "CLAIMS",
    "REAL",
    "SCHEDULES",
    "SMOKE",
    "STUDY",
    "KernelBank",
    "Size",
    "StepDecayClassifier",
    "main",
    "train",
]

STUDY = "conv_operator_spectra"
LR, MOMENTUM, GAMMA = 0.01, 0.9, 0.1  # the Conv-2 config's SGD; the manuscript's cut to 10%
SCHEDULES = {"cut": GAMMA, "constant": 1.0}  # factor of the learning rate after the decay epoch
NOISE = 3.0  # pixel noise of the synthetic images, fixed per image
INPUT_NOISE = 4.0  # fresh pixel noise per training batch: no image is seen twice, as in ImageNet training
VAL_FRACTION = 0.2
WEIGHT_DECAYS = ("0", "1e-2")
ACCURACY_FILE = "val_accuracy.json"
COST_FILE = "cpu_seconds.json"


@dataclass(frozen=True)
class Size:
    """How big the study is: epochs, the cut, the window of the norm's course, data, network, seeds."""

    epochs: int
    decay_epoch: int  # epochs at the initial learning rate; snapshot decay_epoch is the last one
    window: int  # epochs before and after the cut over which the norm's change is measured
    num_samples: int
    image_size: int
    channels: tuple[int, int]
    hidden: int
    batch_size: int
    seeds: int
    weight_decays: tuple[str, ...]


REAL = Size(
    epochs=16, decay_epoch=8, window=3, num_samples=2000, image_size=16, channels=(16, 32), hidden=128,
    batch_size=32, seeds=5, weight_decays=WEIGHT_DECAYS,
)  # fmt: skip
SMOKE = Size(
    epochs=2, decay_epoch=1, window=1, num_samples=200, image_size=8, channels=(4, 8), hidden=16,
    batch_size=32, seeds=2, weight_decays=("0",),
)  # fmt: skip


class StepDecayClassifier(Classifier):
    """:class:`Classifier` with the learning rate multiplied by ``gamma`` after ``decay_epoch`` epochs
    (``gamma=1``: constant), and fresh Gaussian noise of standard deviation ``input_noise`` added to
    every training batch."""

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


def _trainer(run_dir: Path, max_epochs: int, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    shutil.rmtree(run_dir, ignore_errors=True)
    return pl.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=pl.loggers.TensorBoardLogger(str(run_dir.parent), name=run_dir.name, version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        **kwargs,
    )


def train(run_dir: Path, size: Size, weight_decay: float, gamma: float, seed: int) -> dict[int, float]:
    """Train one run into ``run_dir`` (emptied first): run file and TensorBoard events with the
    operator spectra, and the validation accuracy per epoch (also returned). The data (patterns,
    split, batches, noise) and the initialization depend on ``seed`` only, so runs that differ in
    ``gamma`` alone are the same run up to the cut."""
    pl.seed_everything(seed, verbose=False)
    data = SyntheticImagesDataModule(
        num_samples=size.num_samples, size=size.image_size, noise=NOISE, batch_size=size.batch_size,
        val_fraction=VAL_FRACTION, test_fraction=0.0, data_seed=seed, seed=seed,
    )  # fmt: skip
    network = ConvNet(data.input_shape, data.num_classes, channels=[size.channels], hidden=(size.hidden,))
    model = StepDecayClassifier(
        network, size.decay_epoch, gamma, input_noise=INPUT_NOISE, lr=LR, momentum=MOMENTUM,
        weight_decay=weight_decay,
    )  # fmt: skip
    accuracy = _ValidationAccuracy()
    _trainer(run_dir, size.epochs, [SpectralCallback(operators="auto"), accuracy]).fit(model, data)
    (run_dir / ACCURACY_FILE).write_text(json.dumps(accuracy.accuracy))
    return accuracy.accuracy


class KernelBank(pl.LightningModule):
    """Fixed conv kernels, each applied to zeros of its layer's input shape. One training step at
    learning rate 0 lets :class:`SpectralCallback` snapshot them at epoch 0 and estimate their
    operator spectra exactly as it does the trained layers' (same Lanczos and KPM options).

    Args:
        kernels: ``(C_out, C_in, kh, kw)`` arrays.
        infos: per kernel, its layer's ``RunReader.operator_info`` (input shape, stride, padding, ...).
    """

    def __init__(self, kernels: Sequence[np.ndarray], infos: Sequence[Mapping[str, Any]]):
        super().__init__()
        self.inputs = [tuple(info["in_shape"]) for info in infos]
        convs = []
        for kernel, info in zip(kernels, infos, strict=True):
            conv = torch.nn.Conv2d(
                info["in_shape"][0], kernel.shape[0], kernel.shape[2:], stride=info["stride"],
                padding=info["padding"], dilation=info["dilation"], groups=info["groups"],
                padding_mode=info["padding_mode"], bias=False,
            )  # fmt: skip
            with torch.no_grad():
                conv.weight.copy_(torch.as_tensor(kernel))
            convs.append(conv)
        self.convs = torch.nn.ModuleList(convs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return sum(
            conv(torch.zeros(1, *shape)).sum() for conv, shape in zip(self.convs, self.inputs, strict=True)
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def permuted_kernels(run_dirs: Mapping[tuple[str, int], Path], epoch: int) -> tuple[list, list, list]:
    """The kernels of every run's convs at ``epoch``, entries permuted at random (seeded by the
    run's seed): ``(keys, kernels, infos)`` with keys ``(weight decay, seed, layer)``."""
    keys, kernels, infos = [], [], []
    for (value, seed), run_dir in run_dirs.items():
        rng = np.random.default_rng(seed)
        with open_run(run_dir) as run:
            for layer in run.operators:
                kernel = np.asarray(run.weights(layer, epoch))
                keys.append((value, seed, report.short(layer)))
                kernels.append(rng.permutation(kernel.ravel()).reshape(kernel.shape))
                infos.append(run.operator_info(layer))
    return keys, kernels, infos


def analyze_kernels(run_dir: Path, kernels: Sequence[np.ndarray], infos: Sequence[Mapping[str, Any]]) -> None:
    """Put ``kernels`` through :class:`SpectralCallback` as a :class:`KernelBank` (run in ``run_dir``)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(1, 1)), batch_size=1)
    callback = SpectralCallback(every_n_epochs=2, operators="auto")  # epoch 0 only
    _trainer(run_dir, 1, [callback], limit_train_batches=1).fit(KernelBank(kernels, infos), loader)


def read_accuracy(run_dir: Path) -> dict[int, float]:
    """The validation accuracy per epoch that :func:`train` saved with the run (empty if none)."""
    path = run_dir / ACCURACY_FILE
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def lr_of(size: Size, gamma: float, epoch: int) -> float:
    """The learning rate of the epoch that ended with snapshot ``epoch`` (NaN for 0)."""
    if epoch == 0:
        return float("nan")
    return LR * (gamma if epoch > size.decay_epoch else 1.0)


CLAIMS = report.claims(REAL)


def main(argv: Sequence[str] | None = None) -> Path:
    """Train every run (unless ``--report-only``), then write the CSVs, evidence, figures and section.

    Returns:
        The directory of the figures.
    """
    parser = study_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--report-only", action="store_true", help="write the outputs from existing runs")
    args = parse_study(parser, argv)
    size = SMOKE if args.smoke else REAL
    root = args.runs / STUDY
    runs = {
        (value, schedule, seed): root / f"wd_{value}" / schedule / f"seed{seed}"
        for value in size.weight_decays
        for schedule in SCHEDULES
        for seed in range(size.seeds)
    }
    cut_runs = {(v, seed): path for (v, schedule, seed), path in runs.items() if schedule == "cut"}
    out = args.out / STUDY
    with single_threaded():  # the analysis worker gets the other core
        if not args.report_only:
            for (value, schedule, seed), run_dir in runs.items():
                train(run_dir, size, float(value), SCHEDULES[schedule], seed)
        keys, kernels, infos = permuted_kernels(cut_runs, size.epochs)
        if not args.report_only:
            analyze_kernels(root / "permuted", kernels, infos)
            _write_cost(out / COST_FILE)
    frame = pd.DataFrame(
        [
            row
            for key, path in runs.items()
            for row in report.run_rows(
                path, key, read_accuracy(path), partial(lr_of, size, SCHEDULES[key[1]])
            )
        ],
        columns=report.CSV_COLUMNS,
    )
    nulls = pd.DataFrame(report.null_rows(root / "permuted", keys), columns=report.NULL_COLUMNS)
    write_csv(out / "spectral_norm.csv", report.CSV_COLUMNS, frame.values.tolist())
    write_csv(out / "permuted_kernels.csv", report.NULL_COLUMNS, nulls.values.tolist())
    evidence = Evidence(report.evidence_rows(frame, nulls, size))
    write_evidence(evidence_path(args.out, STUDY), evidence)
    command = "python -m experiments.conv_operator_spectra" + (" --smoke" if args.smoke else "")
    inputs = report.ReportInputs(
        frame=frame, nulls=nulls, evidence=evidence, claims=report.claims(size), size=size, runs=runs,
        permuted_run=root / "permuted", cost=json.loads((out / COST_FILE).read_text()), command=command,
        setup=_setup(size, command), differences=_differences(size, _dimensions(runs)),
    )  # fmt: skip
    write_section(STUDY, report.write(inputs, out, args.results), args.results)
    print(f"wrote the {STUDY} section of {args.results} and its figures in {out}")
    return out


def _setup(size: Size, command: str) -> str:
    first, second = size.channels
    train_examples = int((1 - VAL_FRACTION) * size.num_samples)
    return (
        f"`{command}`: a Conv-2-style net (3x3 convs with {first} and {second} channels, 2x2 max pooling, "
        f"FC {size.hidden}) on {size.num_samples} synthetic 3x{size.image_size}x{size.image_size} images "
        f"({train_examples} train; pixel noise {NOISE:g}, plus fresh noise {INPUT_NOISE:g} on every training "
        f"batch so that no image is seen twice), SGD lr {LR:g} with momentum {MOMENTUM:g}, batch "
        f"{size.batch_size}, {size.epochs} epochs. Per weight decay ({', '.join(size.weight_decays)}) and "
        f"seed ({size.seeds} seeds; each draws its own data, initialization and batches) two runs: the "
        f"learning rate cut to {GAMMA:g}x after epoch {size.decay_epoch} (`StepLR`), and constant. "
        '`SpectralCallback(operators="auto")` estimates each conv\'s spectrum as the linear map on whole '
        "feature maps after every epoch: the 8 largest eigenvalues of `A^T A` by Lanczos (sigma_max = "
        "sqrt(lambda_1)) and a 50-bin KPM histogram on [0, 1.01 lambda_1] (256 moments, 8 probes); the "
        "permuted end kernels go through the same callback."
    )


def _dimensions(runs: Mapping[tuple[str, str, int], Path]) -> dict[str, int]:
    """Each conv's operator dimension (of the Gram operator analyzed), from the first run."""
    with open_run(next(iter(runs.values()))) as run:
        return {report.short(layer): int(run.operator_info(layer)["dimension"]) for layer in run.operators}


def _differences(size: Size, dimensions: Mapping[str, int]) -> list[str]:
    steps = math.ceil(int((1 - VAL_FRACTION) * size.num_samples) / size.batch_size)
    sizes = " and ".join(f"{value:,}" for value in dimensions.values())
    return [
        "Network and data: squeeze_net on ImageNet there (about 10,000 steps per epoch: 1.28 million "
        f"images at batch 128); a two-conv net on small synthetic images here, {steps} steps per epoch.",
        f"Schedule: one cut to 10% after {size.decay_epoch} of {size.epochs} epochs here; cuts after 30 and "
        "60 epochs there. The manuscript trains with plain SGD at batch 128 and gives neither momentum nor "
        f"weight decay; here momentum {MOMENTUM:g}, batch {size.batch_size}, weight decay "
        f"{' and '.join(size.weight_decays)}.",
        "Estimator: the manuscript computes 1000 eigenvalues exactly and the rest by KPM; here 8 by Lanczos "
        f"and all of them by KPM, on Gram operators of dimension {sizes} (43,264 for the layer of its "
        "figure 1).",
        "Replication: one training run there; here several seeds per condition, a constant-rate null run "
        "for each run with the cut, and permuted kernels as the null of the heavier tail.",
    ]


def _write_cost(path: Path) -> None:
    """CPU seconds of this process so far and of its finished children (the analysis workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cost = {"main_process": time.process_time(), "analysis_processes": children.ru_utime + children.ru_stime}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cost))


if __name__ == "__main__":
    main()
