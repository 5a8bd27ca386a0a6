"""Figures and the RESULTS.md section of the neuron-graph study (:mod:`experiments.neuron_graph`).

Every number shown comes from the study's CSVs and its evidence; the verdicts are rendered from the
evidence by the study's own rules (:data:`experiments.neuron_graph.CLAIMS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments import neuron_graph
from experiments.lenet import LAYER_LABELS, describe_training
from experiments.neuron_graph import (
    CUTOFF_SIGMAS,
    END,
    EPOCH0,
    GNM_END,
    GNM_EPOCH0,
    GRAPH_COLUMNS,
    LAYER,
    MAIN_CUTOFF,
    SIGMA,
    SMOKE,
    STATISTICS,
    STEP,
    Size,
    adjacency,
    cutoff,
    kernel_weights,
)
from experiments.pruning import cosine_similarities
from experiments.results import figure_link, markdown_table, pyplot, save_figure
from experiments.verdicts import Evidence, derive_verdicts, verdicts_markdown

__all__ = ["figures", "section"]

CONDITION_LABELS = {
    END: "end of training",
    GNM_END: "G(n, m), edges of the end",
    EPOCH0: "epoch 0",
    GNM_EPOCH0: "G(n, m), edges of epoch 0",
    STEP: "epoch 0 + random step",
}


def figures(
    graph_rows: Sequence[Sequence[float]],
    evidence: Evidence,
    drawn: tuple[tuple[int, np.ndarray], tuple[int, np.ndarray]],
    out: Path,
) -> dict[str, Path]:
    """Write the study's three figures; returns their paths by name."""
    return {
        "nulls": save_figure(_nulls_figure(evidence), out / "nulls.png"),
        "stats": save_figure(_stats_figure(graph_rows), out / "graph_stats.png"),
        "graphs": save_figure(_drawing(*drawn), out / "graphs.png"),
    }


def _nulls_figure(evidence: Evidence):
    """The end-of-training statistics against their nulls, per cutoff, with their intervals."""
    plt = pyplot()
    panels = {"edges": "edges", "average_clustering": "average clustering", "largest_component":
              "neurons in the largest component", "isolated": "isolated neurons"}  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(14, 3.8), dpi=100)
    offsets = np.linspace(-0.3, 0.3, len(CONDITION_LABELS))
    for ax, (statistic, title) in zip(axes, panels.items(), strict=True):
        for offset, (condition, label) in zip(offsets, CONDITION_LABELS.items(), strict=True):
            points = [evidence.interval(f"{statistic}_z{z:g}", condition) for z in CUTOFF_SIGMAS]
            x = np.arange(len(CUTOFF_SIGMAS)) + offset
            mean = np.array([p.mean for p in points])
            error = np.array([[p.mean - p.low for p in points], [p.high - p.mean for p in points]])
            ax.errorbar(x, mean, yerr=error, fmt="o", ms=4, capsize=2, label=label)
        ax.set_xticks(range(len(CUTOFF_SIGMAS)), [f"z = {z:g}" for z in CUTOFF_SIGMAS])
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    figure.suptitle(
        f"{LAYER_LABELS[LAYER]}: graph statistics at the end of training and their nulls "
        "(mean and 95% interval over the networks; cutoff cosine >= z / sqrt(d))",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _stats_figure(rows: Sequence[Sequence[float]]):
    """Mean over the networks of each statistic over epochs, one line per cutoff."""
    plt = pyplot()
    table = np.array(rows, dtype=np.float64)
    column = {name: i for i, name in enumerate(GRAPH_COLUMNS)}
    figure, panels = plt.subplots(2, 2, figsize=(10, 7), dpi=100, sharex=True)
    (edges, clustering), (component, potential) = panels
    for z in CUTOFF_SIGMAS:
        part = table[table[:, column["cutoff_sigmas"]] == z]
        epochs = np.unique(part[:, column["epoch"]])

        def mean(name: str, part: np.ndarray = part, epochs: np.ndarray = epochs) -> np.ndarray:
            return np.array([part[part[:, column["epoch"]] == e, column[name]].mean() for e in epochs])

        style = {"lw": 2.0 if z == MAIN_CUTOFF else 1.0, "label": f"z = {z:g} (cosine >= {part[0, 3]:.3f})"}
        line = edges.plot(epochs, mean("edges"), **style)[0]
        edges.axhline(part[0, column["chance_edges"]], color=line.get_color(), ls=":", lw=1)
        clustering.plot(epochs, mean("average_clustering"), color=line.get_color(), **style)
        component.plot(epochs, mean("largest_component"), color=line.get_color(), **style)
        component.plot(epochs, mean("isolated"), color=line.get_color(), ls="--", lw=1)
        if z == MAIN_CUTOFF:
            potential.plot(epochs, mean("frame_potential_normalized"), color="black")
    edges.set_title("edges (dotted: expected for random directions)", fontsize=10)
    edges.legend(fontsize=7, title=f"edge where cosine >= z / sqrt(d), sigma = {SIGMA:g}", title_fontsize=7)
    clustering.set_title("average clustering coefficient", fontsize=10)
    component.set_title("neurons in the largest component (solid), isolated (dashed)", fontsize=10)
    potential.set_title("frame potential / tight-frame minimum (run files)", fontsize=10)
    for axes in (component, potential):
        axes.set_xlabel("epoch")
    networks = len(np.unique(table[:, column["seed"]]))
    figure.suptitle(
        f"cosine-similarity graph of the neurons of {LAYER_LABELS[LAYER]} over training "
        f"(mean over {networks} networks)",
        fontsize=11,
    )
    figure.tight_layout()
    return figure


def _drawing(first: tuple[int, np.ndarray], last: tuple[int, np.ndarray]):
    """The main-cutoff graph at the first and last epoch, node size by row norm (Heitmann, 2020, fig. 3),
    and one G(n, m) graph with the last epoch's number of edges."""
    import networkx as nx

    plt = pyplot()
    figure, panels = plt.subplots(1, 3, figsize=(15, 5), dpi=100)
    graphs = []
    for epoch, weight in (first, last):
        weights = kernel_weights(cosine_similarities(weight))
        kept = adjacency(weights, cutoff(MAIN_CUTOFF, weight.shape[1])[1])
        graph = nx.from_numpy_array(np.where(kept, weights, 0.0))
        graphs.append((f"epoch {epoch}", graph, np.linalg.norm(weight, axis=1)))
    nodes, edges = graphs[-1][1].number_of_nodes(), graphs[-1][1].number_of_edges()
    random = nx.gnm_random_graph(nodes, edges, seed=0)
    graphs.append(("G(n, m) with the same edges", random, np.ones(nodes)))
    for axes, (name, graph, norms) in zip(panels, graphs, strict=True):
        layout = nx.spring_layout(graph, seed=0, weight="weight")
        largest = max(nx.connected_components(graph), key=len)
        colors = ["tab:orange" if node in largest else "tab:blue" for node in graph.nodes]
        nx.draw_networkx_edges(graph, layout, ax=axes, alpha=0.5, width=0.8)
        nx.draw_networkx_nodes(graph, layout, ax=axes, node_size=25 * norms / norms.mean(), node_color=colors)
        title = f"{name}: {graph.number_of_edges()} edges, largest component {len(largest)}"
        axes.set_title(title, fontsize=10)
        axes.set_axis_off()
    figure.suptitle(
        f"neurons of {LAYER_LABELS[LAYER]} (seed 0); edge where cosine >= {MAIN_CUTOFF:g}/sqrt(d); "
        "node size ~ row norm; orange: largest component",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _observation(evidence: Evidence) -> str:
    """The largest component and the isolated neurons against G(n, m), in numbers, per cutoff."""

    def mean(statistic: str, z: float, condition: str) -> float:
        return evidence.interval(f"{statistic}_z{z:g}", condition).mean

    parts = [
        f"z = {z:g}: largest component {mean('largest_component', z, END):.3g} neurons (G(n, m): "
        f"{mean('largest_component', z, GNM_END):.3g}), isolated {mean('isolated', z, END):.3g} "
        f"(G(n, m): {mean('isolated', z, GNM_END):.3g})"
        for z in CUTOFF_SIGMAS
    ]
    text = "At the end of training (means over the networks), " + "; ".join(parts) + "."
    z = CUTOFF_SIGMAS[0]
    if mean("largest_component", z, END) < mean("largest_component", z, GNM_END) and mean(
        "isolated", z, END
    ) > mean("isolated", z, GNM_END):
        text += (
            f" At z = {z:g} training's "
            "edges fall on fewer neurons than the same number of random edges would reach: there are "
            "outliers "
            "and a clustered core, but the core is not larger than the edge count alone implies."
        )
    return text


def section(evidence: Evidence, figures: dict[str, Path], size: Size, results: Path) -> str:
    """The study's section: setup, differences from the source, table, figures and verdicts."""
    command = "python -m experiments.neuron_graph" + (" --smoke" if size is SMOKE else "")
    table = markdown_table(
        ["z", "condition", *STATISTICS],
        [
            [f"{z:g}", CONDITION_LABELS[c], *[str(evidence.interval(f"{s}_z{z:g}", c)) for s in STATISTICS]]
            for z in CUTOFF_SIGMAS
            for c in CONDITION_LABELS
        ],
    )
    potential = ", ".join(
        f"{CONDITION_LABELS[c]} {evidence.interval('frame_potential_normalized', c)}"
        for c in (END, EPOCH0, STEP)
    )
    verdicts = verdicts_markdown(derive_verdicts(neuron_graph.CLAIMS, evidence))
    return "\n".join(
        [
            "## Cosine-similarity graph of a layer's neurons across epochs (Heitmann, 2020)",
            "",
            f"`{command}`: the neurons (rows) of {LAYER_LABELS[LAYER]} in {size.seeds} LeNet-300-100 "
            "networks "
            f"on the digits (seeds 0-{size.seeds - 1}, the pruning study's networks), each trained "
            f"{describe_training(size.epochs)}; the weights are read back from the run files. Edge weights "
            f"`exp(-(1 - X_ij) / sigma^2)`, sigma = {SIGMA:g}; an edge where the cosine "
            "`X_ij >= z / sqrt(d)`, "
            f"at z = {', '.join(f'{z:g}' for z in CUTOFF_SIGMAS)} (d = 64 inputs; z counts the spread of a "
            "random cosine). Nulls: G(n, m) random graphs with the same 300 nodes and the same number of "
            f"edges as each network's graph ({size.null_draws} seeded networkx draws each; the table shows "
            "the mean over the networks of each network's G(n, m) mean), the same network at epoch 0, and "
            "epoch 0 "
            "moved by a random Gaussian step of training's length `||W_T - W_0||_F`.",
            "",
            "Differences from Heitmann's (2020) setup: he draws the graphs of Conv-2's first FC layer on "
            "CIFAR-10 (16,384 inputs per neuron) and describes them by eye; here LeNet-300-100's first "
            "layer on scikit-learn's 8x8 digits (64 inputs, so 300 rows cannot be orthogonal) after "
            f"{size.epochs} epochs, summarized by graph statistics with their nulls at three cutoffs "
            "instead of his fixed thresholds.",
            "",
            "Mean [95% interval] (n = networks) per cutoff and condition (`null.csv` has each network's "
            "G(n, m) 2.5% and 97.5% quantiles; `graph.csv` every epoch of every network):",
            "",
            table,
            "",
            f"Normalized frame potential (no cutoff): {potential}.",
            "",
            figure_link(figures["nulls"], results, "graph statistics against their nulls"),
            "",
            figure_link(figures["stats"], results, "graph statistics over epochs"),
            "",
            figure_link(figures["graphs"], results, "graph at the first and last epoch"),
            "",
            _observation(evidence),
            "",
            f"Verdicts, derived from `results/{neuron_graph.STUDY}/evidence.csv` by the rules in "
            "`experiments/neuron_graph.py`:",
            "",
            verdicts,
        ]
    )
