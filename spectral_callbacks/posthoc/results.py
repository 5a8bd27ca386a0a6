"""Post-hoc results on disk: the run file's HDF5 schema (one snapshot per path), or a CSV table.

In the HDF5 file, snapshot ``i`` (epoch and step ``i``) is the ``i``-th path analyzed; the stored
config lists them (``posthoc.paths``) with the analysis options, so ``spectral-callbacks summary``
and ``compare`` read it like a training run, e.g. checkpoints of successive epochs. A path that
could not be opened is a ``failed`` snapshot with the reason. Weights are not stored.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..runfile.store import ParameterSpec, RunWriter, new_run_id
from ..spectra import LayerSpectrum
from .analysis import AnalysisOptions, FileResult

__all__ = [
    "ANALYSIS_CSV_COLUMNS",
    "OUTPUT_SUFFIXES",
    "check_analysis_outputs",
    "union_parameters",
    "write_csv",
    "write_hdf5",
]

OUTPUT_SUFFIXES = (".h5", ".hdf5", ".csv")
ANALYSIS_CSV_COLUMNS = (
    "path",
    *[name for name in LayerSpectrum.__dataclass_fields__ if name not in ("evals", "svals")],
)


def check_analysis_outputs(paths: Sequence[Path]) -> None:
    """Refuse, before any work, outputs of an unknown type and HDF5 files that exist (runs, maybe).

    Raises:
        ValueError: the first bad output.
    """
    for path in paths:
        suffix = path.suffix.lower()
        if suffix not in OUTPUT_SUFFIXES:
            raise ValueError(
                f"Unsupported output {str(path)!r}: expected a file ending in .h5, .hdf5 or .csv."
            )
        if suffix != ".csv" and path.exists():
            raise ValueError(f"Output {path} already exists; remove it or choose another name.")


def union_parameters(results: Sequence[FileResult]) -> list[ParameterSpec]:
    """The parameters of all paths, in first-seen order, for one results file.

    Raises:
        ValueError: two paths have a parameter of the same name with different shapes or kinds.
    """
    union: dict[str, tuple[ParameterSpec, Path]] = {}
    for result in results:
        for spec in result.parameters:
            seen = union.setdefault(spec.name, (spec, result.path))
            if seen[0] != spec:
                raise ValueError(
                    f"Cannot write one results file: {spec.name!r} is a {seen[0].kind} {seen[0].shape} in "
                    f"{seen[1]} but a {spec.kind} {spec.shape} in {result.path}; write each to its own --out."
                )
    return [spec for spec, _ in union.values()]


def write_hdf5(path: Path, results: Sequence[FileResult], options: AnalysisOptions) -> None:
    """Write the results in the run-file schema, one snapshot per path (the file must not exist)."""
    config = {
        **dataclasses.asdict(options.spectrum()),
        "posthoc": {"paths": [str(r.path) for r in results], "formats": [r.format for r in results]},
    }
    writer = RunWriter.open(
        path,
        run_id=new_run_id(),
        parameters=union_parameters(results),
        config_json=json.dumps(config),
        framework="post-hoc",
        weights_dtype=None,
        min_evals=options.min_evals,
    )
    try:
        for number, result in enumerate(results):
            when = _modified(result.path)
            if result.error is not None:
                writer.append_index(number, number, "failed", result.error, when)
                continue
            row = writer.append_index(number, number, "captured", when=when)
            writer.record_analysis(row, result.rows)
    finally:
        writer.close()


def write_csv(path: Path, results: Sequence[FileResult]) -> None:
    """One row per matrix and path (skipped parameters too, with their reason)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=ANALYSIS_CSV_COLUMNS)
        writer.writeheader()
        for result in results:
            for spectrum in result.rows:
                writer.writerow({"path": str(result.path), **spectrum.row()})


def _modified(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
