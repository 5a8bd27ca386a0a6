"""One knob, several values, one fit and test per value: ``python -m experiments sweep``.

::

    python -m experiments sweep --config configs/reg_sweep.yaml \\
        --knob model.init_args.fc_l2 --values 0 1e-4 3e-4 5e-4 1e-3 [--runs runs] [--study NAME] \\
        [--overwrite] [--trainer.max_epochs=5 ...]

Any other ``--key=value`` is passed to every fit, as on the ``fit`` command line. Each value's run
goes to ``<runs>/<study>/<name>_<value>/``, where the study defaults to the first config file's
name and ``name`` is the knob's last part (``fc_l2_0.0001``, which ``spectral-callbacks compare``
reads as ``fc_l2 = 0.0001``). A run directory holds the TensorBoard events, ``hparams.yaml``,
``config.yaml``, the ``spectra.h5`` run file and ``metrics.json`` (the last validation metrics
and the test metrics, when the data module has a test split). Values run one after the other;
the knob and every value are checked before the first fit starts.

With ``--seed S`` (``sweep(..., seed=S)``) every fit also gets ``--seed_everything=S`` and the runs
go one level deeper, to ``<runs>/<study>/seed_S/<name>_<value>/`` (:func:`seed_dir`), so sweeps of
the same values with several seeds sit side by side; without it nothing changes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.cli import ExperimentCLI

__all__ = [
    "METRICS_FILE", "SweepRun", "check_sweep", "main", "read_metrics", "run_name", "seed_dir", "sweep",
]  # fmt: skip

METRICS_FILE = "metrics.json"
# Files that mark a directory as a run's, so --overwrite never deletes anything else.
_RUN_FILES = ("spectra.h5", "hparams.yaml", "config.yaml", METRICS_FILE)


@dataclass(frozen=True)
class SweepRun:
    """One finished run of a sweep: the knob's value (as given), its directory and final metrics."""

    value: str
    run_dir: Path
    metrics: dict[str, float]


def run_name(knob: str, value: str) -> str:
    """``<last part of the knob>_<value>``: ``run_name("model.init_args.fc_l2", "1e-4") == "fc_l2_1e-4"``."""
    return f"{knob.rsplit('.', 1)[-1]}_{value}"


def seed_dir(root: str | Path, seed: int | None) -> Path:
    """Where a sweep with ``seed`` puts its run directories: ``root/seed_<seed>`` (``root`` for None)."""
    return Path(root) if seed is None else Path(root) / f"seed_{seed}"


def check_sweep(
    configs: Sequence[str | Path], knob: str, values: Sequence[str], overrides: Sequence[str] = ()
) -> None:
    """Parse the configuration with every value of the knob, without training.

    Raises:
        ValueError: the knob is not a setting of the configuration (the message lists the
            settings next to it), a value does not parse, or is given twice.
    """
    if not values:
        raise ValueError("No value to sweep: pass --values V1 V2 ...")
    repeated = sorted({value for value in values if list(values).count(value) > 1})
    if repeated:
        raise ValueError(f"Values given more than once: {', '.join(repeated)} (one run directory each).")
    base = _config_args(configs, overrides)
    cli = _cli(base)
    if knob not in cli.config:
        raise ValueError(f"Unknown knob {knob!r}. {_settings_near(cli.config, knob)}")
    for value in values:
        try:
            cli.parser.parse_args([*base, f"--{knob}={value}"])
        except (argparse.ArgumentError, SystemExit, ValueError) as error:
            raise ValueError(f"Invalid value {value!r} for {knob}: {error}") from error


def sweep(
    configs: Sequence[str | Path],
    knob: str,
    values: Sequence[str],
    *,
    runs: str | Path = "runs",
    study: str | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    seed: int | None = None,
) -> list[SweepRun]:
    """Fit (and test) one run per value of ``knob``; see the module docstring for the layout.

    Args:
        configs: LightningCLI config files, in order.
        knob: a dotted setting, e.g. ``model.init_args.fc_l2`` or ``data.init_args.batch_size``.
        values: its values as on the command line (the run directories are named after them).
        runs: root directory of the runs.
        study: subdirectory of ``runs`` for this sweep (default: the first config file's stem).
        overrides: further ``--key=value`` arguments for every fit.
        overwrite: replace existing run directories of these values instead of stopping.
        seed: ``seed_everything`` of every fit (after ``overrides``), runs under :func:`seed_dir`;
            ``None`` keeps the configuration's seed and the layout without a seed level.

    Raises:
        ValueError: see :func:`check_sweep`.
        FileExistsError: a run directory exists and ``overwrite`` is False, or it exists but is
            not a run directory.
    """
    study = study or Path(configs[0]).stem
    root = seed_dir(Path(runs) / study, seed)
    if seed is not None:
        overrides = [*overrides, f"--seed_everything={seed}"]
    check_sweep(configs, knob, values, overrides)
    directories = {value: root / run_name(knob, value) for value in values}
    for directory in directories.values():
        _check_free(directory, overwrite)
    finished = []
    for value, directory in directories.items():
        if directory.exists():
            shutil.rmtree(directory)
        logger = {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": str(root), "name": "", "version": directory.name},
        }
        args = [
            *_config_args(configs, overrides),
            f"--{knob}={value}",
            f"--trainer.logger={json.dumps(logger)}",
        ]
        print(f"== {knob}={value} -> {directory}", flush=True)
        metrics = fit_and_test(args, directory)
        finished.append(SweepRun(value, directory, metrics))
    return finished


def fit_and_test(args: Sequence[str], run_dir: Path) -> dict[str, float]:
    """Build the objects from ``args``, fit, test when the data has a test split; write ``metrics.json``.

    Returns:
        The last logged metrics of the fit (``val/accuracy``, ...) and of the test (``test/accuracy``).
    """
    started = time.perf_counter()
    cli = _cli(args)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if getattr(data, "has_test", False):
        for results in trainer.test(model, datamodule=data, verbose=False):
            metrics.update({name: float(value) for name, value in results.items()})
    record = {
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seconds": time.perf_counter() - started,
        "examples": {
            split: len(getattr(data, f"{split}_set"))
            if getattr(data, f"{split}_set", None) is not None
            else 0
            for split in ("train", "val", "test")
        },
        "metrics": metrics,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """What a sweep wrote into ``run_dir/metrics.json``: ``metrics`` (final validation and test
    metrics), ``epochs``, ``steps`` (optimizer steps), ``seconds`` and ``examples`` per split.

    Raises:
        FileNotFoundError: the run has no ``metrics.json`` (not run by a sweep, or unfinished).
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {METRICS_FILE} in {run_dir}: run it with 'python -m experiments sweep'.")
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``sweep`` command; returns its exit code (2 on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments sweep", description=__doc__.split("\n\n")[0],
        epilog="Other --key=value arguments are passed to every fit (e.g. --trainer.max_epochs=5).",
    )  # fmt: skip
    parser.add_argument(
        "--config", action="append", required=True, help="LightningCLI config file (repeatable)"
    )
    parser.add_argument("--knob", required=True, help="dotted setting to sweep, e.g. model.init_args.fc_l2")
    parser.add_argument("--values", nargs="+", required=True, help="its values, one run each")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="root of the run directories")
    parser.add_argument("--study", help="subdirectory of --runs (default: the first config file's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing runs of these values")
    parser.add_argument("--seed", type=int, help="seed_everything of every fit (runs in seed_<seed>/)")
    args, overrides = parser.parse_known_args(argv)
    try:
        finished = sweep(
            args.config, args.knob, args.values, runs=args.runs, study=args.study, overrides=overrides,
            overwrite=args.overwrite, seed=args.seed,
        )  # fmt: skip
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"sweep: {error}", file=sys.stderr)
        return 2
    for run in finished:
        shown = ", ".join(f"{name} {value:.4g}" for name, value in sorted(run.metrics.items()))
        print(f"{run.run_dir}: {shown}")
    return 0


def _cli(args: Sequence[str]) -> ExperimentCLI:
    with warnings.catch_warnings():
        # run from 'python -m experiments sweep', whose own arguments are in sys.argv
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return ExperimentCLI(args=list(args), run=False, parser_kwargs={"exit_on_error": False})


def _config_args(configs: Sequence[str | Path], overrides: Sequence[str]) -> list[str]:
    missing = [str(path) for path in configs if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"No config file at {', '.join(missing)}.")
    return [*(item for path in configs for item in ("--config", str(path))), *overrides]


def _settings_near(config: Any, knob: str) -> str:
    """The settings under the longest prefix of ``knob`` that the configuration has."""
    keys = [key for key, _ in config.items()]
    parts = knob.split(".")
    for size in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:size]) + "."
        near = [key for key in keys if key.startswith(prefix)]
        if near:
            return f"Settings under {prefix[:-1]}: {', '.join(near)}."
    return f"Top-level settings: {', '.join(sorted({key.split('.')[0] for key in keys}))}."


def _check_free(directory: Path, overwrite: bool) -> None:
    if not directory.exists():
        return
    if not any((directory / name).exists() for name in _RUN_FILES):
        raise FileExistsError(
            f"{directory} exists and is not a run directory; choose another --runs or --study."
        )
    if not overwrite:
        raise FileExistsError(f"Run directory {directory} exists; pass --overwrite to replace it.")
