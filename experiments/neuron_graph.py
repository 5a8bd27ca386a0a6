"""Cosine-similarity graph of a layer's neurons across training epochs (Heitmann, 2020, section 3.2).

For the rows ``w_i`` of a layer's weight (one per neuron) at each epoch, Heitmann (2020) takes the
cosine similarities ``X_ij = <u_i, u_j>`` of the unit rows, turns them into edge weights with a
Gaussian kernel ``A_ij = exp(-(1 - X_ij) / sigma^2)``, and keeps the edges whose weight reaches a
threshold ``t``. He describes what he sees as training goes on: the weight vectors move closer
together, and one big cluster forms with outliers outside it. Here the graph is summarized by its
number of edges, its average clustering coefficient, the size of its largest connected component
and its isolated neurons, for the first layer of several LeNet-300-100 networks (one per seed),
read from the weights SpectralCallback saved in the run files (``open_run(path).weights(layer, epoch)``).

Choice of sigma and threshold: ``A_ij >= t`` is the same as ``X_ij >= 1 + sigma^2 ln t``, so the
unweighted graph depends only on that cosine cutoff ``c``; sigma only scales the edge weights (we
take ``sigma = 1``, so ``A`` lies in ``[e^-2, 1]``, and ``t = exp(c - 1)``). The cutoff is set
relative to chance: two independent random directions in ``d`` dimensions have a cosine of mean 0
and standard deviation about ``1 / sqrt(d)`` (exactly, ``(1 + X) / 2 ~ Beta((d-1)/2, (d-1)/2)``),
so with ``c = z / sqrt(d)`` the initialization's (random Gaussian) rows give a graph with only the
few edges chance predicts. Every statistic is measured at the three cutoffs ``z = 3, 3.5, 4``
(``c = 0.375, 0.4375, 0.5`` for the 64 inputs of fc1; Heitmann's figure 5 uses 0.25 and 0.48),
because a graph statistic that holds at one cutoff only is a property of the cutoff.

Null baselines, measured the same way: (a) random graphs ``G(n, m)`` with the same number of nodes
and edges (Erdos-Renyi, many seeded draws), which show what the edge count alone implies for the
clustering and the largest component; (b) the same network at epoch 0; (c) for the alignment,
the initialization moved by a random Gaussian step as long as training's ``||W_T - W_0||_F``. The
claims and their rules are :data:`CLAIMS`; the verdicts come from ``evidence.csv``.

Run: ``python -m experiments.neuron_graph`` (``--smoke``: a run of a few seconds, into ``runs/smoke/``).

References:
    J. N. Heitmann, "Sources of redundancy in neural networks", semester project, LTS4, EPFL
    (2020), section 3.2.
    D. J. Watts and S. H. Strogatz, "Collective dynamics of 'small-world' networks", Nature 393
    (1998), for the clustering coefficient. P. Erdos and A. Renyi, "On random graphs I", Publ.
    Math. Debrecen 6 (1959), for ``G(n, m)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components

from experiments.lenet import train_lenet
from experiments.pruning import cosine_similarities
from experiments.results import parse_study, single_threaded, study_parser, write_csv, write_section
from experiments.verdicts import Claim, Evidence, Verdict, evidence_path, write_evidence
from spectral_callbacks import frame_potential, open_run

__all__ = [
    "CLAIMS",
    "STUDY",
    "GraphStats",
    "adjacency",
    "average_clustering",
    "chance_edges",
    "cutoff",
    "gnm_null",
    "graph_stats",
    "kernel_weights",
    "main",
]

STUDY = "neuron_graph"
SIGMA = 1.0
# Cosine cutoffs in standard deviations of a random cosine, 1 / sqrt(d); the first is the figures' main.
CUTOFF_SIGMAS = (3.0, 3.5, 4.0)
MAIN_CUTOFF = 3.0
LAYER = "network.0"
STATISTICS = ("edges", "average_clustering", "largest_component", "isolated")
GRAPH_COLUMNS = [
    "seed", "epoch", "cutoff_sigmas", "cosine_cutoff", *STATISTICS, "frame_potential_normalized",
    "chance_edges", "cosine_std",
]  # fmt: skip
NULL_COLUMNS = ["seed", "state", "cutoff_sigmas", "null", "statistic", "mean", "q025", "q975"]
# Conditions of the evidence: the trained network, the same one at epoch 0, the G(n, m) graphs with
# the edges of each, and the initialization moved by a random step of training's length.
END, EPOCH0, GNM_END, GNM_EPOCH0, STEP = "end", "epoch0", "gnm_end", "gnm_epoch0", "random_step"


@dataclass(frozen=True)
class Size:
    """Networks (seeds 0..seeds-1), their training epochs and the G(n, m) draws per graph."""

    seeds: int
    epochs: int
    null_draws: int


REAL = Size(seeds=8, epochs=40, null_draws=100)
SMOKE = Size(seeds=2, epochs=2, null_draws=4)


@dataclass(frozen=True)
class GraphStats:
    """Summary of one thresholded neuron graph."""

    edges: int
    average_clustering: float
    largest_component: int
    isolated: int


def kernel_weights(cosines: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """Edge weights ``exp(-(1 - X_ij) / sigma^2)`` from cosine similarities (Heitmann, 2020); diagonal 0."""
    weights = np.exp(-(1.0 - np.asarray(cosines, dtype=np.float64)) / sigma**2)
    np.fill_diagonal(weights, 0.0)
    return weights


def adjacency(weights: np.ndarray, threshold: float) -> np.ndarray:
    """The unweighted graph: an edge wherever the kernel weight reaches ``threshold``."""
    return weights >= threshold


def cutoff(z: float, dimension: int) -> tuple[float, float]:
    """The cosine cutoff ``z / sqrt(d)`` and the kernel threshold ``exp((c - 1) / sigma^2)`` it means."""
    cosine = z / np.sqrt(dimension)
    return float(cosine), float(np.exp((cosine - 1.0) / SIGMA**2))


def average_clustering(graph: np.ndarray) -> float:
    """Mean over all nodes of the local clustering coefficient (Watts-Strogatz; networkx's convention).

    Node ``i`` with degree ``k_i`` lies on ``T_i = (A^3)_ii / 2`` triangles; its coefficient is
    ``2 T_i / (k_i (k_i - 1))``, and 0 when ``k_i < 2``.
    """
    a = np.asarray(graph, dtype=np.float64)
    degree = a.sum(axis=1)
    closed_walks = np.einsum("ij,ji->i", a @ a, a)  # (A^3)_ii = 2 T_i
    pairs = degree * (degree - 1)
    local = np.divide(closed_walks, pairs, out=np.zeros_like(degree), where=pairs > 0)
    return float(local.mean()) if local.size else 0.0


def chance_edges(nodes: int, dimension: int, cosine: float) -> float:
    """Expected edges among ``nodes`` independent uniformly random directions in ``dimension`` dims.

    The cosine ``X`` of two such directions has ``(1 + X) / 2 ~ Beta((d-1)/2, (d-1)/2)``.
    """
    from scipy.stats import beta

    shape = (dimension - 1) / 2
    return nodes * (nodes - 1) / 2 * float(beta.sf((1 + cosine) / 2, shape, shape))


def graph_stats(graph: np.ndarray) -> GraphStats:
    """Edges, average clustering, largest connected component and isolated nodes."""
    graph = np.asarray(graph, dtype=bool)
    _, labels = connected_components(graph, directed=False)
    return GraphStats(
        edges=int(np.triu(graph, 1).sum()),
        average_clustering=average_clustering(graph),
        largest_component=int(np.bincount(labels).max()) if len(graph) else 0,
        isolated=int((graph.sum(axis=1) == 0).sum()),
    )


def gnm_null(nodes: int, edges: int, draws: int, seed: int | Sequence[int]) -> list[GraphStats]:
    """The statistics of ``draws`` Erdos-Renyi graphs ``G(nodes, edges)``: each of the ``nodes * (nodes
    - 1) / 2`` pairs equally likely to hold one of the ``edges`` (networkx; draw seeds from ``seed``)."""
    import networkx as nx

    seeds = np.random.SeedSequence(seed).generate_state(draws)
    graphs = (nx.gnm_random_graph(nodes, edges, seed=int(s)) for s in seeds)
    return [graph_stats(nx.to_numpy_array(graph, nodelist=range(nodes)) > 0) for graph in graphs]


def main(argv: Sequence[str] | None = None) -> Path:
    """Train the networks, build their graphs and the nulls, write CSVs, evidence, figures, section.

    Returns:
        The study's output directory.
    """
    args = parse_study(study_parser(__doc__.split("\n\n")[0]), argv)
    with single_threaded():
        return _run(args, SMOKE if args.smoke else REAL)


def _run(args: argparse.Namespace, size: Size) -> Path:
    from experiments import neuron_graph_report as report

    out = args.out / STUDY
    graph_rows, null_rows, evidence_rows, drawn = [], [], [], None
    for seed in range(size.seeds):
        trained = train_lenet(
            args.runs / STUDY / f"seed{seed}", epochs=size.epochs, seed=seed, overwrite=True
        )
        with open_run(trained.run_path) as run:
            epochs = run.epochs.tolist()
            potentials = run.metric("frame_potential_normalized", LAYER)
            history = [run.weights(LAYER, epoch) for epoch in epochs]
        for epoch, weight, potential in zip(epochs, history, potentials, strict=True):
            graph_rows += _graph_rows(seed, epoch, weight, float(potential))
        nulls, evidence = _network_evidence(seed, history[0], history[-1], size.null_draws)
        null_rows += nulls
        evidence_rows += evidence
        drawn = drawn or ((epochs[0], history[0]), (epochs[-1], history[-1]))
        print(f"seed {seed}: accuracy {trained.accuracy():.4f}")
    write_csv(out / "graph.csv", GRAPH_COLUMNS, graph_rows)
    write_csv(out / "null.csv", NULL_COLUMNS, null_rows)
    evidence = Evidence(evidence_rows)
    write_evidence(evidence_path(args.out, STUDY), evidence)
    figures = report.figures(graph_rows, evidence, drawn, out)
    write_section(STUDY, report.section(evidence, figures, size, args.results), args.results)
    return out


def _graph_rows(seed: int, epoch: int, weight: np.ndarray, potential: float) -> list[list[float]]:
    cosines = cosine_similarities(weight)
    weights = kernel_weights(cosines)
    spread = float(np.std(cosines[np.triu_indices(len(cosines), 1)]))
    rows = []
    for z in CUTOFF_SIGMAS:
        cosine, threshold = cutoff(z, weight.shape[1])
        stats = graph_stats(adjacency(weights, threshold))
        chance = chance_edges(*weight.shape, cosine)
        rows.append([seed, epoch, z, cosine, *vars(stats).values(), potential, chance, spread])
    return rows


def _network_evidence(
    seed: int, initial: np.ndarray, final: np.ndarray, draws: int
) -> tuple[list[list[object]], list[tuple[str, str, int, float]]]:
    """One network's statistics at epoch 0, at the end, after a random step, and their G(n, m) nulls."""
    rng = np.random.default_rng([seed, 7])
    noise = rng.standard_normal(initial.shape)
    step = initial + noise * (np.linalg.norm(final - initial) / np.linalg.norm(noise))
    states = {END: final, EPOCH0: initial, STEP: step}
    nulls: list[list[object]] = []
    potential = "frame_potential_normalized"
    evidence = [(potential, state, seed, frame_potential(weight).frame_potential_normalized)
                for state, weight in states.items()]  # fmt: skip
    for z in CUTOFF_SIGMAS:
        for state, weight in states.items():
            graph = adjacency(kernel_weights(cosine_similarities(weight)), cutoff(z, weight.shape[1])[1])
            stats = graph_stats(graph)
            evidence += [(f"{name}_z{z:g}", state, seed, float(value)) for name, value in vars(stats).items()]
            if state == STEP:
                continue
            null = gnm_null(len(graph), stats.edges, draws, seed=[seed, round(10 * z), int(state == END)])
            for name in STATISTICS:
                values = np.array([getattr(s, name) for s in null], dtype=np.float64)
                q025, q975 = np.quantile(values, [0.025, 0.975])
                nulls.append([seed, state, z, "gnm", name, values.mean(), q025, q975])
                condition = GNM_END if state == END else GNM_EPOCH0
                evidence.append((f"{name}_z{z:g}", condition, seed, float(values.mean())))
    return nulls, evidence


# The claims (Heitmann, 2020, section 3.2) and their rules, fixed before the data were looked at.


def _key(statistic: str, z: float) -> str:
    return f"{statistic}_z{z:g}"


def _judge_alignment(evidence: Evidence) -> Verdict:
    parts, null_parts, words = [], [], []
    for statistic in [_key("edges", z) for z in CUTOFF_SIGMAS] + ["frame_potential_normalized"]:
        end, initial, step = (evidence.interval(statistic, c) for c in (END, EPOCH0, STEP))
        parts.append(end.above(initial))
        null_parts.append(step.above(initial))
        words.append(f"{statistic}: end {end}, epoch 0 {initial}, random step {step}")
    return _verdict(parts, any(null_parts), "; ".join(words))


def _judge_beyond_nulls(statistic: str):
    """Rule shared by the clustering and largest-component claims (see their ``rule`` text)."""

    def judge(evidence: Evidence) -> Verdict:
        parts, null_parts, words = [], [], []
        for z in CUTOFF_SIGMAS:
            end, gnm_end, initial, gnm_initial = (
                evidence.interval(_key(statistic, z), c) for c in (END, GNM_END, EPOCH0, GNM_EPOCH0)
            )
            parts += [end.above(gnm_end), end.above(initial)]
            null_parts.append(initial.above(gnm_initial))
            words.append(
                f"z = {z:g}: end {end}, its G(n, m) {gnm_end}; epoch 0 {initial}, its G(n, m) {gnm_initial}"
            )
        return _verdict(parts, any(null_parts), "; ".join(words))

    return judge


def _verdict(parts: Sequence[bool], null_passes: bool, evidence: str) -> Verdict:
    """All parts hold and the null fails: agrees; some hold: partly; none: disagrees."""
    held = sum(bool(p) for p in parts)
    word = "agrees" if held == len(parts) and not null_passes else "partly" if held else "disagrees"
    return Verdict(word, f"{held} of {len(parts)} comparisons hold. {evidence}", bool(null_passes))


_CUTOFFS = ", ".join(f"{z:g}" for z in CUTOFF_SIGMAS)
_INTERVALS = "95% Student-t intervals over the networks"
CLAIMS = [
    Claim(
        "rows_align",
        "Heitmann, 2020",
        "During training the rows of the first FC layer move closer together: at the end more pairs of "
        "rows have a cosine above a fixed cutoff, and the rows' normalized frame potential is larger, than "
        "at initialization.",
        f"Statistics: the number of edges at the cutoffs z = {_CUTOFFS} and the normalized frame potential "
        f"(no cutoff), {_INTERVALS}. Each of the 4 comparisons holds when the end-of-training interval lies "
        "above the epoch-0 interval. Null: the initialization moved by a random Gaussian step as long as "
        "training's `||W_T - W_0||_F`, judged by the same comparisons; it passes if any comparison holds for "
        "it. Agrees: all 4 hold and the null passes none; partly: some hold; disagrees: none holds.",
        _judge_alignment,
    ),
    Claim(
        "clustering",
        "Heitmann, 2020",
        "The aligned rows form a cluster: the graph's average clustering coefficient at the end is larger "
        "than random graphs with the same nodes and edges give, and larger than at initialization.",
        f"Statistic: the average clustering coefficient at the cutoffs z = {_CUTOFFS}, {_INTERVALS}. At each "
        "cutoff two comparisons: the end-of-training interval above the interval of the G(n, m) means (each "
        "network's graph against its own random graphs with the same node and edge count), and above the "
        "epoch-0 interval. Null: the epoch-0 network against its own G(n, m) graphs; it passes if its "
        "interval lies above theirs at any cutoff. Agrees: all 6 comparisons hold and the null passes none; "
        "partly: some hold; disagrees: none holds.",
        _judge_beyond_nulls("average_clustering"),
    ),
    Claim(
        "one_big_component",
        "Heitmann, 2020",
        "Training forms one big cluster with outliers outside it: the largest connected component at the "
        "end holds more neurons than random graphs with the same nodes and edges give, and more than at "
        "initialization.",
        f"Statistic: the number of neurons in the largest connected component at the cutoffs z = {_CUTOFFS}, "
        f"{_INTERVALS}; the comparisons, the null and the verdicts are those of the `clustering` rule.",
        _judge_beyond_nulls("largest_component"),
    ),
]

if __name__ == "__main__":
    main()
