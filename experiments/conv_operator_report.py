"""The conv operator study's report (anonymous, 2019): each conv's spectral norm over a run, what
it did before and after the learning-rate decay, figures, CSV rows and the RESULTS.md section.

Everything is read from the run files (``RunReader.operator_spectral_norm``, ``operator_spectrum``)
and the validation accuracies the study saved next to them; no number is typed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.results import figure_link, markdown_table, pyplot
from spectral_callbacks import RunReader, format_cell, open_run

__all__ = [
    "CSV_COLUMNS",
    "FLAT",
    "LayerTrend",
    "Schedule",
    "csv_rows",
    "esd_figure",
    "layer_trend",
    "norm_figure",
]

FLAT = 0.01  # a relative change of the spectral norm smaller than this counts as flat
CSV_COLUMNS = ["weight_decay", "layer", "epoch", "lr", "spectral_norm", "low_share", "val_accuracy"]
Trends = Mapping[str, Mapping[str, "LayerTrend"]]  # weight decay -> layer -> trend


@dataclass(frozen=True)
class Schedule:
    """The training schedule of the study's runs, for the report.

    Attributes:
        epochs: training epochs; decay_epoch: the last epoch at the initial learning rate.
        lr, gamma, momentum: SGD's learning rate, the factor of the decay and the momentum.
        steps_per_epoch: optimizer steps per epoch.
    """

    epochs: int
    decay_epoch: int
    lr: float
    gamma: float
    momentum: float
    steps_per_epoch: int

    def lr_of(self, epoch: int) -> float:
        """The learning rate of the epoch that ended with snapshot ``epoch`` (NaN for 0)."""
        if epoch == 0:
            return math.nan
        return self.lr * (self.gamma if epoch > self.decay_epoch else 1.0)

    def shrinkage(self, weight_decay: float) -> float:
        """What weight decay alone leaves of the weights by the decay: ``exp(-lr / (1 - momentum) *
        weight_decay * steps)`` (SGD with momentum steps ``lr / (1 - momentum)`` in the long run)."""
        steps = self.decay_epoch * self.steps_per_epoch
        return math.exp(-self.lr / (1 - self.momentum) * weight_decay * steps)


@dataclass(frozen=True)
class LayerTrend:
    """One conv layer's spectral norm over a run, and what it did before and after the decay.

    Attributes:
        epochs, norms: the operator's spectral norm ``sigma_max(A)`` per snapshot.
        low_share: per snapshot, the share of the eigenvalues of ``A^T A`` below ``lambda_1 / 10``
            (from the KPM histogram): larger means a faster-decaying spectrum.
        decay_epoch: the last snapshot at the initial learning rate.
    """

    epochs: np.ndarray
    norms: np.ndarray
    low_share: np.ndarray
    decay_epoch: int

    def at(self, epoch: int) -> float:
        """The norm at snapshot ``epoch``."""
        return float(self.norms[list(self.epochs).index(epoch)])

    def share_at(self, epoch: int) -> float:
        """:attr:`low_share` at snapshot ``epoch``."""
        return float(self.low_share[list(self.epochs).index(epoch)])

    @property
    def start(self) -> float:
        return float(self.norms[0])

    @property
    def at_decay(self) -> float:
        return self.at(self.decay_epoch)

    @property
    def end(self) -> float:
        return float(self.norms[-1])

    @property
    def peak_epoch(self) -> int:
        """Where the norm is largest up to the decay."""
        before = self.epochs <= self.decay_epoch
        return int(self.epochs[before][np.argmax(self.norms[before])])

    @property
    def peak(self) -> float:
        """The largest norm up to the decay."""
        return self.at(self.peak_epoch)

    def rate(self, first: int, last: int) -> float:
        """Mean relative change of the norm per epoch from snapshot ``first`` to ``last``."""
        return (self.at(last) / self.at(first)) ** (1 / (last - first)) - 1

    @property
    def before(self) -> str:
        """The course up to the decay: ``"rises until the decay"``, ``"peaks at epoch N"`` (and
        comes down by more than :data:`FLAT` by the decay) or ``"does not rise"``."""
        if self.peak <= (1 + FLAT) * self.start:
            return "does not rise"
        if self.at_decay >= (1 - FLAT) * self.peak:
            return "rises until the decay"
        return f"peaks at epoch {self.peak_epoch}"

    @property
    def after(self) -> str:
        """The course after the decay: ``"falls"``, ``"keeps rising"`` or ``"stays flat"``."""
        change = self.end / self.at_decay - 1
        if change < -FLAT:
            return "falls"
        return "keeps rising" if change > FLAT else "stays flat"

    @property
    def seed_course(self) -> bool:
        """The course the anonymous manuscript (2019) reports: the norm grows until the cut, then falls."""
        return self.before == "rises until the decay" and self.after == "falls"


def layer_trend(run: RunReader, layer: str, decay_epoch: int) -> LayerTrend:
    """A layer's :class:`LayerTrend` from an open run file."""
    epochs = run.operator_epochs(layer)
    low = []
    for epoch in epochs:
        top, edges, counts, _ = run.operator_spectrum(layer, int(epoch))
        cumulative = np.concatenate([[0.0], np.cumsum(counts)])
        low.append(np.interp(top[0] / 10, edges, cumulative) / cumulative[-1])
    return LayerTrend(epochs, run.operator_spectral_norm(layer), np.array(low), decay_epoch)


def csv_rows(trends: Trends, accuracy: Mapping[str, Mapping[int, float]], schedule: Schedule) -> list[list]:
    """One row per run, layer and epoch, in :data:`CSV_COLUMNS` order."""
    return [
        [
            value,
            layer,
            int(epoch),
            schedule.lr_of(int(epoch)),
            norm,
            low,
            accuracy[value].get(int(epoch), "nan"),
        ]
        for value, layers in trends.items()
        for layer, trend in layers.items()
        for epoch, norm, low in zip(trend.epochs, trend.norms, trend.low_share, strict=True)
    ]


def norm_figure(trends: Trends, schedule: Schedule) -> Any:
    """Each conv's spectral norm per epoch (one panel per layer, one line per run), the decay marked."""
    plt = pyplot()
    layers = list(next(iter(trends.values())))
    figure, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3.6), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for value, by_layer in trends.items():
            trend = by_layer[layer]
            ax.plot(trend.epochs, trend.norms, marker="o", markersize=3, label=f"weight decay {value}")
        decay = f"lr x {schedule.gamma:g} after epoch {schedule.decay_epoch}"
        ax.axvline(schedule.decay_epoch, color="gray", linestyle="--", label=decay)
        ax.set(title=_short(layer), xlabel="epoch", ylabel="spectral norm sigma_max(A)")
        ax.legend(fontsize=7)
    figure.suptitle("Conv operator spectral norm (Lanczos on A^T A) over training")
    figure.tight_layout()
    return figure


def esd_epochs(schedule: Schedule) -> list[int]:
    """The epochs whose KPM histograms are overlaid: initialization, first epoch, decay, end."""
    return sorted({0, 1, schedule.decay_epoch, schedule.epochs})


def esd_figure(run_dirs: Mapping[str, Path], schedule: Schedule) -> Any:
    """KPM histograms (as densities) at :func:`esd_epochs`: one row per run, one panel per layer."""
    plt = pyplot()
    runs = {value: open_run(run_dir) for value, run_dir in run_dirs.items()}
    try:
        layers = next(iter(runs.values())).operators
        figure, axes = plt.subplots(
            len(runs), len(layers), figsize=(4.5 * len(layers), 3.2 * len(runs)), squeeze=False
        )
        for row, (value, run) in enumerate(runs.items()):
            for ax, layer in zip(axes[row], layers, strict=True):
                for epoch in esd_epochs(schedule):
                    _, edges, counts, _ = run.operator_spectrum(layer, epoch)
                    # a density, as bins differ between epochs; KPM's small negative counts clipped
                    density = np.maximum(counts, 0.1) / (counts.sum() * np.diff(edges))
                    ax.stairs(density, edges, label=f"epoch {epoch}")
                ax.set(
                    yscale="log", title=f"{_short(layer)}, weight decay {value}", xlabel="eigenvalue of A^T A"
                )
                ax.set_ylabel("density of eigenvalues (KPM)")
                ax.legend(fontsize=7)
    finally:
        for run in runs.values():
            run.close()
    figure.tight_layout()
    return figure


def section(
    trends: Trends,
    accuracy: Mapping[str, Mapping[int, float]],
    schedule: Schedule,
    figures: Mapping[str, Path],
    results: Path,
    setup: str,
) -> str:
    """The markdown section: setup, verdict with its reasons, the table and the figures."""
    decay, end = schedule.decay_epoch, schedule.epochs
    header = [
        "weight decay", "layer", "sigma at 0", f"peak to {decay} (epoch)", f"sigma at {decay}",
        f"sigma at {end}", "before the decay", "after", f"share < lambda_1/10 at 0 / {decay} / {end}",
        f"val accuracy {decay} / {end}",
    ]  # fmt: skip
    rows = [
        [
            value,
            _short(layer),
            trend.start,
            f"{format_cell(trend.peak)} ({trend.peak_epoch})",
            trend.at_decay,
            trend.end,
            trend.before,
            f"{trend.after} ({100 * (trend.end / trend.at_decay - 1):+.1f}%)",
            " / ".join(format_cell(trend.share_at(epoch)) for epoch in (0, decay, end)),
            " / ".join(format_cell(accuracy[value].get(epoch, math.nan)) for epoch in (decay, end)),
        ]
        for value, layers in trends.items()
        for layer, trend in layers.items()
    ]
    return "\n\n".join(
        [
            "## Conv operator spectra with a learning-rate decay (anonymous, 2019)",
            setup,
            _verdict(trends, accuracy, schedule),
            markdown_table(header, rows),
            figure_link(figures["spectral_norm"], results, "spectral norm of each conv operator per epoch"),
            figure_link(figures["esd"], results, f"KPM histograms at epochs {esd_epochs(schedule)}"),
        ]
    )


def _verdict(trends: Trends, accuracy: Mapping[str, Mapping[int, float]], schedule: Schedule) -> str:
    """The agreement with the anonymous manuscript (2019) in bold, then a bullet per run, one on the tails."""
    courses = {value: [t.seed_course for t in layers.values()] for value, layers in trends.items()}
    if all(all(run) for run in courses.values()):
        agreement = (
            "Agrees with the anonymous manuscript (2019): every conv layer's spectral norm grows until the "
            "decay, then falls"
        )
    elif any(any(run) for run in courses.values()):
        agreeing = ", ".join(value for value, run in courses.items() if any(run))
        agreement = f"Agrees with the anonymous manuscript (2019) only in part (weight decay {agreeing})"
    else:
        agreement = (
            "Does not agree with the anonymous manuscript (2019): no conv layer's spectral norm grows until "
            "the decay and then falls"
        )
    bullets = [_run_bullet(value, layers, schedule) for value, layers in trends.items()]
    first_value, first = next(iter(trends.items()))
    shares = "; ".join(
        f"{_short(layer)} {format_cell(trend.share_at(0))} at initialization, "
        f"{format_cell(trend.share_at(schedule.epochs))} at the end"
        for layer, trend in first.items()
    )
    bullets.append(
        "Spectra decay faster as training goes on, as the manuscript also reports: the share of the "
        f"eigenvalues of `A^T A` below lambda_1/10 (weight decay {first_value}) is {shares}; the histograms "
        "grow a tail of spikes far above the initial bulk."
    )
    at_decay = ", ".join(
        f"{format_cell(accuracy[value].get(schedule.decay_epoch, math.nan))} (weight decay {value})"
        for value in trends
    )
    bullets.append(
        f"How this differs from the manuscript: {schedule.epochs * schedule.steps_per_epoch} SGD steps in "
        f"all on a small task, with a validation accuracy of {at_decay} when the learning rate is cut, and "
        "one cut, against the manuscript's squeeze_net trained on ImageNet at batch 128 with cuts after 30 "
        "and 60 epochs; the manuscript does not give its weight decay."
    )
    return f"**{agreement}.** (Changes under {100 * FLAT:g}% count as flat.)\n\n" + "\n".join(
        f"- {bullet}" for bullet in bullets
    )


def _run_bullet(value: str, layers: Mapping[str, LayerTrend], schedule: Schedule) -> str:
    """What the norms of one run did, with the mean change per epoch before and after the decay."""
    decay, end = schedule.decay_epoch, schedule.epochs
    parts = []
    for layer, t in layers.items():
        course = (
            f"{_short(layer)} {format_cell(t.start)} at initialization, {t.before} ({format_cell(t.peak)}"
        )
        if t.peak_epoch < decay:
            course += (
                f", then {100 * t.rate(t.peak_epoch, decay):+.2f}% per epoch to {format_cell(t.at_decay)}"
            )
        course += f"), then {t.after}: {100 * t.rate(decay, end):+.2f}% per epoch to {format_cell(t.end)}"
        parts.append(course)
    shrinkage = format_cell(schedule.shrinkage(float(value)))
    text = f"Weight decay {value} (shrinkage {shrinkage} by the decay): " + "; ".join(parts) + "."
    falling = [
        t for t in layers.values() if t.peak_epoch < decay and t.rate(t.peak_epoch, decay) < -FLAT / 10
    ]
    if falling and all(t.after == "falls" for t in falling):
        before = ", ".join(f"{100 * t.rate(t.peak_epoch, decay):+.2f}%" for t in falling)
        after = ", ".join(f"{100 * t.rate(decay, end):+.2f}%" for t in falling)
        slower = all(t.rate(decay, end) > t.rate(t.peak_epoch, decay) for t in falling)
        effect = "slows it instead of starting it" if slower else "does not start it"
        rates = f"{before} per epoch before, {after} after"
        text += f" The fall begins at the peak, before the decay, which {effect} ({rates})."
    return text


def _short(layer: str) -> str:
    return layer.removeprefix("network.")
