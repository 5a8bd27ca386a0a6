"""The conv operator study's report (anonymous, 2019): rows read from the run files, figures and the
RESULTS.md section with the verdicts derived from the evidence.

Every number shown comes from the run files (``RunReader.operator_spectral_norm``,
``operator_spectrum``), the validation accuracies saved next to them, the committed CSVs or the
evidence; none is typed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.results import figure_link, markdown_table, pyplot, save_figure
from experiments.verdicts import Claim, Evidence, Verdict, derive_verdicts, mean_interval, verdicts_markdown
from spectral_callbacks import format_cell, open_run

__all__ = [
    "CSV_COLUMNS",
    "GAIN_MARGIN",
    "LAYERS",
    "LOW",
    "NULL_COLUMNS",
    "ReportInputs",
    "claims",
    "evidence_rows",
    "growth",
    "low_share",
    "null_rows",
    "run_rows",
    "short",
    "write",
]

LOW = 10  # eigenvalues below lambda_1 / LOW count as far below the top
CSV_COLUMNS = [
    "weight_decay",
    "schedule",
    "seed",
    "layer",
    "epoch",
    "lr",
    "sigma",
    "low_share",
    "val_accuracy",
]
NULL_COLUMNS = ["weight_decay", "seed", "layer", "sigma", "low_share"]
LAYERS = ("conv1_1", "conv1_2")  # the network's convs, as the evidence names them
GAIN_MARGIN = 0.05  # least gain of the share of eigenvalues below lambda_1 / LOW that counts
SOURCE = "anonymous, 2019"
RunKey = tuple[str, str, int]  # weight decay, schedule, seed
COLORS = {"cut": "C0", "constant": "C1"}


def short(layer: str) -> str:
    """``conv1_1`` for ``network.conv1_1``."""
    return layer.rsplit(".", 1)[-1]


def low_share(top: np.ndarray, edges: np.ndarray, counts: np.ndarray) -> float:
    """Share of the eigenvalues below ``lambda_1 / LOW`` in a KPM histogram (linear within a bin)."""
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    return float(np.interp(top[0] / LOW, edges, cumulative) / cumulative[-1])


def run_rows(
    run_dir: Path, key: RunKey, accuracy: Mapping[int, float], lr_of: Callable[[int], float]
) -> list[list[Any]]:
    """One row per conv layer and epoch of a run, in :data:`CSV_COLUMNS` order."""
    value, schedule, seed = key
    rows = []
    with open_run(run_dir) as run:
        for layer in run.operators:
            epochs, norms = run.operator_epochs(layer), run.operator_spectral_norm(layer)
            for epoch, sigma in zip(epochs.tolist(), norms.tolist(), strict=True):
                top, edges, counts, _ = run.operator_spectrum(layer, epoch)
                share = low_share(top, edges, counts)
                rows.append(
                    [value, schedule, seed, short(layer), epoch, lr_of(epoch), sigma, share,
                     accuracy.get(epoch, math.nan)]
                )  # fmt: skip
    return rows


def null_rows(run_dir: Path, keys: Sequence[tuple[str, int, str]]) -> list[list[Any]]:
    """One row per permuted kernel of the kernel bank's run, in :data:`NULL_COLUMNS` order; the
    bank's ``i``-th conv holds the kernel of ``keys[i]`` (weight decay, seed, layer)."""
    rows = []
    with open_run(run_dir) as run:
        for index, (value, seed, layer) in enumerate(keys):
            top, edges, counts, _ = run.operator_spectrum(f"convs.{index}", 0)
            rows.append([value, seed, layer, math.sqrt(top[0]), low_share(top, edges, counts)])
    return rows


# The claims (anonymous, 2019, section 3) and their rules, fixed before the runs were looked at.


def growth(sigma: Mapping[int, float], first: int, last: int) -> float:
    """Mean relative change of the norm per epoch from snapshot ``first`` to ``last``, in percent."""
    return 100 * ((sigma[last] / sigma[first]) ** (1 / (last - first)) - 1)


def evidence_rows(frame: pd.DataFrame, nulls: pd.DataFrame, size: Any) -> list[tuple[str, str, int, float]]:
    """The evidence from the per-epoch table (:data:`CSV_COLUMNS`) and the permuted kernels'
    (:data:`NULL_COLUMNS`): per run and layer, the norm's change per epoch over the window
    before and after the cut; per run with the cut, the share of eigenvalues below lambda_1 / LOW at
    initialization and end, of the permuted end kernels, and their gains over initialization."""
    decay, window, end = size.decay_epoch, size.window, size.epochs
    rows = []
    for (value, schedule, seed, layer), run in frame.groupby(["weight_decay", "schedule", "seed", "layer"]):
        sigma = dict(zip(run["epoch"], run["sigma"], strict=True))
        condition = f"{schedule}_wd{value}"
        rows.append((f"norm_before_{layer}", condition, seed, growth(sigma, decay - window, decay)))
        rows.append((f"norm_after_{layer}", condition, seed, growth(sigma, decay, decay + window)))
        if schedule == "cut":
            share = dict(zip(run["epoch"], run["low_share"], strict=True))
            permuted = nulls.query("weight_decay == @value and seed == @seed and layer == @layer")
            null = float(permuted["low_share"].iloc[0])
            rows += [
                (f"low_share_{layer}", f"init_wd{value}", seed, share[0]),
                (f"low_share_{layer}", f"end_wd{value}", seed, share[end]),
                (f"low_share_{layer}", f"permuted_wd{value}", seed, null),
                (f"low_share_gain_{layer}", f"trained_wd{value}", seed, share[end] - share[0]),
                (f"low_share_gain_{layer}", f"permuted_wd{value}", seed, null - share[0]),
            ]
    return [(s, c, int(seed), float(v)) for s, c, seed, v in rows]


def _judge_norm(value: str) -> Callable[[Evidence], Verdict]:
    """Rule of claim (a) at weight decay ``value`` (see its ``rule`` text)."""

    def judge(evidence: Evidence) -> Verdict:
        cut, constant = f"cut_wd{value}", f"constant_wd{value}"
        if cut not in evidence.conditions(f"norm_after_{LAYERS[0]}"):
            return Verdict("not testable here", f"no runs with weight decay {value}", None)
        complete, falls_somewhere, null_passes, words = True, False, False, []
        for layer in LAYERS:
            before, after = (evidence.interval(f"norm_{w}_{layer}", cut) for w in ("before", "after"))
            null_before, null_after = (
                evidence.interval(f"norm_{w}_{layer}", constant) for w in ("before", "after")
            )
            gap = mean_interval(
                evidence.values(f"norm_after_{layer}", cut) - evidence.values(f"norm_after_{layer}", constant)
            )
            grows, falls, below = before.low > 0, after.high < 0, gap.high < 0
            complete &= grows and falls and below
            falls_somewhere |= falls
            null_passes |= null_before.low > 0 and null_after.high < 0
            words.append(
                f"{layer}: with the cut {before} before, {after} after; constant learning rate "
                f"{null_before} before, {null_after} after; cut - constant after {gap}"
            )
        word = "agrees" if complete and not null_passes else "partly" if falls_somewhere else "disagrees"
        return Verdict(word, "change of sigma_max in % per epoch, " + "; ".join(words), null_passes)

    return judge


def _judge_tails(evidence: Evidence) -> Verdict:
    """Rule of claim (b) (see its ``rule`` text)."""
    held, cells, null_passes, words = 0, 0, False, []
    trained = [c for c in evidence.conditions(f"low_share_gain_{LAYERS[0]}") if c.startswith("trained_wd")]
    for value in (c.removeprefix("trained_wd") for c in trained):
        for layer in LAYERS:
            statistic = f"low_share_{layer}"
            gain, null = (
                evidence.interval(f"low_share_gain_{layer}", f"{c}_wd{value}")
                for c in ("trained", "permuted")
            )
            cells += 1
            held += gain.low > GAIN_MARGIN
            null_passes |= null.low > GAIN_MARGIN
            words.append(
                f"{layer}, weight decay {value}: share {evidence.interval(statistic, f'init_wd{value}')} at "
                f"initialization, {evidence.interval(statistic, f'end_wd{value}')} at the end, gain {gain}; "
                f"permuted end kernels {evidence.interval(statistic, f'permuted_wd{value}')}, gain {null}"
            )
    if not cells:
        return Verdict("not testable here", "no runs with the cut", None)
    word = "agrees" if held == cells and not null_passes else "partly" if held else "disagrees"
    return Verdict(
        word,
        f"the gain holds in {held} of {cells} layers and weight decays; " + "; ".join(words),
        null_passes,
    )


_NORM_RULE = (
    "Statistic: per run and conv layer, the mean relative change of sigma_max per epoch (%) over the {w} "
    "epochs before the cut (snapshots {a} to {d}) and over the {w} epochs after it ({d} to {b}). Null: the "
    "same seeds trained with a constant learning rate, measured at the same epochs. In a layer the claim "
    "holds when, over the seeds (95% Student-t intervals), the change before lies above 0, the change "
    "after lies below 0, and the paired difference after (cut - constant) lies below 0. The null passes "
    "if the constant-rate runs' change before lies above 0 and after below 0 in any layer (the norm would "
    "turn at that epoch without the cut). Agrees: holds in both layers and the null passes in none; "
    "partly: the norm falls after the cut in at least one layer, without all of that; disagrees: it falls "
    "in no layer."
)
_TAIL_RULE = (
    "Statistic: per run with the cut and conv layer, the share of the eigenvalues of A^T A below "
    "lambda_1 / {low} (from the KPM histogram) at the end minus at initialization. In a layer and weight "
    "decay the claim holds when the 95% Student-t interval of that gain over the seeds lies above "
    "{m:g}. Null: the same run's end kernel with its entries permuted at random (entry distribution kept, "
    "structure destroyed), its spectrum estimated by the same callback, minus the share at "
    "initialization; it passes if its interval lies above {m:g} in any layer and weight decay. Agrees: "
    "holds everywhere and the null passes nowhere; partly: holds somewhere, not with all of that; "
    "disagrees: holds nowhere."
)


def claims(size: Any) -> list[Claim]:
    """The claims tested on runs of ``size`` (the study's ``Size``): the norm's course at the cut per
    weight decay, and the heavier tail."""
    d, w = size.decay_epoch, size.window
    return [
        *(
            Claim(
                f"norm_turns_at_cut_wd{value}",
                SOURCE,
                "The operator norm (largest singular value of each conv layer as a linear map) grows until "
                f"the learning rate is cut to 10%, then decreases (here with weight decay {value}; the "
                "manuscript does not give its weight decay).",
                _NORM_RULE.format(w=w, a=d - w, d=d, b=d + w),
                _judge_norm(value),
            )
            for value in size.weight_decays
        ),
        Claim(
            "faster_decay",
            SOURCE,
            "Conv operator spectra decay faster as training goes on: more of the eigenvalues lie far below "
            "lambda_1.",
            _TAIL_RULE.format(m=GAIN_MARGIN, low=LOW),
            _judge_tails,
        ),
    ]


@dataclass(frozen=True)
class ReportInputs:
    """What the section is written from.

    Attributes:
        frame: the per-epoch table (:data:`CSV_COLUMNS`); nulls: the permuted kernels' (:data:`NULL_COLUMNS`).
        evidence, claims: the study's evidence and claims.
        size: the study's ``Size``; runs: run directory per (weight decay, schedule, seed).
        permuted_run: the kernel bank's run directory.
        cost: CPU seconds of the full run (``main_process``, ``analysis_processes``).
        command: the command that produced it; setup: the setup paragraph; differences: bullets.
    """

    frame: pd.DataFrame
    nulls: pd.DataFrame
    evidence: Evidence
    claims: Sequence[Claim]
    size: Any
    runs: Mapping[RunKey, Path]
    permuted_run: Path
    cost: Mapping[str, float]
    command: str
    setup: str
    differences: Sequence[str]


def write(inputs: ReportInputs, out: Path, results: Path) -> str:
    """Write the figures into ``out`` and return the section (figure links relative to ``results``)."""
    size = inputs.size
    figures = {
        "norm": save_figure(norm_figure(inputs.frame, size), out / "spectral_norm.png"),
        "share": save_figure(share_figure(inputs.frame, inputs.nulls, size), out / "low_share.png"),
        "esd": save_figure(esd_figure(inputs), out / "esd.png"),
    }
    cpu = sum(inputs.cost.values())
    cost = (
        f"The full run took {cpu / 60:.1f} CPU-minutes ({inputs.cost['main_process']:.0f} s in the training "
        f"process, {inputs.cost['analysis_processes']:.0f} s in the callbacks' analysis processes)."
    )
    same = _prefix_difference(inputs.frame, size.decay_epoch)
    identical = (
        f"Runs with and without the cut share their seed and are the same run up to it: the largest relative "
        f"difference of sigma_max at epochs 0-{size.decay_epoch} between the two is {format_cell(same)}."
    )
    return "\n\n".join(
        [
            "## Conv operator spectra and a learning-rate cut (anonymous, 2019)",
            f"{inputs.setup} {identical} {cost}",
            "Differences from the manuscript's setup:\n\n" + "\n".join(f"- {d}" for d in inputs.differences),
            f"Verdicts, derived from `results/{out.name}/evidence.csv` by the rules in the study's `CLAIMS`:",
            verdicts_markdown(derive_verdicts(inputs.claims, inputs.evidence)),
            "Means over the seeds (per seed and epoch in `spectral_norm.csv`; the permuted kernels in "
            "`permuted_kernels.csv`):",
            _table(inputs.frame, size),
            figure_link(figures["norm"], results, "sigma_max of each conv operator per epoch, per seed"),
            figure_link(figures["share"], results, f"share of eigenvalues below lambda_1/{LOW} per epoch"),
            figure_link(figures["esd"], results, "KPM densities of the seed-0 runs with the cut"),
        ]
    )


def _prefix_difference(frame: pd.DataFrame, decay: int) -> float:
    """Largest relative difference of sigma between the runs with and without the cut, up to it."""
    before = frame[frame["epoch"] <= decay].pivot_table(
        index=["weight_decay", "seed", "layer", "epoch"], columns="schedule", values="sigma"
    )
    return float((before["cut"] / before["constant"] - 1).abs().max())


def _table(frame: pd.DataFrame, size: Any) -> str:
    decay, window, end = size.decay_epoch, size.window, size.epochs
    header = [
        "weight decay", "schedule", "layer", f"sigma at 0 / {decay} / {end}",
        f"% per epoch {decay - window}-{decay} / {decay}-{decay + window}",
        f"share < lambda_1/{LOW} at 0 / {decay} / {end}", f"val accuracy {decay} / {end}",
    ]  # fmt: skip
    rows = []
    for (value, schedule, layer), group in frame.groupby(["weight_decay", "schedule", "layer"], sort=False):
        mean = group.groupby("epoch")[["sigma", "low_share", "val_accuracy"]].mean()
        sigma = mean["sigma"]
        rates = [
            100 * ((sigma[b] / sigma[a]) ** (1 / (b - a)) - 1)
            for a, b in ((decay - window, decay), (decay, decay + window))
        ]
        rows.append(
            [value, schedule, layer, " / ".join(format_cell(sigma[e]) for e in (0, decay, end)),
             " / ".join(f"{r:+.2f}" for r in rates),
             " / ".join(format_cell(mean["low_share"][e]) for e in (0, decay, end)),
             " / ".join(format_cell(mean["val_accuracy"][e]) for e in (decay, end))]
        )  # fmt: skip
    return markdown_table(header, rows)


def norm_figure(frame: pd.DataFrame, size: Any) -> Any:
    """sigma_max per epoch: a row per weight decay, a panel per layer, thin lines per seed, thick the
    mean, per schedule; the cut and the two windows of the statistic marked."""
    plt = pyplot()
    values, layers = list(dict.fromkeys(frame["weight_decay"])), list(dict.fromkeys(frame["layer"]))
    figure, axes = plt.subplots(
        len(values), len(layers), figsize=(4.6 * len(layers), 3.4 * len(values)), squeeze=False
    )
    decay, window = size.decay_epoch, size.window
    for row, value in enumerate(values):
        for ax, layer in zip(axes[row], layers, strict=True):
            for schedule, group in frame.query("weight_decay == @value and layer == @layer").groupby(
                "schedule"
            ):
                for _, run in group.groupby("seed"):
                    ax.plot(run["epoch"], run["sigma"], color=COLORS[schedule], alpha=0.3, linewidth=0.8)
                mean = group.groupby("epoch")["sigma"].mean()
                ax.plot(
                    mean.index, mean.values, color=COLORS[schedule], linewidth=2, label=f"{schedule} (mean)"
                )
            ax.axvspan(decay - window, decay, color="gray", alpha=0.1)
            ax.axvspan(decay, decay + window, color="gray", alpha=0.2)
            ax.axvline(decay, color="gray", linestyle="--", label=f"cut to 0.1x after epoch {decay}")
            ax.set(title=f"{layer}, weight decay {value}", xlabel="epoch", ylabel="sigma_max(A)")
            ax.legend(fontsize=7)
    figure.suptitle("Conv operator spectral norm per epoch (thin: seeds; shaded: windows of the statistic)")
    figure.tight_layout()
    return figure


def share_figure(frame: pd.DataFrame, nulls: pd.DataFrame, size: Any) -> Any:
    """The share of eigenvalues below lambda_1 / LOW per epoch (mean over seeds, band: min to max),
    per weight decay and schedule; dotted: the permuted end kernels' mean."""
    plt = pyplot()
    layers = list(dict.fromkeys(frame["layer"]))
    figure, axes = plt.subplots(1, len(layers), figsize=(4.6 * len(layers), 3.4), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, layer in zip(axes[0], layers, strict=True):
        for index, value in enumerate(dict.fromkeys(frame["weight_decay"])):
            for schedule, group in frame.query("weight_decay == @value and layer == @layer").groupby(
                "schedule"
            ):
                stats = group.groupby("epoch")["low_share"].agg(["mean", "min", "max"])
                color, style = COLORS[schedule], styles[index % len(styles)]
                label = f"{schedule}, weight decay {value}"
                ax.plot(stats.index, stats["mean"], color=color, linestyle=style, label=label)
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
            null = nulls.query("weight_decay == @value and layer == @layer")["low_share"].mean()
            ax.axhline(null, color="black", linestyle=styles[index % len(styles)], linewidth=0.8,
                       label=f"permuted end kernels, weight decay {value}")  # fmt: skip
        ax.axvline(size.decay_epoch, color="gray", linestyle="--")
        ax.set(title=layer, xlabel="epoch", ylabel=f"share of eigenvalues < lambda_1/{LOW}", ylim=(0, 1))
        ax.legend(fontsize=6)
    figure.tight_layout()
    return figure


def esd_figure(inputs: ReportInputs) -> Any:
    """KPM densities of the eigenvalues over lambda_1 (each histogram scaled by its own lambda_1) of
    the seed-0 runs with the cut at initialization, the cut and the end, and of the permuted end
    kernel; a row per weight decay, a panel per layer."""
    plt = pyplot()
    size = inputs.size
    values = list(dict.fromkeys(inputs.frame["weight_decay"]))
    layers = list(dict.fromkeys(inputs.frame["layer"]))
    figure, axes = plt.subplots(
        len(values), len(layers), figsize=(4.6 * len(layers), 3.2 * len(values)), squeeze=False
    )
    bank = open_run(inputs.permuted_run)
    try:
        bank_index = {(v, s, layer): i for i, (v, s, layer) in enumerate(_bank_keys(inputs.nulls))}
        for row, value in enumerate(values):
            with open_run(inputs.runs[(value, "cut", 0)]) as run:
                for ax, layer in zip(axes[row], run.operators, strict=True):
                    for epoch in sorted({0, size.decay_epoch, size.epochs}):
                        _stairs(ax, *run.operator_spectrum(layer, epoch)[:3], label=f"epoch {epoch}")
                    spectrum = bank.operator_spectrum(f"convs.{bank_index[(value, 0, short(layer))]}", 0)
                    _stairs(ax, *spectrum[:3], label=f"epoch {size.epochs}, entries permuted", linestyle=":")
                    ax.axvline(1 / LOW, color="gray", linewidth=0.8)
                    title = f"{short(layer)}, weight decay {value}"
                    ax.set(yscale="log", title=title, xlabel="lambda / lambda_1", ylabel="density (KPM)")
                    ax.legend(fontsize=7)
    finally:
        bank.close()
    figure.tight_layout()
    return figure


def _bank_keys(nulls: pd.DataFrame) -> list[tuple[str, int, str]]:
    return [(str(v), int(s), str(layer)) for v, s, layer in nulls[["weight_decay", "seed", "layer"]].values]


def _stairs(ax: Any, top: np.ndarray, edges: np.ndarray, counts: np.ndarray, **kwargs: Any) -> None:
    """A KPM histogram as a density over ``lambda / lambda_1`` (small negative counts clipped)."""
    scaled = edges / top[0]
    density = np.maximum(counts, 1e-3) / (counts.sum() * np.diff(scaled))
    ax.stairs(density, scaled, **kwargs)
