"""Figures and the RESULTS.md section of the pruning study (:mod:`experiments.pruning`).

Every number shown comes from the study's CSVs and its evidence; the verdicts are rendered from the
evidence by the study's own rules (:data:`experiments.pruning.CLAIMS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from experiments import pruning
from experiments.lenet import LAYER_LABELS, LAYERS, describe_training
from experiments.pruning import (
    ACCURACY_SHARE,
    CRITERIA,
    ELBOW_CONDITIONS,
    NEAR_RANK,
    PRUNED_LAYERS,
    PRUNING_COLUMNS,
    PUBLISHED_RANK,
    RANK_COLUMNS,
    RESIDUAL_COLUMNS,
    SMOKE,
    SPECTRA_COLUMNS,
    TABLE_FRACTIONS,
    Size,
    residual_elbow,
    short,
)
from experiments.results import figure_link, markdown_table, pyplot, save_figure
from experiments.verdicts import Evidence, derive_verdicts, verdicts_markdown

__all__ = ["elbow_figure", "pruning_figure", "rank_figure", "write"]

LABELS = {
    "max_mag": "max_mag: smallest norm first",
    "min_mag": "min_mag: largest norm first",
    "max_fp": "max_fp: smallest FP contribution first",
    "min_fp": "min_fp: largest FP contribution first",
    "random": "random (mean ± std)",
}
ELBOW_LABELS = {"trained": "trained", "epoch0": "same layer at epoch 0", "gaussian": "Gaussian, same shape"}
# Heitmann's (2020) figure 8, first FC layer of Conv-2 at k = 10: 100 ||W_k||_F / ||W||_F and a - a_proj.
PUBLISHED_CONV2_AT_10 = (71.61, 5.21)


def write(
    pruning: Sequence[Sequence[object]],
    ranks: Sequence[Sequence[object]],
    residuals: Sequence[Sequence[object]],
    spectra: Sequence[Sequence[object]],
    evidence: Evidence,
    size: Size,
    test_size: int,
    out: Path,
    results: Path,
) -> str:
    """Write the figures under ``out``; returns the section's text."""
    curves = pd.DataFrame(pruning, columns=PRUNING_COLUMNS)
    curves = curves.groupby(["layer", "criterion", "fraction"])["accuracy"].agg(["mean", "std"]).fillna(0.0)
    elbows = _elbows(ranks)
    final = pd.DataFrame(spectra, columns=SPECTRA_COLUMNS).groupby(["layer", "epoch"]).mean()
    elbows["num_spikes"] = [final.loc[name].iloc[-1]["num_spikes"] for name in elbows.index]
    figures = {
        "pruning": save_figure(pruning_figure(curves), out / "pruning.png"),
        "rank": save_figure(rank_figure(ranks, elbows), out / "rank.png"),
        "elbows": save_figure(elbow_figure(residuals), out / "elbows.png"),
    }
    return _section(curves, elbows, final, evidence, figures, size, test_size, results)


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
    panels[0].set_ylabel("test accuracy (no retraining; mean ± std over networks)")
    panels[0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return figure


def rank_figure(ranks: Sequence[Sequence[object]], elbows: pd.DataFrame):
    plt = pyplot()
    mean = pd.DataFrame(ranks, columns=RANK_COLUMNS).groupby(["layer", "k"])[["accuracy", "residual"]].mean()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for name in LAYERS:
        curve = mean.loc[name]
        line = left.plot(curve.index, curve["accuracy"], marker=".", ms=3, label=LAYER_LABELS[name])[0]
        left.axvline(elbows.loc[name, "accuracy_elbow"], color=line.get_color(), ls=":", lw=1)
        label = f"{LAYER_LABELS[name]}, elbow k = {elbows.loc[name, 'residual_elbow']:.3g}"
        right.plot(curve.index, curve["residual"], marker=".", ms=3, color=line.get_color(), label=label)
    left.set_xscale("log")
    left.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    for axes in (left, right):
        axes.set_xlabel("rank k of the approximation W_k")
        axes.axvline(PUBLISHED_RANK, color="gray", ls="--", lw=1)
    left.set_ylabel("test accuracy with that layer replaced by W_k")
    left.set_title(f"accuracy (dotted: smallest k reaching {ACCURACY_SHARE:.0%} of full)", fontsize=10)
    left.legend(fontsize=7)
    right.set_ylabel("||W - W_k||_F / ||W||_F")
    right.set_title(f"residual (mean over networks); dashed: k = {PUBLISHED_RANK}", fontsize=10)
    right.legend(fontsize=7)
    figure.tight_layout()
    return figure


def elbow_figure(residuals: Sequence[Sequence[object]]):
    """Residual curves of the hidden layers, trained and nulls, with every network's elbow."""
    plt = pyplot()
    frame = pd.DataFrame(residuals, columns=RESIDUAL_COLUMNS)
    figure, panels = plt.subplots(1, len(PRUNED_LAYERS), figsize=(11, 4.2), dpi=100)
    for axes, name in zip(panels, PRUNED_LAYERS, strict=True):
        axes.axvspan(*NEAR_RANK, color="gray", alpha=0.15, label=f"k in [{NEAR_RANK[0]:g}, {NEAR_RANK[1]:g}]")
        for condition in ELBOW_CONDITIONS:
            part = frame[(frame["layer"] == name) & (frame["condition"] == condition)]
            mean = part.groupby("k")["residual"].mean()
            style = {"trained": "-", "epoch0": "--", "gaussian": ":"}[condition]
            line = axes.plot(mean.index, mean.to_numpy(), ls=style, label=ELBOW_LABELS[condition])[0]
            for _, curve in part.sort_values("k").groupby("seed"):
                k = residual_elbow(curve["residual"].to_numpy())
                axes.plot([k], [curve["residual"].iloc[k - 1]], "o", ms=5, mfc="none", color=line.get_color())
        axes.set_title(f"{LAYER_LABELS[name]}: residual curves; circles: each network's elbow", fontsize=10)
        axes.set_xlabel("rank k")
    panels[0].set_ylabel("||W - W_k||_F / ||W||_F")
    panels[0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _elbows(rows: Sequence[Sequence[object]]) -> pd.DataFrame:
    """Per layer (mean over networks): full rank and accuracy, both elbows, Heitmann's k=10 columns."""

    def per_network(table: pd.DataFrame) -> pd.Series:
        table = table.sort_values("k")
        full = table["accuracy"].iloc[-1]
        at = table.iloc[min(PUBLISHED_RANK, len(table)) - 1]
        return pd.Series(
            {
                "rank": len(table),
                "full_accuracy": full,
                "residual_elbow": residual_elbow(table["residual"].to_numpy()),
                "accuracy_elbow": table["k"][table["accuracy"] >= ACCURACY_SHARE * full].min(),
                f"norm_kept_pct_at_{PUBLISHED_RANK}": at["norm_kept_pct"],
                f"accuracy_drop_pts_at_{PUBLISHED_RANK}": 100.0 * (full - at["accuracy"]),
            }
        )

    frame = pd.DataFrame(rows, columns=RANK_COLUMNS)
    networks = frame.groupby(["layer", "seed"])[RANK_COLUMNS[2:]].apply(per_network)
    return networks.groupby("layer").mean().reindex(list(LAYERS))


def _section(
    curves: pd.DataFrame,
    elbows: pd.DataFrame,
    spectra: pd.DataFrame,
    evidence: Evidence,
    figures: dict[str, Path],
    size: Size,
    test_size: int,
    results: Path,
) -> str:
    command = "python -m experiments.pruning" + (" --smoke" if size is SMOKE else "")
    fractions = [f for f in TABLE_FRACTIONS if f in size.fractions]
    pruning_table = markdown_table(
        ["layer", "criterion", *[f"acc@{f:g}" for f in fractions], "mean over 0.1-0.9 [95% interval]"],
        [
            [LAYER_LABELS[n], c, *[curves.loc[(n, c, f), "mean"] for f in fractions],
             str(evidence.interval(f"area_{short(n)}", c))]
            for n in PRUNED_LAYERS
            for c in CRITERIA
        ],
    )  # fmt: skip
    frame_table = markdown_table(
        ["layer", "epoch", "FP", "FP / tight-frame minimum"],
        [[LAYER_LABELS[n], e, v["frame_potential"], v["frame_potential_normalized"]]
         for (n, e), v in spectra.iterrows() if n in PRUNED_LAYERS],
    )  # fmt: skip
    rank_table = markdown_table(
        ["layer", *elbows.columns], [[LAYER_LABELS[n], *row] for n, row in elbows.iterrows()]
    )
    elbow_table = markdown_table(
        ["layer", "statistic", *[ELBOW_LABELS[c] for c in ELBOW_CONDITIONS]],
        [[LAYER_LABELS[n], s, *[str(evidence.interval(f"{s}_{short(n)}", c)) for c in ELBOW_CONDITIONS]]
         for n in PRUNED_LAYERS for s in ("elbow", "knee_depth")],
    )  # fmt: skip
    first = elbows.loc[LAYERS[0]]
    published_kept, published_drop = PUBLISHED_CONV2_AT_10
    return "\n".join(
        [
            "## Pruning by frame potential, magnitude and at random; rank-k elbows (Heitmann, 2020)",
            "",
            f"`{command}`: LeNet-300-100 as 64-300-100-10 on scikit-learn's digits, {size.seeds} networks "
            f"(seeds 0-{size.seeds - 1}) trained {describe_training(size.epochs)}; test accuracy on the "
            f"{test_size} held-out digits, {elbows['full_accuracy'].iloc[0]:.4f} unpruned (mean). Units are "
            f"removed without retraining; random: {size.random_draws} orders per network; means over "
            "networks "
            "(and orders). The rules are in `experiments/pruning.py`: `max_mag` and `max_fp` are Heitmann's "
            "*Magnitude* and *Frame-potential pruning* (smallest norm, smallest FP contribution first), "
            "`min_*` their reverses.",
            "",
            "Differences from Heitmann's (2020) setup: MNIST (784 inputs) becomes the 8x8 digits (64 inputs) "
            f"and 50K SGD iterations become {size.epochs} epochs; his pruning curves are one network each "
            "(random: 5 orders), here intervals over networks. His rank-k elbow at k = 10 is an observation "
            "on "
            "the first FC layers of Conv-2, Conv-6 and VGG19 on CIFAR-10, with an elbow method he does not "
            "specify; here LeNet-300-100's hidden layers on the digits (also 10 classes), with the kneedle "
            "elbow.",
            "",
            pruning_table,
            "",
            figure_link(figures["pruning"], results, "accuracy vs fraction pruned"),
            "",
            "Frame potential of the hidden layers (from the run files, mean over networks), at the "
            "initialization and the end:",
            "",
            frame_table,
            "",
            f"Rank-k: each layer in turn replaced by `W_k` (means over networks); `residual_elbow` is the "
            "elbow "
            f"of `||W - W_k||_F` (kneedle: the k farthest below the chord of the rescaled curve), "
            f"`accuracy_elbow` the smallest k reaching {ACCURACY_SHARE:.0%} of the full accuracy; the "
            f"`_at_{PUBLISHED_RANK}` columns are Heitmann's figure 8 (`100 ||W_k||_F / ||W||_F` and the "
            "accuracy lost, in points); `num_spikes`: eigenvalues above the Marchenko-Pastur bulk at "
            f"the end (run file). For comparison, his Conv-2 keeps {published_kept}% of the norm at k = "
            f"{PUBLISHED_RANK} and loses {published_drop} points; fc1 here keeps "
            f"{first[f'norm_kept_pct_at_{PUBLISHED_RANK}']:.1f}% and loses "
            f"{first[f'accuracy_drop_pts_at_{PUBLISHED_RANK}']:.2f}.",
            "",
            rank_table,
            "",
            figure_link(figures["rank"], results, "rank-k approximation"),
            "",
            "Residual elbows of the hidden layers against their nulls, mean [95% interval] over the "
            "networks; `knee_depth` is how far the elbow lies below the chord of the rescaled curve (0: a "
            "straight or concave curve, no elbow; 1: a right angle):",
            "",
            elbow_table,
            "",
            figure_link(figures["elbows"], results, "residual elbows, trained and nulls"),
            "",
            _knee_sentence(evidence),
            "",
            _crossing(curves),
            "",
            f"Verdicts, derived from `results/{pruning.STUDY}/evidence.csv` by the rules in "
            "`experiments/pruning.py`:",
            "",
            verdicts_markdown(derive_verdicts(pruning.CLAIMS, evidence)),
        ]
    )


def _crossing(curves: pd.DataFrame) -> str:
    """Where, if anywhere, `max_fp`'s mean curve falls below random's."""
    crossings = []
    for name in PRUNED_LAYERS:
        gap = curves.loc[(name, "max_fp"), "mean"] - curves.loc[(name, "random"), "mean"]
        below = gap.index[(gap < 0) & (gap.index > 0)]
        if below.size:
            crossings.append(f"from {below[0]:.0%} pruned in {LAYER_LABELS[name]}")
    if not crossings:
        return "`max_fp`'s mean accuracy stays at or above random's at every fraction pruned."
    return (
        f"`max_fp`'s mean accuracy falls below random's once most units are gone ({', '.join(crossings)}): "
        "by construction it keeps the most redundant set of rows (the largest frame potential), so the few "
        "survivors span few input directions, while a random subset keeps them spread."
    )


def _knee_sentence(evidence: Evidence) -> str:
    """Whether each trained layer's residual curve bends more than its nulls' (the knee depth)."""
    parts = []
    for name in PRUNED_LAYERS:
        trained, *nulls = (evidence.interval(f"knee_depth_{short(name)}", c) for c in ELBOW_CONDITIONS)
        deeper = all(trained.above(null) for null in nulls)
        word = "bends more than both nulls'" if deeper else "does not bend more than both nulls'"
        parts.append(
            f"{LAYER_LABELS[name]}'s trained curve {word} (knee depth {trained.mean:.3g} against "
            + " and ".join(f"{null.mean:.3g}" for null in nulls)
            + ")"
        )
    return (
        "Knee depth: "
        + "; ".join(parts)
        + ". On these rescaled axes a right angle has depth 1: whatever elbow there is, is shallow."
    )
