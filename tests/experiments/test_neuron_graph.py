"""Neuron-graph study: kernel, thresholding, clustering against networkx, the G(n, m) null, the
claims' rules on made-up evidence, and the smoke run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_png, read_csv, section_of

from experiments.neuron_graph import (
    CLAIMS,
    CUTOFF_SIGMAS,
    GRAPH_COLUMNS,
    NULL_COLUMNS,
    STATISTICS,
    adjacency,
    average_clustering,
    chance_edges,
    cutoff,
    gnm_null,
    graph_stats,
    kernel_weights,
)
from experiments.pruning import cosine_similarities
from experiments.verdicts import Evidence, derive_verdicts, read_evidence


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
    assert stats.average_clustering == pytest.approx((1 + 1 + 1 / 3 + 0 + 0) / 5)


def test_chance_edges_match_random_directions():
    rng = np.random.default_rng(5)
    counts = []
    for _ in range(20):
        cosines = cosine_similarities(rng.standard_normal((200, 16)))
        counts.append(np.triu(cosines >= 0.5, 1).sum())
    assert np.mean(counts) == pytest.approx(chance_edges(200, 16, 0.5), rel=0.1)


def test_cutoff_is_z_chance_widths_and_its_kernel_threshold():
    cosine, threshold = cutoff(3.0, 64)
    assert cosine == pytest.approx(0.375)
    assert threshold == pytest.approx(np.exp(0.375 - 1.0))


def test_gnm_null_keeps_nodes_and_edges_and_is_seeded():
    draws = gnm_null(50, 40, draws=6, seed=[1, 2])
    assert len(draws) == 6 and all(d.edges == 40 for d in draws)
    assert all(d.largest_component + d.isolated <= 50 for d in draws)
    again = gnm_null(50, 40, draws=6, seed=[1, 2])
    assert draws == again
    assert draws != gnm_null(50, 40, draws=6, seed=[1, 3])


def test_a_clique_beats_its_random_graph_in_clustering_but_not_in_reach():
    # 30 edges inside 9 of 60 nodes: clustered, but random graphs with 30 edges reach more nodes
    clique = np.zeros((60, 60), dtype=bool)
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9)][:30]
    for i, j in pairs:
        clique[i, j] = clique[j, i] = True
    stats = graph_stats(clique)
    null = gnm_null(60, stats.edges, draws=50, seed=0)
    assert stats.average_clustering > max(d.average_clustering for d in null)
    assert stats.isolated > np.mean([d.isolated for d in null])


def _evidence(end: float, gnm_end: float, initial: float, gnm_initial: float, step: float) -> Evidence:
    """Made-up evidence: every statistic at every cutoff, 5 networks, values spread by +-1%."""
    conditions = {"end": end, "gnm_end": gnm_end, "epoch0": initial, "gnm_epoch0": gnm_initial,
                  "random_step": step}  # fmt: skip
    names = [f"{s}_z{z:g}" for s in STATISTICS for z in CUTOFF_SIGMAS] + ["frame_potential_normalized"]
    return Evidence(
        (name, condition, seed, value * (1 + 0.01 * (seed - 2)))
        for name in names
        for condition, value in conditions.items()
        for seed in range(5)
    )


def test_the_rules_agree_only_beyond_every_null():
    verdicts = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(10.0, 2.0, 1.0, 1.0, 1.0))}
    assert {v.verdict for v in verdicts.values()} == {"agrees"}
    # beyond epoch 0 but not beyond the random graph with the same edges: partly
    verdicts = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(10.0, 12.0, 1.0, 1.0, 1.0))}
    assert verdicts["clustering"].verdict == "partly" and verdicts["one_big_component"].verdict == "partly"
    # a random step that aligns as much as training: the null passes, no agreement
    verdicts = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(10.0, 2.0, 1.0, 1.0, 10.0))}
    assert verdicts["rows_align"].verdict == "partly" and verdicts["rows_align"].null_passes
    # epoch 0 already beyond its random graphs: the null passes
    verdicts = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(10.0, 2.0, 5.0, 1.0, 1.0))}
    assert verdicts["clustering"].null_passes and verdicts["clustering"].verdict == "partly"
    verdicts = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(1.0, 1.0, 1.0, 1.0, 1.0))}
    assert {v.verdict for v in verdicts.values()} == {"disagrees"}


@pytest.mark.slow
def test_smoke_run_writes_well_formed_outputs(smoke):
    _, out, results = smoke
    rows = read_csv(out / "graph.csv", GRAPH_COLUMNS)
    assert sorted({int(row["epoch"]) for row in rows}) == [0, 1, 2]
    assert {int(row["seed"]) for row in rows} == {0, 1}
    assert all(0 <= int(row["edges"]) <= 300 * 299 // 2 for row in rows)
    assert all(0.0 <= float(row["average_clustering"]) <= 1.0 for row in rows)
    nulls = read_csv(out / "null.csv", NULL_COLUMNS)
    assert all(float(r["q025"]) <= float(r["mean"]) <= float(r["q975"]) for r in nulls)
    evidence = read_evidence(out / "evidence.csv")
    judged = derive_verdicts(CLAIMS, evidence)
    for name in ("graph_stats.png", "graphs.png", "nulls.png"):
        assert_png(out / name)
    section = section_of(results, "neuron_graph")
    assert "(results/neuron_graph/nulls.png)" in section
    for claim, verdict in judged:
        assert f"**Claim `{claim.key}` (Heitmann, 2020).**" in section
        assert f"**Verdict: {verdict.verdict}.**" in section
