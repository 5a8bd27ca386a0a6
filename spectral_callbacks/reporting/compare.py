"""Comparing runs: one metric per layer and its model average over epochs, read from run files only.

Everything here reads the HDF5 run files through :class:`~spectral_callbacks.runfile.reader.RunReader`,
so it works on live runs too: each run's analyzed snapshots are listed once, and every later
read is cut to them (the worker only appends).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..analysis.averages import averaged_layers
from ..extras import import_extra
from ..runfile.reader import RUN_FILE_NAME, RunReader, open_run
from ..spectra import METRIC_NAMES

__all__ = [
    "COMPARE_CSV_COLUMNS",
    "LIGHTNING_COMPONENT",
    "MODEL_AVERAGE",
    "CompareTable",
    "LabeledRun",
    "LayerSelection",
    "check_metric",
    "compare_table",
    "find_run_files",
    "load_runs",
    "model_average",
    "run_labels",
    "run_location",
    "select_compared_layers",
]

MODEL_AVERAGE = "model average"
COMPARE_CSV_COLUMNS = ("run", "layer", "epoch", "step", "metric", "value")
# path components Lightning's loggers add, which name no run: left out of labels where possible
LIGHTNING_COMPONENT = re.compile(r"lightning_logs|version_\d+")


class LabeledRun(NamedTuple):
    """An open run and its label (the shortest path suffix that tells it from the other runs)."""

    label: str
    reader: RunReader


class CompareRow(NamedTuple):
    """One value of the long table: a metric of one layer of one run at one snapshot."""

    run: str
    layer: str
    epoch: int
    step: int
    metric: str
    value: float


@dataclass(frozen=True)
class LayerSelection:
    """The layers compared (in the first run's model order) and, per run, the layers it lacks."""

    layers: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)

    def note(self) -> str | None:
        """A sentence on the layers left out because some runs do not have them, or None."""
        if not self.missing:
            return None
        lacking = "; ".join(f"{label} lacks {', '.join(names)}" for label, names in self.missing.items())
        return f"Comparing the {len(self.layers)} layers common to all runs ({lacking})."


def find_run_files(path: str | Path) -> list[Path]:
    """The run file at ``path``, or every ``spectra.h5`` under the directory ``path``, sorted.

    Lightning's TensorBoardLogger puts it under ``lightning_logs/version_N/``, so directories
    are searched recursively.

    Raises:
        FileNotFoundError: nothing at ``path``, or no run file under it.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"No run file or directory at {path}.")
    found = sorted(path.rglob(RUN_FILE_NAME))
    if not found:
        raise FileNotFoundError(
            f"No run file ({RUN_FILE_NAME}) in {path} or its subdirectories; "
            "pass run directories written by SpectralCallback, or their run files."
        )
    return found


def run_labels(run_files: Sequence[Path]) -> list[str]:
    """Short distinct labels: the shortest path suffix of each run's directory that is unique.

    Lightning's ``lightning_logs`` and ``version_N`` components are left out unless they are what
    tells runs apart, and components that all labels share at the same place (from the end) are
    dropped, so ``runs/l2_0.0001/lightning_logs/version_0`` and ``runs/l2_0.0005/lightning_logs/
    version_0`` become ``l2_0.0001`` and ``l2_0.0005``. A run file not named ``spectra.h5`` keeps
    its stem.
    """
    full = [_run_parts(Path(path)) for path in run_files]
    short = [tuple(c for c in parts if not LIGHTNING_COMPONENT.fullmatch(c)) for parts in full]
    labels = _shortest_suffixes(short)
    if labels is None:
        labels = _shortest_suffixes(full)
    return ["/".join(parts) for parts in labels or full]


def load_runs(paths: Sequence[str | Path]) -> list[LabeledRun]:
    """Open every run file at or under ``paths`` (each once), labelled by :func:`run_labels`.

    Raises:
        FileNotFoundError: a path without a run file.
        ValueError: a file that is not a run file; no path given.
    """
    if not paths:
        raise ValueError("No run given; pass run files (spectra.h5) or directories holding them.")
    files = list({found.resolve(): found for path in paths for found in find_run_files(path)}.values())
    readers: list[RunReader] = []
    try:
        for path in files:
            readers.append(open_run(path))
    except Exception:
        for reader in readers:
            reader.close()
        raise
    return [LabeledRun(label, reader) for label, reader in zip(run_labels(files), readers, strict=True)]


def check_metric(metric: str) -> None:
    """Raise a ValueError listing the metric names if ``metric`` is not one of them."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {metric!r}. Available: {', '.join(METRIC_NAMES)}.")


def select_compared_layers(runs: Sequence[LabeledRun], layers: Sequence[str] | None = None) -> LayerSelection:
    """The layers to compare: ``layers`` if every run has them, else those common to all runs.

    Raises:
        ValueError: no layer common to all runs, or a requested layer missing in some run; the
            message names the layers available.
    """
    per_run = {run.label: run.reader.layers for run in runs}
    first = next(iter(per_run.values()), [])
    common = [name for name in first if all(name in names for names in per_run.values())]
    if not common:
        raise ValueError(f"No layer is common to all runs. Layers: {_layer_sets(per_run)}.")
    if layers:
        for name in layers:
            lacking = [label for label, names in per_run.items() if name not in names]
            if lacking:
                where = "any run" if len(lacking) == len(per_run) else f"run {', '.join(lacking)}"
                raise ValueError(
                    f"Layer {name!r} is not in {where}. Layers in every run: {', '.join(common)}."
                )
        return LayerSelection(list(layers))
    union = [name for names in per_run.values() for name in names]
    missing = {
        label: sorted({name for name in union if name not in names}, key=union.index)
        for label, names in per_run.items()
    }
    return LayerSelection(common, {label: names for label, names in missing.items() if names})


def model_average(reader: RunReader, metric: str) -> np.ndarray:
    """A metric averaged over the model's layers at each analyzed snapshot.

    The layers are those the TensorBoard sink averages for ``model/<metric>``
    (:func:`~spectral_callbacks.analysis.averages.averaged_layers`: the fitted layers without the
    last one, and never the layers of the weights' changes), chosen again at each snapshot; NaN
    values are left out, and a snapshot without any finite value gives NaN.
    """
    check_metric(metric)
    values, _, codes = reader.metric_grid(metric)  # (layers, snapshots): a layer's missing rows NaN
    changes = reader.change_layers
    own = [i for i, name in enumerate(reader.layers) if name not in changes]
    values, codes = values[own], codes[own]
    count = values.shape[1]
    averages = np.full(count, np.nan)
    for snapshot in range(count):
        chosen = values[averaged_layers(reader.layer_status_names(codes[:, snapshot])), snapshot]
        chosen = chosen[np.isfinite(chosen)]
        if chosen.size:
            averages[snapshot] = chosen.mean()
    return averages


@dataclass(frozen=True)
class CompareTable:
    """The long table of a comparison: one :class:`CompareRow` per run, layer and snapshot.

    ``layers`` are the compared layers then :data:`MODEL_AVERAGE`; ``notes`` say what was left out.
    """

    metric: str
    runs: list[str]
    layers: list[str]
    rows: list[CompareRow]
    notes: list[str] = field(default_factory=list)

    def series(self, run: str, layer: str) -> dict[str, np.ndarray]:
        """``epoch``, ``step`` and ``value`` arrays of one run and layer, in snapshot order."""
        rows = self._by_series.get((run, layer), [])
        return {
            "epoch": np.array([row.epoch for row in rows], dtype=np.int64),
            "step": np.array([row.step for row in rows], dtype=np.int64),
            "value": np.array([row.value for row in rows], dtype=np.float64),
        }

    def epochs(self, run: str) -> list[int]:
        """The epochs with an analyzed snapshot in ``run``, ascending."""
        return sorted({row.epoch for row in self._by_series.get((run, self.layers[-1]), [])})

    def at_epoch(self, epoch: int) -> dict[str, dict[str, float]]:
        """``{layer: {run: value}}`` at the last snapshot of ``epoch`` of each run that has it."""
        values: dict[str, dict[str, float]] = {layer: {} for layer in self.layers}
        for row in self.rows:
            if row.epoch == epoch:
                values[row.layer][row.run] = row.value  # rows are in snapshot order: the last wins
        return values

    def common_epoch(self, epoch: int | None = None) -> int:
        """``epoch`` if every run with snapshots has it, else (None) the last epoch they all have.

        Raises:
            ValueError: ``epoch`` is missing in some run, or no epoch is common to all runs.
        """
        per_run = {run: self.epochs(run) for run in self.runs if self.epochs(run)}
        if not per_run:
            raise ValueError("No run has an analyzed snapshot yet.")
        common = sorted(set.intersection(*(set(epochs) for epochs in per_run.values())))
        if epoch is None and common:
            return common[-1]
        if epoch is not None and epoch in common:
            return epoch
        listing = "; ".join(f"{run}: {_span(epochs)}" for run, epochs in per_run.items())
        wanted = "No epoch is" if epoch is None else f"Epoch {epoch} is not"
        raise ValueError(f"{wanted} analyzed in every run. Epochs per run: {listing}.")

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with the columns :data:`COMPARE_CSV_COLUMNS`.

        Raises:
            ModuleNotFoundError: pandas is not installed (the ``pandas`` extra installs it).
        """
        pd = import_extra("pandas", "pandas", "CompareTable.to_pandas()")

        return pd.DataFrame(self.rows, columns=list(COMPARE_CSV_COLUMNS))

    @cached_property
    def _by_series(self) -> dict[tuple[str, str], list[CompareRow]]:
        series: dict[tuple[str, str], list[CompareRow]] = {}
        for row in self.rows:
            series.setdefault((row.run, row.layer), []).append(row)
        return series

    def write_csv(self, path: str | Path) -> None:
        """Write the long table as CSV (values with full precision, NaN as ``nan``)."""
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(COMPARE_CSV_COLUMNS)
            for row in self.rows:
                writer.writerow([*row[:-1], repr(float(row.value))])

    def wide(self, *, max_epochs: int | None = None) -> tuple[list[str], list[list[object]]]:
        """Header and rows of a table with one row per layer and run, one column per epoch.

        With ``max_epochs``, only that many epochs are shown, evenly spaced from first to last.
        Each cell is the value at the last snapshot of its epoch; ``nan`` where a run lacks it.
        """
        epochs = sorted({row.epoch for row in self.rows})
        if max_epochs is not None and len(epochs) > max_epochs:
            picks = np.unique(np.linspace(0, len(epochs) - 1, max_epochs).round().astype(int))
            epochs = [epochs[i] for i in picks]
        cells = {(row.layer, row.run, row.epoch): row.value for row in self.rows}
        header = ["layer", "run", *[f"epoch {epoch}" for epoch in epochs]]
        rows = [
            [layer, run, *[cells.get((layer, run, epoch), math.nan) for epoch in epochs]]
            for layer in self.layers
            for run in self.runs
        ]
        return header, rows


def compare_table(
    runs: Sequence[LabeledRun],
    metric: str,
    *,
    layers: Sequence[str] | None = None,
    epoch: int | None = None,
) -> CompareTable:
    """One metric of the compared layers and its model average, per run and analyzed snapshot.

    Args:
        runs: labelled open runs (:func:`load_runs`).
        metric: a name of :data:`~spectral_callbacks.spectra.METRIC_NAMES`.
        layers: the layers to compare; by default those common to all runs.
        epoch: keep only this epoch's snapshots (it must be analyzed in every run).

    Raises:
        ValueError: unknown metric, layer or epoch (the message lists the available ones).
    """
    check_metric(metric)
    selection = select_compared_layers(runs, layers)
    rows: list[CompareRow] = []
    notes = [note for note in (selection.note(),) if note]
    for label, reader in runs:
        index = reader.snapshots("analyzed")
        count = index["epoch"].size
        if count == 0:
            notes.append(f"Run {label} has no analyzed snapshot yet.")
        grid, position = reader.metric_grid(metric)[0], {name: i for i, name in enumerate(reader.layers)}
        columns = {name: grid[position[name], :count] for name in selection.layers}
        columns[MODEL_AVERAGE] = model_average(reader, metric)[:count]
        for name, values in columns.items():
            rows += [
                CompareRow(label, name, int(e), int(s), metric, float(v))
                for e, s, v in zip(index["epoch"], index["step"], values, strict=True)
            ]
    table = CompareTable(metric, [run.label for run in runs], [*selection.layers, MODEL_AVERAGE], rows, notes)
    if epoch is None:
        return table
    table.common_epoch(epoch)
    kept = [row for row in rows if row.epoch == epoch]
    return CompareTable(metric, table.runs, table.layers, kept, notes)


def _shortest_suffixes(parts: list[tuple[str, ...]]) -> list[tuple[str, ...]] | None:
    """The shortest unique suffixes without the components all share at one place, or None."""
    for size in range(1, max((len(p) for p in parts), default=0) + 1):
        suffixes = [p[-size:] for p in parts]
        if len(set(suffixes)) == len(suffixes):
            break
    else:
        return None
    shared = {
        position
        for position in range(1, size + 1)
        if len({s[-position] if len(s) >= position else None for s in suffixes}) == 1
    }
    shortened = [tuple(c for i, c in enumerate(s) if len(s) - i not in shared) for s in suffixes]
    if all(shortened) and len(set(shortened)) == len(shortened):
        return shortened
    return suffixes if all(suffixes) else None


def run_location(path: Path) -> Path:
    """The path that names a run: the directory of a ``spectra.h5``, else the file without its suffix."""
    return path.parent if path.name == RUN_FILE_NAME else path.with_suffix("")


def _run_parts(path: Path) -> tuple[str, ...]:
    directory = run_location(path.resolve())
    return directory.parts[1:] or (directory.anchor,)


def _layer_sets(per_run: dict[str, list[str]], *, shown: int = 4) -> str:
    """``"a, b in run1, run2; c in run3"``: the distinct layer sets and the runs that have each."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for label, names in per_run.items():
        groups.setdefault(tuple(names), []).append(label)
    parts = []
    for names, labels in groups.items():
        more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
        parts.append(f"{', '.join(names) or '(none)'} in {', '.join(labels[:shown])}{more}")
    return "; ".join(parts)


def _span(epochs: list[int]) -> str:
    if len(epochs) > 6:
        return f"{len(epochs)} epochs from {epochs[0]} to {epochs[-1]}"
    return ", ".join(map(str, epochs))
