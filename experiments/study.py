"""What the sweep-based studies share: their command-line options, their sweep and their section.

Each study ``NAME`` sweeps one knob of ``configs/NAME.yaml`` into ``<runs>/NAME/<knob>_<value>/``
(``runs/`` by default, ignored by git), then writes its figures under ``<out>/NAME/`` and its
section of ``RESULTS.md``. ``--smoke`` runs a few seconds' worth into ``<runs>/smoke/``, with its
own ``RESULTS.md`` and figures there unless ``--out`` / ``--results`` say otherwise, so a smoke
run never overwrites the real results (:func:`experiments.results.parse_study`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.results import parse_study, single_threaded, study_parser, write_section
from experiments.sweep import run_name, sweep
from experiments.sweep_report import SweepResults, open_sweep
from spectral_callbacks import check_metric

__all__ = ["CONFIGS_DIR", "Section", "StudyOptions", "parse_study_args", "run_sweep_study"]

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

Section = Callable[[SweepResults, Path, Path, Sequence[str], str], str]
"""A study's section writer: ``section(results, out, results_file, metrics, command) -> markdown``."""


@dataclass(frozen=True)
class StudyOptions:
    """A study's options, parsed.

    Attributes:
        smoke: a run of a few seconds (for tests).
        out: root directory of the studies' figures.
        results: the markdown file the section goes to.
        runs: root directory of the runs.
        values: the knob's values (as on the command line).
        overrides: settings passed to every fit (a smoke run's shorter training).
        metrics: the metrics shown per epoch (checked against the metric names).
        report_only: write the section from existing runs, without training.
        command: the command line to quote in the section.
    """

    smoke: bool
    out: Path
    results: Path
    runs: Path
    values: tuple[str, ...]
    overrides: tuple[str, ...]
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
    smoke_overrides: Sequence[str],
    metrics: Sequence[str],
) -> StudyOptions:
    """Parse a study's command line; an unknown metric stops with a message listing the names.

    Args:
        module: the study's module, for the command quoted in the section.
        description: the ``--help`` text.
        argv: the arguments (``None``: ``sys.argv``).
        values, smoke_values: the knob's default values in a real and in a smoke run.
        smoke_overrides: settings passed to every fit of a smoke run.
        metrics: the default metrics.
    """
    parser = study_parser(description)
    parser.add_argument("--values", nargs="+", help=f"the knob's values (default: {' '.join(values)})")
    parser.add_argument("--metrics", nargs="+", default=list(metrics), help="metrics shown per epoch")
    parser.add_argument("--report-only", action="store_true", help="write the section from existing runs")
    args = parse_study(parser, argv)
    for metric in args.metrics:
        try:
            check_metric(metric)
        except ValueError as error:
            parser.error(str(error))
    chosen = tuple(args.values or (smoke_values if args.smoke else values))
    command = " ".join(
        [
            f"python -m {module}",
            *(["--smoke"] if args.smoke else []),
            *(["--values", *chosen] if args.values else []),
        ]
    )
    return StudyOptions(
        smoke=args.smoke, out=args.out, results=args.results, runs=args.runs, values=chosen,
        overrides=tuple(smoke_overrides if args.smoke else ()), metrics=tuple(args.metrics),
        report_only=args.report_only, command=command,
    )  # fmt: skip


def run_sweep_study(options: StudyOptions, study: str, knob: str, parameter: str, section: Section) -> Path:
    """Sweep ``knob`` of ``configs/<study>.yaml`` over the options' values (unless ``report_only``),
    then write the figures under ``<out>/<study>/`` and the study's section of the results file.

    The sweep runs on one thread for torch and BLAS (the worker gets the other core).

    Args:
        options: the parsed command line.
        study: the study's name: its config, run directories, figures and section.
        knob: the setting swept.
        parameter: the knob's name in the run directories (``<parameter>_<value>``).
        section: writes the section's markdown from the runs (and its figures into ``out``).

    Returns:
        The directory of the figures.
    """
    if not options.report_only:
        with single_threaded():
            sweep(
                [CONFIGS_DIR / f"{study}.yaml"], knob, options.values, runs=options.runs, study=study,
                overrides=options.overrides, overwrite=True,
            )  # fmt: skip
    run_dirs = [options.runs / study / run_name(knob, value) for value in options.values]
    out = options.out / study
    with open_sweep(run_dirs, parameter) as results:
        text = section(results, out, options.results, options.metrics, options.command)
    write_section(study, text, options.results)
    print(f"wrote the {study} section of {options.results} and its figures in {out}")
    return out
