"""Neuron-graph study: kernel, thresholding, clustering against networkx, and the smoke run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_png, read_csv, section_of

from experiments.neuron_graph import (
    COLUMNS,
    adjacency,
    average_clustering,
    chance_edges,
    graph_stats,
    kernel_weights,
)
from experiments.pruning import cosine_similarities


def test_kernel_weights_follow_the_seed_formula():
    rows = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, 0.0]])
    cosines = cosine_similarities(rows)
    weights = kernel_weights(cosines, sigma=0.5)
    assert np.allclose(np.diag(weights), 0.0)
    assert weights[0, 1] == pytest.approx(1.0)  # same direction: distance 0
    assert weights[0, 2] == pytest.approx(np.exp(-1 / 0.25))  # orthogonal
    assert weights[0, 3] == pytest.approx(np.exp(-2 / 0.25))  # opposite
    assert weights[0, 4] == pytest.approx(np.exp(-1 / 0.25))  # a zero row counts as orthogonal
    assert np.allclose(weights, weights.T)


def test_thresholding_the_kernel_is_a_cosine_cutoff():
    rows = np.random.default_rng(0).standard_normal((40, 10))
    cosines = cosine_similarities(rows)
    sigma, cutoff = 0.7, 0.3
    graph = adjacency(kernel_weights(cosines, sigma), np.exp((cutoff - 1) / sigma**2))
    expected = cosines >= cutoff
    np.fill_diagonal(expected, False)
    assert np.array_equal(graph, expected)


def test_average_clustering_matches_networkx():
    nx = pytest.importorskip("networkx")
    graph = nx.gnp_random_graph(60, 0.1, seed=4)
    matrix = nx.to_numpy_array(graph) > 0
    assert average_clustering(matrix) == pytest.approx(nx.average_clustering(graph))
    stats = graph_stats(matrix)
    assert stats.edges == graph.number_of_edges()
    assert stats.largest_component == max(len(c) for c in nx.connected_components(graph))
    assert stats.isolated == sum(1 for _, degree in graph.degree if degree == 0)


def test_graph_stats_of_small_graphs():
    triangle_and_tail = np.zeros((5, 5), dtype=bool)
    for i, j in [(0, 1), (1, 2), (0, 2), (2, 3)]:
        triangle_and_tail[i, j] = triangle_and_tail[j, i] = True
    stats = graph_stats(triangle_and_tail)
    assert (stats.edges, stats.largest_component, stats.isolated) == (4, 4, 1)
    assert stats.density == pytest.approx(4 / 10)
    assert stats.average_clustering == pytest.approx((1 + 1 + 1 / 3 + 0 + 0) / 5)


def test_chance_edges_match_random_directions():
    rng = np.random.default_rng(5)
    counts = []
    for _ in range(20):
        cosines = cosine_similarities(rng.standard_normal((200, 16)))
        counts.append(np.triu(cosines >= 0.5, 1).sum())
    assert np.mean(counts) == pytest.approx(chance_edges(200, 16, 0.5), rel=0.1)


@pytest.mark.slow
def test_smoke_run_writes_well_formed_outputs(smoke):
    _, out, results = smoke
    rows = read_csv(out / "graph.csv", COLUMNS)
    assert sorted({int(row["epoch"]) for row in rows}) == [0, 1, 2]
    assert all(0 <= int(row["edges"]) <= 300 * 299 // 2 for row in rows)
    assert all(0.0 <= float(row["average_clustering"]) <= 1.0 for row in rows)
    for name in ("graph_stats.png", "graphs.png"):
        assert_png(out / name)
    section = section_of(results, "neuron_graph")
    assert "(results/neuron_graph/graph_stats.png)" in section and "Agreement with Heitmann (2020)" in section
