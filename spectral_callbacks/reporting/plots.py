"""Matplotlib figures of spectra and of comparisons across runs (matplotlib is imported lazily).

Every function returns a figure drawn with the non-interactive Agg backend; the caller saves
and closes it (:func:`png_bytes` does both).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..spectra import LayerSpectrum
    from .compare import CompareTable

__all__ = ["esd_figure", "esd_overlay_figure", "metric_figure", "parameter_figure", "png_bytes"]

# how to get matplotlib: the `plots` extra of pyproject.toml
INSTALL_HINT = 'pip install "spectral-callbacks[plots]"'
# An axis switches to a log scale when its positive values span at least this ratio.
LOG_SCALE_RATIO = 100.0
PANEL_COLUMNS = 3


def esd_figure(spectrum: LayerSpectrum) -> Any:
    """Log-log density of the ESD with the fitted power law over its tail ``[xmin, xmax]``."""
    plt = _pyplot()
    evals = spectrum.evals[spectrum.evals > 0]
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=90)
    centers, density = _log_density(evals, _log_edges(evals, 40))
    axes.loglog(centers, density, "o", ms=3, label="ESD")
    tail = np.logspace(np.log10(spectrum.xmin), np.log10(spectrum.xmax), 20)
    fraction = spectrum.num_pl_spikes / evals.size
    # the fitted density on the tail, scaled by the tail's share of all eigenvalues
    fitted = fraction * (spectrum.alpha - 1) / spectrum.xmin * (tail / spectrum.xmin) ** -spectrum.alpha
    axes.loglog(tail, fitted, "-", color="crimson", label=f"power law, alpha={spectrum.alpha:.2f}")
    axes.axvline(spectrum.xmin, color="gray", ls=":", lw=1)
    axes.set_xlabel("eigenvalue lambda")
    axes.set_ylabel("density")
    axes.set_title(spectrum.name, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def metric_figure(table: CompareTable) -> Any:
    """The metric over training, one line per run: one panel per layer, the model average last.

    The x-axis is the epoch, or the global step when a run has several snapshots per epoch.
    """
    from .compare import MODEL_AVERAGE

    plt = _pyplot()
    x_name = _x_axis(table)
    figure, panels = _panels(plt, len(table.layers))
    for axes, layer in zip(panels, table.layers, strict=False):
        values = []
        for run in table.runs:
            series = table.series(run, layer)
            axes.plot(series[x_name], series["value"], "o-", ms=3, lw=1.2, label=run)
            values.append(series["value"])
        _log_scale_if_wide(axes, "y", np.concatenate(values))
        axes.set_title(layer, fontsize=9)
        axes.set_xlabel(x_name)
        axes.set_ylabel(table.metric)
    _legend(panels[0], "run")
    note = " (model average: last layer left out)" if MODEL_AVERAGE in table.layers else ""
    figure.suptitle(f"{table.metric} during training{note}", fontsize=10)
    figure.tight_layout()
    return figure


def parameter_figure(table: CompareTable, values: Mapping[str, float], *, parameter: str, epoch: int) -> Any:
    """The metric at one epoch against a run parameter: one line per layer and the model average."""
    from .compare import MODEL_AVERAGE

    plt = _pyplot()
    runs = sorted(values, key=values.__getitem__)
    x = np.array([values[run] for run in runs])
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    at_epoch = table.at_epoch(epoch)
    plotted = []
    for layer in table.layers:
        y = np.array([at_epoch[layer].get(run, math.nan) for run in runs])
        style = {"color": "black", "ls": "--", "lw": 2} if layer == MODEL_AVERAGE else {"lw": 1.2}
        axes.plot(x, y, marker="o", ms=4, label=layer, **style)
        plotted.append(y)
    _log_scale_if_wide(axes, "x", x)
    _log_scale_if_wide(axes, "y", np.concatenate(plotted))
    axes.set_xlabel(parameter)
    axes.set_ylabel(f"{table.metric} at epoch {epoch}")
    axes.set_title(f"{table.metric} against {parameter} ({len(runs)} runs)", fontsize=10)
    _legend(axes, "layer")
    figure.tight_layout()
    return figure


def esd_overlay_figure(esds: Mapping[str, Mapping[str, np.ndarray]], *, epoch: int) -> Any:
    """Log-log densities of the ESDs ``{layer: {run: eigenvalues}}``, one panel per layer.

    The runs of a panel share log-spaced bins, so their curves compare point by point.
    """
    plt = _pyplot()
    figure, panels = _panels(plt, len(esds))
    for axes, (layer, per_run) in zip(panels, esds.items(), strict=False):
        positive = {run: evals[evals > 0] for run, evals in per_run.items() if np.any(evals > 0)}
        if positive:
            pooled = np.concatenate(list(positive.values()))
            bins = int(np.clip(min(evals.size for evals in positive.values()) // 4, 8, 40))
            edges = _log_edges(pooled, bins)
        for run, evals in positive.items():
            centers, density = _log_density(evals, edges)
            axes.loglog(centers, density, ".-", ms=4, lw=1, label=run)
        axes.set_title(layer, fontsize=9)
        axes.set_xlabel("eigenvalue lambda")
        axes.set_ylabel("density")
    _legend(panels[0], "run")
    figure.suptitle(f"ESD at epoch {epoch} (log-log)", fontsize=10)
    figure.tight_layout()
    return figure


def png_bytes(figure: Any) -> bytes:
    """The figure as PNG; the figure is closed."""
    plt = _pyplot()

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend.

    Raises:
        ModuleNotFoundError: matplotlib cannot be imported; the message names the extra that
            installs it, :data:`INSTALL_HINT`.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ModuleNotFoundError(
            f"figures need matplotlib, which could not be imported ({error}): {INSTALL_HINT}",
            name="matplotlib",
        ) from error
    return plt


def _panels(plt: Any, count: int) -> tuple[Any, list[Any]]:
    """A grid of ``count`` panels (unused cells hidden), in reading order."""
    columns = min(PANEL_COLUMNS, count)
    rows = math.ceil(count / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), dpi=100, squeeze=False)
    cells = list(grid.ravel())
    for unused in cells[count:]:
        unused.set_visible(False)
    return figure, cells[:count]


def _legend(axes: Any, title: str) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, title=title, title_fontsize=7)


def _x_axis(table: CompareTable) -> str:
    """``"epoch"``, or ``"step"`` when some run has several snapshots in one epoch."""
    for run in table.runs:
        epochs = table.series(run, table.layers[-1])["epoch"]
        if np.unique(epochs).size < epochs.size:
            return "step"
    return "epoch"


def _log_edges(positive: np.ndarray, bins: int) -> np.ndarray:
    low, high = np.log10(positive.min()), np.log10(positive.max())
    if high - low < 1e-9:  # a single value: one decade around it
        low, high = low - 0.5, high + 0.5
    return np.logspace(low, high, bins + 1)


def _log_density(positive: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin centers (geometric) and density per unit lambda; empty bins are NaN (gaps on a log axis)."""
    density, _ = np.histogram(positive, bins=edges, density=True)
    return np.sqrt(edges[:-1] * edges[1:]), np.where(density > 0, density, np.nan)


def _log_scale_if_wide(axes: Any, axis: str, values: np.ndarray) -> None:
    """A log scale when the values are >= 0 and the positive ones span :data:`LOG_SCALE_RATIO`.

    With zeros among them (a sweep of L2 strengths from 0), a symmetric log scale, linear below
    the smallest positive value, so zero stays on the axis.
    """
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if not positive.size or finite.min() < 0 or positive.max() / positive.min() < LOG_SCALE_RATIO:
        return
    set_scale = axes.set_xscale if axis == "x" else axes.set_yscale
    if positive.size == finite.size:
        set_scale("log")
    else:
        set_scale("symlog", linthresh=float(positive.min()))
