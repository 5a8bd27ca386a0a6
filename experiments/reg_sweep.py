"""Regularization sweep (Martin, 2018): L2 on the FC layers against lambda_min, rank loss and accuracy.

Martin (2018) trains a small AlexNet on CIFAR-10 for 20 epochs with an L2 penalty on its fully
connected layers (fc1 4096x384, fc2 384x192: aspect ratios Q = 10.7 and 2) and sees the smallest
eigenvalue ``lambda_min`` of ``W^T W`` fall from 0.0414 to 0.008 as the penalty goes from 0.0003 to
0.0005, and the rank collapse under too much of it; "if you see rank collapse, you are probably
over-regularizing". Here a MiniAlexNet-style net with the same FC aspect ratios (fc1 1024x96, fc2
96x48; ``configs/reg_sweep_synthetic.yaml``) trains on a seeded 3x16x16 stand-in for CIFAR-10, once
per strength of a log-spaced grid (:data:`VALUES`) and per seed (:data:`SEEDS`). The claims and
their rules are :data:`CLAIMS`; the verdicts come from ``evidence.csv``.

The null of the first claim is plain shrinkage: a direction of ``W`` that no data gradient touches
is multiplied, per SGD step with momentum, as the scalar recursion of :func:`shrinkage` says, so
``lambda_min`` of a penalized run would be the unpenalized run's times ``shrinkage(...) ** 2``.

Run: ``python -m experiments.reg_sweep`` (about 10 CPU-minutes; ``--smoke``: seconds, into
``runs/smoke/``; ``--report-only``: rewrite the outputs from existing runs).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
from experiments.sweep import read_metrics, run_name, seed_dir, sweep
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
from spectral_callbacks import open_run

__all__ = ["CLAIMS", "KNOB", "SEEDS", "STUDY", "VALUES", "main", "shrinkage"]

STUDY = "reg_sweep"
MODULE = "experiments.reg_sweep"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "reg_sweep_synthetic.yaml"
KNOB = "model.init_args.fc_l2"
PARAMETER = "fc_l2"
# No penalty, then 10^(k/8) for k = -18 ... -9 (0.0056 to 0.075): neighbours a factor 1.33 apart,
# closer than Martin's 0.0003 and 0.0005, across the strengths where lambda_min, rank and accuracy go.
VALUES = ("0", *(f"{10 ** (k / 8):.3g}" for k in range(-18, -8)))
SEEDS = (0, 1, 2)
SMOKE_VALUES = ("0", "0.1")
SMOKE_SEEDS = (0, 1)
SMOKE_OVERRIDES = (
    "--trainer.max_epochs=2",
    "--data.init_args.num_samples=200",
    "--data.init_args.batch_size=16",
)
FC = ("network.fc1", "network.fc2")  # the layers fc_l2 applies to
FINAL = ("lambda_min", "rank_loss", "rank_loss_nr", "alpha", "log_norm", "log_spectral_norm")
LARGE_FACTOR = 5.0  # Martin (2018): 0.0414 / 0.008 = 5.2 between 0.0003 and 0.0005
ACCURACY_DROP = 0.05  # a fall of test accuracy by more than 5 points counts as over-regularized
PUBLISHED_STEPS = 20 * 50_000 // 32  # 20 epochs of CIFAR-10 at Keras' default batch size
RUNS_COLUMNS = (
    "seed", "fc_l2", "layer", "N", "M", "Q", "epoch", "steps", "lambda_min_epoch0", *FINAL,
    "lambda_min_shrinkage", "test_accuracy",
)  # fmt: skip
EPOCH_COLUMNS = ("seed", "fc_l2", "layer", "epoch", "lambda_min", "rank_loss", "log_norm")


def shrinkage(fc_l2: float, steps: int, lr: float, momentum: float) -> float:
    """The factor by which ``steps`` SGD steps multiply a weight that only the penalty moves.

    The gradient of ``fc_l2 * w^2`` is ``2 fc_l2 w``; torch's SGD keeps ``b <- momentum b + g``
    (``b = g`` at the first step) and sets ``w <- w - lr b``. About ``exp(-2 lr fc_l2 steps /
    (1 - momentum))`` once the momentum has built up.
    """
    weight, buffer = 1.0, None
    for _ in range(steps):
        gradient = 2.0 * fc_l2 * weight
        buffer = gradient if buffer is None else momentum * buffer + gradient
        weight -= lr * buffer
    return weight


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the sweep per seed (unless ``--report-only``), then write CSVs, figures and the section.

    Returns:
        The directory of the study's outputs.
    """
    parser = study_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--values", nargs="+", help=f"the strengths (default: {' '.join(VALUES)})")
    parser.add_argument("--seeds", nargs="+", type=int, help=f"the seeds (default: {SEEDS})")
    parser.add_argument("--report-only", action="store_true", help="write the outputs from existing runs")
    args = parse_study(parser, argv)
    values = tuple(args.values or (SMOKE_VALUES if args.smoke else VALUES))
    seeds = tuple(args.seeds or (SMOKE_SEEDS if args.smoke else SEEDS))
    if "0" not in values:
        parser.error("the values must include 0: the unpenalized run is the baseline")
    out = args.out / STUDY
    if not args.report_only:
        cpu = _run(args.runs, values, seeds, SMOKE_OVERRIDES if args.smoke else ())
        write_csv(out / "cpu.csv", ("seed", "cpu_seconds"), sorted(cpu.items()))
    command = " ".join(
        [
            f"python -m {MODULE}",
            *(["--smoke"] if args.smoke else []),
            *(["--values", *values] if args.values else []),
            *(["--seeds", *map(str, seeds)] if args.seeds else []),
        ]
    )
    rows, epochs = _collect(args.runs / STUDY, values, seeds)
    write_csv(out / "runs.csv", RUNS_COLUMNS, [[row[c] for c in RUNS_COLUMNS] for row in rows])
    write_csv(out / "per_epoch.csv", EPOCH_COLUMNS, epochs)
    write_evidence(evidence_path(args.out, STUDY), _evidence(rows))
    figures = _figures(rows, epochs, out)
    setup_run = seed_dir(args.runs / STUDY, seeds[0]) / run_name(KNOB, "0")
    evidence = read_evidence(evidence_path(args.out, STUDY))
    text = section(evidence, rows, setup_run, out, args.results, figures, command)
    write_section(STUDY, text, args.results)
    print(f"wrote the {STUDY} section of {args.results} and its outputs in {out}")
    return out


def _run(
    runs: Path, values: Sequence[str], seeds: Sequence[int], overrides: Sequence[str]
) -> dict[int, float]:
    """One sweep over the strengths per seed (network initialization, split and shuffle), into
    ``runs/<study>/seed_<seed>/``; returns the CPU seconds each seed's sweep took."""
    cpu = {}
    for seed in seeds:
        start = cpu_seconds()
        with single_threaded():
            sweep(
                [CONFIG], KNOB, values, runs=runs, study=STUDY, overwrite=True, seed=seed,
                overrides=(*overrides, f"--data.init_args.seed={seed}"),
            )  # fmt: skip
        cpu[seed] = cpu_seconds() - start
    return cpu


def _collect(root: Path, values: Sequence[str], seeds: Sequence[int]) -> tuple[list[dict], list[list]]:
    """Per run and FC layer, the final metrics (and shrinkage's prediction); per epoch, lambda_min."""
    rows, epochs = [], []
    for seed in seeds:
        base: dict[str, float] = {}
        for value in sorted(values, key=float):
            run = seed_dir(root, seed) / run_name(KNOB, value)
            record = read_metrics(run)
            lr, momentum = _optimizer(run)
            with open_run(run) as reader:
                for layer in FC:
                    info = reader.layer_info(layer)
                    series = {name: reader.metric(name, layer) for name in FINAL}
                    if float(value) == 0:
                        base[layer] = float(series["lambda_min"][-1])
                    factor = shrinkage(float(value), int(record["steps"]), lr, momentum)
                    rows.append(
                        {
                            "seed": seed, "fc_l2": float(value), "layer": layer.removeprefix("network."),
                            "N": int(info["N"]), "M": int(info["M"]), "Q": float(info["Q"]),
                            "epoch": int(reader.epochs[-1]), "steps": int(record["steps"]),
                            "lambda_min_epoch0": float(series["lambda_min"][0]),
                            **{name: float(series[name][-1]) for name in FINAL},
                            "lambda_min_shrinkage": base[layer] * factor**2,
                            "test_accuracy": float(record["metrics"]["test/accuracy"]),
                        }
                    )  # fmt: skip
                    for epoch, lam, lost, norm in zip(
                        reader.epochs,
                        series["lambda_min"],
                        series["rank_loss"],
                        series["log_norm"],
                        strict=True,
                    ):
                        epochs.append([seed, float(value), layer.removeprefix("network."), int(epoch),
                                       float(lam), float(lost), float(norm)])  # fmt: skip
    return rows, epochs


def _config(run: Path) -> dict:
    """The run's ``config.yaml``."""
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))


def _optimizer(run: Path) -> tuple[float, float]:
    """The run's learning rate and momentum."""
    model = _config(run)["model"]["init_args"]
    return float(model["lr"]), float(model["momentum"])


def _label(value: float) -> str:
    return f"{value:g}"


def _evidence(rows: Sequence[dict]) -> Evidence:
    """The long table the rules read: per seed, strength and layer the final lambda_min, rank loss and
    test accuracy; per pair of neighbouring non-zero strengths, the fall of lambda_min observed and
    the fall plain shrinkage predicts (log10 of the ratio)."""
    table: list[tuple[str, str, int, float]] = []
    by_key = {(row["seed"], row["layer"], row["fc_l2"]): row for row in rows}
    strengths = sorted({row["fc_l2"] for row in rows})
    for (seed, layer, value), row in sorted(by_key.items()):
        table.append((f"lambda_min_{layer}", _label(value), seed, row["lambda_min"]))
        table.append((f"rank_loss_{layer}", _label(value), seed, row["rank_loss"]))
        if layer == "fc1":
            table.append(("test_accuracy", _label(value), seed, row["test_accuracy"]))
    positive = [value for value in strengths if value > 0]
    for low, high in itertools.pairwise(positive):
        pair = f"{_label(low)}-{_label(high)}"
        for seed, layer in sorted({(row["seed"], row["layer"]) for row in rows}):
            weak, strong = by_key[(seed, layer, low)], by_key[(seed, layer, high)]
            table.append((f"drop_{layer}", pair, seed, math.log10(weak["lambda_min"] / strong["lambda_min"])))
            predicted = math.log10(weak["lambda_min_shrinkage"] / strong["lambda_min_shrinkage"])
            table.append((f"drop_shrinkage_{layer}", pair, seed, predicted))
    return Evidence(table)


def _matrix(evidence: Evidence, statistic: str) -> tuple[list[float], np.ndarray]:
    """The strengths (ascending) and the values ``[strength, seed]`` of a per-strength statistic."""
    strengths = sorted(float(c) for c in evidence.conditions(statistic))
    return strengths, np.stack([evidence.values(statistic, _label(s)) for s in strengths])


def _judge_collapse(evidence: Evidence) -> Verdict:
    """Rule of ``lambda_min_collapse`` (see its ``rule`` text)."""
    parts, nulls, words = [], [], []
    for layer in ("fc1", "fc2"):
        strengths, lost = _matrix(evidence, f"rank_loss_{layer}")
        collapsed = bool(np.all(lost[1:].max(axis=0) > 0))
        null_collapsed = bool(np.any(lost[0] > 0))
        full = {_label(s) for s, row in zip(strengths, lost, strict=True) if s > 0 and np.all(row == 0)}
        pairs = [p for p in evidence.conditions(f"drop_{layer}") if set(p.split("-")) <= full]
        weakest = (
            min(s for s, row in zip(strengths, lost, strict=True) if np.any(row > 0)) if collapsed else None
        )
        text = (
            f"{layer}: rank lost in every seed, from fc_l2 = {_label(weakest)} in some seed, the unpenalized "
            f"runs {'also lose rank' if null_collapsed else 'keep full rank'}"
            if collapsed
            else f"{layer}: rank not lost in every seed"
        )
        factor, null_factor = False, False
        if pairs:
            pair = max(pairs, key=lambda p: evidence.values(f"drop_{layer}", p).mean())
            observed = evidence.interval(f"drop_{layer}", pair)
            shrunk = float(evidence.values(f"drop_shrinkage_{layer}", pair).mean())
            factor = observed.low > math.log10(LARGE_FACTOR)
            null_factor = shrunk >= math.log10(LARGE_FACTOR) and shrunk >= observed.low
            text += (
                f"; largest fall between full-rank neighbours, fc_l2 {pair.replace('-', ' to ')}: log10 "
                f"{observed} (a factor {10**observed.mean:.3g}), plain shrinkage predicts log10 {shrunk:.3g} "
                f"(a factor {10**shrunk:.3g})"
            )
        else:
            text += "; no pair of neighbouring strengths with full rank in every seed"
        parts += [collapsed, factor]
        nulls += [null_collapsed, null_factor]
        words.append(text)
    null_passes = any(nulls)
    word = "agrees" if all(parts) and not null_passes else "partly" if any(parts) else "disagrees"
    return Verdict(word, "; ".join(words), null_passes)


def _judge_signal(evidence: Evidence) -> Verdict:
    """Rule of ``collapse_signals_overregularization`` (see its ``rule`` text)."""
    strengths, accuracy = _matrix(evidence, "test_accuracy")
    lost = np.maximum(_matrix(evidence, "rank_loss_fc1")[1], _matrix(evidence, "rank_loss_fc2")[1])
    at_collapse, before, where = [], [], []
    for seed in range(accuracy.shape[1]):
        first = next((i for i in range(1, len(strengths)) if lost[i, seed] > 0), None)
        if first is None:
            continue
        at_collapse.append(accuracy[0, seed] - accuracy[first, seed])
        before.append(accuracy[0, seed] - accuracy[first - 1, seed])
        where.append(_label(strengths[first]))
    if not at_collapse:
        return Verdict("not testable here", "no seed's FC layers lose rank on the grid", None)
    drop, null = mean_interval(at_collapse), mean_interval(before)
    passes, null_passes = drop.low > ACCURACY_DROP, null.low > ACCURACY_DROP
    everywhere = len(at_collapse) == accuracy.shape[1]
    word = "agrees" if passes and not null_passes and everywhere else "partly" if passes else "disagrees"
    return Verdict(
        word,
        f"rank first lost at fc_l2 = {', '.join(where)} ({len(at_collapse)} of {accuracy.shape[1]} seeds); "
        f"test accuracy below the unpenalized run's by {drop} there, by {null} one grid step weaker",
        null_passes,
    )


CLAIMS = [
    Claim(
        "lambda_min_collapse",
        "Martin, 2018",
        "Too much L2 on the FC layers collapses their rank: lambda_min of `W^T W` falls by a large factor "
        "between nearby strengths (0.0414 to 0.008, 5.2x, from 0.0003 to 0.0005) until the rank is lost.",
        "Per FC layer (fc1, fc2), two parts. (i) Rank collapse: in every seed some non-zero strength of the "
        "grid leaves the layer with rank_loss > 0 (numpy's tolerance) at the end of training; null: the "
        "unpenalized run of the same seed, which passes if it lost rank in any seed. (ii) Large factor: over "
        "the pairs of neighbouring non-zero strengths (a factor 1.33 apart) where the layer has full rank "
        "in every seed, take the pair of largest mean log10(lambda_min(weaker) / lambda_min(stronger)); it "
        "holds if the 95% Student-t interval over seeds lies above log10(5). Null: the fall that plain "
        "shrinkage predicts between the same strengths (the SGD-momentum recursion of the penalty alone, "
        "for the runs' steps); it passes if it is at least log10(5) and at least the observed interval's "
        "lower end, i.e. shrinkage alone explains a fall that large. Agrees: all four parts hold and no null "
        "passes; partly: some part holds (or all with a passing null); disagrees: none holds.",
        _judge_collapse,
    ),
    Claim(
        "collapse_signals_overregularization",
        "Martin, 2018",
        "Rank collapse signals over-regularization: where the FC layers lose rank, test accuracy has fallen.",
        "Per seed, the weakest strength at which fc1 or fc2 has rank_loss > 0, and the paired drop of test "
        "accuracy from the same seed's unpenalized run there. It holds if the 95% Student-t interval over "
        "the seeds with a collapse lies above 0.05 (5 points). Null: the same drop one grid step weaker, "
        "where both layers still have full rank; it passes if its interval lies above 0.05 too (accuracy "
        "had fallen before the rank went, so the collapse is not what marks it). Agrees: holds in every "
        "seed's collapse and the null fails; partly: holds with a passing null, or the rank collapses in "
        "only some seeds; disagrees: does not hold; not testable here: no seed loses rank on the grid.",
        _judge_signal,
    ),
]


def _figures(rows: Sequence[dict], epochs: Sequence[Sequence], out: Path) -> dict[str, Path]:
    """``lambda_min-vs-fc_l2.png`` (final lambda_min, shrinkage's prediction, rank loss and test
    accuracy against the strength, every seed) and ``lambda_min.png`` (per epoch, first seed)."""
    plt = pyplot()
    import matplotlib.ticker

    seeds = sorted({row["seed"] for row in rows})
    positive = sorted({row["fc_l2"] for row in rows if row["fc_l2"] > 0})
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for axis, layer in zip(axes[:2], ("fc1", "fc2"), strict=True):
        mine = [row for row in rows if row["layer"] == layer]
        for seed in seeds:
            runs = sorted(
                (row for row in mine if row["seed"] == seed and row["fc_l2"] > 0), key=lambda r: r["fc_l2"]
            )
            x = [row["fc_l2"] for row in runs]
            first = seed == seeds[0]
            axis.plot(x, [row["lambda_min"] for row in runs], "o-", color="C0", alpha=0.6,
                      label="trained, each seed" if first else None)  # fmt: skip
            axis.plot(x, [row["lambda_min_shrinkage"] for row in runs], "--", color="C1", alpha=0.6,
                      label="unpenalized x plain shrinkage" if first else None)  # fmt: skip
            lost = [row for row in runs if row["rank_loss"] > 0]
            axis.plot([row["fc_l2"] for row in lost], [row["lambda_min"] for row in lost], "x", color="C3",
                      markersize=10, label="rank_loss > 0" if first and lost else None)  # fmt: skip
            unpenalized = next(row for row in mine if row["seed"] == seed and row["fc_l2"] == 0)
            axis.axhline(unpenalized["lambda_min"], color="grey", linestyle=":",
                         label="fc_l2 = 0" if first else None)  # fmt: skip
        shape = f"{mine[0]['N']}x{mine[0]['M']}, Q = {mine[0]['Q']:.3g}"
        axis.set(xscale="log", yscale="log", xlabel="fc_l2", ylabel="lambda_min at the end",
                 title=f"{layer} ({shape})")  # fmt: skip
        axis.legend(fontsize=8)
    axis = axes[2]
    for seed in seeds:
        runs = sorted(
            (row for row in rows if row["seed"] == seed and row["layer"] == "fc1"), key=lambda r: r["fc_l2"]
        )
        axis.plot([row["fc_l2"] for row in runs if row["fc_l2"] > 0],
                  [row["test_accuracy"] for row in runs if row["fc_l2"] > 0], "o-", color="C2", alpha=0.6,
                  label="each seed" if seed == seeds[0] else None)  # fmt: skip
        axis.axhline(runs[0]["test_accuracy"], color="grey", linestyle=":",
                     label="fc_l2 = 0" if seed == seeds[0] else None)  # fmt: skip
    axis.axhline(0.1, color="k", linewidth=0.8, label="chance")
    axis.set(xscale="log", xlabel="fc_l2", ylabel="test accuracy", title="test accuracy", ylim=(0, 1))
    axis.legend(fontsize=8)
    for axis in axes:  # the 1.33x grid puts minor ticks close together: label the decades only
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    figure.tight_layout()
    written = {"parameter": save_figure(figure, out / "lambda_min-vs-fc_l2.png")}
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = plt.get_cmap("viridis")
    for axis, layer in zip(axes, ("fc1", "fc2"), strict=True):
        for index, value in enumerate([0.0, *positive]):
            points = [e for e in epochs if e[0] == seeds[0] and e[1] == value and e[2] == layer]
            axis.plot([e[3] for e in points], [e[4] for e in points], color=colors(index / len(positive)),
                      label=f"fc_l2 = {_label(value)}")  # fmt: skip
        axis.set(yscale="log", xlabel="epoch", ylabel="lambda_min", title=f"{layer}, seed {seeds[0]}")
    axes[1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    written["training"] = save_figure(figure, out / "lambda_min.png")
    return written


def _mean_row(rows: Sequence[dict], value: float, layer: str) -> dict[str, float]:
    """Over seeds: geometric means of lambda_min (and of shrinkage's), the seeds that lost rank, means of
    the rest."""
    mine = [row for row in rows if row["fc_l2"] == value and row["layer"] == layer]

    def geometric(key: str) -> float:
        return float(10 ** np.mean([math.log10(max(row[key], 1e-300)) for row in mine]))

    return {
        "lambda_min": geometric("lambda_min"),
        "lambda_min_shrinkage": geometric("lambda_min_shrinkage"),
        "lost": f"{sum(row['rank_loss'] > 0 for row in mine)}/{len(mine)}",
        "alpha": float(np.nanmean([row["alpha"] for row in mine]))
        if any(np.isfinite(r["alpha"]) for r in mine)
        else math.nan,
        "log_norm": float(np.mean([row["log_norm"] for row in mine])),
        "accuracy": mean_interval([row["test_accuracy"] for row in mine]),
    }


def _source_check() -> str:
    """Martin's two lambda_min against plain shrinkage from a Glorot-normal fc1 of his shape."""
    n, m = 4096, 384
    start = 2 / (n + m) * n * (1 - math.sqrt(m / n)) ** 2  # Marchenko-Pastur lower edge at initialization
    (low, at_low), (high, at_high) = sorted(PUBLISHED_LAMBDA_MIN.items())
    rate = math.log(start / at_low) / low  # lambda_min = start * exp(-rate * fc_l2)
    predicted = start * math.exp(-rate * high)
    steps = round(rate * 0.1 / 0.04, -3)  # at lr 0.01 and momentum 0.9
    return (
        "Martin's own two numbers do not exclude plain shrinkage: a Glorot-normal 4096x384 fc1 starts near "
        f"the Marchenko-Pastur edge lambda_min = {start:.3g}; the shrinkage exp(-4 lr fc_l2 steps / "
        f"(1 - momentum)) that takes it to {at_low} at fc_l2 = {low} (4 lr steps / (1 - momentum) = "
        f"{rate:.3g}, e.g. lr 0.01, momentum 0.9 and about {steps:,.0f} steps; the blog states neither) "
        f"gives {predicted:.3g} at {high}, against the {at_high} he saw."
    )


PUBLISHED_LAMBDA_MIN = {3e-4: 0.0414, 5e-4: 0.008}


def section(
    evidence: Evidence,
    rows: Sequence[dict],
    setup_run: Path,
    out: Path,
    results: Path,
    figures: dict[str, Path],
    command: str,
) -> str:
    """The markdown section: setup, differences from the source, verdicts, table, figures."""
    seeds = sorted({row["seed"] for row in rows})
    strengths = sorted({row["fc_l2"] for row in rows})
    fc1, fc2 = (next(row for row in rows if row["layer"] == layer) for layer in ("fc1", "fc2"))
    config = _config(setup_run)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    channels, hidden = model["network"]["init_args"]["channels"], model["network"]["init_args"]["hidden"]
    examples = read_metrics(setup_run)["examples"]
    cpu_file = out / "cpu.csv"
    cpu = ""
    if cpu_file.is_file():
        lines = cpu_file.read_text(encoding="utf-8").splitlines()[1:]
        total = sum(float(line.split(",")[1]) for line in lines)
        cpu = (
            f" The sweep took {total / 60:.3g} CPU-minutes (user + system of training and spectral "
            "workers; `cpu.csv`)."
        )
    setup = (
        f"`{command}`: {len(strengths)} strengths x {len(seeds)} seeds (network initialization, split and "
        f"shuffle) = {len(rows) // 2} runs of `configs/reg_sweep_synthetic.yaml`: a MiniAlexNet-style net "
        f"(conv 5x5 {channels[0]}, max pool 3x3/2, conv 5x5 {channels[1]}, max pool 3x3/2, fc1 {hidden[0]}, "
        f"fc2 {hidden[1]}, classifier; fc1 is {fc1['N']}x{fc1['M']}, Q = {fc1['Q']:.3g}, fc2 "
        f"{fc2['N']}x{fc2['M']}, Q = {fc2['Q']:.3g}) on `SyntheticImagesDataModule` ({data['channels']}x"
        f"{data['size']}x{data['size']} gratings of 10 classes with pixel noise {data['noise']}; "
        f"{examples['train']} train / {examples['val']} val / {examples['test']} test), {fc1['epoch']} "
        "epochs "
        f"({fc1['steps']} steps) of SGD (lr {model['lr']}, momentum {model['momentum']}, batch "
        f"{data['batch_size']}). `fc_l2` is the penalty `fc_l2 * ||W||^2` on fc1 and fc2 added to the loss "
        f"(Keras' `l2(fc_l2)`).{cpu} Per run and layer: `runs.csv`; per epoch: `per_epoch.csv`; the rules' "
        "input: `evidence.csv` (all in `experiments/results/reg_sweep/`)."
    )
    differences = "\n".join(
        [
            "**Differences from Martin (2018).**",
            f"- Data: a seeded synthetic stand-in ({examples['train']:,} training images of "
            f"{data['channels']}x{data['size']}x{data['size']}) for CIFAR-10 (50,000 of 3x32x32).",
            f"- Network: narrower (fc1 {fc1['N']}x{fc1['M']} and fc2 {fc2['N']}x{fc2['M']} against 4096x384 "
            f"and 384x192, aspect ratios Q = {fc1['Q']:.3g} and {fc2['Q']:.3g} against 10.7 and 2; conv "
            f"{channels[0]} and {channels[1]} channels against 64 and 64); PyTorch's default initialization, "
            "not Glorot-normal; the penalty on fc1 and fc2 (his code shows it on FC1).",
            f"- Steps: {fc1['steps']} SGD steps against about {PUBLISHED_STEPS:,} (20 epochs of CIFAR-10 at "
            "Keras' default batch size; the blog gives neither batch size nor learning rate). Plain "
            "shrinkage scales with lr x fc_l2 x steps / (1 - momentum), so our strengths are larger than "
            "his 0.0003-0.0005.",
            "- Rank: numpy's tolerance on float32 weights, where the blog eyeballs a loose bound.",
            f"- {_source_check()}",
        ]
    )
    header = ["fc_l2", "test accuracy"] + [
        f"{layer} {name}" for layer in ("fc1", "fc2")
        for name in ("lambda_min", "shrinkage", "rank lost", "alpha", "log_norm")
    ]  # fmt: skip
    table = []
    for value in strengths:
        cells: list[object] = [value]
        for layer in ("fc1", "fc2"):
            mean = _mean_row(rows, value, layer)
            if layer == "fc1":
                cells.append(str(mean["accuracy"]).replace(f" (n = {len(seeds)})", ""))
            cells += [
                mean["lambda_min"],
                mean["lambda_min_shrinkage"],
                mean["lost"],
                mean["alpha"],
                mean["log_norm"],
            ]
        table.append(cells)
    captions = {
        "parameter": "lambda_min of fc1 and fc2 at the end of training, the unpenalized run times plain "
        "shrinkage, and test accuracy, against fc_l2 (every seed)",
        "training": f"lambda_min of the FC layers per epoch, seed {seeds[0]}",
    }
    return "\n\n".join(
        [
            "## Regularization sweep (Martin, 2018)",
            setup,
            differences,
            verdicts_markdown(derive_verdicts(CLAIMS, evidence)),
            "**At the end of training**, over the seeds: test accuracy (mean and 95% interval), lambda_min "
            "(geometric mean) and what the unpenalized run times plain shrinkage predicts for it, the seeds "
            "whose layer lost rank, alpha and log_norm (means; alpha is not fitted on a collapsed layer).",
            markdown_table(header, table),
            *(figure_link(figures[key], results, captions[key]) for key in ("parameter", "training")),
        ]
    )


if __name__ == "__main__":
    main()
