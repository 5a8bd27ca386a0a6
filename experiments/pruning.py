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

from experiments.lenet import LAYERS, TrainedLeNet, train_lenet
from experiments.results import (
    parse_study,
    save_figure,
    single_threaded,
    study_parser,
    write_csv,
    write_section,
)
from spectral_callbacks import open_run

__all__ = [
    "CRITERIA",
    "cosine_similarities",
    "frame_potential_contributions",
    "low_rank",
    "main",
    "prune_units",
    "pruning_order",
    "residual_elbow",
]

STUDY = "pruning"
CRITERIA = ("max_mag", "min_mag", "max_fp", "min_fp", "random")
PRUNED_LAYERS = LAYERS[:2]  # the hidden layers; Heitmann's figure 2a prunes the first
PRUNING_COLUMNS = ["seed", "layer", "criterion", "draw", "fraction", "units_removed", "accuracy"]
RANK_COLUMNS = ["seed", "layer", "k", "accuracy", "residual", "norm_kept_pct"]
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


REAL = Size(seeds=3, epochs=40, fractions=tuple(round(0.1 * i, 1) for i in range(10)), random_draws=5)
SMOKE = Size(seeds=1, epochs=1, fractions=(0.0, 0.5, 0.9), random_draws=2)


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
    pruning, ranks, spectra = [], [], []
    for seed in range(size.seeds):
        run_dir = args.runs / STUDY / f"seed{seed}"
        trained = train_lenet(run_dir, epochs=size.epochs, seed=seed, overwrite=True)
        pruning += pruning_rows(trained, seed, size)
        ranks += rank_rows(trained, seed)
        spectra += _spectra_rows(trained, seed)
        print(f"seed {seed}: accuracy {trained.accuracy():.4f}, run file {trained.run_path}")
    write_csv(out / "pruning.csv", PRUNING_COLUMNS, pruning)
    write_csv(out / "rank.csv", RANK_COLUMNS, ranks)
    write_csv(out / "spectra.csv", SPECTRA_COLUMNS, spectra)
    curves = _pruning_curves(pruning)
    elbows = _elbows(ranks)
    final = pd.DataFrame(spectra, columns=SPECTRA_COLUMNS).groupby(["layer", "epoch"]).mean()
    elbows["num_spikes"] = [final.loc[name].iloc[-1]["num_spikes"] for name in elbows.index]
    from experiments import pruning_report as report

    figures = {
        "pruning": save_figure(report.pruning_figure(curves), out / "pruning.png"),
        "rank": save_figure(report.rank_figure(ranks, elbows), out / "rank.png"),
    }
    networks = pd.DataFrame(pruning, columns=PRUNING_COLUMNS).groupby(["layer", "criterion", "seed"])[
        "accuracy"
    ]
    text = report.section(
        curves, networks.mean(), elbows, final, figures, size, len(trained.test_targets), args.results
    )
    write_section(STUDY, text, args.results)
    print(curves["mean"].unstack("fraction").round(3).to_string())
    print(elbows.round(3).to_string())
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


SPECTRA_COLUMNS = ["seed", "layer", "epoch", "frame_potential", "frame_potential_normalized", "num_spikes"]


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


def _index(layer: str) -> int:
    return int(layer.rsplit(".", 1)[1])


def _pruning_curves(rows: Sequence[Sequence[object]]) -> pd.DataFrame:
    """Mean and standard deviation of the accuracy over networks (and random draws).

    Indexed by ``(layer, criterion, fraction)``; columns ``mean`` and ``std``.
    """
    frame = pd.DataFrame(rows, columns=PRUNING_COLUMNS)
    return frame.groupby(["layer", "criterion", "fraction"])["accuracy"].agg(["mean", "std"]).fillna(0.0)


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


if __name__ == "__main__":
    main()
