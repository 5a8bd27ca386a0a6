"""Regularization sweep (Martin, 2018): L2 on the FC layers against lambda_min, rank loss and alpha.

Martin (2018) trains a small AlexNet on CIFAR-10 for 20 epochs with an L2 penalty on its fully
connected layers and sees the smallest eigenvalue ``lambda_min`` of their ``W^T W`` fall as the
penalty grows (0.0414 at 0.0003, 0.008 at 0.0005), until the rank collapses. Here the same
MiniAlexNet-style net (``configs/reg_sweep.yaml``: conv 5x5 64, pool, conv 5x5 64, pool, FC 384,
FC 192, classifier) trains on scikit-learn's digits for 20 epochs, once per ``fc_l2`` in
:data:`VALUES` (up to strengths where the FC layers collapse); the section reports ``lambda_min``,
``rank_loss``, ``alpha`` and ``log_norm`` of fc1 and fc2 per epoch and at the end, with test accuracy.

Run: ``python -m experiments.reg_sweep`` (about 4 minutes on 2 busy cores; ``--smoke``: seconds, into
``runs/smoke/``; ``--report-only``: rewrite the section from existing runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments.results import figure_link, markdown_table
from experiments.study import parse_study_args, run_sweep_study
from experiments.sweep_report import (
    SweepResults,
    describe_setup,
    epoch_table,
    short_layer,
    spearman,
    sweep_dir,
    write_figures,
)
from spectral_callbacks import format_cell

__all__ = ["KNOB", "PARAMETER", "STUDY", "VALUES", "main", "section"]

STUDY = "reg_sweep"
MODULE = "experiments.reg_sweep"
KNOB = "model.init_args.fc_l2"
PARAMETER = "fc_l2"
# 0 and Martin's (2018) range, then larger until the FC layers collapse: L2's shrinkage compounds per SGD
# step, and 20 epochs of the 1,257 digits are far fewer steps than 20 epochs of CIFAR-10.
VALUES = ("0", "1e-4", "3e-4", "5e-4", "1e-3", "3e-3", "1e-2", "3e-2", "1e-1")
SMOKE_VALUES = ("0", "1e-1")
SMOKE_OVERRIDES = (
    "--trainer.max_epochs=2",
    "--data.init_args.max_samples=200",
    "--data.init_args.batch_size=16",
)
METRICS = ("lambda_min", "rank_loss", "alpha")  # figures, per epoch
TABLE_METRICS = ("lambda_min", "rank_loss", "alpha", "log_norm")  # table at the end
PUBLISHED_LAMBDA_MIN = {3e-4: 0.0414, 5e-4: 0.008}  # Martin (2018): an FC layer's at these strengths
CHANCE_LEVEL = 0.2  # test accuracy below this (chance: 0.1 for 10 classes) means the model has collapsed
PUBLISHED_STEPS = 20 * 50_000 // 32  # Martin (2018): 20 epochs of CIFAR-10, at Keras' default batch size


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the sweep (unless ``--report-only``), write figures and the RESULTS.md section.

    Returns:
        The directory of the figures.
    """
    options = parse_study_args(
        MODULE, __doc__.split("\n\n")[0], argv,
        values=VALUES, smoke_values=SMOKE_VALUES, smoke_overrides=SMOKE_OVERRIDES, metrics=METRICS,
    )  # fmt: skip
    return run_sweep_study(options, STUDY, KNOB, PARAMETER, section)


def section(
    results: SweepResults, out: Path, results_file: Path, metrics: Sequence[str], command: str
) -> str:
    """The markdown section: setup, verdict, tables and figures, all from the runs."""
    fc = results.layers("linear")[:-1]  # the layers fc_l2 applies to: every Linear but the classifier
    finals = {metric: results.final(metric, fc) for metric in TABLE_METRICS}
    accuracy = results.final_metric("test/accuracy")
    header = [PARAMETER, "test accuracy"] + [
        f"{short_layer(layer)} {metric}" for layer in fc for metric in TABLE_METRICS
    ]
    rows = [
        [results.values[label], accuracy[label]]
        + [finals[metric][layer][label] for layer in fc for metric in TABLE_METRICS]
        for label in results.labels
    ]
    figures = {
        metric: write_figures(results, metric, out, layers=fc, esd=metric == metrics[0], average=False)
        for metric in metrics
    }
    epoch = results.table(metrics[0], fc).common_epoch()
    links = []
    for metric, written in figures.items():
        for key in ("parameter", "training", "esd"):
            if key in written:
                links.append(figure_link(written[key], results_file, _caption(metric, key, epoch)))
    return "\n\n".join(
        [
            "## Regularization sweep (Martin, 2018)",
            f"`{command}`: {len(results.runs)} runs, {describe_setup(results)} "
            f"`fc_l2` is the penalty `fc_l2 * ||W||^2` on {', '.join(f'`{short_layer(x)}`' for x in fc)} "
            "added to the loss (Keras' `l2(fc_l2)` regularizer, the one Martin (2018) uses).",
            verdict(results, fc, finals, accuracy),
            f"**At the end of training (epoch {epoch}).**",
            markdown_table(header, rows),
            f"**`{metrics[0]}` per epoch** (CSV of every metric: "
            f"`spectral-callbacks compare {sweep_dir(results)} --metric {metrics[0]} --out table.csv`).",
            epoch_table(results, metrics[0], fc),
            *links,
        ]
    )


def verdict(
    results: SweepResults,
    fc: Sequence[str],
    finals: dict[str, dict[str, dict[str, float]]],
    accuracy: dict[str, float],
) -> str:
    """Sentences on agreement with Martin (2018), computed from the values at the end of training."""
    labels = results.labels
    strengths = [results.values[label] for label in labels]
    lambda_min, rank_loss = finals["lambda_min"], finals["rank_loss"]
    rho = {layer: spearman(strengths, [lambda_min[layer][label] for label in labels]) for layer in fc}
    none, strongest = labels[0], labels[-1]
    parts = [
        "At the end of training `lambda_min` of "
        + " and ".join(
            f"{short_layer(layer)} goes from {format_cell(lambda_min[layer][none])} at fc_l2 = "
            f"{format_cell(strengths[0])} to {format_cell(lambda_min[layer][strongest])} at "
            f"{format_cell(strengths[-1])} (Spearman rho {format_cell(rho[layer])})"
            for layer in fc
        )
        + "."
    ]
    parts += [sentence for sentence in (_published_pair(results, fc, lambda_min),) if sentence]
    collapsed = [label for label in labels if any(rank_loss[layer][label] > 0 for layer in fc)]
    full_rank = [label for label in labels if label not in collapsed]
    if len(full_rank) > 1:
        parts.append(_smallest_first(results, fc, finals, full_rank[-1]))
    parts += [sentence for sentence in (_alpha_trend(results, fc, finals["alpha"]),) if sentence]
    best = format_cell(max(accuracy.values()))
    if collapsed:
        first = collapsed[0]
        lost = ", ".join(f"{short_layer(layer)} {format_cell(rank_loss[layer][first])}" for layer in fc)
        norm = min(10 ** (finals["log_norm"][layer][first] - finals["log_norm"][layer][none]) for layer in fc)
        together = (
            " On this grid the numerical rank goes only with the whole layer, and accuracy with it, as "
            "Martin's blog puts it: rank collapse means over-regularization."
            if accuracy[first] < CHANCE_LEVEL
            else ""
        )
        parts.append(
            f"The rank collapses (rank_loss > 0 with numpy's tolerance) from fc_l2 = "
            f"{format_cell(results.values[first])} on (rank lost: {lost}), with the squared norm of the "
            f"layers down to {format_cell(norm)} of its unpenalized value and test accuracy "
            f"{format_cell(accuracy[first])} (best {best}).{together}"
        )
    else:
        parts.append(
            f"No FC layer loses rank up to fc_l2 = {format_cell(strengths[-1])}; test accuracy there is "
            f"{format_cell(accuracy[strongest])} (best {best})."
        )
    falls = all(value < 0 for value in rho.values())
    if falls and collapsed:
        agreement = "Agrees with Martin (2018)"
    elif falls:
        agreement = "Agrees with Martin (2018) on the direction, without a rank collapse"
    else:
        agreement = "Does not agree with Martin (2018)"
    if falls and _weaker_than_published(results, fc, lambda_min):
        agreement += ", at stronger penalties than the blog's"
    parts.append(
        "Why: each SGD step multiplies the penalized weights by about 1 - 2 lr fc_l2 on top of what the "
        "data gradient does, and the data sustain only the directions the task uses, so the other "
        "directions (the smallest eigenvalues) decay geometrically with the number of steps; fewer "
        "steps than Martin's need a proportionally stronger penalty for the same decay."
    )
    return f"**{agreement}.**\n\n" + "\n".join(f"- {part}" for part in parts)


def _weaker_than_published(
    results: SweepResults, fc: Sequence[str], lambda_min: dict[str, dict[str, float]]
) -> bool:
    """Whether lambda_min falls by less than half Martin's (2018) factor between his two strengths."""
    by_value = {value: label for label, value in results.values.items()}
    low, high = sorted(PUBLISHED_LAMBDA_MIN)
    if low not in by_value or high not in by_value:
        return False
    published = PUBLISHED_LAMBDA_MIN[low] / PUBLISHED_LAMBDA_MIN[high]
    return all(
        lambda_min[layer][by_value[low]] / lambda_min[layer][by_value[high]] < published / 2 for layer in fc
    )


def _published_pair(
    results: SweepResults, fc: Sequence[str], lambda_min: dict[str, dict[str, float]]
) -> str | None:
    """Our lambda_min ratio between Martin's (2018) two strengths, next to his, if both were run."""
    by_value = {value: label for label, value in results.values.items()}
    low, high = sorted(PUBLISHED_LAMBDA_MIN)
    if low not in by_value or high not in by_value:
        return None
    theirs = PUBLISHED_LAMBDA_MIN[low], PUBLISHED_LAMBDA_MIN[high]
    ratios = [lambda_min[layer][by_value[low]] / lambda_min[layer][by_value[high]] for layer in fc]
    shown = ", ".join(f"{short_layer(layer)} {format_cell(r)}" for layer, r in zip(fc, ratios, strict=True))
    steps = results.records[by_value[low]]["steps"]
    return (
        f"From fc_l2 = {format_cell(low)} to {format_cell(high)} it falls by a factor of {shown} here, in "
        f"Martin (2018) by {format_cell(theirs[0] / theirs[1])} ({theirs[0]} to {theirs[1]}); our runs "
        f"take {steps} SGD steps, Martin's 20 epochs of CIFAR-10 about {PUBLISHED_STEPS}"
        " (at Keras' default batch size of 32; the blog does not give its own)."
    )


def _smallest_first(
    results: SweepResults, fc: Sequence[str], finals: dict[str, dict[str, dict[str, float]]], label: str
) -> str:
    """How much more lambda_min fell than the whole layer's norm, at the strongest full-rank strength."""
    none = results.labels[0]
    lambda_min, log_norm = finals["lambda_min"], finals["log_norm"]
    drops = ", ".join(
        f"{short_layer(layer)} {format_cell(lambda_min[layer][label] / lambda_min[layer][none])} against "
        f"{format_cell(10 ** (log_norm[layer][label] - log_norm[layer][none]))}"
        for layer in fc
    )
    return (
        f"At fc_l2 = {format_cell(results.values[label])}, the strongest penalty without rank loss, "
        f"lambda_min is a far smaller fraction of its unpenalized value than the squared norm "
        f"(lambda_min against norm: {drops}): the smallest eigenvalues go first."
    )


def _alpha_trend(results: SweepResults, fc: Sequence[str], alpha: dict[str, dict[str, float]]) -> str | None:
    """Alpha against the strength, and where it drops below 2 (very heavy-tailed: Martin & Mahoney, 2021)."""
    labels = results.labels
    strengths = [results.values[label] for label in labels]
    rho = ", ".join(
        f"{short_layer(layer)} {format_cell(spearman(strengths, [alpha[layer][label] for label in labels]))}"
        for layer in fc
    )
    below = [label for label in labels if any(alpha[layer][label] < 2 for layer in fc)]
    where = f"; below 2 from fc_l2 = {format_cell(results.values[below[0]])}" if below else ""
    return f"Alpha of the FC layers falls with the penalty too (Spearman rho {rho}){where}."


def _caption(metric: str, key: str, epoch: int) -> str:
    if key == "parameter":
        return f"{metric} at epoch {epoch} against fc_l2"
    if key == "esd":
        return f"ESDs of the FC layers at epoch {epoch}"
    return f"{metric} of the FC layers during training"


if __name__ == "__main__":
    main()
