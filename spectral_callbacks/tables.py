"""Plain-text tables for the terminal (no dependency; aligned columns, numbers to 4 digits)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .reader import RunReader

__all__ = ["format_cell", "format_columns", "run_table"]

RUN_TABLE_METRICS = (
    "alpha",
    "alpha_weighted",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "rank_loss",
    "lambda_min",
)


def format_cell(value: object) -> str:
    """A number to 4 significant digits, integers as they are, NaN as ``-``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "-"
    if number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.4g}"


def format_columns(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns with a rule under the header."""
    cells = [list(header)] + [[format_cell(value) for value in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_table(run: RunReader, metrics: Sequence[str] = RUN_TABLE_METRICS) -> str:
    """Per-layer table of a run: alpha at the first and last analyzed snapshot, then the last values."""
    epochs = run.epochs
    if epochs.size == 0:
        return f"{run.path}: no analyzed snapshot yet"
    header = ["layer", "kind", "shape", f"alpha@{epochs[0]}", *[f"{m}@{epochs[-1]}" for m in metrics]]
    rows = []
    for layer in run.layers:
        info = run.layer_info(layer)
        values = {metric: run.metric(metric, layer) for metric in ("alpha", *metrics)}
        rows.append(
            [
                layer,
                info["kind"],
                f"{info['N']}x{info['M']}",
                values["alpha"][0],
                *[values[m][-1] for m in metrics],
            ]
        )
    return format_columns(header, rows)
