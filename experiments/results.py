"""Writing a study's outputs: CSV tables, PNG figures and its own section of ``RESULTS.md``.

Every study writes its files under ``<out>/<study>/`` and rewrites only the part of the results
file between its markers ``<!-- study:NAME -->`` and ``<!-- /study:NAME -->``, so studies run in
any order (and by different people) without touching each other's sections. Numbers in a section
come from the study's own run: the helpers here format them, nobody types them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import resource
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from spectral_callbacks import format_cell, png_bytes

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_RESULTS",
    "DEFAULT_RUNS",
    "cpu_seconds",
    "figure_link",
    "markdown_table",
    "parse_study",
    "pyplot",
    "save_figure",
    "section_markers",
    "single_threaded",
    "study_parser",
    "write_csv",
    "write_section",
]

EXPERIMENTS_DIR = Path(__file__).resolve().parent
DEFAULT_RESULTS = EXPERIMENTS_DIR / "RESULTS.md"
DEFAULT_OUT = EXPERIMENTS_DIR / "results"
DEFAULT_RUNS = EXPERIMENTS_DIR.parent / "runs"  # training runs (ignored by git)
_HEADER = (
    "# Results of the studies\n\n"
    "Each section is written by its study's command (see the README's Experiments); do not edit by hand.\n"
)


def study_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every study takes: ``--smoke`` (seconds), ``--out``, ``--results`` and ``--runs``.

    Parse them with :func:`parse_study`, which sends a smoke run's outputs to ``<runs>/smoke/``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a tiny run of a few seconds (for tests)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory of the studies' outputs")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown file of the results")
    parser.add_argument(
        "--runs", type=Path, default=DEFAULT_RUNS,
        help="root directory of the training runs (with --smoke, of all its outputs: <runs>/smoke/)",
    )  # fmt: skip
    return parser


def parse_study(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a :func:`study_parser` command line (``argv``; ``None``: ``sys.argv``).

    With ``--smoke``, ``runs`` becomes ``<runs>/smoke``, and ``out`` and ``results`` left at their
    defaults become ``<runs>/smoke/results`` and ``<runs>/smoke/RESULTS.md``: a smoke run never
    overwrites the real runs, figures or results file.
    """
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs = args.runs / "smoke"
        if args.out == DEFAULT_OUT:
            args.out = args.runs / "results"
        if args.results == DEFAULT_RESULTS:
            args.results = args.runs / "RESULTS.md"
    return args


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its finished children (the analysis
    workers): the cost of a study, which wall time on a shared machine does not measure."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One thread for torch and for numpy's BLAS: the studies' matrices are small, and threads
    spinning against each other on a shared 2-core machine make an SVD of 300x100 take 0.4 s."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


def section_markers(name: str) -> tuple[str, str]:
    """The opening and closing markers of study ``name``'s section.

    Raises:
        ValueError: ``name`` is empty or holds characters other than letters, digits, ``_``, ``-``.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"Invalid study name {name!r}: use letters, digits, '_' and '-'.")
    return f"<!-- study:{name} -->", f"<!-- /study:{name} -->"


def write_section(name: str, body: str, results: str | Path = DEFAULT_RESULTS) -> Path:
    """Put ``body`` between study ``name``'s markers in ``results``: replaced if there, else appended.

    The file is created (with a short header) if missing; text outside the markers is kept.

    Raises:
        ValueError: the file holds an opening marker without its closing one (or the reverse).
    """
    path = Path(results)
    opening, closing = section_markers(name)
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    block = f"{opening}\n{body.strip()}\n{closing}"
    start, end = text.find(opening), text.find(closing)
    if (start < 0) != (end < 0) or (start >= 0 and end < start):
        raise ValueError(f"{path} has a broken section for study {name!r}: fix or delete its markers.")
    if start >= 0:
        text = text[:start] + block + text[end + len(closing) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG (directories created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(figure))
    return path


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Write rows under a header as CSV (full precision; directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers to 4 significant digits (:func:`format_cell`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def figure_link(figure: str | Path, results: str | Path, caption: str) -> str:
    """Markdown image of ``figure`` with a path relative to the results file's directory."""
    relative = os.path.relpath(Path(figure).resolve(), Path(results).resolve().parent)
    return f"![{caption}]({Path(relative).as_posix()})"
