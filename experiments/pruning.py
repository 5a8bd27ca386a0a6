"""Pruning LeNet-300-100's neurons by frame potential, magnitude or at random; rank-k elbows (Heitmann, 2020).

Heitmann (2020, section 3.1) removes units of a trained layer without retraining and compares test
accuracy against the fraction removed, for greedy criteria on the layer's rows ``w_i``:

- magnitude (``max_mag``, Heitmann's *Magnitude pruning*): remove the row of smallest norm
  ``||w_i||``, repeat. It keeps the pruned matrix's Frobenius norm as large as possible.
  ``min_mag`` removes the largest norm first (his harmful counterpart).
- frame potential (``max_fp``, his *Frame-potential pruning*): with unit rows ``u_i``,
  remove the row of smallest contribution ``c_i = sum_j <u_i, u_j>^2`` to the frame potential
  ``FP = sum_ij <u_i, u_j>^2 = sum_i c_i``, then update the others' contributions (``c_j`` loses
  ``<u_j, u_i>^2``) and repeat. Removing row ``i`` lowers FP by ``2 c_i - 1``, so each step keeps
  the pruned matrix's FP as large as possible: it drops the least redundant directions, the
  outliers he expected to align poorly with the data. ``min_fp`` removes the largest
  contribution first (the most redundant rows) and minimizes the FP; he found it harmful.
- ``random``: a random order, averaged over several draws.

A removed unit has its row and bias set to zero: its ReLU output is zero, as if it were gone.
Section 3.3 of Heitmann (2020) replaces a layer's ``W`` by its best rank-``k`` approximation
``W_k`` (Eckart-Young-Mirsky) and picks ``k`` by the elbow method on the residuals; here each FC
layer in turn, for every ``k``, with both elbows reported (see :func:`residual_elbow`).

Every claim is judged over several networks (one per seed) against a null measured the same way:
for the comparisons of criteria, two single random orders compared with each other; for the elbow,
the same layer at epoch 0 (from the run file) and Gaussian matrices of the same shape and entry
scale. The claims and their rules are :data:`CLAIMS`; the verdicts come from ``evidence.csv``.

Run: ``python -m experiments.pruning`` (``--smoke``: a run of a few seconds, into ``runs/smoke/``).

References:
    J. N. Heitmann, "Sources of redundancy in neural networks", semester project, LTS4, EPFL
    (2020), sections 3.1 and 3.3.
    J. J. Benedetto and M. Fickus, "Finite normalized tight frames", Adv. Comput. Math. 18 (2003).
    C. Eckart and G. Young, "The approximation of one matrix by another of lower rank",
    Psychometrika 1 (1936). V. Satopaa et al., "Finding a 'Kneedle' in a haystack", ICDCS
    Workshops (2011), for the elbow.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from experiments.lenet import LAYER_LABELS, LAYERS, TrainedLeNet, train_lenet
from experiments.results import parse_study, single_threaded, study_parser, write_csv, write_section
from experiments.verdicts import Claim, Evidence, Verdict, evidence_path, mean_interval, write_evidence
from spectral_callbacks import open_run

__all__ = [
    "CLAIMS",
    "CRITERIA",
    "STUDY",
    "cosine_similarities",
    "frame_potential_contributions",
    "knee_depth",
    "low_rank",
    "main",
    "prune_units",
    "pruning_order",
    "residual_curve",
    "residual_elbow",
]

STUDY = "pruning"
CRITERIA = ("max_mag", "min_mag", "max_fp", "min_fp", "random")
PRUNED_LAYERS = LAYERS[:2]  # the hidden layers; Heitmann's figure 2a prunes the first
PRUNING_COLUMNS = ["seed", "layer", "criterion", "draw", "fraction", "units_removed", "accuracy"]
RANK_COLUMNS = ["seed", "layer", "k", "accuracy", "residual", "norm_kept_pct"]
RESIDUAL_COLUMNS = ["seed", "layer", "condition", "k", "residual"]
SPECTRA_COLUMNS = ["seed", "layer", "epoch", "frame_potential", "frame_potential_normalized", "num_spikes"]
# The elbow's conditions: the trained layer, the same layer at epoch 0, a Gaussian matrix like it.
ELBOW_CONDITIONS = ("trained", "epoch0", "gaussian")
# "Near" Heitmann's k = 10: within a factor of two.
NEAR_RANK = (5.0, 20.0)
# Heitmann's (2020) rank: his elbow for every first FC layer, and CIFAR-10's number of classes.
PUBLISHED_RANK = 10
# The accuracy elbow: the smallest k whose accuracy reaches this share of the full layer's.
ACCURACY_SHARE = 0.99
TABLE_FRACTIONS = (0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class Size:
    """Networks trained (one per seed), their epochs, fractions pruned and random orders per network."""

    seeds: int
    epochs: int
    fractions: tuple[float, ...]
    random_draws: int


REAL = Size(seeds=8, epochs=40, fractions=tuple(round(0.1 * i, 1) for i in range(10)), random_draws=6)
SMOKE = Size(seeds=2, epochs=1, fractions=(0.0, 0.5, 0.9), random_draws=2)


def cosine_similarities(rows: np.ndarray) -> np.ndarray:
    """``X_ij = <u_i, u_j>`` of the unit rows; an all-zero row has no direction and gets 0 (orthogonal)."""
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    lengths = np.linalg.norm(matrix, axis=1)
    units = np.divide(matrix, lengths[:, None], out=np.zeros_like(matrix), where=lengths[:, None] > 0)
    return units @ units.T


def frame_potential_contributions(rows: np.ndarray) -> np.ndarray:
    """Each row's contribution ``c_i = sum_j <u_i, u_j>^2`` to the frame potential of the unit rows.

    The contributions sum to :func:`spectral_callbacks.spectra.frame_potential`'s value; an
    all-zero row has no direction, contributes 0 and adds nothing to the others'.
    """
    return _squared_cosines(rows).sum(axis=1)


def pruning_order(rows: np.ndarray, criterion: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The order in which ``criterion`` removes the rows (units) of a layer: first removed first.

    Args:
        rows: the layer's weight ``(units, inputs)``.
        criterion: one of :data:`CRITERIA` (see the module docstring for the rules).
        rng: the generator of the ``random`` order.

    Raises:
        ValueError: unknown criterion, or ``random`` without ``rng``.
    """
    if criterion in ("max_mag", "min_mag"):
        norms = np.linalg.norm(rows, axis=1)
        order = np.argsort(norms if criterion == "max_mag" else -norms, kind="stable")
        return order
    if criterion in ("max_fp", "min_fp"):
        return _greedy_fp_order(_squared_cosines(rows), smallest_first=criterion == "max_fp")
    if criterion == "random":
        if rng is None:
            raise ValueError("pruning_order(criterion='random') needs a generator: received rng=None.")
        return rng.permutation(rows.shape[0])
    raise ValueError(f"Unknown pruning criterion={criterion!r}. Use one of {', '.join(CRITERIA)}.")


def prune_units(network: nn.Sequential, layer: int, units: np.ndarray) -> nn.Sequential:
    """A copy of ``network`` with ``units`` of its Linear ``network[layer]`` removed (rows, biases zeroed)."""
    pruned = copy.deepcopy(network)
    index = torch.as_tensor(np.asarray(units, dtype=np.int64))
    with torch.no_grad():
        pruned[layer].weight[index] = 0.0
        if pruned[layer].bias is not None:
            pruned[layer].bias[index] = 0.0
    return pruned


def low_rank(weight: np.ndarray, k: int) -> np.ndarray:
    """Best rank-``k`` approximation ``W_k = sum_{i<=k} s_i u_i v_i^T`` (Eckart-Young-Mirsky).

    ``||W - W_k||_F^2`` is the sum of the dropped squared singular values.
    """
    return _truncated(np.linalg.svd(np.asarray(weight, dtype=np.float64), full_matrices=False), k)


def residual_curve(weight: np.ndarray) -> np.ndarray:
    """``||W - W_k||_F / ||W||_F`` for ``k = 1..rank``: the relative residual of every truncation."""
    squares = np.square(np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False))
    return np.sqrt(np.clip(1.0 - np.cumsum(squares) / squares.sum(), 0.0, None))


def residual_elbow(residuals: np.ndarray) -> int:
    """Elbow of a decreasing residual curve ``r(k)``, ``k = 1..len(residuals)`` (Heitmann's choice of k).

    Kneedle (Satopaa et al. 2011): with ``k`` and ``r`` both rescaled to [0, 1], the elbow is the
    ``k`` farthest below the chord from the first point to the last, i.e. the maximum of
    ``(1 - x) - y``: where the curve stops falling fast and starts to flatten.
    """
    values = np.asarray(residuals, dtype=np.float64)
    if values.size < 3:
        return 1
    x = np.linspace(0.0, 1.0, values.size)
    span = values.max() - values.min()
    y = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    return int(np.argmax((1.0 - x) - y)) + 1


def knee_depth(residuals: np.ndarray) -> float:
    """How far the elbow of :func:`residual_elbow` lies below the chord, on the rescaled axes.

    ``max((1 - x) - y)``, clipped at 0: near 0 for a straight or concave curve (no elbow), up to 1
    for a right angle. It says how much of an elbow there is to find.
    """
    values = np.asarray(residuals, dtype=np.float64)
    span = values.max() - values.min() if values.size else 0.0
    if values.size < 3 or span <= 0:
        return 0.0
    x = np.linspace(0.0, 1.0, values.size)
    return float(max(np.max((1.0 - x) - (values - values.min()) / span), 0.0))


def main(argv: Sequence[str] | None = None) -> Path:
    """Train, prune and approximate; write CSVs and figures under ``<out>/pruning/`` and the section.

    Returns:
        The study's output directory.
    """
    args = parse_study(study_parser(__doc__.split("\n\n")[0]), argv)
    size = SMOKE if args.smoke else REAL
    out = args.out / STUDY
    with single_threaded():
        return _run(args, size, out)


def _run(args: argparse.Namespace, size: Size, out: Path) -> Path:
    from experiments import pruning_report as report

    pruning, ranks, curves, spectra = [], [], [], []
    for seed in range(size.seeds):
        run_dir = args.runs / STUDY / f"seed{seed}"
        trained = train_lenet(run_dir, epochs=size.epochs, seed=seed, overwrite=True)
        pruning += pruning_rows(trained, seed, size)
        ranks += rank_rows(trained, seed)
        curves += _residual_rows(trained, seed)
        spectra += _spectra_rows(trained, seed)
        print(f"seed {seed}: accuracy {trained.accuracy():.4f}, run file {trained.run_path}")
    write_csv(out / "pruning.csv", PRUNING_COLUMNS, pruning)
    write_csv(out / "rank.csv", RANK_COLUMNS, ranks)
    write_csv(out / "residuals.csv", RESIDUAL_COLUMNS, curves)
    write_csv(out / "spectra.csv", SPECTRA_COLUMNS, spectra)
    evidence = Evidence(_evidence_rows(pruning, curves))
    write_evidence(evidence_path(args.out, STUDY), evidence)
    text = report.write(pruning, ranks, curves, spectra, evidence, size, len(trained.test_targets), out,
                        args.results)  # fmt: skip
    write_section(STUDY, text, args.results)
    return out


def pruning_rows(trained: TrainedLeNet, seed: int, size: Size) -> list[list[object]]:
    """Accuracy after removing each fraction of each hidden layer's units, for every criterion."""
    rng = np.random.default_rng([seed, 2])
    rows: list[list[object]] = []
    for name in PRUNED_LAYERS:
        index = _index(name)
        weight = trained.network[index].weight.detach().numpy()
        for criterion in CRITERIA:
            for draw in range(size.random_draws if criterion == "random" else 1):
                order = pruning_order(weight, criterion, rng)
                for fraction in size.fractions:
                    removed = round(fraction * len(order))
                    accuracy = trained.accuracy(prune_units(trained.network, index, order[:removed]))
                    rows.append([seed, name, criterion, draw, fraction, removed, accuracy])
    return rows


def rank_rows(trained: TrainedLeNet, seed: int) -> list[list[object]]:
    """Accuracy with each FC layer in turn replaced by its rank-k approximation, every k."""
    rows: list[list[object]] = []
    for name in LAYERS:
        index = _index(name)
        factors = np.linalg.svd(trained.network[index].weight.detach().double().numpy(), full_matrices=False)
        squares = np.square(factors[1])
        for k in range(1, squares.size + 1):
            network = copy.deepcopy(trained.network)
            with torch.no_grad():
                network[index].weight.copy_(torch.from_numpy(_truncated(factors, k)))
            residual = float(np.sqrt(squares[k:].sum() / squares.sum()))
            kept = 100.0 * float(np.sqrt(squares[:k].sum() / squares.sum()))
            rows.append([seed, name, k, trained.accuracy(network), residual, kept])
    return rows


def _residual_rows(trained: TrainedLeNet, seed: int) -> list[list[object]]:
    """The residual curves of each hidden layer: trained, at epoch 0 (run file), and of a Gaussian
    matrix of the same shape whose entries have the trained layer's standard deviation."""
    rng = np.random.default_rng([seed, 3])
    rows: list[list[object]] = []
    with open_run(trained.run_path) as run:
        for name in PRUNED_LAYERS:
            weight = trained.network[_index(name)].weight.detach().double().numpy()
            matrices = {
                "trained": weight,
                "epoch0": run.weights(name, int(run.epochs[0])),
                "gaussian": rng.standard_normal(weight.shape) * weight.std(),
            }
            for condition, matrix in matrices.items():
                curve = residual_curve(matrix)
                rows += [[seed, name, condition, k, r] for k, r in enumerate(curve.tolist(), start=1)]
    return rows


def _spectra_rows(trained: TrainedLeNet, seed: int) -> list[list[object]]:
    """From the run file, every FC layer at the initialization and the end: frame potential and the
    number of eigenvalues above the Marchenko-Pastur bulk (spikes, the signal's rank)."""
    rows = []
    with open_run(trained.run_path) as run:
        epochs = run.epochs
        for name in LAYERS:
            values = [run.metric(m, name) for m in SPECTRA_COLUMNS[3:]]
            rows += [[seed, name, int(epochs[i]), *(v[i] for v in values)] for i in (0, -1)]
    return rows


def short(layer: str) -> str:
    """``fc1``, ``fc2``, ``fc3``: the layer's name in the evidence."""
    return LAYER_LABELS[layer].split()[0]


def _evidence_rows(
    pruning: Sequence[Sequence[object]], curves: Sequence[Sequence[object]]
) -> list[tuple[str, str, int, float]]:
    """Per network: each criterion's mean accuracy over the pruned fractions (> 0), the two first
    random orders on their own (the null of a comparison), and each condition's residual elbow."""
    frame = pd.DataFrame(pruning, columns=PRUNING_COLUMNS)
    pruned = frame[frame["fraction"] > 0]
    rows = []
    for (name, criterion, seed), value in (
        pruned.groupby(["layer", "criterion", "seed"])["accuracy"].mean().items()
    ):
        rows.append((f"area_{short(name)}", criterion, int(seed), float(value)))
    single = pruned[(pruned["criterion"] == "random") & (pruned["draw"] < 2)]
    for (name, draw, seed), value in single.groupby(["layer", "draw", "seed"])["accuracy"].mean().items():
        rows.append((f"area_{short(name)}", f"random_draw{draw}", int(seed), float(value)))
    residuals = pd.DataFrame(curves, columns=RESIDUAL_COLUMNS).sort_values("k")
    for (seed, name, condition), curve in residuals.groupby(["seed", "layer", "condition"])["residual"]:
        values = curve.to_numpy()
        rows.append((f"elbow_{short(name)}", condition, int(seed), float(residual_elbow(values))))
        rows.append((f"knee_depth_{short(name)}", condition, int(seed), knee_depth(values)))
    return rows


def _index(layer: str) -> int:
    return int(layer.rsplit(".", 1)[1])


def _truncated(factors: tuple[np.ndarray, np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """``U_k diag(s_k) V_k^T`` from a thin SVD ``(U, s, V^T)``."""
    u, s, vt = factors
    return (u[:, :k] * s[:k]) @ vt[:k]


def _squared_cosines(rows: np.ndarray) -> np.ndarray:
    """``<u_i, u_j>^2`` for the unit rows ``u_i`` (rows and columns of zero rows are 0)."""
    return np.square(cosine_similarities(rows))


def _greedy_fp_order(squared: np.ndarray, *, smallest_first: bool) -> np.ndarray:
    """Remove the row of extreme contribution, update the others' contributions, repeat."""
    contributions = squared.sum(axis=1)
    alive = np.ones(len(squared), dtype=bool)
    order = np.empty(len(squared), dtype=np.int64)
    for step in range(len(squared)):
        masked = np.where(alive, contributions, np.inf if smallest_first else -np.inf)
        unit = int(np.argmin(masked) if smallest_first else np.argmax(masked))
        order[step] = unit
        alive[unit] = False
        contributions -= squared[:, unit]
    return order


# The claims (Heitmann, 2020, sections 3.1 and 3.3) and their rules, fixed before the data were
# looked at. Values are paired by seed: every condition of a statistic has one value per network.


def _judge_order(better: str, worse: str):
    """Rule of the pruning comparisons (see their ``rule`` text)."""

    def judge(evidence: Evidence) -> Verdict:
        held, null_passes, words = 0, False, []
        for name in PRUNED_LAYERS:
            statistic = f"area_{short(name)}"
            gap = mean_interval(evidence.values(statistic, better) - evidence.values(statistic, worse))
            noise = mean_interval(
                evidence.values(statistic, "random_draw0") - evidence.values(statistic, "random_draw1")
            )
            held += gap.low > 0
            null_passes |= noise.low > 0 or noise.high < 0
            words.append(f"{short(name)}: {better} - {worse} = {gap}, random order 1 - order 2 = {noise}")
        word = (
            "agrees" if held == len(PRUNED_LAYERS) and not null_passes else "partly" if held else "disagrees"
        )
        return Verdict(word, f"in {held} of {len(PRUNED_LAYERS)} layers. " + "; ".join(words), null_passes)

    return judge


def _judge_elbow(layer: str):
    """Rule of the rank-k elbow (see its ``rule`` text)."""

    def judge(evidence: Evidence) -> Verdict:
        low, high = NEAR_RANK
        trained, *nulls = (evidence.interval(f"elbow_{short(layer)}", c) for c in ELBOW_CONDITIONS)
        near = trained.low >= low and trained.high <= high
        distinct = all(trained.above(null) or trained.below(null) for null in nulls)
        null_passes = any(null.low >= low and null.high <= high for null in nulls)
        word = (
            "agrees"
            if near and distinct and not null_passes
            else "partly"
            if near or distinct
            else "disagrees"
        )
        numbers = ", ".join(f"{c} {i}" for c, i in zip(ELBOW_CONDITIONS, (trained, *nulls), strict=True))
        return Verdict(
            word,
            f"residual elbows: {numbers}; trained within [{low:g}, {high:g}]: {'yes' if near else 'no'}, "
            f"disjoint from both nulls: {'yes' if distinct else 'no'}",
            null_passes,
        )

    return judge


_PAIRED = (
    "Statistic: each network's mean test accuracy over the pruned fractions 0.1-0.9 (no retraining), per "
    "hidden layer (fc1, fc2). In a layer the claim holds when the 95% Student-t interval of the paired "
    "difference {d} over the networks lies above 0. Null: the same difference between two single random "
    "orders of the same network; it passes if its interval excludes 0 in either layer. Agrees: holds in both "
    "layers and the null passes in neither; partly: holds in one layer (or in both with a passing null); "
    "disagrees: holds in neither."
)
_ELBOW = (
    "Statistic: the kneedle elbow of the relative residual `||W - W_k||_F / ||W||_F` over k, per network. "
    "Near k = 10: the trained layer's 95% Student-t interval over the networks lies within [5, 20]. A "
    "property of training: that interval is disjoint from the intervals of both nulls, the same layer at "
    "epoch 0 and a Gaussian matrix of the same shape and entry scale (one per network). The null passes if "
    "either null's interval lies within [5, 20] too. Agrees: near, disjoint and no null passes; partly: "
    "near or disjoint, not both (or both with a passing null); disagrees: neither."
)
CLAIMS = [
    Claim(
        "magnitude_beats_fp",
        "Heitmann, 2020",
        "Magnitude pruning (smallest norm first, `max_mag`) keeps more accuracy than frame-potential pruning "
        "(smallest frame-potential contribution first, `max_fp`).",
        _PAIRED.format(d="`max_mag - max_fp`"),
        _judge_order("max_mag", "max_fp"),
    ),
    Claim(
        "max_fp_beats_random",
        "Heitmann, 2020",
        "Frame-potential pruning (`max_fp`) keeps more accuracy than random pruning.",
        _PAIRED.format(d="`max_fp - random` (random: the mean over the network's random orders)"),
        _judge_order("max_fp", "random"),
    ),
    Claim(
        "min_fp_below_random",
        "Heitmann, 2020",
        "Removing the largest frame-potential contributions first (`min_fp`) damages the network more than "
        "random pruning.",
        _PAIRED.format(d="`random - min_fp`"),
        _judge_order("random", "min_fp"),
    ),
    Claim(
        "elbow_fc1",
        "Heitmann, 2020",
        "The residual elbow of the first FC layer's rank-k approximations lies near k = 10, the number of "
        "classes, as a property of the trained layer.",
        _ELBOW,
        _judge_elbow(LAYERS[0]),
    ),
    Claim(
        "elbow_fc2",
        "Heitmann, 2020",
        "The same for the second hidden layer (Heitmann states it for first FC layers; fc2 is this network's "
        "other hidden layer).",
        _ELBOW,
        _judge_elbow(LAYERS[1]),
    ),
]


if __name__ == "__main__":
    main()
