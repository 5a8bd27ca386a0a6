"""The ``spectral-callbacks`` command: ``summary RUN...``, ``analyze FILE...`` and ``compare RUN...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spectral-callbacks", description="Spectral analysis of weight matrices."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser(
        "summary", help="per-layer table of run files (spectra.h5 or run directories)"
    )
    summary.add_argument("runs", nargs="+", type=Path)
    analyze = commands.add_parser(
        "analyze", help="analyze saved weights: .npz, or a torch .pt/.bin/.ckpt state dict"
    )
    analyze.add_argument("files", nargs="+", type=Path)
    compare = commands.add_parser(
        "compare", help="compare runs: one metric per layer and epoch, as a table, CSV, PNG or HTML"
    )
    compare.add_argument(
        "runs", nargs="+", type=Path, help="run files (spectra.h5) or directories searched for them"
    )
    compare.add_argument("--metric", default="alpha", help="the metric to compare (default: alpha)")
    compare.add_argument(
        "--layers", nargs="+", metavar="LAYER", help="layers to compare (default: those in every run)"
    )
    compare.add_argument(
        "--epoch", type=int, help="epoch of the ESD overlays and of the plot against --param "
        "(default: the last epoch every run has analyzed)",
    )  # fmt: skip
    compare.add_argument(
        "--param", metavar="NAME", help="run parameter for the x-axis of the metric at --epoch, read from "
        "the run's hparams.yaml or config.yaml, else from the run label (l2_0.0005)",
    )  # fmt: skip
    compare.add_argument(
        "--out", action="append", type=Path, default=[], metavar="FILE",
        help="write report.csv (long table), report.png (figures) or report.html (all); repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            _compare(args)
            return 0
        for path in args.runs if args.command == "summary" else args.files:
            print(f"== {path}")
            print(_summary(path) if args.command == "summary" else _analyze(path))
    except (FileNotFoundError, ValueError, KeyError, ImportError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"spectral-callbacks: {message}", file=sys.stderr)
        return 2
    return 0


def _compare(args: argparse.Namespace) -> None:
    from .compare import compare_table, load_runs
    from .report import check_outputs, print_comparison, write_outputs

    check_outputs(args.out)
    runs = load_runs(args.runs)
    try:
        table = compare_table(runs, args.metric, layers=args.layers)
        if args.epoch is not None:
            table.common_epoch(args.epoch)  # checked even when no figure uses it
        for note in table.notes:
            print(f"note: {note}", file=sys.stderr)
        print_comparison(table)
        written, notes = write_outputs(args.out, runs, table, parameter=args.param, epoch=args.epoch)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        for path in written:
            print(f"wrote {path}")
    finally:
        for run in runs:
            run.reader.close()


def _summary(path: Path) -> str:
    from .reader import open_run
    from .tables import run_table

    with open_run(path) as run:
        return run_table(run)


def _analyze(path: Path) -> str:
    import numpy as np

    from .model import analyze_model

    if not path.exists():
        raise FileNotFoundError(f"No file at {path}.")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            weights = {name: archive[name] for name in archive.files}
    elif path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        import torch

        weights = torch.load(path, map_location="cpu", weights_only=True)
        weights = weights.get("state_dict", weights)
    else:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; expected .npz, .pt, .pth, .bin or .ckpt."
        )
    return analyze_model(weights).table()


if __name__ == "__main__":
    sys.exit(main())
