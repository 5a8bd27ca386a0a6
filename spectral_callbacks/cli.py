"""The ``spectral-callbacks`` command: ``summary RUN...`` and ``analyze FILE...``."""

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
    args = parser.parse_args(argv)
    try:
        for path in args.runs if args.command == "summary" else args.files:
            print(f"== {path}")
            print(_summary(path) if args.command == "summary" else _analyze(path))
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"spectral-callbacks: {error}", file=sys.stderr)
        return 2
    return 0


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
