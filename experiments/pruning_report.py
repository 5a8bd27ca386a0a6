"""Figures and the RESULTS.md section of the pruning study (:mod:`experiments.pruning`).

The agreement sentences are computed from the study's numbers: which of Heitmann's (2020) findings
hold, and where the elbows fall relative to his k = 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.lenet import LAYER_LABELS, LAYERS, describe_training
from experiments.pruning import (
    ACCURACY_SHARE,
    CRITERIA,
    PRUNED_LAYERS,
    PUBLISHED_RANK,
    RANK_COLUMNS,
    SMOKE,
    TABLE_FRACTIONS,
    Size,
)
from experiments.results import figure_link, markdown_table, pyplot

__all__ = ["pruning_figure", "rank_figure", "section"]

LABELS = {
    "max_mag": "max_mag: smallest norm first",
    "min_mag": "min_mag: largest norm first",
    "max_fp": "max_fp: smallest FP contribution first",
    "min_fp": "min_fp: largest FP contribution first",
    "random": "random (mean ± std)",
}


def pruning_figure(curves: pd.DataFrame):
    plt = pyplot()
    figure, panels = plt.subplots(1, len(PRUNED_LAYERS), figsize=(11, 4.2), dpi=100, sharey=True)
    for axes, name in zip(panels, PRUNED_LAYERS, strict=True):
        for criterion in CRITERIA:
            curve = curves.loc[(name, criterion)]
            axes.errorbar(curve.index, curve["mean"], yerr=curve["std"], marker="o", ms=3, capsize=2,
                          label=LABELS[criterion])  # fmt: skip
        axes.axhline(0.1, color="gray", ls=":", lw=1, label="chance")
        axes.set_title(f"pruning {LAYER_LABELS[name]} of LeNet-300-100 (digits)", fontsize=10)
        axes.set_xlabel("fraction of the layer's units removed")
    panels[0].set_ylabel("test accuracy (no retraining)")
    panels[0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return figure


def rank_figure(ranks: Sequence[Sequence[object]], elbows: pd.DataFrame):
    plt = pyplot()
    mean = pd.DataFrame(ranks, columns=RANK_COLUMNS).groupby(["layer", "k"])[["accuracy", "residual"]].mean()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for name in LAYERS:
        curve = mean.loc[name]
        elbow = round(elbows.loc[name, "residual_elbow"])
        line = left.plot(curve.index, curve["accuracy"], marker=".", ms=3, label=LAYER_LABELS[name])[0]
        left.axvline(elbows.loc[name, "accuracy_elbow"], color=line.get_color(), ls=":", lw=1)
        right.plot(curve.index, curve["residual"], marker=".", ms=3, color=line.get_color(),
                   label=f"{LAYER_LABELS[name]}, elbow k = {elbow}")  # fmt: skip
        right.plot([elbow], [curve["residual"].loc[elbow]], "o", ms=8, mfc="none", color=line.get_color())
    left.set_xscale("log")
    left.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    for axes in (left, right):
        axes.set_xlabel("rank k of the approximation W_k")
        axes.axvline(PUBLISHED_RANK, color="gray", ls="--", lw=1)
    left.set_ylabel("test accuracy with that layer replaced by W_k")
    left.set_title(f"accuracy (dotted: smallest k reaching {ACCURACY_SHARE:.0%} of full)", fontsize=10)
    left.legend(fontsize=7)
    right.set_ylabel("||W - W_k||_F / ||W||_F")
    right.set_title(f"residual and its elbow (circles); dashed: k = {PUBLISHED_RANK}", fontsize=10)
    right.legend(fontsize=7)
    figure.tight_layout()
    return figure


def section(
    curves: pd.DataFrame,
    networks: pd.Series,
    elbows: pd.DataFrame,
    spectra: pd.DataFrame,
    figures: dict[str, Path],
    size: Size,
    test_size: int,
    results: Path,
) -> str:
    command = "python -m experiments.pruning" + (" --smoke" if size is SMOKE else "")
    fractions = [f for f in TABLE_FRACTIONS if f in size.fractions]
    area = networks.groupby(["layer", "criterion"]).mean()
    pruning_table = markdown_table(
        ["layer", "criterion", *[f"acc@{f:g}" for f in fractions], "mean over fractions"],
        [
            [LAYER_LABELS[n], c, *[curves.loc[(n, c, f), "mean"] for f in fractions], area[n, c]]
            for n in PRUNED_LAYERS
            for c in CRITERIA
        ],
    )
    frame_table = markdown_table(
        ["layer", "epoch", "FP", "FP / tight-frame minimum"],
        [[LAYER_LABELS[n], e, v["frame_potential"], v["frame_potential_normalized"]]
         for (n, e), v in spectra.iterrows() if n in PRUNED_LAYERS],
    )  # fmt: skip
    rank_table = markdown_table(
        ["layer", *elbows.columns], [[LAYER_LABELS[n], *row] for n, row in elbows.iterrows()]
    )
    full = elbows["full_accuracy"].iloc[0]
    return "\n".join(
        [
            "## Pruning by frame potential, magnitude and at random; rank-k elbows (Heitmann, 2020)",
            "",
            f"`{command}`: LeNet-300-100 as 64-300-100-10 on scikit-learn's digits, {size.seeds} "
            f"network{'s' if size.seeds > 1 else ''} (seeds 0-{size.seeds - 1}) trained "
            f"{describe_training(size.epochs)}; test accuracy on the {test_size} held-out digits, "
            f"{full:.4f} unpruned (mean). Units are removed without retraining; random: "
            f"{size.random_draws} orders per network; means over networks (and orders). The rules are "
            "in `experiments/pruning.py`: `max_mag` and `max_fp` are Heitmann's *Magnitude* and "
            "*Frame-potential pruning* (smallest norm, smallest FP contribution first), `min_*` their "
            "reverses.",
            "",
            pruning_table,
            "",
            figure_link(figures["pruning"], results, "accuracy vs fraction pruned"),
            "",
            "Frame potential of the hidden layers (from the run files), at the initialization and the end:",
            "",
            frame_table,
            "",
            f"Rank-k: each layer in turn replaced by `W_k`; `residual_elbow` is Heitmann's elbow of "
            f"`||W - W_k||_F` (kneedle: the k farthest below the chord of the rescaled curve), "
            f"`accuracy_elbow` the smallest k reaching {ACCURACY_SHARE:.0%} of the full accuracy; the "
            f"`_at_{PUBLISHED_RANK}` columns are Heitmann's figure 8 (`100 ||W_k||_F / ||W||_F` and the "
            "accuracy lost, in points); `num_spikes`: eigenvalues above the Marchenko-Pastur bulk at "
            "the end (run file).",
            "",
            rank_table,
            "",
            figure_link(figures["rank"], results, "rank-k approximation"),
            "",
            _pruning_agreement(curves, networks),
            "",
            _rank_agreement(elbows),
        ]
    )


# Heitmann's (2020) findings (section 3.1): (better criterion, worse criterion) and, when it holds, why.
FINDINGS = {
    "magnitude beats frame-potential pruning (`max_mag` > `max_fp`)": (
        "max_mag",
        "max_fp",
        "a ReLU unit's output scales with its row's norm, so the smallest rows pass the least to the "
        "next layer, and the frame potential ignores norms",
    ),
    "`max_fp` beats random pruning": (
        "max_fp",
        "random",
        "Heitmann's reading is that the rows least aligned with the others are outliers that align "
        "poorly with the data",
    ),
    "`min_fp` is worse than random pruning": (
        "random",
        "min_fp",
        "it removes first the mutually aligned rows, the cluster that training forms (see the "
        "neuron-graph study)",
    ),
}
# Heitmann's (2020) figure 8, first FC layer of Conv-2 at k = 10: 100 ||W_k||_F / ||W||_F and a - a_proj.
PUBLISHED_CONV2_AT_10 = (71.61, 5.21)


def _pruning_agreement(curves: pd.DataFrame, networks: pd.Series) -> str:
    """Each finding checked per layer on the mean accuracy over the fractions, and network by network.

    ``networks``: that mean per ``(layer, criterion, seed)`` (random: also over its draws).
    """
    area = networks.groupby(["layer", "criterion"]).mean()
    lines = ["**Agreement with Heitmann (2020) on pruning.** Mean accuracy over the fractions, best first:"]
    for name in PRUNED_LAYERS:
        ranking = area[name].sort_values(ascending=False)
        lines.append(f"{LAYER_LABELS[name]}: " + " > ".join(f"{c} {v:.3f}" for c, v in ranking.items()) + ".")
    for text, (better, worse, reason) in FINDINGS.items():
        verdicts = []
        for name in PRUNED_LAYERS:
            gap = area[name, better] - area[name, worse]
            paired = networks[name, better] - networks[name, worse]  # same network, both criteria
            agreeing = int((np.sign(paired) == np.sign(gap)).sum())
            word = "fails" if gap <= 0 else "holds" if agreeing == paired.size else "holds on average"
            where = f"{LAYER_LABELS[name]} (gap {gap:+.3f}, same sign in {agreeing} of {paired.size} nets)"
            verdicts.append((word, f"{word} in {where}"))
        held = all(word == "holds" for word, _ in verdicts)
        checked = "; ".join(part for _, part in verdicts)
        lines.append(f"Heitmann's finding that {text}: {checked}" + (f"; {reason}." if held else "."))
    crossings = []
    for name in PRUNED_LAYERS:
        gap = curves.loc[(name, "max_fp"), "mean"] - curves.loc[(name, "random"), "mean"]
        below = gap.index[(gap < 0) & (gap.index > 0)]
        if below.size:
            crossings.append(f"{below[0]:.0%} in {LAYER_LABELS[name]}")
    if crossings:
        lines.append(
            f"`max_fp` falls below random once most units are gone (from {', '.join(crossings)} pruned): "
            "by construction it keeps the most redundant set of rows (the largest frame potential), so "
            "the few survivors span few input directions, while a random subset keeps them spread."
        )
    return " ".join(lines)


def _rank_agreement(elbows: pd.DataFrame) -> str:
    """Heitmann's elbow at k = 10 (his number of classes) for the first FC layers, against ours."""
    hidden = elbows.loc[list(PRUNED_LAYERS)]
    near = hidden["residual_elbow"].between(PUBLISHED_RANK / 2, 2 * PUBLISHED_RANK).all()
    first = elbows.loc[LAYERS[0]]
    described = ", ".join(
        f"{LAYER_LABELS[n]} {r['residual_elbow']:.3g} (accuracy elbow {r['accuracy_elbow']:.3g}, "
        f"{r['num_spikes']:.3g} MP spikes)"
        for n, r in hidden.iterrows()
    )
    if not near:
        return (
            f"**Agreement with Heitmann (2020) on rank-k.** Residual elbows: {described}: not near his "
            f"elbow at k = {PUBLISHED_RANK}, his number of classes (within a factor of two), in this run."
        )
    kept = first[f"norm_kept_pct_at_{PUBLISHED_RANK}"]
    outside = 1 - (kept / 100) ** 2
    published_kept, published_drop = PUBLISHED_CONV2_AT_10
    return (
        f"**Agreement with Heitmann (2020) on rank-k.** Residual elbows: {described}. This agrees with "
        f"his elbow at k = {PUBLISHED_RANK}, his (and our) number of classes, within a factor of two. "
        f"At k = {PUBLISHED_RANK} fc1 keeps {kept:.1f}% of its Frobenius norm ({1 - outside:.0%} of the "
        f"squared norm) and loses {first[f'accuracy_drop_pts_at_{PUBLISHED_RANK}']:.2f} accuracy points (his "
        f"Conv-2: {published_kept}% and {published_drop} points): the other {outside:.0%} of the squared "
        f"norm is a bulk the rest of the network largely ignores, and what it uses is "
        "a low-rank part of about one direction per class, of the order of the number of spikes above "
        "the Marchenko-Pastur bulk."
    )
