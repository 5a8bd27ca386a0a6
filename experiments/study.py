"""What the sweep-based studies share: their command-line options and running their sweep.

Each study ``NAME`` sweeps one knob of ``configs/NAME.yaml`` into ``<runs>/NAME/<knob>_<value>/``
(``runs/`` by default, ignored by git), then writes its figures under ``<out>/NAME/`` and its
section of ``RESULTS.md``. ``--smoke`` runs a few seconds' worth into ``<runs>/smoke/``, with its
own ``RESULTS.md`` and figures there unless ``--out`` / ``--results`` say otherwise, so a smoke
run never overwrites the real results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.results import DEFAULT_OUT, DEFAULT_RESULTS, DEFAULT_RUNS, single_threaded, study_parser
from experiments.sweep import run_name, sweep
from spectral_callbacks.compare import check_metric

__all__ = ["CONFIGS_DIR", "StudyOptions", "parse_study_args", "run_study_sweep"]

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class StudyOptions:
    """A study's options, parsed.

    Attributes:
        smoke: a run of a few seconds (for tests).
        out: root directory of the studies' figures.
        results: the markdown file the section goes to.
        runs: root directory of the runs.
        values: the knob's values (as on the command line).
        metrics: the metrics shown per epoch (checked against the metric names).
        report_only: write the section from existing runs, without training.
        command: the command line to quote in the section.
    """

    smoke: bool
    out: Path
    results: Path
    runs: Path
    values: tuple[str, ...]
    metrics: tuple[str, ...]
    report_only: bool
    command: str


def parse_study_args(
    module: str,
    description: str,
    argv: Sequence[str] | None,
    *,
    values: Sequence[str],
    smoke_values: Sequence[str],
    metrics: Sequence[str],
) -> StudyOptions:
    """Parse a study's command line; an unknown metric stops with a message listing the names.

    Args:
        module: the study's module, for the command quoted in the section.
        description: the ``--help`` text.
        argv: the arguments (``None``: ``sys.argv``).
        values, smoke_values: the knob's default values in a real and in a smoke run.
        metrics: the default metrics.
    """
    parser = study_parser(description)
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="root directory of the runs")
    parser.add_argument("--values", nargs="+", help=f"the knob's values (default: {' '.join(values)})")
    parser.add_argument("--metrics", nargs="+", default=list(metrics), help="metrics shown per epoch")
    parser.add_argument("--report-only", action="store_true", help="write the section from existing runs")
    args = parser.parse_args(argv)
    for metric in args.metrics:
        try:
            check_metric(metric)
        except ValueError as error:
            parser.error(str(error))
    chosen = tuple(args.values or (smoke_values if args.smoke else values))
    out, results, runs = args.out, args.results, args.runs
    if args.smoke:
        runs = runs / "smoke"
        out = runs / "results" if out == DEFAULT_OUT else out
        results = runs / "RESULTS.md" if results == DEFAULT_RESULTS else results
    command = " ".join(
        [
            f"python -m {module}",
            *(["--smoke"] if args.smoke else []),
            *(["--values", *chosen] if args.values else []),
        ]
    )
    return StudyOptions(
        smoke=args.smoke, out=out, results=results, runs=runs, values=chosen, metrics=tuple(args.metrics),
        report_only=args.report_only, command=command,
    )  # fmt: skip


def run_study_sweep(
    options: StudyOptions, study: str, knob: str, overrides: Sequence[str] = ()
) -> list[Path]:
    """Sweep ``knob`` of ``configs/<study>.yaml`` over the options' values (one thread for torch
    and BLAS: the worker gets the other core); with ``report_only``, only name the run directories.

    Returns:
        The run directories, in the order of the values.
    """
    if not options.report_only:
        with single_threaded():
            sweep(
                [CONFIGS_DIR / f"{study}.yaml"], knob, options.values, runs=options.runs, study=study,
                overrides=overrides, overwrite=True,
            )  # fmt: skip
    return [options.runs / study / run_name(knob, value) for value in options.values]
