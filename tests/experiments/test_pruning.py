"""Pruning study: frame-potential contributions, pruning orders, rank-k approximations, smoke run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_png, read_csv, section_of

from experiments.pruning import (
    CLAIMS,
    PRUNING_COLUMNS,
    RANK_COLUMNS,
    RESIDUAL_COLUMNS,
    frame_potential_contributions,
    knee_depth,
    low_rank,
    prune_units,
    pruning_order,
    residual_curve,
    residual_elbow,
)
from experiments.verdicts import Evidence, derive_verdicts, read_evidence
from spectral_callbacks.spectra import frame_potential


@pytest.mark.parametrize("shape", [(30, 8), (8, 30), (50, 50)])
def test_frame_potential_contributions_sum_to_the_frame_potential(shape):
    rows = np.random.default_rng(0).standard_normal(shape)
    rows[3] = 0.0  # no direction: left out of both
    contributions = frame_potential_contributions(rows)
    assert contributions[3] == 0.0
    assert contributions.sum() == pytest.approx(frame_potential(rows).frame_potential, rel=1e-10)


def test_frame_potential_contributions_of_an_orthonormal_set_and_of_a_repeated_row():
    assert np.allclose(frame_potential_contributions(3.0 * np.eye(4)), 1.0)
    rows = np.vstack([np.eye(3), [[2.0, 0.0, 0.0]]])  # the last row repeats the first's direction
    assert np.allclose(frame_potential_contributions(rows), [2.0, 1.0, 1.0, 2.0])


def test_magnitude_pruning_removes_the_smallest_rows_first():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((20, 6)) * rng.uniform(0.1, 5.0, size=(20, 1))
    norms = np.linalg.norm(rows, axis=1)
    order = pruning_order(rows, "max_mag")
    assert np.all(np.diff(norms[order]) >= 0)
    assert set(order[:5]) == set(np.argsort(norms)[:5])
    assert np.array_equal(pruning_order(rows, "min_mag"), np.argsort(-norms, kind="stable"))


def test_frame_potential_pruning_is_greedy_on_the_updated_contributions():
    # rows 0-2 are one direction (a cluster), row 3 is close to them, row 4 is orthogonal to all
    rows = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=float)
    max_fp = pruning_order(rows, "max_fp")
    assert max_fp[0] == 4  # the outlier has the smallest contribution
    assert sorted(max_fp[-3:]) == [0, 1, 2]  # the cluster is kept the longest
    assert set(pruning_order(rows, "min_fp")[:2]) <= {0, 1, 2}
    for criterion in ("max_fp", "min_fp"):
        assert sorted(pruning_order(rows, criterion)) == list(range(5))


def test_greedy_frame_potential_order_keeps_the_pruned_potential_largest_at_each_step():
    rows = np.random.default_rng(2).standard_normal((12, 4))
    order = pruning_order(rows, "max_fp")
    for step in range(1, 11):
        kept = np.setdiff1d(np.arange(12), order[:step])
        # no single alternative removal from the previous kept set gives a larger potential
        before = np.setdiff1d(np.arange(12), order[: step - 1])
        best = max(frame_potential(rows[np.setdiff1d(before, [i])]).frame_potential for i in before)
        assert frame_potential(rows[kept]).frame_potential == pytest.approx(best)


def test_random_order_needs_a_generator_and_unknown_criteria_are_refused():
    rows = np.ones((4, 2))
    with pytest.raises(ValueError, match="needs a generator"):
        pruning_order(rows, "random")
    with pytest.raises(ValueError, match="Unknown pruning criterion='largest'"):
        pruning_order(rows, "largest")
    order = pruning_order(rows, "random", np.random.default_rng(0))
    assert sorted(order) == [0, 1, 2, 3]


def test_prune_units_zeroes_rows_and_biases_of_a_copy():
    network = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    pruned = prune_units(network, 0, np.array([1, 3]))
    assert torch.all(pruned[0].weight[[1, 3]] == 0) and torch.all(pruned[0].bias[[1, 3]] == 0)
    assert torch.equal(pruned[0].weight[[0, 2, 4]], network[0].weight[[0, 2, 4]])
    assert torch.all(network[0].weight[[1, 3]] != 0)  # the original is untouched
    hidden = pruned[1](pruned[0](torch.randn(7, 3)))
    assert torch.all(hidden[:, [1, 3]] == 0)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])
def test_rank_k_error_is_the_sum_of_the_dropped_squared_singular_values(shape):
    weight = np.random.default_rng(3).standard_normal(shape)
    singular = np.linalg.svd(weight, compute_uv=False)
    for k in (1, 5, 12):
        approx = low_rank(weight, k)
        assert np.linalg.matrix_rank(approx) == k
        assert np.linalg.norm(weight - approx) ** 2 == pytest.approx(np.sum(singular[k:] ** 2))
        assert np.linalg.norm(weight - approx, 2) == pytest.approx(singular[k] if k < 12 else 0.0, abs=1e-9)


def test_residual_elbow_finds_the_knee_of_a_sharp_curve():
    k = np.arange(1, 41)
    residuals = np.where(k <= 10, 1.0 - 0.09 * k, 0.1 - 0.002 * (k - 10))  # fast fall, then flat
    assert residual_elbow(residuals) == 10
    assert residual_elbow(np.array([1.0, 0.5])) == 1


def test_residual_curve_is_the_relative_truncation_error():
    weight = np.random.default_rng(4).standard_normal((30, 12))
    curve = residual_curve(weight)
    assert curve.shape == (12,) and curve[-1] == pytest.approx(0.0, abs=1e-7)
    for k in (1, 4, 9):
        expected = np.linalg.norm(weight - low_rank(weight, k)) / np.linalg.norm(weight)
        assert curve[k - 1] == pytest.approx(expected)


def test_knee_depth_tells_a_sharp_elbow_from_a_straight_line():
    k = np.arange(1, 41)
    sharp = np.where(k <= 10, 1.0 - 0.09 * k, 0.1 - 0.002 * (k - 10))
    assert knee_depth(sharp) > 0.6
    assert knee_depth(1.0 - k / 40) == pytest.approx(0.0, abs=1e-12)
    assert knee_depth(np.sqrt(1.0 - k / 40)) == 0.0  # concave: no elbow at all


def _evidence(gaps: dict[str, float], noise: float, elbows: dict[str, float]) -> Evidence:
    """Made-up evidence for 6 networks: criterion areas, two random orders, elbows per condition."""
    rows = []
    for seed in range(6):
        jitter = 0.002 * (seed - 2.5)
        for layer in ("fc1", "fc2"):
            for criterion, value in gaps.items():
                rows.append((f"area_{layer}", criterion, seed, value + jitter))
            rows.append((f"area_{layer}", "random_draw0", seed, 0.5 + noise + jitter))
            rows.append((f"area_{layer}", "random_draw1", seed, 0.5 - jitter))
            for condition, value in elbows.items():
                rows.append((f"elbow_{layer}", condition, seed, value + seed % 2))
    return Evidence(rows)


def test_the_pruning_rules_need_every_layer_and_a_quiet_null():
    areas = {"max_mag": 0.9, "max_fp": 0.8, "random": 0.7, "min_fp": 0.6}
    judged = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(areas, 0.0, {"trained": 10,
              "epoch0": 2, "gaussian": 2}))}  # fmt: skip
    assert [
        judged[k].verdict for k in ("magnitude_beats_fp", "max_fp_beats_random", "min_fp_below_random")
    ] == ["agrees"] * 3
    assert judged["elbow_fc1"].verdict == "agrees"
    # two random orders that differ systematically: the comparison cannot tell criteria apart
    judged = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(areas, 0.05, {"trained": 10,
              "epoch0": 2, "gaussian": 2}))}  # fmt: skip
    assert judged["magnitude_beats_fp"].verdict == "partly" and judged["magnitude_beats_fp"].null_passes
    reversed_areas = {"max_mag": 0.6, "max_fp": 0.9, "random": 0.95, "min_fp": 0.99}
    judged = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(reversed_areas, 0.0, {"trained": 10,
              "epoch0": 2, "gaussian": 2}))}  # fmt: skip
    assert judged["max_fp_beats_random"].verdict == "disagrees"


def test_an_elbow_that_untrained_matrices_share_is_not_agreement():
    areas = {"max_mag": 0.9, "max_fp": 0.8, "random": 0.7, "min_fp": 0.6}
    judged = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(areas, 0.0, {"trained": 15,
              "epoch0": 16, "gaussian": 18}))}  # fmt: skip
    assert judged["elbow_fc2"].verdict == "partly" and judged["elbow_fc2"].null_passes
    judged = {c.key: v for c, v in derive_verdicts(CLAIMS, _evidence(areas, 0.0, {"trained": 40,
              "epoch0": 41, "gaussian": 40}))}  # fmt: skip
    assert judged["elbow_fc1"].verdict == "disagrees"


@pytest.mark.slow
def test_smoke_run_writes_well_formed_outputs(smoke):
    _, out, results = smoke
    pruning = read_csv(out / "pruning.csv", PRUNING_COLUMNS)
    assert {row["criterion"] for row in pruning} == {"max_mag", "min_mag", "max_fp", "min_fp", "random"}
    assert all(0.0 <= float(row["accuracy"]) <= 1.0 for row in pruning)
    unpruned = {(row["seed"], row["accuracy"]) for row in pruning if float(row["fraction"]) == 0.0}
    assert len(unpruned) == 2  # every criterion starts from the same network, one per seed
    ranks = read_csv(out / "rank.csv", RANK_COLUMNS)
    assert {int(row["k"]) for row in ranks if row["layer"] == "network.0"} == set(range(1, 65))
    residuals = read_csv(out / "residuals.csv", RESIDUAL_COLUMNS)
    assert {row["condition"] for row in residuals} == {"trained", "epoch0", "gaussian"}
    for name in ("pruning.png", "rank.png", "elbows.png"):
        assert_png(out / name)
    judged = derive_verdicts(CLAIMS, read_evidence(out / "evidence.csv"))
    section = section_of(results, "pruning")
    assert "(results/pruning/pruning.png)" in section and "(results/pruning/elbows.png)" in section
    for claim, verdict in judged:
        assert f"**Claim `{claim.key}` (Heitmann, 2020).**" in section
        assert f"**Verdict: {verdict.verdict}.**" in section
