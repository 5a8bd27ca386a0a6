"""The phase-of-training figure: the 5+1 phase labels (Martin & Mahoney, 2021) per layer, run and epoch.

The labels are those the analysis gives each snapshot (:func:`spectral_callbacks.spectra.phase_label`),
read from the run file with ``open_run(path).phases(layer)``; ``"unknown"`` where a layer had no
spectrum to label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.results import pyplot
from spectral_callbacks import PHASES

__all__ = ["LABELS", "phase_figure"]

LABELS = (*PHASES, "unknown")  # the figure's colors, in this order


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
