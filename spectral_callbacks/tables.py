"""Tables for the terminal: plain text (no dependency; aligned columns, numbers to 4 digits), or
rich's tables when rich is installed and the output is a terminal."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

import numpy as np

if TYPE_CHECKING:
    from .reader import RunReader

__all__ = ["format_cell", "format_columns", "print_table", "run_table"]

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


def print_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    title: str | None = None,
    file: TextIO | None = None,
) -> None:
    """Print a table: a rich table on a terminal (if rich is installed), else :func:`format_columns`.

    Rows whose first cell is empty continue the group of the row above; rich draws a rule
    between groups. Piped output is always plain text, so it stays easy to grep.
    """
    file = sys.stdout if file is None else file
    if not (file.isatty() and importlib.util.find_spec("rich")):
        text = format_columns(header, rows)
        print(f"{title}\n{text}" if title else text, file=file)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(header):
        numeric = all(not isinstance(row[i], str) for row in rows)
        table.add_column(name, justify="right" if numeric else "left")
    for i, row in enumerate(rows):
        if i and format_cell(row[0]):
            table.add_section()
        table.add_row(*[format_cell(value) for value in row])
    Console(file=file).print(table)


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
