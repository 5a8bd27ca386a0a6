"""The dashboard's answers, read from run files: plain dicts that serialize to JSON.

Each function takes an open :class:`~spectral_callbacks.runfile.reader.RunReader` (or the
catalog, to compare runs) and parameters already checked by :mod:`.requests`; NaN and infinite
numbers become ``None`` (JSON has no NaN). A snapshot is named by its global step, which is
unique in a run; the labels are what a person reads: ``epoch 3``, or the checkpoint's file name
for a post-hoc results file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..reporting.compare import model_average
from ..reporting.run_params import numeric_parameters
from ..runfile.reader import RunReader
from ..runfile.store import LAYER_STATUS, PHASE_CODES
from ..spectra import METRIC_NAMES
from ..spectra.analyze import OPTION_COLUMNS
from ..spectra.mp import spike_threshold
from .catalog import Catalog, RunEntry
from .requests import DEFAULT_METRIC

__all__ = [
    "FIT_FIELDS",
    "MP_FIELDS",
    "compare_points",
    "layer_esd",
    "metric_overview",
    "run_details",
    "run_listing",
    "run_summary",
]

FIT_FIELDS = ("alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes")
MP_FIELDS = ("lambda_plus", "mp_s", "num_spikes", "mp_softrank")
STATUS_NAMES = tuple(sorted(LAYER_STATUS, key=LAYER_STATUS.get))  # indexed by the stored codes
_SIGNIFICANT = 6  # digits kept in heatmap values: far below what a colour shows, a third of the bytes


def run_listing(
    catalog: Catalog, summary: Callable[[RunEntry], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Every run under the log directory, with its size and parameters, and the unreadable files.

    ``summary`` gives a run's entry in the listing (default: :func:`run_summary` of the file
    opened now); a run that became unreadable since the scan is listed with its ``error``.
    """
    runs = []
    for entry in catalog.runs():
        try:
            runs.append(summary(entry) if summary is not None else _opened_summary(catalog, entry))
        except Exception as error:  # noqa: BLE001 - one damaged file must not hide the other runs
            runs.append({"name": entry.name, "error": f"{type(error).__name__}: {error}"})
    parameters = sorted({name for run in runs for name in run.get("params", {})})
    return {
        "runs": runs,
        "unreadable": [{"name": name, "reason": reason} for name, reason in catalog.unreadable().items()],
        "metrics": listed_metrics({option for run in runs for option in run.get("options", ())}),
        "default_metric": DEFAULT_METRIC,
        "params": parameters,
    }


def _opened_summary(catalog: Catalog, entry: RunEntry) -> dict[str, Any]:
    with catalog.open(entry.name) as reader:
        return run_summary(entry, reader)


def run_details(entry: RunEntry, reader: RunReader) -> dict[str, Any]:
    """A run's layers (model order, with their shapes), analyzed snapshots, operator layers and
    the parameters that were not analyzed."""
    layers = []
    for layer in reader.layers:
        info = reader.layer_info(layer)
        layers.append({key: _json_value(info.get(key)) for key in ("kind", "N", "M", "Q")} | {"name": layer})
    return {
        **run_summary(entry, reader),
        "layers": layers,
        "snapshots": _snapshots(reader),
        "operators": reader.operators,
        "skipped": _skipped(reader),
    }


def metric_overview(entry: RunEntry, reader: RunReader, metric: str) -> dict[str, Any]:
    """One metric of every layer at every analyzed snapshot (layer-major), with phases and statuses."""
    snapshots = _snapshots(reader)
    values, phases, statuses = reader.metric_grid(metric)
    finite = values[np.isfinite(values)]
    return {
        "run": entry.name,
        "metric": metric,
        "layers": reader.layers,
        "snapshots": snapshots,
        "values": [[_rounded(value) for value in row] for row in values.tolist()],
        "phase_names": list(PHASE_CODES),
        "phases": phases.tolist(),
        "status_names": list(STATUS_NAMES),
        "status": statuses.tolist(),
        "range": [float(finite.min()), float(finite.max())] if finite.size else None,
        "skipped": _skipped(reader),
    }


def layer_esd(
    entry: RunEntry, reader: RunReader, layer: str, *, step: int | None = None, epoch: int | None = None
) -> dict[str, Any]:
    """A layer's ESD at one snapshot (the last by default), its power-law fit and MP edge, its
    metrics, and the conv operator's spectrum at that snapshot where the run recorded one.

    Raises:
        KeyError: no such layer, or no analyzed snapshot at that step or epoch.
    """
    snapshots = _snapshots(reader)
    if not snapshots:
        raise KeyError(f"Run {entry.name!r} has no analyzed snapshot yet.")
    snapshot = snapshots[_snapshot_position(entry, snapshots, step=step, epoch=epoch)]
    # the layer's own row: a change layer of deltas="previous" has none at the first snapshot
    rows = np.flatnonzero(reader.layer_steps(layer) == snapshot["step"])
    if rows.size == 0:
        raise KeyError(
            f"Layer {layer!r} of run {entry.name!r} has no spectrum at {snapshot['label']} (a change "
            "layer of deltas='previous' has none at the first snapshot)."
        )
    position = int(rows[-1])
    evals = reader.esd(layer, step=snapshot["step"])
    metrics = {name: _json_value(values[position]) for name, values in reader.metrics(layer).items()}
    status, reason = reader.layer_status(layer)[position]
    fitted = metrics.get("alpha") is not None and metrics.get("xmin") is not None
    info = reader.layer_info(layer)
    return {
        "run": entry.name,
        "layer": layer,
        **snapshot,
        "evals": [float(value) for value in evals],
        "info": {key: _json_value(info.get(key)) for key in ("kind", "N", "M", "Q")},
        "metrics": metrics,
        "phase": reader.phases(layer)[position],
        "status": status,
        "reason": reason or None,
        "fit": (
            {name: metrics[name] for name in FIT_FIELDS} | {"num_tail": int(np.sum(evals >= metrics["xmin"]))}
            if fitted
            else None
        ),
        "mp": _mp_fit(metrics, int(info["N"]), int(info["M"])),
        "operator": _operator_spectrum(reader, layer, snapshot),
    }


def compare_points(
    catalog: Catalog, metric: str, parameter: str, *, epoch: int | None = None, layer: str | None = None
) -> dict[str, Any]:
    """One point per run: the run's parameter against the metric (a layer's, or the model
    average) at ``epoch`` (each run's last analyzed snapshot by default)."""
    points, missing = [], []
    for entry in catalog.runs():
        try:
            with catalog.open(entry.name) as reader:
                x = numeric_parameters(entry.path.parent, entry.name).get(parameter)
                if x is None:
                    missing.append({"run": entry.name, "reason": f"no parameter {parameter!r}"})
                    continue
                found = _value_at(reader, metric, layer, epoch)
        except Exception as error:  # noqa: BLE001 - one damaged file must not hide the other runs
            missing.append({"run": entry.name, "reason": f"{type(error).__name__}: {error}"})
            continue
        if isinstance(found, str):
            missing.append({"run": entry.name, "reason": found})
        else:
            points.append({"run": entry.name, "x": x, "y": found[1], "epoch": found[0]})
    return {
        "metric": metric,
        "param": parameter,
        "epoch": epoch,
        "layer": layer,
        "points": points,
        "missing": missing,
    }


def _value_at(
    reader: RunReader, metric: str, layer: str | None, epoch: int | None
) -> tuple[int, float] | str:
    """``(epoch, value)`` of a layer's metric or the model average, or why there is none."""
    epochs = reader.epochs
    if layer is not None and layer not in reader.layers:
        return f"no layer {layer!r}"
    if layer is None:
        values = model_average(reader, metric)
    else:  # the run's snapshots, NaN where the layer has no row (a change layer at the first)
        values = reader.metric_grid(metric)[0][reader.layers.index(layer)]
    rows = np.flatnonzero(epochs == epoch) if epoch is not None else np.arange(epochs.size)
    if rows.size == 0:
        return f"no analyzed snapshot at epoch {epoch}" if epoch is not None else "no analyzed snapshot"
    value = _json_value(values[rows[-1]])
    if value is None:
        return f"{metric} is undefined at epoch {int(epochs[rows[-1]])}"
    return int(epochs[rows[-1]]), value


def run_summary(entry: RunEntry, reader: RunReader) -> dict[str, Any]:
    """A run's line in the listing: kind, framework, how many layers and snapshots, its parameters."""
    posthoc = "posthoc" in reader.config
    epochs = reader.epochs
    return {
        "name": entry.name,
        "kind": "posthoc" if posthoc else "training",
        "framework": None if posthoc else _json_value(reader.attributes.get("framework")),
        "layers": reader.layer_count,
        "snapshots": int(epochs.size),
        "last_epoch": int(epochs[-1]) if epochs.size else None,
        "params": numeric_parameters(entry.path.parent, entry.name),
        "options": sorted(option for option in OPTION_COLUMNS if reader.config.get(option)),
    }


def listed_metrics(options: set[str]) -> list[str]:
    """The metrics a run's rows can hold: every one but the columns of WeightWatcher's options no
    run had on (all NaN) and ``cka`` (computed on request post hoc, never stored)."""
    hidden = {
        "cka",
        *(
            column
            for option, columns in OPTION_COLUMNS.items()
            if option not in options
            for column in columns
        ),
    }
    return [name for name in METRIC_NAMES if name not in hidden]


def _snapshots(reader: RunReader) -> list[dict[str, Any]]:
    """The analyzed snapshots: epoch, step and a label (the checkpoint's file name post hoc)."""
    analyzed = reader.snapshots("analyzed")
    epochs, steps = analyzed["epoch"].tolist(), analyzed["step"].tolist()
    paths = reader.config.get("posthoc", {}).get("paths")
    several_per_epoch = len(set(epochs)) < len(epochs)
    labels = []
    for epoch, step in zip(epochs, steps, strict=True):
        if isinstance(paths, list) and 0 <= epoch < len(paths):
            labels.append(Path(str(paths[epoch])).name)
        elif several_per_epoch:
            labels.append(f"epoch {epoch}, step {step}")
        else:
            labels.append(f"epoch {epoch}")
    return [
        {"epoch": int(epoch), "step": int(step), "label": label}
        for epoch, step, label in zip(epochs, steps, labels, strict=True)
    ]


def _snapshot_position(
    entry: RunEntry, snapshots: Sequence[dict[str, Any]], *, step: int | None, epoch: int | None
) -> int:
    if step is None and epoch is None:
        return len(snapshots) - 1
    key, wanted = ("step", step) if step is not None else ("epoch", epoch)
    matches = [i for i, snapshot in enumerate(snapshots) if snapshot[key] == wanted]
    if not matches:
        have = sorted({snapshot[key] for snapshot in snapshots})
        shown = ", ".join(map(str, have[:20])) + (", ..." if len(have) > 20 else "")
        raise KeyError(
            f"Run {entry.name!r} has no analyzed snapshot at {key} {wanted}; it has {key}s {shown}."
        )
    return matches[-1]


def _mp_fit(metrics: dict[str, Any], N: int, M: int) -> dict[str, Any] | None:  # noqa: N803
    """The MP fit's numbers, and the threshold its ``num_spikes`` counts the eigenvalues above."""
    if metrics.get("lambda_plus") is None:
        return None
    return {name: metrics[name] for name in MP_FIELDS} | {
        "spike_threshold": spike_threshold(metrics["lambda_plus"], N, M)
    }


def _operator_spectrum(reader: RunReader, layer: str, snapshot: dict[str, Any]) -> dict[str, Any] | None:
    operator = _operator_of(reader, layer)
    if operator is None:
        return None
    try:
        top, edges, counts, _ = reader.operator_spectrum(operator, step=snapshot["step"])
    except KeyError:
        return None
    return {
        "layer": operator,
        "epoch": snapshot["epoch"],
        "top": [_json_value(value) for value in top],
        "edges": [_json_value(value) for value in edges],
        "counts": [_json_value(value) for value in counts],
    }


def _operator_of(reader: RunReader, layer: str) -> str | None:
    """The operator layer whose weight is ``layer`` (a conv's matrix view may carry a suffix)."""
    operators = reader.operators
    if layer in operators:
        return layer
    parameter = reader.layer_info(layer).get("parameter")
    return parameter if parameter in operators else None


def _skipped(reader: RunReader) -> list[dict[str, str]]:
    return [{"name": name, "reason": reason} for name, reason in reader.skipped_parameters.items()]


def _json_value(value: Any) -> Any:
    """A number or string from HDF5 as a JSON value; NaN and infinities as None."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rounded(value: float) -> float | None:
    return float(f"{value:.{_SIGNIFICANT}g}") if math.isfinite(value) else None
