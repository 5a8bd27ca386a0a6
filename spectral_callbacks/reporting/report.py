"""Outputs of a run comparison: the terminal table, CSV, PNG figures and a self-contained HTML page.

``--out X.png`` writes ``X.png`` (the metric over training) and its siblings ``X-vs-<param>.png``
(the metric against a run parameter, when the runs have one) and ``X-esd.png`` (ESD overlays);
``--out X.html`` embeds the same figures as base64 PNG next to the table; ``--out X.csv`` writes
the long table.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

from ..formatting import format_cell
from .compare import MODEL_AVERAGE, CompareTable, LabeledRun
from .plots import esd_overlay_figure, metric_figure, parameter_figure, png_bytes
from .run_params import HPARAM_FILES, parameter_values
from .tables import print_table

__all__ = [
    "OUTPUT_SUFFIXES",
    "TERMINAL_EPOCHS",
    "Image",
    "check_comparison_outputs",
    "comparison_images",
    "html_page",
    "print_comparison",
    "write_outputs",
]

OUTPUT_SUFFIXES = (".csv", ".png", ".html")
TERMINAL_EPOCHS = 8  # epoch columns shown in the terminal; the CSV and HTML have them all


class Image(NamedTuple):
    """A rendered figure: file-name suffix (``""`` for the main one), title and PNG bytes."""

    suffix: str
    title: str
    png: bytes


def check_comparison_outputs(paths: Sequence[Path]) -> None:
    """Raise a ValueError for an output whose suffix is not one of :data:`OUTPUT_SUFFIXES`."""
    for path in paths:
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ValueError(
                f"Unsupported output {str(path)!r}: expected a file ending in {', '.join(OUTPUT_SUFFIXES)}."
            )


def print_comparison(table: CompareTable, *, file: TextIO | None = None) -> None:
    """The table for the terminal: one row per layer and run, at most :data:`TERMINAL_EPOCHS` epochs."""
    header, rows = table.wide(max_epochs=TERMINAL_EPOCHS)
    total = len({row.epoch for row in table.rows})
    title = f"{table.metric} per layer and epoch, {len(table.runs)} runs"
    if len(header) - 2 < total:
        title += f" ({len(header) - 2} of {total} epochs shown; --out FILE.csv has all)"
    print_table(header, _grouped(rows), title=title, file=file)


def comparison_images(
    runs: Sequence[LabeledRun], table: CompareTable, *, parameter: str | None = None, epoch: int | None = None
) -> tuple[list[Image], list[str]]:
    """The figures of a comparison as PNG, and notes on the figures left out.

    The plot against a run parameter and the ESD overlays use ``epoch`` (by default the last
    epoch every run has analyzed).
    """
    images = [Image("", f"{table.metric} during training", png_bytes(metric_figure(table)))]
    notes = []
    at = table.common_epoch(epoch)
    runs = [run for run in runs if table.epochs(run.label)]
    name, values, without = parameter_values(runs, parameter)
    if len(values) >= 2:
        figure = parameter_figure(table, values, parameter=name, epoch=at)
        images.append(Image(f"-vs-{_slug(name)}", f"{table.metric} against {name}", png_bytes(figure)))
        if without:
            notes.append(f"Left out of the plot against {name} (no value): {', '.join(without)}.")
    else:
        notes.append(_no_parameter_plot(parameter, values))
    layers = [layer for layer in table.layers if layer != MODEL_AVERAGE]
    esds = {layer: {run.label: run.reader.esd(layer, at) for run in runs} for layer in layers}
    images.append(Image("-esd", f"ESD at epoch {at}", png_bytes(esd_overlay_figure(esds, epoch=at))))
    return images, notes


def write_outputs(
    paths: Sequence[Path],
    runs: Sequence[LabeledRun],
    table: CompareTable,
    *,
    parameter: str | None = None,
    epoch: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Write each output by its suffix; return the files written and notes on figures left out.

    CSV files are written first and need nothing beyond the core dependencies; the figures of
    PNG and HTML outputs are drawn afterwards, so a missing matplotlib leaves the CSV files written.

    Raises:
        ModuleNotFoundError: a PNG or HTML output and no matplotlib (the message names the
            extra to install); the CSV outputs are written by then.
    """
    check_comparison_outputs(paths)
    written = []
    for path in paths:
        if path.suffix.lower() == ".csv":
            path.parent.mkdir(parents=True, exist_ok=True)
            table.write_csv(path)
            written.append(path)
    figures = [path for path in paths if path.suffix.lower() != ".csv"]
    if not figures:
        return written, []
    images, notes = comparison_images(runs, table, parameter=parameter, epoch=epoch)
    for path in figures:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            for image in images:
                target = path.with_name(f"{path.stem}{image.suffix}{path.suffix}")
                target.write_bytes(image.png)
                written.append(target)
        else:
            path.write_text(html_page(runs, table, images, notes), encoding="utf-8")
            written.append(path)
    return written, notes


def html_page(
    runs: Sequence[LabeledRun], table: CompareTable, images: Sequence[Image], notes: Sequence[str] = ()
) -> str:
    """One self-contained HTML page: the runs, the table with every epoch, the figures inline."""
    header, rows = table.wide()
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(value))}</td>" for value in row) + "</tr>"
        for row in _grouped(rows)
    )
    listing = "".join(
        f"<li><b>{html.escape(run.label)}</b>: {html.escape(str(run.reader.path))}</li>" for run in runs
    )
    remarks = "".join(f"<li>{html.escape(note)}</li>" for note in [*table.notes, *notes])
    figures = "\n".join(
        f"<h2>{html.escape(image.title)}</h2>\n"
        f'<img src="data:image/png;base64,{base64.b64encode(image.png).decode("ascii")}" '
        f'alt="{html.escape(image.title)}">'
        for image in images
    )
    title = html.escape(f"{table.metric} across {len(runs)} runs")
    return _PAGE.format(
        title=title, runs=listing, notes=f"<ul>{remarks}</ul>" if remarks else "", head=head, body=body,
        figures=figures,
    )  # fmt: skip


def _grouped(rows: list[list[object]]) -> list[list[object]]:
    """Rows with the first cell blanked where it repeats the row above (one group per layer)."""
    return [["" if i and row[0] == rows[i - 1][0] else row[0], *row[1:]] for i, row in enumerate(rows)]


def _no_parameter_plot(parameter: str | None, values: dict[str, float]) -> str:
    found = f" (found only for {', '.join(values)})" if values else ""
    if parameter is None:
        return (
            "No plot against a run parameter: pass --param NAME (read from the run's "
            f"{' or '.join(HPARAM_FILES)}, or from a number in the run label such as l2_0.0005)."
        )
    return (
        f"No plot against {parameter}: fewer than two runs have a number for it in their "
        f"{' or '.join(HPARAM_FILES)} or label{found}."
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "parameter"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>spectral-callbacks: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>{title}</h1>
<ul>{runs}</ul>
{notes}
<div style="overflow-x: auto"><table>
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table></div>
{figures}
</body>
</html>
"""
