"""Tables for the terminal: plain text (no dependency; aligned columns, numbers to 4 digits), or
rich's tables when rich is installed and the output is a terminal."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..runfile.reader import RunReader

from ..formatting import format_cell, format_columns

__all__ = ["not_analyzed_lines", "print_table", "run_table", "unanalyzed_snapshot_lines"]

RUN_TABLE_METRICS = (
    "alpha",
    "alpha_weighted",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "rank_loss",
    "lambda_min",
)
NAMES_SHOWN = 3  # parameter names shown per reason (and tied tensors shown) without --all
_WRAP_WIDTH = 100


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
    """Per-layer table of a run: alpha at the first and last analyzed snapshot, then the last
    values; a layer without a row at that snapshot (a change layer of ``deltas``, which starts at
    the second snapshot) shows none there."""
    epochs = run.epochs
    if epochs.size == 0:
        return f"{run.path}: no analyzed snapshot yet"
    header = ["layer", "kind", "shape", f"alpha@{epochs[0]}", *[f"{m}@{epochs[-1]}" for m in metrics]]
    first = run.metric_grid("alpha")[0][:, 0]  # (layers, snapshots), NaN where a layer has no row
    last = [run.metric_grid(metric)[0][:, -1] for metric in metrics]
    rows = []
    for position, layer in enumerate(run.layers):
        info = run.layer_info(layer)
        rows.append(
            [layer, info["kind"], f"{info['N']}x{info['M']}", first[position], *[m[position] for m in last]]
        )
    return format_columns(header, rows)


def not_analyzed_lines(run: RunReader, *, every_name: bool = False) -> list[str]:
    """Lines on the run's parameters without an analyzed matrix, and on its tied parameters.

    Skipped parameters are grouped by reason, the most frequent first, with their count and
    :data:`NAMES_SHOWN` names (every name, wrapped, with ``every_name``): a transformer's hundred
    biases and norm scales take one line. Tied parameters (one tensor under several names,
    recorded once) are listed as ``name = other names``. No lines for a run without either.
    """
    lines = []
    skipped = run.skipped_parameters
    if skipped:
        groups: dict[str, list[str]] = {}
        for name, reason in skipped.items():
            groups.setdefault(reason, []).append(name)
        ordered = sorted(groups.items(), key=lambda item: -len(item[1]))  # stable: ties in file order
        hidden = not every_name and any(len(names) > NAMES_SHOWN for names in groups.values())
        hint = " (summary --all lists every name)" if hidden else ""
        lines.append(f"{_count(len(skipped), 'parameter')} not analyzed{hint}:")
        width = len(str(len(ordered[0][1])))
        for reason, names in ordered:
            head = f"  {len(names):>{width}}  {reason}: "
            if not every_name:
                lines.append(head + _first_names(names))
                continue
            indent = " " * (width + 4)
            lines.append(
                textwrap.fill(", ".join(names), _WRAP_WIDTH, initial_indent=head, subsequent_indent=indent,
                              break_on_hyphens=False, break_long_words=False)
            )  # fmt: skip
    aliases = {name: others for name, others in run.parameter_aliases.items() if others}
    if aliases:
        lines.append("Tied parameters (one tensor under several names, analyzed under the first):")
        shown = list(aliases.items()) if every_name else list(aliases.items())[:NAMES_SHOWN]
        lines += [f"  {name} = {', '.join(others)}" for name, others in shown]
        if len(shown) < len(aliases):
            lines.append(f"  ... {len(aliases) - len(shown)} more (summary --all lists them)")
    return lines


def unanalyzed_snapshot_lines(run: RunReader) -> list[str]:
    """Lines on the run's snapshots that have no spectra, grouped by status and reason with their
    epochs: dropped (``on_full="drop"``, or skipped by ``max_overhead``), failed, or captured and
    still waiting for the analysis. No lines when every snapshot is analyzed."""
    index = run.snapshots()
    groups: dict[tuple[str, str], list[int]] = {}
    for epoch, status, reason in zip(index["epoch"], index["status"], index["reason"], strict=True):
        if status != "analyzed":
            groups.setdefault((status, reason), []).append(int(epoch))
    if not groups:
        return []
    lines = [f"{_count(sum(map(len, groups.values())), 'snapshot')} without spectra:"]
    for (status, reason), epochs in groups.items():
        because = f" ({reason})" if reason else ""
        noun = "epoch" if len(epochs) == 1 else "epochs"
        lines.append(f"  {len(epochs)} {status}{because}: {noun} {', '.join(map(str, epochs))}")
    return lines


def _first_names(names: Sequence[str]) -> str:
    """The first :data:`NAMES_SHOWN` names, and how many more there are."""
    more = len(names) - NAMES_SHOWN
    return ", ".join(names[:NAMES_SHOWN]) + (f", ... ({more} more)" if more > 0 else "")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
