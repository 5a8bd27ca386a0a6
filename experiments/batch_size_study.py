"""Alpha and phases against the batch size (Martin & Mahoney, 2021), at equal steps and at equal epochs.

Martin & Mahoney (2021) find that training drives the power-law exponent alpha of the layers' ESDs
into 2-4, and that, all else equal, smaller batches give heavier tails (lower alpha), enough to move
a small model through all 5+1 phases of training. Here the MiniAlexNet-style net of Martin (2018)
trains on scikit-learn's digits with the batch sizes :data:`SIZES` and the seeds :data:`SEEDS` (a
seed fixes the initialization, the data split and the data order, the same for every batch size),
in two arms:

- ``steps`` (``configs/batch_size_steps.yaml``): every batch size takes the same number of SGD
  steps, so the batch size is the only difference;
- ``epochs`` (``configs/batch_size.yaml``): the same number of epochs, the source's setting, in
  which smaller batches also take many more steps.

Averages over layers are the analysis's own (:func:`spectral_callbacks.analysis.averages.averaged_layers`:
the fitted layers without the classifier), with the layers whose ESD has fewer than
:data:`MIN_FIT_EVALS` eigenvalues given the status ``"skipped"``, the status the analysis gives a
layer below its ``min_evals``. The claims and their rules are :data:`CLAIMS`; the verdicts come
from ``evidence.csv``.

Run: ``python -m experiments.batch_size_study`` (about 7 CPU-minutes, 12 minutes on 2 busy cores;
``--smoke``: about half a CPU-minute, into ``runs/smoke/``; ``--report-only``: rewrite the outputs
from existing runs).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.phases import phase_figure
from experiments.results import (
    cpu_seconds,
    figure_link,
    markdown_table,
    parse_study,
    pyplot,
    save_figure,
    single_threaded,
    study_parser,
    write_csv,
    write_section,
)
from experiments.study import CONFIGS_DIR
from experiments.sweep import read_metrics, run_name, seed_dir, sweep
from experiments.sweep_report import short_layer, spearman
from experiments.verdicts import (
    Claim,
    Evidence,
    Verdict,
    derive_verdicts,
    evidence_path,
    mean_interval,
    read_evidence,
    verdicts_markdown,
    write_evidence,
)
from spectral_callbacks import PHASES, averaged_layers, format_cell, open_run

__all__ = ["ARMS", "CLAIMS", "KNOB", "SEEDS", "SIZES", "STUDY", "main"]

STUDY = "batch_size"
MODULE = "experiments.batch_size_study"
KNOB = "data.init_args.batch_size"
SIZES = ("4", "16", "64", "256")
SEEDS = (0, 1, 2, 3, 4)
SMOKE_SIZES = ("8", "64")
SMOKE_SEEDS = (0, 1)
# A power law fitted to 25 eigenvalues (the 1-channel conv1's pooled slices) or 10 (the classifier)
# says little; Martin & Mahoney (2021) calibrate their estimator on 1,000.
MIN_FIT_EVALS = 100
ALPHA_RANGE = (2.0, 4.0)  # Martin & Mahoney (2021): well-trained layers' alphas
ALPHA_ALLOWED = (2.0, 6.0)  # their wider "allowed" range
PERMUTATIONS = 20_000
FINAL_COLUMNS = (
    "arm", "seed", "batch_size", "steps", "test_accuracy", "layer", "num_evals", "averaged",
    "alpha", "alpha_weighted", "phase",
)  # fmt: skip
PHASE_COLUMNS = ("arm", "seed", "batch_size", "layer", "snapshot", "epoch", "step", "phase")
_SMOKE_DATA = "--data.init_args.max_samples=200"
_SMOKE_CALLBACK = (
    '--trainer.callbacks=[{"class_path": "spectral_callbacks.SpectralCallback", '
    '"init_args": {"every_n_steps": 4, "save_weights": false, "tensorboard": false}}]'
)


@dataclass(frozen=True)
class Arm:
    """One arm of the study: its config file, what it holds equal, and its smoke settings."""

    name: str
    config: str
    equal: str
    smoke: tuple[str, ...]


ARMS = (
    Arm(
        "steps",
        "batch_size_steps.yaml",
        "equal steps",
        ("--trainer.max_steps=8", _SMOKE_CALLBACK, _SMOKE_DATA),
    ),
    Arm("epochs", "batch_size.yaml", "equal epochs", ("--trainer.max_epochs=2", _SMOKE_DATA)),
)


@dataclass
class Run:
    """One finished fit, read back: per layer its alphas and phases at every analyzed snapshot."""

    arm: str
    seed: int
    size: int
    steps: int
    test_accuracy: float
    examples: dict[str, int]
    num_evals: dict[str, int]
    epochs: np.ndarray
    snapshot_steps: np.ndarray
    metrics: dict[str, dict[str, np.ndarray]]  # metric -> layer -> values per snapshot
    phases: dict[str, list[str]]
    averaged: list[str]  # the layers in the model average at the last snapshot
    average: dict[str, np.ndarray]  # metric -> model average per snapshot

    @property
    def fitted(self) -> list[str]:
        return [layer for layer, count in self.num_evals.items() if count >= MIN_FIT_EVALS]


def main(argv: Sequence[str] | None = None) -> Path:
    """Train both arms (unless ``--report-only``), then write the CSVs, figures and section.

    Returns:
        The directory of the study's outputs.
    """
    parser = study_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--report-only", action="store_true", help="write the outputs from existing runs")
    args = parse_study(parser, argv)
    sizes, seeds = (SMOKE_SIZES, SMOKE_SEEDS) if args.smoke else (SIZES, SEEDS)
    out = args.out / STUDY
    if not args.report_only:
        train(args.runs, sizes, seeds, out, smoke=args.smoke)
    runs = [read_run(args.runs, arm, seed, size) for arm in ARMS for seed in seeds for size in sizes]
    write_tables(runs, out)
    evidence = collect_evidence(runs)
    write_evidence(evidence_path(args.out, STUDY), evidence)
    command = f"python -m {MODULE}" + (" --smoke" if args.smoke else "")
    text = section(runs, read_evidence(evidence_path(args.out, STUDY)), out, args.results, command)
    write_section(STUDY, text, args.results)
    print(f"wrote the {STUDY} section of {args.results} and its outputs in {out}")
    return out


def train(runs: Path, sizes: Sequence[str], seeds: Sequence[int], out: Path, *, smoke: bool) -> None:
    """Sweep the batch size per arm and seed; the CPU seconds of each arm go to ``cpu.csv``."""
    rows = []
    with single_threaded():
        for arm in ARMS:
            started = cpu_seconds()
            for seed in seeds:
                sweep(
                    [CONFIGS_DIR / arm.config], KNOB, sizes, runs=runs, study=f"{STUDY}/{arm.name}",
                    overrides=[*(arm.smoke if smoke else ()), f"--data.init_args.seed={seed}"],
                    overwrite=True, seed=seed,
                )  # fmt: skip
            rows.append([arm.name, len(seeds) * len(sizes), cpu_seconds() - started])
    write_csv(out / "cpu.csv", ["arm", "fits", "cpu_seconds"], rows)


def read_run(runs: Path, arm: Arm, seed: int, size: str) -> Run:
    """One fit's run file and ``metrics.json``; the model average as :func:`averaged_layers` selects it."""
    directory = seed_dir(runs / STUDY / arm.name, seed) / run_name(KNOB, size)
    record = read_metrics(directory)
    with open_run(directory) as reader:
        count = reader.epochs.size
        layers = reader.layers
        num_evals = {
            layer: int(reader.layer_info(layer)["M"]) * int(reader.layer_info(layer)["num_slices"])
            for layer in layers
        }
        metrics = {
            metric: {layer: np.asarray(reader.metric(metric, layer)[:count], dtype=float) for layer in layers}
            for metric in ("alpha", "alpha_weighted")
        }
        statuses = {
            layer: [status for status, _ in reader.layer_status(layer)[:count]]
            if num_evals[layer] >= MIN_FIT_EVALS
            else ["skipped"] * count
            for layer in layers
        }
        chosen = [
            [layers[i] for i in averaged_layers([statuses[layer][k] for layer in layers])]
            for k in range(count)
        ]
        average = {
            metric: np.array([_mean([values[layer][k] for layer in chosen[k]]) for k in range(count)])
            for metric, values in metrics.items()
        }
        return Run(
            arm.name, seed, int(size), int(record["steps"]),
            float(record["metrics"].get("test/accuracy", np.nan)), record["examples"], num_evals,
            np.asarray(reader.epochs[:count]), np.asarray(reader.steps[:count]), metrics,
            {layer: list(reader.phases(layer)[:count]) for layer in layers}, chosen[-1], average,
        )  # fmt: skip


def _mean(values: Sequence[float]) -> float:
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def write_tables(runs: Sequence[Run], out: Path) -> None:
    """``final.csv`` (per run and layer, last snapshot; the ``model average`` row has the averaged
    layers' eigenvalues and no phase) and ``phases.csv`` (per run, layer and snapshot)."""
    final, phases = [], []
    for run in runs:
        head = [run.arm, run.seed, run.size, run.steps, run.test_accuracy]
        for layer, count in run.num_evals.items():
            values = [run.metrics[metric][layer][-1] for metric in ("alpha", "alpha_weighted")]
            final.append(
                [*head, short_layer(layer), count, layer in run.averaged, *values, run.phases[layer][-1]]
            )
            phases += [
                [run.arm, run.seed, run.size, short_layer(layer), k, int(epoch), int(step), label]
                for k, (epoch, step, label) in enumerate(
                    zip(run.epochs, run.snapshot_steps, run.phases[layer], strict=True)
                )
            ]
        average = [run.average[metric][-1] for metric in ("alpha", "alpha_weighted")]
        evals = sum(run.num_evals[layer] for layer in run.averaged)
        final.append([*head, "model average", evals, True, *average, "n/a"])
    write_csv(out / "final.csv", FINAL_COLUMNS, final)
    write_csv(out / "phases.csv", PHASE_COLUMNS, phases)


# -- evidence and claims ------------------------------------------------------------------------------
def collect_evidence(runs: Sequence[Run]) -> Evidence:
    """The statistics the claims' rules read, per arm and seed (see :data:`CLAIMS`)."""
    rows: list[tuple[str, str, int, float]] = []
    for arm in ARMS:
        by_seed = _by_seed(runs, arm.name)
        finals = {}
        for seed, group in by_seed.items():
            sizes = [run.size for run in group]
            final = [run.average["alpha"][-1] for run in group]
            finals[seed] = (sizes, final)
            shuffled = np.random.default_rng(seed).permutation(sizes)
            rows += [
                ("rho_final", arm.name, seed, spearman(sizes, final)),
                ("rho_final", f"{arm.name}_shuffled", seed, spearman(list(shuffled), final)),
            ]
            for layer in group[0].num_evals:
                values = [run.metrics["alpha"][layer][-1] for run in group]
                rows.append((f"rho_final_{short_layer(layer)}", arm.name, seed, spearman(sizes, values)))
            for run in group:
                condition = f"{arm.name}_{run.size}"
                rows += [
                    ("test_accuracy", condition, seed, run.test_accuracy),
                    ("steps", condition, seed, run.steps),
                    ("average_alpha", condition, seed, run.average["alpha"][-1]),
                ]
            rows += _range_rows(group, arm.name, seed) + _phase_rows(group, arm.name, seed)
        rows.append(("rho_final_permutation_p", arm.name, 0, _permutation_p(finals, seed=len(rows))))
    return Evidence(rows)


def _by_seed(runs: Sequence[Run], arm: str) -> dict[int, list[Run]]:
    seeds = sorted({run.seed for run in runs if run.arm == arm})
    return {
        seed: sorted((r for r in runs if r.arm == arm and r.seed == seed), key=lambda r: r.size)
        for seed in seeds
    }


def _range_rows(group: Sequence[Run], arm: str, seed: int) -> list[tuple[str, str, int, float]]:
    """Shares of the fitted layer-runs with alpha in 2-4 and 2-6, at initialization and at the end."""
    rows = []
    for moment, index in (("init", 0), ("end", -1)):
        alphas = np.array([run.metrics["alpha"][layer][index] for run in group for layer in run.fitted])
        for (low, high), name in ((ALPHA_RANGE, "share_2_4"), (ALPHA_ALLOWED, "share_2_6")):
            rows.append((name, f"{arm}_{moment}", seed, float(np.mean((alphas >= low) & (alphas <= high)))))
        rows.append(
            ("average_alpha", f"{arm}_{moment}", seed, _mean([run.average["alpha"][index] for run in group]))
        )
    return rows


def _phase_rows(group: Sequence[Run], arm: str, seed: int) -> list[tuple[str, str, int, float]]:
    """The batch size's effect on the fitted layers' phases: per layer, the number of distinct phases
    across the batch sizes (mean over layers; at initialization and at the end), which phases appear
    at the end and at any snapshot, and the rank correlation of the mean phase index with batch size."""

    def spread(index: int) -> float:
        return float(np.mean([len({run.phases[layer][index] for run in group}) for layer in group[0].fitted]))

    end = {run.phases[layer][-1] for run in group for layer in run.fitted}
    anywhere = {label for run in group for layer in run.fitted for label in run.phases[layer]}
    rows = [("phase_spread_init", arm, seed, spread(0)), ("phase_spread_end", arm, seed, spread(-1))]
    rows += [("phase_at_end", f"{arm}_{phase}", seed, float(phase in end)) for phase in PHASES]
    rows += [("phase_anywhere", f"{arm}_{phase}", seed, float(phase in anywhere)) for phase in PHASES]
    order = [
        _mean(
            [PHASES.index(run.phases[layer][-1]) for layer in run.fitted if run.phases[layer][-1] in PHASES]
        )
        for run in group
    ]
    rows.append(("phase_order_rho", arm, seed, spearman([run.size for run in group], order)))
    return rows


def _permutation_p(finals: dict[int, tuple[list[int], list[float]]], *, seed: int) -> float:
    """One-sided p-value of the mean over seeds of Spearman's rho, batch sizes shuffled within each seed."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    observed = np.mean([spearman(sizes, final) for sizes, final in finals.values()])
    total = np.zeros(PERMUTATIONS)
    for sizes, final in finals.values():
        x, y = rankdata(sizes), rankdata(final)
        y = (y - y.mean()) / (y.std() or 1.0)
        drawn = rng.permuted(np.tile(x, (PERMUTATIONS, 1)), axis=1)
        drawn = (drawn - x.mean()) / x.std()
        total += (drawn * y).mean(axis=1)
    null = total / len(finals)
    return float((np.sum(null >= observed - 1e-12) + 1) / (PERMUTATIONS + 1))


def _judge_trend(arm: str) -> Callable[[Evidence], Verdict]:
    """Rule of the batch-size claims (see their ``rule`` text)."""

    def judge(evidence: Evidence) -> Verdict:
        rho, null = evidence.interval("rho_final", arm), evidence.interval("rho_final", f"{arm}_shuffled")
        p = float(evidence.values("rho_final_permutation_p", arm)[0])
        holds, null_passes = rho.low > 0 and p < 0.05, null.low > 0
        word = "agrees" if holds and not null_passes else "partly" if rho.mean > 0 else "disagrees"
        return Verdict(
            word,
            f"rho per seed {rho}, permutation p = {p:.3g} ({PERMUTATIONS} draws); "
            f"labels shuffled once per seed: {null}",
            null_passes,
        )

    return judge


def _judge_range(evidence: Evidence) -> Verdict:
    """Rule of the alpha-range claim (see its ``rule`` text)."""
    share = {(name, moment): evidence.interval(name, f"steps_{moment}")
             for name in ("share_2_4", "share_2_6") for moment in ("init", "end")}  # fmt: skip
    strict = (
        share["share_2_4", "end"].above(share["share_2_4", "init"]) and share["share_2_4", "end"].mean >= 0.5
    )
    wide = (
        share["share_2_6", "end"].above(share["share_2_6", "init"]) and share["share_2_6", "end"].mean >= 0.5
    )
    rises = share["share_2_4", "end"].above(share["share_2_4", "init"])
    null_passes = share["share_2_4", "init"].mean >= 0.5
    word = "agrees" if strict and not null_passes else "partly" if wide or rises else "disagrees"
    average = [evidence.interval("average_alpha", f"steps_{moment}") for moment in ("init", "end")]
    return Verdict(
        word,
        f"share in 2-4: {share['share_2_4', 'init']} at initialization, {share['share_2_4', 'end']} at the "
        f"end; in 2-6: {share['share_2_6', 'init']} and {share['share_2_6', 'end']}; model-average alpha "
        f"{average[0]} to {average[1]}",
        null_passes,
    )


def _judge_phases(arm: str) -> Callable[[Evidence], Verdict]:
    """Rule of the 5+1 phases claims (see their ``rule`` text)."""

    def judge(evidence: Evidence) -> Verdict:
        end, init = evidence.interval("phase_spread_end", arm), evidence.interval("phase_spread_init", arm)
        order = evidence.interval("phase_order_rho", arm)
        at_end = [p for p in PHASES if evidence.values("phase_at_end", f"{arm}_{p}").min() > 0]
        anywhere = [p for p in PHASES if evidence.values("phase_anywhere", f"{arm}_{p}").max() > 0]
        spread, ordered = end.above(init), order.n > 1 and order.high < 0
        null_passes = not init.below(end)
        word = (
            "agrees"
            if len(at_end) == len(PHASES) and ordered and spread and not null_passes
            else "partly"
            if spread
            else "disagrees"
        )
        rho = str(order) if order.n else "undefined (every batch size ends in the same phases)"
        return Verdict(
            word,
            f"distinct end phases per layer across the batch sizes {end}, at initialization {init}; "
            f"phases at the end in every seed: {', '.join(at_end) or 'none'} "
            f"({len(at_end)} of {len(PHASES)}); "
            f"at any snapshot in some seed: {', '.join(anywhere)} ({len(anywhere)} of {len(PHASES)}); rank "
            f"correlation of phase order with batch size {rho}",
            null_passes,
        )

    return judge


_TREND = (
    "Statistic: per seed, Spearman's rho between the batch size and the final model-average alpha (conv2, "
    f"fc1, fc2: the analysis's average, layers under {MIN_FIT_EVALS} eigenvalues skipped); positive "
    "means smaller "
    "batches end with lower alpha. Holds when its 95% Student-t interval over the seeds lies above 0 and the "
    "permutation p-value of the mean rho (batch sizes shuffled within each seed) is below 0.05. Null: the "
    "same rho with the batch sizes shuffled once per seed; it passes if its interval lies above 0. Agrees: "
    "holds and the null does not pass; partly: mean rho above 0 otherwise; disagrees: mean rho at most 0."
)
_PHASES_RULE = (
    "Statistic: per seed and fitted layer (conv2, fc1, fc2), the number of distinct phase labels "
    "(`spectral_callbacks.spectra.phase_label`) across the batch sizes at the end, averaged over the layers; "
    "null: the same at initialization. Also Spearman's rho between batch size and the layers' mean phase "
    "index (phases in the order listed). Agrees: all 6 phases appear at the end in every seed, the end "
    "spread's 95% interval lies above the null's and the rho interval lies below 0; partly: the spread's "
    "interval lies above the null's but not all of that holds; disagrees: it does not. The null passes "
    "unless its interval lies below the end spread's."
)
CLAIMS = [
    Claim(
        "smaller_batch_lower_alpha",
        "Martin & Mahoney, 2021",
        "All else equal, including the number of SGD steps, smaller batches end training with heavier-tailed "
        "layers (lower alpha).",
        _TREND,
        _judge_trend("steps"),
    ),
    Claim(
        "smaller_batch_lower_alpha_equal_epochs",
        "Martin & Mahoney, 2021",
        "In the source's setting (equal epochs, so smaller batches also take more steps), smaller "
        "batches end "
        "training with lower alpha.",
        _TREND,
        _judge_trend("epochs"),
    ),
    Claim(
        "alpha_into_range",
        "Martin & Mahoney, 2021",
        "Training drives the layers' alpha into 2-4 (2-6 allowed).",
        "Statistic: per seed, the share of the fitted layer-runs (conv2, fc1, fc2 at every batch size, equal "
        "steps) with alpha in [2, 4], at the end; null: the same share at initialization (step 0). "
        "Agrees: the "
        "end share's 95% interval lies above the initial one's and its mean is at least 0.5; partly: "
        "that holds "
        "only for [2, 6], or the share rises but stays under 0.5; disagrees: neither. The null "
        "passes if half "
        "the layers are in [2, 4] at initialization already.",
        _judge_range,
    ),
    Claim(
        "five_plus_one_phases",
        "Martin & Mahoney, 2021",
        "Changing only the batch size (at equal steps) moves a small model through the 5+1 phases of "
        "training (random-like, bleeding-out, bulk+spikes, bulk-decay, heavy-tailed, rank-collapse), larger "
        "batches in earlier phases.",
        _PHASES_RULE,
        _judge_phases("steps"),
    ),
    Claim(
        "five_plus_one_phases_equal_epochs",
        "Martin & Mahoney, 2021",
        "The same in the source's setting (equal epochs, so smaller batches also take more steps).",
        _PHASES_RULE,
        _judge_phases("epochs"),
    ),
]


# -- the section and its figures ---------------------------------------------------------------------
def section(runs: Sequence[Run], evidence: Evidence, out: Path, results: Path, command: str) -> str:
    """The markdown section: setup, verdicts, tables and figures, all from the runs and the evidence."""
    figures = write_figures(runs, out)
    links = [figure_link(path, results, caption) for caption, path in figures.items()]
    seeds = sorted({run.seed for run in runs})
    first = runs[0]
    return "\n\n".join(
        [
            "## Alpha over training and batch size (Martin & Mahoney, 2021)",
            _setup(runs, out, command),
            verdicts_markdown(derive_verdicts(CLAIMS, evidence)),
            _confound(evidence),
            "**Differences from the source's setup.** Martin & Mahoney (2021) train MiniAlexNet on "
            "CIFAR-10 to convergence and read the phases off the ESDs by eye; here the data are 8x8 digits "
            f"({first.examples['train']} training examples), training is short (a CPU budget), the phases "
            "come from a fixed rule (`spectral_callbacks.spectra.phase_label`), and only conv2, fc1 and fc2 "
            "have ESDs large enough to fit.",
            f"**At the end of training** (mean over {len(seeds)} seeds, 95% Student-t interval in brackets; "
            "per-run, per-layer values in `final.csv`).",
            _final_table(runs, evidence),
            "**Rank correlation of final alpha with the batch size, per layer** (Spearman's rho per "
            "seed, mean and interval; positive: smaller batches lower alpha).",
            _rho_table(runs, evidence),
            "**Phases per layer.** Distinct phase labels across batch sizes and seeds at each "
            "snapshot, and the labels seen at any snapshot with their counts (labels per snapshot in "
            "`phases.csv`).",
            _phase_count_table(runs),
            "**Most frequent phase at the end** per batch size (count over seeds).",
            _end_phase_table(runs),
            *links,
        ]
    )


def _confound(evidence: Evidence) -> str:
    """What the equal-epochs arm confounds, in the numbers of both arms."""
    sizes = sorted({int(c.rsplit("_", 1)[1]) for c in evidence.conditions("test_accuracy")})
    small, large = sizes[0], sizes[-1]

    def cell(arm: str, statistic: str, size: int) -> str:
        return format_cell(evidence.interval(statistic, f"{arm}_{size}").mean)

    return (
        f"**Steps against epochs.** At equal epochs batch {large} takes {cell('epochs', 'steps', large)} "
        f"steps and ends at test accuracy {cell('epochs', 'test_accuracy', large)} (model-average alpha "
        f"{cell('epochs', 'average_alpha', large)}), batch {small} takes {cell('epochs', 'steps', small)} "
        f"and ends at {cell('epochs', 'test_accuracy', small)} (alpha "
        f"{cell('epochs', 'average_alpha', small)}): "
        "there the large batches' high alpha is mostly a network still near initialization. At equal steps "
        f"the alphas are {cell('steps', 'average_alpha', small)} (batch {small}) to "
        f"{cell('steps', 'average_alpha', large)} (batch {large}), with test accuracy "
        f"{cell('steps', 'test_accuracy', small)} and {cell('steps', 'test_accuracy', large)}: the smallest "
        "batch has the heaviest tails while it has seen the fewest examples and tests worst."
    )


def _setup(runs: Sequence[Run], out: Path, command: str) -> str:
    """The paragraph on the setup: what trained, the two arms, the averages and the CPU time."""
    first = runs[0]
    sizes = ", ".join(str(size) for size in sorted({run.size for run in runs}))
    seeds = ", ".join(str(seed) for seed in sorted({run.seed for run in runs}))
    skipped = ", ".join(
        short_layer(layer) for layer, count in first.num_evals.items() if count < MIN_FIT_EVALS
    )
    averaged = ", ".join(short_layer(layer) for layer in first.averaged)
    return (
        f"`{command}`: {len(runs)} fits of `MiniAlexNet`(channels=[64, 64], hidden=[384, 192]) on "
        f"scikit-learn's digits ({first.examples['train']} train / {first.examples['test']} test "
        f"examples) with SGD (lr 0.01, momentum 0.9, no weight decay), batch sizes {sizes}, seeds {seeds} "
        "(a seed fixes the initialization, data split and data order, the same for every batch size). Two "
        f"arms: **equal steps** ({_steps(runs, 'steps')} SGD steps for every batch size, "
        f"`configs/batch_size_steps.yaml`) and **equal epochs** ({_epochs(runs, 'epochs')} epochs, the "
        "source's setting, `configs/batch_size.yaml`). "
        f"Model averages are over {averaged}: the analysis's rule (fitted layers without the classifier), "
        f"with {skipped} given the status the analysis gives layers under `min_evals={MIN_FIT_EVALS}` "
        f"eigenvalues (skipped). {_cpu_sentence(out)}"
    )


def _steps(runs: Sequence[Run], arm: str) -> str:
    return "/".join(sorted({str(run.steps) for run in runs if run.arm == arm}, key=int))


def _epochs(runs: Sequence[Run], arm: str) -> str:
    return "/".join(sorted({str(int(run.epochs[-1])) for run in runs if run.arm == arm}, key=int))


def _cpu_sentence(out: Path) -> str:
    path = out / "cpu.csv"
    if not path.is_file():
        return ""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    parts = ", ".join(f"{row['arm']} {float(row['cpu_seconds']):.0f} s" for row in rows)
    total = sum(float(row["cpu_seconds"]) for row in rows)
    return f"Training and analysis took {total / 60:.1f} CPU-minutes ({parts}; `cpu.csv`)."


def _final_table(runs: Sequence[Run], evidence: Evidence) -> str:
    layers = list(runs[0].num_evals)
    header = ["arm", "batch size", "steps", "test accuracy", "average alpha", "average alpha_weighted"]
    header += [f"{short_layer(layer)} alpha" for layer in layers]
    rows = []
    for arm in ARMS:
        for size in sorted({run.size for run in runs}):
            group = [run for run in runs if run.arm == arm.name and run.size == size]
            condition = f"{arm.name}_{size}"
            row = [arm.equal, size, _steps(group, arm.name)]
            row += [
                str(evidence.interval("test_accuracy", condition)),
                str(evidence.interval("average_alpha", condition)),
            ]
            row.append(mean_interval(run.average["alpha_weighted"][-1] for run in group).mean)
            row += [mean_interval(run.metrics["alpha"][layer][-1] for run in group).mean for layer in layers]
            rows.append(row)
    return markdown_table(header, rows)


def _rho_table(runs: Sequence[Run], evidence: Evidence) -> str:
    layers = [short_layer(layer) for layer in runs[0].num_evals]
    header = ["arm", "model average", *layers]
    rows = [
        [arm.equal, str(evidence.interval("rho_final", arm.name))]
        + [str(evidence.interval(f"rho_final_{layer}", arm.name)) for layer in layers]
        for arm in ARMS
    ]
    return markdown_table(header, rows)


def _phase_count_table(runs: Sequence[Run]) -> str:
    tables = []
    for arm in ARMS:
        group = [run for run in runs if run.arm == arm.name]
        marks = group[0].snapshot_steps if arm.name == "steps" else group[0].epochs
        unit = "step" if arm.name == "steps" else "epoch"
        shown = sorted({round(i * (len(marks) - 1) / 5) for i in range(6)})
        header = ["layer", *[f"{unit} {int(marks[k])}" for k in shown], "seen (count of layer-snapshots)"]
        rows = []
        for layer in group[0].num_evals:
            cells = [len({run.phases[layer][k] for run in group}) for k in shown]
            seen = Counter(label for run in group for label in run.phases[layer])
            listing = ", ".join(f"{label} {count}" for label, count in seen.most_common())
            rows.append([short_layer(layer), *cells, f"{len(set(seen) & set(PHASES))} of 6: {listing}"])
        tables.append(f"*{arm.equal}*\n\n" + markdown_table(header, rows))
    return "\n\n".join(tables)


def _end_phase_table(runs: Sequence[Run]) -> str:
    layers = list(runs[0].num_evals)
    header = ["arm", "batch size", *[short_layer(layer) for layer in layers]]
    rows = []
    for arm in ARMS:
        for size in sorted({run.size for run in runs}):
            group = [run for run in runs if run.arm == arm.name and run.size == size]
            cells = []
            for layer in layers:
                label, count = Counter(run.phases[layer][-1] for run in group).most_common(1)[0]
                cells.append(f"{label} ({count}/{len(group)})")
            rows.append([arm.equal, size, *cells])
    return markdown_table(header, rows)


def write_figures(runs: Sequence[Run], out: Path) -> dict[str, Path]:
    """The figures of the section, by caption."""
    figures = {
        "final model-average alpha and test accuracy against the batch size (thin: seeds; thick: mean)":
            save_figure(_final_figure(runs), out / "alpha-vs-batch_size.png"),
        "model-average alpha during training (mean over seeds; band: min to max)":
            save_figure(_training_figure(runs), out / "alpha.png"),
    }  # fmt: skip
    for arm in ARMS:
        group = [run for run in runs if run.arm == arm.name]
        fitted = group[0].fitted
        per_layer = {
            short_layer(layer): {f"{run.size}/s{run.seed}": run.phases[layer] for run in group}
            for layer in fitted
        }
        marks = group[0].snapshot_steps if arm.name == "steps" else group[0].epochs
        unit = "step" if arm.name == "steps" else "epoch"
        title = f"phase per fitted layer, {arm.equal} (rows: batch size/seed; x: {unit})"
        figure = phase_figure(per_layer, [int(mark) for mark in marks], title=title)
        figure.axes[len(fitted) - 1].set_xlabel(unit)
        figures[f"phase labels per layer, batch size, seed and snapshot ({arm.equal})"] = save_figure(
            figure, out / f"phases-{arm.name}.png"
        )
    return figures


def _final_figure(runs: Sequence[Run]):
    plt = pyplot()
    figure, axes = plt.subplots(2, len(ARMS), figsize=(9, 6), sharex=True, squeeze=False)
    for column, arm in enumerate(ARMS):
        by_seed = _by_seed(runs, arm.name)
        for row, (name, value) in enumerate(
            (
                ("model-average alpha", lambda r: r.average["alpha"][-1]),
                ("test accuracy", lambda r: r.test_accuracy),
            )
        ):
            ax = axes[row, column]
            for group in by_seed.values():
                ax.plot(
                    [r.size for r in group], [value(r) for r in group], color="0.7", linewidth=0.8, marker="."
                )
            sizes = [r.size for r in next(iter(by_seed.values()))]
            mean = [np.nanmean([value(group[i]) for group in by_seed.values()]) for i in range(len(sizes))]
            ax.plot(sizes, mean, color="C0" if row == 0 else "C1", linewidth=2.2, marker="o")
            ax.set_xscale("log", base=2)
            ax.set_ylabel(name, fontsize=8)
            if row == 0:
                ax.set_title(f"{arm.equal} ({_steps(runs, arm.name)} steps)", fontsize=9)
                ax.axhspan(*ALPHA_RANGE, color="C2", alpha=0.1)
            else:
                ax.set_xlabel("batch size", fontsize=8)
                ax.set_xticks(sizes, [str(s) for s in sizes])
    figure.tight_layout()
    return figure


def _training_figure(runs: Sequence[Run]):
    plt = pyplot()
    figure, axes = plt.subplots(1, len(ARMS), figsize=(9, 3.6), squeeze=False)
    for ax, arm in zip(axes[0], ARMS, strict=True):
        group = [run for run in runs if run.arm == arm.name]
        for index, size in enumerate(sorted({run.size for run in group})):
            series = np.array([run.average["alpha"] for run in group if run.size == size])
            first = next(run for run in group if run.size == size)
            x = first.snapshot_steps if arm.name == "steps" else first.epochs
            ax.plot(x, np.nanmean(series, axis=0), color=f"C{index}", label=f"batch {size}")
            ax.fill_between(
                x, np.nanmin(series, axis=0), np.nanmax(series, axis=0), color=f"C{index}", alpha=0.15
            )
        ax.axhspan(*ALPHA_RANGE, color="0.5", alpha=0.1)
        ax.set_xlabel("step" if arm.name == "steps" else "epoch", fontsize=8)
        ax.set_ylabel("model-average alpha", fontsize=8)
        ax.set_title(arm.equal, fontsize=9)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
