"""Reading a sweep's runs back for a study's results section.

Everything comes from the run directories (``spectra.h5`` through
:mod:`spectral_callbacks.reporting.compare`, ``config.yaml`` and the sweep's ``metrics.json``), so a
section can be written again from the runs alone, and no number in it is typed by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from experiments.results import markdown_table
from experiments.sweep import read_metrics
from spectral_callbacks import (
    MODEL_AVERAGE,
    CompareTable,
    LabeledRun,
    compare_table,
    comparison_images,
    load_runs,
    parameter_values,
)

__all__ = [
    "SweepResults",
    "describe_setup",
    "epoch_table",
    "open_sweep",
    "short_layer",
    "spearman",
    "sweep_dir",
    "write_figures",
]

_OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
_REPO = Path(__file__).resolve().parent.parent


@dataclass
class SweepResults:
    """The open runs of one sweep in increasing order of the swept parameter.

    Attributes:
        parameter: the swept parameter's name (``fc_l2``, ``batch_size``).
        runs: the labelled runs (labels are the run directories' names).
        values: the parameter of each run, by label.
        records: each run's ``metrics.json`` (final metrics, epochs, steps, examples), by label.
    """

    parameter: str
    runs: list[LabeledRun]
    values: dict[str, float]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __enter__(self) -> SweepResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for run in self.runs:
            run.reader.close()

    @property
    def labels(self) -> list[str]:
        return [run.label for run in self.runs]

    def layers(self, kind: str | None = None) -> list[str]:
        """Layers of the first run (all runs have the same model), optionally of one kind."""
        reader = self.runs[0].reader
        return [name for name in reader.layers if kind is None or reader.layer_info(name)["kind"] == kind]

    def table(self, metric: str, layers: Sequence[str] | None = None) -> CompareTable:
        """The metric per layer (and model average), run and epoch; see :func:`compare_table`."""
        return compare_table(self.runs, metric, layers=layers)

    def final(self, metric: str, layers: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """``{layer: {run label: value}}`` at the last epoch all runs have (model average included)."""
        table = self.table(metric, layers)
        return table.at_epoch(table.common_epoch())

    def final_metric(self, name: str) -> dict[str, float]:
        """A final validation or test metric (``test/accuracy``) of each run; NaN where missing."""
        return {label: float(self.records[label]["metrics"].get(name, np.nan)) for label in self.labels}


def open_sweep(run_dirs: Sequence[str | Path], parameter: str) -> SweepResults:
    """Open the runs of a sweep and order them by ``parameter`` (read as ``compare --param`` does).

    Raises:
        FileNotFoundError: a directory without a run file or without the sweep's ``metrics.json``.
        ValueError: a run without a value of ``parameter``.
    """
    runs = load_runs(run_dirs)
    try:
        _, values, without = parameter_values(runs, parameter)
        if without:
            raise ValueError(f"No value of {parameter!r} for run(s) {', '.join(without)}.")
        runs.sort(key=lambda run: values[run.label])
        records = {run.label: read_metrics(run.reader.path.parent) for run in runs}
    except Exception:
        for run in runs:
            run.reader.close()
        raise
    return SweepResults(parameter, runs, values, records)


def describe_setup(results: SweepResults) -> str:
    """One sentence on the setup, from the first run's ``config.yaml`` and ``metrics.json``."""
    run = results.runs[0]
    config = yaml.safe_load((run.reader.path.parent / "config.yaml").read_text(encoding="utf-8"))
    model = config["model"]["init_args"]
    network, data = model["network"], config["data"]
    examples = results.records[run.label].get("examples", {})
    sizes = " / ".join(
        f"{examples[split]} {split}" for split in ("train", "val", "test") if examples.get(split)
    )
    optimizer = _OPTIMIZER_NAMES.get(model.get("optimizer", "sgd"), model.get("optimizer"))
    knobs = {key: model.get(key) for key in ("lr", "momentum", "weight_decay", "fc_l2")}
    knobs["batch_size"] = data["init_args"].get("batch_size")
    knobs.pop(results.parameter, None)
    settings = ", ".join(f"{key} {value}" for key, value in knobs.items() if value is not None)
    return (
        f"`{_short(network['class_path'])}`({_arguments(network.get('init_args', {}))}) on "
        f"`{_short(data['class_path'])}` ({sizes} examples), {config['trainer']['max_epochs']} epochs of "
        f"{optimizer} ({settings}), seed {config.get('seed_everything')}; {results.parameter} as swept."
    )


def write_figures(
    results: SweepResults,
    metric: str,
    out_dir: Path,
    *,
    layers: Sequence[str] | None = None,
    esd: bool = False,
    average: bool = True,
) -> dict[str, Path]:
    """The metric over training and against the parameter (and the ESD overlays) as PNG files.

    Written through :func:`spectral_callbacks.reporting.report.comparison_images` to
    ``<out_dir>/<metric>.png``, ``<metric>-vs-<parameter>.png`` and, with ``esd``, ``esd.png``;
    ``average=False`` leaves out the model average (which is over all layers, not only ``layers``).

    Returns:
        ``{"training": path, "parameter": path, "esd": path}`` for the figures written.
    """
    table = results.table(metric, layers)
    if not average:
        kept = [layer for layer in table.layers if layer != MODEL_AVERAGE]
        rows = [row for row in table.rows if row.layer != MODEL_AVERAGE]
        table = dataclasses.replace(table, layers=kept, rows=rows)
    images, _ = comparison_images(results.runs, table, parameter=results.parameter)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for image in images:
        if image.suffix == "":
            key, path = "training", out_dir / f"{metric}.png"
        elif image.suffix == "-esd":
            if not esd:
                continue
            key, path = "esd", out_dir / "esd.png"
        else:
            key, path = "parameter", out_dir / f"{metric}{image.suffix}.png"
        path.write_bytes(image.png)
        written[key] = path
    return written


def epoch_table(results: SweepResults, metric: str, layers: Sequence[str], *, max_epochs: int = 6) -> str:
    """Markdown table of a metric per layer (or :data:`MODEL_AVERAGE`) and run at up to
    ``max_epochs`` epochs, evenly spaced from first to last."""
    named = [layer for layer in layers if layer != MODEL_AVERAGE]
    header, rows = results.table(metric, named or None).wide(max_epochs=max_epochs)
    shown = [[short_layer(row[0]), *row[1:]] for row in rows if row[0] in layers]
    return markdown_table(
        header, [["" if i and row[0] == shown[i - 1][0] else row[0], *row[1:]] for i, row in enumerate(shown)]
    )


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's of the ranks, ties averaged) over the finite pairs.

    NaN with fewer than two finite pairs or a constant sequence; two pairs give +1 or -1.
    """
    from scipy.stats import rankdata

    pairs = np.array([(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(a) and np.isfinite(b)])
    if len(pairs) < 2 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(pairs[:, 0]), rankdata(pairs[:, 1]))[0, 1])


def sweep_dir(results: SweepResults) -> str:
    """The sweep's directory (holding its runs), relative to the repository when inside it."""
    directory = results.runs[0].reader.path.parent.parent.resolve()
    try:
        return directory.relative_to(_REPO).as_posix()
    except ValueError:
        return str(directory)


def short_layer(name: str) -> str:
    """``network.fc1`` -> ``fc1`` (the experiments' models keep their layers in ``network``)."""
    return name.removeprefix("network.")


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _arguments(init_args: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in init_args.items())
