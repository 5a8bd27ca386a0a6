"""Phase-of-training labels (seed 001's 5+1 phases) per layer and snapshot of a run file.

The run file stores the numbers the label is made of, not the label. This module evaluates
:func:`spectral_callbacks.spectra.phase_label` on them as the analysis does: the
Marchenko-Pastur fit of the stored singular values (the ESD of ``W^T W / N``), and the stored
``alpha``, ``rank_loss`` and ``num_evals`` of the same snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.results import pyplot
from spectral_callbacks.reader import RunReader
from spectral_callbacks.spectra import PHASES, fit_marchenko_pastur, phase_label

__all__ = ["LABELS", "UNKNOWN", "layer_phases", "phase_figure"]

UNKNOWN = "unknown"
LABELS = (*PHASES, UNKNOWN)


def layer_phases(reader: RunReader, layer: str) -> list[str]:
    """The phase label of ``layer`` at every analyzed snapshot of the run, in order.

    A snapshot where the layer was skipped, or has no positive singular value, is ``"unknown"``.
    """
    info = reader.layer_info(layer)
    n, m = int(info["N"]), int(info["M"])
    alpha = reader.metric("alpha", layer)
    rank_loss = reader.metric("rank_loss", layer)
    num_evals = reader.metric("num_evals", layer)
    statuses = reader.layer_status(layer)
    labels = []
    for index, step in enumerate(reader.steps):
        try:
            svals = reader.svals(layer, step=int(step))
            if statuses[index][0] == "skipped" or not np.all(np.isfinite(svals)):
                raise ValueError("no spectrum")
            mp = fit_marchenko_pastur(np.square(svals).ravel() / n, n, m)
        except (KeyError, ValueError):
            labels.append(UNKNOWN)
            continue
        labels.append(phase_label(mp, float(alpha[index]), int(rank_loss[index]), int(num_evals[index])))
    return labels


def phase_figure(
    phases: Mapping[str, Mapping[str, Sequence[str]]], epochs: Sequence[int], *, title: str
) -> Any:
    """Phase labels over epochs: one panel per layer, one row per run, one colored cell per epoch.

    Args:
        phases: ``{layer: {run label: labels per epoch}}``, all runs with the same epochs.
        epochs: the epochs of the labels.
        title: the figure's title.
    """
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colors = [plt.get_cmap("tab10")(index) for index in range(len(LABELS))]
    colors[-1] = (0.85, 0.85, 0.85, 1.0)  # unknown: light gray
    runs = list(next(iter(phases.values())))
    height = 0.9 + (0.22 * len(runs) + 0.55) * len(phases)  # inches: 0.9 for the title and legend
    figure, panels = plt.subplots(len(phases), 1, figsize=(7.5, height), squeeze=False)
    ticks = np.unique(np.linspace(0, len(epochs) - 1, min(len(epochs), 11)).round().astype(int))
    for axes, (layer, per_run) in zip(panels[:, 0], phases.items(), strict=True):
        grid = np.array([[LABELS.index(label) for label in per_run[run]] for run in runs])
        axes.imshow(grid, aspect="auto", cmap=ListedColormap(colors), vmin=-0.5, vmax=len(LABELS) - 0.5)
        axes.set_yticks(range(len(runs)), runs, fontsize=7)
        axes.set_xticks(ticks, [str(epochs[i]) for i in ticks], fontsize=7)
        axes.set_title(layer, fontsize=8)
    panels[-1, 0].set_xlabel("epoch")
    handles = [Patch(color=color, label=label) for color, label in zip(colors, LABELS, strict=True)]
    figure.suptitle(title, fontsize=9, y=1 - 0.08 / height)
    figure.legend(
        handles=handles, loc="upper center", ncol=4, fontsize=7, bbox_to_anchor=(0.5, 1 - 0.3 / height)
    )
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
    return figure
