"""Training-time overhead of SpectralCallback on an MLP, ResNet-18 and a Transformer, runs interleaved.

Each model trains with Lightning on CPU (torch on all cores) on synthetic data made in
``overhead_models.py``, one snapshot per epoch, in up to three arms that take turns (plain,
callback, max_overhead, plain, ...) so that drift in the machine's speed hits them alike:

* plain: no callback;
* callback: ``SpectralCallback()`` with its defaults (``on_full="block"``: every snapshot analyzed);
* max_overhead: ``SpectralCallback(max_overhead=0.03)``, which skips due snapshots to keep its
  estimated cost within 3% of training time; "n/a" when the installed callback has no such option.

Epoch times come from a timing callback placed after SpectralCallback, so they include the capture
at the epoch's end; the first epoch (worker start-up, warm caches) is left out in every arm. The
worker's start and its final drain are in the whole ``fit`` times only.

The floor: the worker analyzes on one core, and while it does, training runs one torch thread
short (``lend_threads``), so a snapshot whose analysis takes ``a`` CPU-seconds costs training about
``a * (1 - 1/S)`` seconds, ``S`` being torch's speed-up from 1 thread to all of them on that model.
The script measures ``S`` (epoch time with ``torch.set_num_threads(1)`` over that with all
threads, the shortest of a few plain epochs each), ``T`` (the median plain epoch) and ``a`` (the
analysis process's CPU seconds per snapshot, from the callback's own accounting,
``SpectralCallback.costs``), and prints the epoch-time ratio that floor implies,
``1 + a (1 - 1/S) / T``.

Run: ``.venv/bin/python benchmarks/bench_overhead.py [--models mlp,resnet18,transformer]
[--epochs 6] [--repeats 3] [--samples 60000] [--short-samples 16384] [--validation no|yes|both]
[--analysis-executor process|processes|dask] [--analysis-workers N] [--quick]``. ``--quick``
trains tiny versions for a smoke run (its verdicts mean nothing).

Columns, one row per model (and MLP epoch length; ``+val`` with a validation loop of a quarter
as many batches, counted in the epoch):

* epoch plain / epoch cb: median epoch seconds without and with the callback;
* ratio: their quotient; fit: median over rounds of the whole-``fit`` time ratio, with / without;
* a: the analysis' CPU seconds per snapshot;
* S: torch's speed-up from 1 thread to all; floor: the ratio ``a (1 - 1/S)`` per epoch implies;
* snaps: snapshots analyzed / not analyzed (dropped or failed) in the callback arm, all rounds;
* mo ratio, mo snaps: the max_overhead arm's epoch-time ratio to plain, and its snapshots
  analyzed / skipped for max_overhead.

Targets: ResNet-18 ratio <= 1.18 with every snapshot analyzed and <= 1.03 with max_overhead=0.03;
the MLP (``--samples``) and the Transformer <= 1.03; the MLP at ~0.7 s epochs (``--short-samples``)
<= 1.06; every model <= 1.03 with max_overhead=0.03.

A second table splits the callback arm's cost per snapshot into its parts, as the callback
accounts for them (``SnapshotCosts``): copying the weights and handing them to the queue (in the
training loop), the time training ran a thread short, and the analysis' CPU seconds.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch
from common import load_average
from overhead_models import (
    Workload,
    mlp_workload,
    parameter_count,
    resnet_workload,
    transformer_workload,
)

from spectral_callbacks import SnapshotCosts, SpectralCallback, open_run

MAX_OVERHEAD = 0.03
TARGETS = {"mlp": 1.03, "mlp-short": 1.06, "resnet18": 1.18, "transformer": 1.03}
ARMS = ("plain", "callback", "max_overhead")


class EpochTimer(pl.Callback):
    """Wall time of each training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)


COST_FIELDS = ("taken", "skipped", "copy_seconds", "handover_seconds", "lent_seconds", "analysis_seconds")


@dataclass
class Snapshots:
    """What a run file's index says: snapshots analyzed, skipped for max_overhead, dropped otherwise."""

    analyzed: int = 0
    skipped: int = 0
    dropped: int = 0
    other: int = 0  # failed, or still "captured"
    costs: SnapshotCosts = field(default_factory=SnapshotCosts)  # the callback's own accounting

    def add(self, other: Snapshots) -> None:
        self.analyzed += other.analyzed
        self.skipped += other.skipped
        self.dropped += other.dropped
        self.other += other.other
        for name in COST_FIELDS:
            setattr(self.costs, name, getattr(self.costs, name) + getattr(other.costs, name))

    def per_snapshot(self, name: str) -> float:
        """Seconds of one cost part per snapshot taken."""
        return getattr(self.costs, name) / max(self.costs.taken, 1)


@dataclass
class Run:
    """One ``fit``: epoch times (the first left out), the whole fit's time, the run file's index."""

    epochs: list[float]
    fit: float
    snapshots: Snapshots


def has_max_overhead() -> bool:
    """Whether the installed SpectralCallback takes ``max_overhead``."""
    return "max_overhead" in inspect.signature(SpectralCallback).parameters


def fit(workload: Workload, epochs: int, threads: int, arm: str, options: dict | None = None) -> Run:
    """Train a fresh model for ``epochs`` epochs in one arm (see the module docstring);
    ``options``: more keyword arguments of the arms' ``SpectralCallback``."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    timer = EpochTimer()
    module = workload.build()
    with tempfile.TemporaryDirectory() as directory:
        callbacks: list[pl.Callback] = []
        spectral = None
        if arm != "plain":
            budget = {"max_overhead": MAX_OVERHEAD} if arm == "max_overhead" else {}
            spectral = SpectralCallback(log_dir=directory, **budget, **(options or {}))
            callbacks.append(spectral)
        callbacks.append(timer)  # after the spectral callback: an epoch's time includes its capture
        trainer = pl.Trainer(
            max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=directory,
            accelerator="cpu", devices=1, num_sanity_val_steps=0,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit(module, workload.train, workload.val)
        fit_time = time.perf_counter() - start
        snapshots = Snapshots()
        if spectral is not None:
            with open_run(spectral.run_path) as reader:
                snapshots = read_index(reader.snapshots())
            snapshots.costs = spectral.costs
    torch.set_num_threads(threads)
    # the first epoch holds the worker's start-up (imports) and warms caches in every arm
    return Run(timer.times[1:], fit_time, snapshots)


def read_index(index: dict[str, np.ndarray]) -> Snapshots:
    """Count the index rows by status; a dropped row whose reason names max_overhead was skipped."""
    counts = Snapshots()
    for status, reason in zip(index["status"], index["reason"], strict=True):
        if status == "analyzed":
            counts.analyzed += 1
        elif status == "dropped" and "max_overhead" in reason:
            counts.skipped += 1
        elif status == "dropped":
            counts.dropped += 1
        else:
            counts.other += 1
    return counts


def thread_speedup(workload: Workload, epochs: int, threads: int) -> float:
    """Plain epoch time on one torch thread over that on ``threads``, the shortest epoch of each
    (the least disturbed by anything else the machine runs)."""
    if threads == 1:
        return 1.0
    one = min(fit(workload, epochs, 1, "plain").epochs)
    many = min(fit(workload, epochs, threads, "plain").epochs)
    return one / many


@dataclass
class Result:
    """One workload's figures (``None``: arm not run)."""

    workload: Workload
    epoch: dict[str, float]
    fit_ratio: float
    snapshots: dict[str, Snapshots]
    speedup: float
    runs: int  # fits per arm

    def ratio(self, arm: str) -> float | None:
        return self.epoch[arm] / self.epoch["plain"] if arm in self.epoch else None

    @property
    def analysis(self) -> float:
        """CPU seconds of the analysis per snapshot, as the worker measured them."""
        return self.snapshots["callback"].per_snapshot("analysis_seconds")

    @property
    def floor(self) -> float:
        """``1 + a (1 - 1/S) / T``; an S below 1 (a disturbed measurement) counts as 1."""
        return 1 + self.analysis * max(0.0, 1 - 1 / self.speedup) / self.epoch["plain"]


def measure(
    workload: Workload,
    epochs: int,
    repeats: int,
    threads: int,
    speedup_epochs: int,
    options: dict | None = None,
) -> Result:
    """Interleaved arms for ``repeats`` rounds, then ``S`` and the analysis seconds."""
    arms = [arm for arm in ARMS if arm != "max_overhead" or has_max_overhead()]
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    fit_ratios: list[float] = []
    snapshots = {arm: Snapshots() for arm in arms if arm != "plain"}
    last: dict[str, Run] = {}
    for _ in range(repeats):
        for arm in arms:
            last[arm] = fit(workload, epochs, threads, arm, options)
            times[arm].extend(last[arm].epochs)
            if arm != "plain":
                snapshots[arm].add(last[arm].snapshots)
        fit_ratios.append(last["callback"].fit / last["plain"].fit)
    return Result(
        workload=workload,
        epoch={arm: statistics.median(values) for arm, values in times.items()},
        fit_ratio=statistics.median(fit_ratios),
        snapshots=snapshots,
        speedup=thread_speedup(workload, speedup_epochs, threads),
        runs=repeats,
    )


def row(result: Result) -> str:
    every = result.snapshots["callback"]
    text = (
        f"{result.workload.name:<18} {result.epoch['plain']:>10.3f}s {result.epoch['callback']:>8.3f}s "
        f"{result.ratio('callback'):>6.3f} {result.fit_ratio:>6.3f} {result.analysis:>6.3f}s "
        f"{result.speedup:>5.2f} {result.floor:>6.3f} "
        f"{every.analyzed:>5}/{every.dropped + every.other:<3}"
    )
    budget = result.snapshots.get("max_overhead")
    if budget is None:
        return f"{text} {'n/a':>8} {'n/a':>9}"
    return f"{text} {result.ratio('max_overhead'):>8.3f} {budget.analyzed:>5}/{budget.skipped}"


def cost_row(result: Result) -> str:
    """The callback arm's cost per snapshot, part by part, from its own accounting."""
    every = result.snapshots["callback"]
    parts = ("copy_seconds", "handover_seconds", "lent_seconds", "analysis_seconds")
    cells = " ".join(f"{every.per_snapshot(name):>9.4f}s" for name in parts)
    return f"{result.workload.name:<18} {cells}"


def verdicts(result: Result, target: float, epochs: int) -> list[tuple[bool, str]]:
    """PASS/FAIL lines: the callback arm against ``target`` with every snapshot analyzed, and the
    max_overhead arm against 1 + MAX_OVERHEAD."""
    name, every = result.workload.name, result.snapshots["callback"]
    expected = (epochs + 1) * result.runs
    complete = every.analyzed == expected
    ratio = result.ratio("callback")
    lines = [
        (
            ratio <= target and complete,
            f"{name}: epoch-time ratio {ratio:.3f} <= {target} with every snapshot analyzed "
            f"({every.analyzed} of {expected})",
        )
    ]
    budget = result.ratio("max_overhead")
    if budget is not None:
        lines.append(
            (
                budget <= 1 + MAX_OVERHEAD,
                f"{name}: epoch-time ratio {budget:.3f} <= {1 + MAX_OVERHEAD} "
                f"with max_overhead={MAX_OVERHEAD}",
            )
        )
    return lines


def workloads(args: argparse.Namespace) -> list[tuple[Workload, float]]:
    """The workloads the arguments ask for, each with its epoch-time ratio target."""
    chosen = []
    for validation in {"no": (False,), "yes": (True,), "both": (False, True)}[args.validation]:
        for model in args.models:
            if model == "mlp":
                chosen += [(mlp_workload(samples, validation), TARGETS["mlp"]) for samples in args.samples]
                if args.short_samples:
                    chosen.append((mlp_workload(args.short_samples, validation), TARGETS["mlp-short"]))
            elif model == "resnet18":
                batch, width = (8, 16) if args.quick else (32, 64)
                chosen.append(
                    (resnet_workload(args.resnet_batches, batch, width, validation), TARGETS[model])
                )
            elif model == "transformer":
                sizes = (
                    dict(vocabulary=500, sequence=16, width=64, layers=2, heads=2, feedforward=128)
                    if args.quick
                    else dict(vocabulary=5000, sequence=64, width=256, layers=4, heads=4, feedforward=1024)
                )  # fmt: skip
                chosen.append(
                    (transformer_workload(args.transformer_batches, 8 if args.quick else 32,
                                          validation=validation, **sizes), TARGETS[model])
                )  # fmt: skip
    return chosen


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,resnet18,transformer", help="comma-separated subset")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 6; quick 3)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of interleaved fits (3; quick 1)")
    parser.add_argument(
        "--samples", type=int, nargs="+", default=None,
        help="MLP samples per epoch, one row each (default 60000, an MNIST-sized epoch, ~2.6 s)",
    )  # fmt: skip
    parser.add_argument(
        "--short-samples", type=int, default=None,
        help="MLP samples for the ~0.7 s epoch row, target 1.06 (default 16384; 0: no such row)",
    )  # fmt: skip
    parser.add_argument("--resnet-batches", type=int, default=None, help="ResNet-18 batches per epoch")
    parser.add_argument("--transformer-batches", type=int, default=None, help="Transformer batches per epoch")
    parser.add_argument(
        "--validation", choices=("no", "yes", "both"), default="no",
        help="train without a validation loop, with one (a quarter as many batches), or both",
    )  # fmt: skip
    parser.add_argument(
        "--analysis-executor", default="process",
        help="the callback arms' analysis_executor (default 'process'; 'processes' with --analysis-workers)",
    )  # fmt: skip
    parser.add_argument(
        "--analysis-workers", type=int, default=None, help="the callback arms' analysis_workers"
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny models and epochs: a smoke run")
    args = parser.parse_args()
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = set(args.models) - {"mlp", "resnet18", "transformer"}
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from mlp, resnet18, transformer")
    defaults = {
        "epochs": (3, 6), "repeats": (1, 3), "samples": ([2048], [60000]), "short_samples": (1024, 16384),
        "resnet_batches": (3, 15), "transformer_batches": (3, 5),
    }  # fmt: skip
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is left out")
    return args


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    threads = torch.get_num_threads()
    print(f"torch threads {threads}, {args.epochs} epochs x {args.repeats} rounds per arm, one snapshot "
          f"per epoch; max_overhead arm: {'yes' if has_max_overhead() else 'n/a (no such option)'}"
          f"{'; QUICK: tiny sizes, verdicts not meaningful' if args.quick else ''}")  # fmt: skip
    options = {"analysis_executor": args.analysis_executor, "analysis_workers": args.analysis_workers}
    if args.analysis_executor != "process":
        print(f"callback arms: analysis_executor={args.analysis_executor!r}, "
              f"analysis_workers={args.analysis_workers}")  # fmt: skip
    chosen = workloads(args)
    for workload, _ in chosen:
        print(f"  {workload.name:<18} {workload.description}, {parameter_count(workload):,} parameters")
    print(f"\n{'model':<18} {'epoch plain':>11} {'epoch cb':>9} {'ratio':>6} {'fit':>6} {'a':>7} "
          f"{'S':>5} {'floor':>6} {'snaps':>9} {'mo ratio':>8} {'mo snaps':>9}")  # fmt: skip
    lines, results = [], []
    for workload, target in chosen:
        speedup_epochs = 2 if args.quick else 3
        result = measure(workload, args.epochs, args.repeats, threads, speedup_epochs, options)
        print(row(result), flush=True)
        lines += verdicts(result, target, args.epochs)
        results.append(result)
    print(f"\nper snapshot (callback arm): {'copy':>10} {'hand-over':>10} {'lent':>10} {'analysis':>10}")
    for result in results:
        print(cost_row(result))
    print(load_average())
    print()
    for passed, text in lines:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
