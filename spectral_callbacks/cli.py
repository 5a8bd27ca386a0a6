"""The ``spectral-callbacks`` command: ``summary RUN...``, ``analyze PATH...`` and ``compare RUN...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .analysis.blas_environment import blas_threads_before_numpy

if TYPE_CHECKING:
    from .posthoc import FileResult

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spectral-callbacks", description="Spectral analysis of weight matrices."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser(
        "summary",
        help="per-layer table of runs, and the parameters not analyzed with the reason",
    )
    summary.add_argument(
        "runs", nargs="+", type=Path, help="run files (spectra.h5) or directories searched for them"
    )
    summary.add_argument(
        "--all", action="store_true", dest="every_name",
        help="list every parameter not analyzed (default: a few names per reason)",
    )  # fmt: skip
    _add_analyze_parser(commands)
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
            return _compare(args)
        if args.command == "analyze":
            return _analyze(args)
        return _summaries(args.runs, every_name=args.every_name)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"spectral-callbacks: {message}", file=sys.stderr)
        return 2


def _compare(args: argparse.Namespace) -> int:
    """Exit code 0; 1 if an output could not be written (the others were); bad input raises."""
    from .reporting.compare import compare_table, load_runs
    from .reporting.report import check_comparison_outputs, print_comparison, write_outputs

    check_comparison_outputs(args.out)
    runs = load_runs(args.runs)
    try:
        table = compare_table(runs, args.metric, layers=args.layers)
        if args.epoch is not None:
            table.common_epoch(args.epoch)  # checked even when no figure uses it
        for note in table.notes:
            print(f"note: {note}", file=sys.stderr)
        print_comparison(table)
        tables = [path for path in args.out if path.suffix.lower() == ".csv"]
        figures = [path for path in args.out if path not in tables]
        try:
            for path in write_outputs(tables, runs, table)[0]:
                print(f"wrote {path}")
            if not figures:
                return 0
            written, notes = write_outputs(figures, runs, table, parameter=args.param, epoch=args.epoch)
        except ModuleNotFoundError as error:  # no matplotlib: the CSV files are written
            names = ", ".join(map(str, figures))
            print(f"spectral-callbacks: {names} not written: {error}", file=sys.stderr)
            return 1
        except OSError as error:
            print(f"spectral-callbacks: cannot write an output: {error}", file=sys.stderr)
            return 1
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        for path in written:
            print(f"wrote {path}")
        return 0
    finally:
        for run in runs:
            run.reader.close()


def _summaries(paths: Sequence[Path], *, every_name: bool = False) -> int:
    """Print the summary of every run file at or under ``paths``, as ``compare`` finds them.

    Returns 0, or 1 when a run file could not be read (the others are printed).

    Raises:
        FileNotFoundError: a path with no run file at or under it (before anything is printed).
    """
    from .reporting.compare import find_run_files

    files = list({found.resolve(): found for path in paths for found in find_run_files(path)}.values())
    failed = False
    for path in files:
        try:
            text = _summary(path, every_name=every_name)
        except (ValueError, OSError) as error:
            print(f"spectral-callbacks: {error}", file=sys.stderr)
            failed = True
            continue
        print(f"== {path}")
        print(text)
    return 1 if failed else 0


def _summary(path: Path, *, every_name: bool = False) -> str:
    """The per-layer table of one run, then its snapshots without spectra, its parameters not
    analyzed and its tied parameters."""
    from .reporting.tables import not_analyzed_lines, run_table, unanalyzed_snapshot_lines
    from .runfile.reader import open_run

    with open_run(path) as run:
        return "\n".join(
            [run_table(run), *unanalyzed_snapshot_lines(run), *not_analyzed_lines(run, every_name=every_name)]
        )


def _add_analyze_parser(commands: argparse._SubParsersAction) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="analyze saved weights: .safetensors (file or sharded directory), torch .pt/.bin/.ckpt, "
        ".keras, .npz, or run files (their snapshots not yet analyzed)",
    )
    analyze.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="checkpoint files, sharded directories or run files",
    )
    analyze.add_argument(
        "--out", action="append", type=Path, default=[], metavar="FILE",
        help="write results.h5 (the run-file schema, one snapshot per PATH) or results.csv; repeatable",
    )  # fmt: skip
    analyze.add_argument("--layers", nargs="+", metavar="LAYER", help="layer names or regular expressions")
    analyze.add_argument("--exclude", nargs="+", metavar="LAYER", help="layers to leave out")
    analyze.add_argument(
        "--executor", default="local", metavar="local|processes|dask|dask://HOST:PORT",
        help="where the layers are analyzed: this process (default), a process pool, a local dask "
        "cluster, or the dask scheduler at HOST:PORT",
    )  # fmt: skip
    analyze.add_argument(
        "--workers", type=int, metavar="N", help="processes of a pool or local cluster (default: CPUs)"
    )
    analyze.add_argument(
        "--threads", type=int, default=1, metavar="N", help="BLAS threads per task (default 1)"
    )
    analyze.add_argument(
        "--min-evals", type=int, default=8, metavar="N", help="skip smaller matrices (default 8)"
    )
    analyze.add_argument(
        "--esd-method", default="auto", metavar="auto|gram|svd",
        help="how eigenvalues are computed: certified Gram eigenvalues where a matrix's shape is "
        "expected to pass, SVD elsewhere (auto, default); Gram tried everywhere; SVD everywhere",
    )  # fmt: skip
    analyze.add_argument(
        "--gram-rtol", type=float, metavar="RTOL",
        help="relative error allowed on any eigenvalue kept from the Gram path (default 1e-4)",
    )  # fmt: skip
    analyze.add_argument(
        "--base-model", type=Path, metavar="PATH",
        help="a checkpoint of the same architecture: analyze each layer's change W - W_base "
        "(WeightWatcher's base_model, e.g. a fine-tuning update)",
    )  # fmt: skip
    analyze.add_argument(
        "--fix-fingers", choices=["clip_xmax"], metavar="clip_xmax",
        help="refit the power law without the outlying top eigenvalues, as WeightWatcher's "
        "fix_fingers='clip_xmax' (adds num_fingers, raw_alpha)",
    )  # fmt: skip
    analyze.add_argument(
        "--detX", action="store_true",
        help="add WeightWatcher's detX / ERG columns (detX_num, detX_val, ERG_gap, num_ERG_spikes)",
    )  # fmt: skip
    analyze.add_argument(
        "--randomize", action="store_true",
        help="shuffle each matrix and compare spectra: correlation traps, as WeightWatcher's "
        "randomize=True (adds num_traps, rand_distance and the other rand_* columns)",
    )  # fmt: skip
    analyze.add_argument(
        "--seed", type=int, default=0, metavar="N",
        help="seed of --randomize's shuffles (with each matrix's name; default 0)",
    )  # fmt: skip
    analyze.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for a dask scheduler to answer (default 10)",
    )
    analyze.add_argument(
        "--allow-pickle", action="store_true",
        help="load torch checkpoints with weights_only=False: this runs code stored in the file; "
        "only for files you trust",
    )  # fmt: skip


def _analyze(args: argparse.Namespace) -> int:
    """Exit code 0; 1 if a path or a layer could not be analyzed (the others were); 2 on bad options."""
    blas_threads_before_numpy(args.threads)
    from .posthoc import AnalysisOptions, parse_executor
    from .posthoc.analysis import plan_paths, run_plans
    from .posthoc.results import check_analysis_outputs, union_parameters, write_csv, write_hdf5
    from .posthoc.runfiles import is_run_path

    check_analysis_outputs(args.out)
    executor = parse_executor(args.executor)
    spectra = {"esd_method": args.esd_method}
    if args.gram_rtol is not None:
        spectra["gram_rtol"] = args.gram_rtol
    spectra.update(
        fix_fingers=args.fix_fingers, detX=args.detX, randomize=args.randomize, randomize_seed=args.seed
    )
    options = AnalysisOptions(min_evals=args.min_evals, blas_threads=args.threads, **spectra)
    runs = {path for path in args.paths if is_run_path(path)}
    files = [path for path in args.paths if path not in runs]
    try:
        results = plan_paths(
            files, options=options, layers=args.layers, exclude=args.exclude,
            allow_pickle=args.allow_pickle, base=args.base_model,
        )  # fmt: skip
    except ValueError as error:
        print(f"spectral-callbacks: {error}", file=sys.stderr)
        return 1
    hdf5_outputs = [path for path in args.out if path.suffix.lower() != ".csv"]
    if hdf5_outputs and files:
        union_parameters(results)  # a conflict stops here, before any work
    run_plans(results, options=options, executor=executor, workers=args.workers, timeout=args.timeout)
    by_path = dict(zip(files, results, strict=True))
    failed = False
    for path in args.paths:
        if path in runs:
            failed |= not _catch_up(path)
        else:
            failed |= not _print_result(by_path[path], options)
    for path in args.out:
        if not files:
            print(f"note: {path} not written: run files hold their own results", file=sys.stderr)
            continue
        try:
            if path in hdf5_outputs:
                write_hdf5(path, results, options)
            else:
                write_csv(path, results)
        except OSError as error:
            print(f"spectral-callbacks: cannot write {path}: {error}", file=sys.stderr)
            failed = True
            continue
        print(f"wrote {path}")
    return 1 if failed else 0


def _print_result(result: FileResult, options: Any) -> bool:
    """Print a path's table, or its error on stderr; False when something could not be analyzed."""
    from .analysis.model import skipped_note, table_cells, table_columns
    from .reporting.tables import print_table

    if result.error is not None:
        print(f"spectral-callbacks: {result.error}", file=sys.stderr)
        return False
    for error in result.layer_errors:
        print(f"spectral-callbacks: {result.path}: {error}", file=sys.stderr)
    analyzed = sum(row.status != "skipped" for row in result.rows)
    files = f"{len(result.files)} files" if len(result.files) > 1 else "1 file"
    print(f"== {result.path}")
    title = f"{result.format}, {files}: {analyzed} matrices analyzed"
    columns = table_columns(options)
    print_table(columns, table_cells(result.rows, columns), title=title)
    note = skipped_note(result.rows)
    if note:
        print(note)
    return not result.failed


def _catch_up(path: Path) -> bool:
    """Analyze a run file's pending snapshots and print its table; False if it could not be done."""
    from .posthoc.runfiles import catch_up_run

    try:
        done, messages = catch_up_run(path)
    except (ValueError, OSError) as error:
        print(f"spectral-callbacks: {path}: {error}", file=sys.stderr)
        return False
    for message in messages:
        print(f"{path}: {message}", file=sys.stderr)
    print(f"== {path} (run file: {done} snapshot(s) analyzed now, that had been captured but not analyzed)")
    print(_summary(path))
    return True


if __name__ == "__main__":
    sys.exit(main())
