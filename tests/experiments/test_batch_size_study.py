"""Alpha and phases against the batch size (Martin & Mahoney, 2021): the smoke run's outputs against
its run files, and the claims' rules and permutation test on evidence built by hand."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import assert_png, read_csv, section_of

from experiments.batch_size_study import (
    ARMS,
    CLAIMS,
    FINAL_COLUMNS,
    KNOB,
    MIN_FIT_EVALS,
    PHASE_COLUMNS,
    SMOKE_SEEDS,
    SMOKE_SIZES,
    STUDY,
    _permutation_p,
)
from experiments.sweep import METRICS_FILE, run_name, seed_dir
from experiments.verdicts import Evidence, derive_verdicts, read_evidence, verdicts_markdown
from spectral_callbacks import PHASES, open_run


def run_dir(runs, arm, seed, size):
    return seed_dir(runs / STUDY / arm, seed) / run_name(KNOB, size)


@pytest.mark.slow
def test_the_arms_hold_steps_or_epochs_equal(smoke):
    runs, _, _ = smoke
    for seed in SMOKE_SEEDS:
        record = {
            (arm.name, size): json.loads((run_dir(runs, arm.name, seed, size) / METRICS_FILE).read_text())
            for arm in ARMS
            for size in SMOKE_SIZES
        }
        small, large = SMOKE_SIZES
        assert record["steps", small]["steps"] == record["steps", large]["steps"]
        assert record["epochs", small]["epochs"] == record["epochs", large]["epochs"]
        assert record["epochs", small]["steps"] > record["epochs", large]["steps"]


@pytest.mark.slow
def test_final_csv_averages_exactly_the_large_hidden_layers_of_the_run_files(smoke):
    runs, out, _ = smoke
    rows = read_csv(out / "final.csv", FINAL_COLUMNS)
    assert len(rows) == len(ARMS) * len(SMOKE_SEEDS) * len(SMOKE_SIZES) * 6  # 5 layers + the average
    for row in (row for row in rows if row["layer"] == "model average"):
        with open_run(run_dir(runs, row["arm"], int(row["seed"]), row["batch_size"])) as reader:
            # conv1 (1 input channel: 25 eigenvalues) and the classifier are out; conv2, fc1, fc2 are in
            alphas = [reader.metric("alpha", f"network.{name}")[-1] for name in ("conv2", "fc1", "fc2")]
        assert float(row["alpha"]) == pytest.approx(np.mean(alphas))
    averaged = {row["layer"] for row in rows if row["averaged"] == "True" and row["layer"] != "model average"}
    assert averaged == {"conv2", "fc1", "fc2"}
    assert all(int(row["num_evals"]) < MIN_FIT_EVALS for row in rows if row["layer"] in ("conv1", "out"))


@pytest.mark.slow
def test_phases_csv_and_the_section_come_from_the_run_files_and_the_evidence(smoke):
    runs, out, results = smoke
    rows = read_csv(out / "phases.csv", PHASE_COLUMNS)
    key = ("steps", str(SMOKE_SEEDS[1]), SMOKE_SIZES[0], "fc1")
    columns = ("arm", "seed", "batch_size", "layer")
    labels = [row["phase"] for row in rows if tuple(row[column] for column in columns) == key]
    with open_run(run_dir(runs, "steps", SMOKE_SEEDS[1], SMOKE_SIZES[0])) as reader:
        assert labels == reader.phases("network.fc1")
    section = section_of(results, STUDY)
    evidence = read_evidence(out / "evidence.csv")
    assert verdicts_markdown(derive_verdicts(CLAIMS, evidence)) in section
    assert len(evidence.values("rho_final", "steps")) == len(SMOKE_SEEDS)
    for name in ("alpha-vs-batch_size.png", "alpha.png", "phases-steps.png", "phases-epochs.png"):
        assert_png(out / name)
        assert f"results/batch_size/{name})" in section
    assert read_csv(out / "cpu.csv", ("arm", "fits", "cpu_seconds"))


def evidence_for(rho, shuffled, p, *, arm="steps"):
    rows = [("rho_final", arm, seed, value) for seed, value in enumerate(rho)]
    rows += [("rho_final", f"{arm}_shuffled", seed, value) for seed, value in enumerate(shuffled)]
    return Evidence([*rows, ("rho_final_permutation_p", arm, 0, p)])


def judge(key, evidence):
    claim = next(claim for claim in CLAIMS if claim.key == key)
    return claim.judge(evidence)


def test_the_trend_rule_needs_an_interval_above_zero_a_small_p_and_a_failing_null():
    good = evidence_for([1, 0.8, 1, 0.8, 1], [0.4, -0.8, 0.2, -0.4, 0], 0.001)
    assert judge("smaller_batch_lower_alpha", good).verdict == "agrees"
    passing_null = evidence_for([1, 0.8, 1, 0.8, 1], [1, 0.8, 1, 0.8, 0.8], 0.001)
    assert judge("smaller_batch_lower_alpha", passing_null).verdict == "partly"
    weak = evidence_for([1, -0.8, 0.8, -0.4, 0.6], [0, 0, 0.2, -0.2, 0], 0.2)
    assert judge("smaller_batch_lower_alpha", weak).verdict == "partly"
    wrong = evidence_for([-1, -0.8, -1, 0.2, -0.4], [0, 0, 0.2, -0.2, 0], 0.99)
    assert judge("smaller_batch_lower_alpha", wrong).verdict == "disagrees"
    epochs = evidence_for([1, 1, 1, 1, 1], [0.4, -0.8, 0.2, -0.4, 0], 0.001, arm="epochs")
    assert judge("smaller_batch_lower_alpha_equal_epochs", epochs).verdict == "agrees"


def test_the_range_rule_compares_the_end_with_initialization():
    def evidence(init, end, init_wide, end_wide):
        rows = []
        for name, moment, values in (
            ("share_2_4", "init", init), ("share_2_4", "end", end),
            ("share_2_6", "init", init_wide), ("share_2_6", "end", end_wide),
        ):  # fmt: skip
            rows += [(name, f"steps_{moment}", seed, value) for seed, value in enumerate(values)]
        rows += [("average_alpha", f"steps_{m}", s, 3.0) for m in ("init", "end") for s in range(5)]
        return Evidence(rows)

    zeros, most, some = [0] * 5, [0.6, 0.7, 0.8, 0.7, 0.6], [0.2, 0.3, 0.1, 0.2, 0.3]
    assert judge("alpha_into_range", evidence(zeros, most, zeros, most)).verdict == "agrees"
    assert judge("alpha_into_range", evidence(zeros, some, zeros, most)).verdict == "partly"
    assert judge("alpha_into_range", evidence(zeros, zeros, zeros, zeros)).verdict == "disagrees"
    already = judge("alpha_into_range", evidence([0.6] * 5, [0.9, 1, 0.9, 1, 0.9], zeros, most))
    assert already.null_passes and already.verdict == "partly"


def test_the_phase_rule_needs_the_batch_size_to_change_phases_and_all_six_for_agreement():
    def evidence(end, order, seen, arm="steps"):
        rows = [("phase_spread_init", arm, seed, 1.0) for seed in range(5)]
        rows += [("phase_spread_end", arm, seed, value) for seed, value in enumerate(end)]
        rows += [("phase_order_rho", arm, seed, value) for seed, value in enumerate(order)]
        for statistic in ("phase_at_end", "phase_anywhere"):
            rows += [(statistic, f"{arm}_{p}", seed, float(p in seen)) for p in PHASES for seed in range(5)]
        return Evidence(rows)

    negative = [-1, -0.8, -1, -0.6, -0.8]
    assert judge("five_plus_one_phases", evidence([3] * 5, negative, PHASES)).verdict == "agrees"
    three = judge("five_plus_one_phases", evidence([2, 2.3, 2, 1.7, 2], negative, PHASES[:3]))
    assert three.verdict == "partly" and "(3 of 6)" in three.evidence
    # every batch size ends in the same phase of each layer: the layers differ, the batch size does not
    same = judge("five_plus_one_phases", evidence([1] * 5, [np.nan] * 5, PHASES[2:5]))
    assert same.verdict == "disagrees" and "undefined" in same.evidence
    epochs = evidence([2, 2.3, 2, 1.7, 2], negative, PHASES[:3], arm="epochs")
    assert judge("five_plus_one_phases_equal_epochs", epochs).verdict == "partly"


def test_the_permutation_p_value_matches_exact_enumeration():
    finals = {0: ([4, 16, 64], [1.0, 2.0, 3.5]), 1: ([4, 16, 64], [1.5, 1.2, 2.0])}
    observed = np.mean([1.0, 0.5])
    orders = list(itertools.permutations(range(3)))
    rhos = [np.corrcoef(order, [0, 1, 2])[0, 1] for order in orders]
    exact = np.mean([(a + b) / 2 >= observed - 1e-12 for a, b in itertools.product(rhos, rhos)])
    assert _permutation_p(finals, seed=0) == pytest.approx(exact, abs=0.01)
