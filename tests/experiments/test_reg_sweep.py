"""Regularization sweep (Martin, 2018): the smoke run's outputs, bad input, the shrinkage null and the rules.

The smoke run (fc_l2 = 0 and 0.1, two seeds, two epochs of 140 images in batches of 16) writes its
runs, CSVs, figures and section into a temporary directory, never into the real RESULTS.md; the
shrinkage test reads the same runs. The rules are checked on hand-made evidence.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
from conftest import assert_png, read_csv, section_of

from experiments.reg_sweep import CLAIMS, EPOCH_COLUMNS, RUNS_COLUMNS, STUDY, main, shrinkage
from experiments.verdicts import Evidence, derive_verdicts, read_evidence, verdicts_markdown

SMOKE_VALUES = ("0", "0.1")
SMOKE_SEEDS = (0, 1)


@pytest.mark.slow
def test_smoke_run_writes_runs_csvs_figures_and_a_well_formed_section(smoke):
    runs, out, results = smoke
    for seed in SMOKE_SEEDS:
        for value in SMOKE_VALUES:
            assert (runs / STUDY / f"seed_{seed}" / f"fc_l2_{value}" / "spectra.h5").is_file()
    rows = read_csv(out / "runs.csv", RUNS_COLUMNS)
    assert len(rows) == len(SMOKE_SEEDS) * len(SMOKE_VALUES) * 2  # two FC layers per run
    assert {(row["layer"], row["N"], row["M"]) for row in rows} == {
        ("fc1", "1024", "96"),
        ("fc2", "96", "48"),
    }
    assert all(0 <= float(row["test_accuracy"]) <= 1 and row["epoch"] == "2" for row in rows)
    epochs = read_csv(out / "per_epoch.csv", EPOCH_COLUMNS)
    assert len(epochs) == len(rows) * 3  # epochs 0, 1, 2
    assert [row["seed"] for row in read_csv(out / "cpu.csv", ("seed", "cpu_seconds"))] == ["0", "1"]
    section = section_of(results, STUDY)
    assert section.strip().startswith("## Regularization sweep (Martin, 2018)")
    assert "python -m experiments.reg_sweep --smoke" in section
    evidence = read_evidence(out / "evidence.csv")
    assert verdicts_markdown(derive_verdicts(CLAIMS, evidence)) in section
    assert len(re.findall(r"\*\*Verdict: [a-z ]+\.\*\*", section)) == len(CLAIMS)
    table = [line for line in section.splitlines() if re.match(r"\| (0|0\.1) \|", line)]
    assert len(table) == 2 and all(len(line.strip("|").split("|")) == 12 for line in table)
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", section)
    assert {Path(link).name for link in links} == {"lambda_min.png", "lambda_min-vs-fc_l2.png"}
    for link in links:
        assert_png(results.parent / link)
        assert (results.parent / link).parent == out


@pytest.mark.slow
def test_report_only_rewrites_the_same_section_from_the_runs(smoke):
    runs, out, results = smoke
    before = section_of(results, STUDY)
    main(
        [
            "--smoke",
            "--report-only",
            "--runs",
            str(runs.parent),
            "--out",
            str(out.parent),
            "--results",
            str(results),
        ]
    )
    assert section_of(results, STUDY) == before
    assert results.read_text().count("<!-- study:") == 1


@pytest.mark.slow
def test_a_short_run_shrinks_lambda_min_as_the_penalty_alone_predicts(smoke):
    """Two epochs barely move the smallest directions with the data gradient, so the penalized run's
    lambda_min is the unpenalized one's times the plain-shrinkage factor, to a few percent; and that
    factor is far from 1 at fc_l2 = 0.1 (the null is not a tautology)."""
    _, out, _ = smoke
    rows = read_csv(out / "runs.csv", RUNS_COLUMNS)
    for row in (row for row in rows if row["fc_l2"] == "0.1"):
        plain = next(
            other for other in rows
            if other["fc_l2"] == "0.0" and (other["seed"], other["layer"]) == (row["seed"], row["layer"])
        )  # fmt: skip
        observed, predicted = float(row["lambda_min"]), float(row["lambda_min_shrinkage"])
        assert observed < 0.8 * float(plain["lambda_min"]), row
        assert observed == pytest.approx(predicted, rel=0.05), row


def test_values_without_the_unpenalized_run_stop_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--smoke", "--runs", str(tmp_path), "--values", "0.01", "0.1"])
    assert exited.value.code == 2
    assert "must include 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_shrinkage_is_the_sgd_recursion_of_the_penalty_alone():
    assert shrinkage(0.1, 50, lr=0.01, momentum=0.0) == pytest.approx((1 - 2 * 0.01 * 0.1) ** 50)
    assert shrinkage(0.0, 1000, lr=0.01, momentum=0.9) == 1.0
    # with momentum, the late rate is the dominant root of x^2 - (1 + m - 2 lr fc_l2) x + m
    a, m = 2 * 0.01 * 0.01, 0.9
    root = ((1 + m - a) + math.sqrt((1 + m - a) ** 2 - 4 * m)) / 2
    late = shrinkage(0.01, 2000, lr=0.01, momentum=m) / shrinkage(0.01, 1000, lr=0.01, momentum=m)
    assert late == pytest.approx(root**1000, rel=1e-6)


def evidence(lost: dict[float, list[float]], accuracy: dict[float, list[float]], drops, shrunk) -> Evidence:
    """Evidence of three seeds: rank loss (both layers) and accuracy per strength, drops per pair."""
    rows = []
    for value, seeds in lost.items():
        for seed, count in enumerate(seeds):
            rows += [(f"rank_loss_{layer}", f"{value:g}", seed, count) for layer in ("fc1", "fc2")]
            rows.append(("test_accuracy", f"{value:g}", seed, accuracy[value][seed]))
    positive = [value for value in lost if value > 0]
    for (low, high), drop in zip(itertools.pairwise(positive), drops, strict=True):
        for seed in range(3):
            for layer in ("fc1", "fc2"):
                rows.append((f"drop_{layer}", f"{low:g}-{high:g}", seed, drop + 0.01 * seed))
                rows.append((f"drop_shrinkage_{layer}", f"{low:g}-{high:g}", seed, shrunk))
    return Evidence(rows)


def verdicts(data: Evidence) -> list[str]:
    return [verdict.verdict for _, verdict in derive_verdicts(CLAIMS, data)]


def test_the_rules_agree_only_beyond_shrinkage_and_where_accuracy_falls_with_the_rank():
    lost = {0.0: [0, 0, 0], 0.01: [0, 0, 0], 0.02: [0, 0, 0], 0.04: [5, 7, 9]}
    accuracy = {0.0: [0.9, 0.9, 0.9], 0.01: [0.9, 0.89, 0.9], 0.02: [0.88, 0.9, 0.89], 0.04: [0.1, 0.1, 0.12]}
    assert verdicts(evidence(lost, accuracy, drops=[2.0, 9.0], shrunk=0.3)) == ["agrees", "agrees"]
    # plain shrinkage predicts the whole fall: at most partly
    assert verdicts(evidence(lost, accuracy, drops=[2.0, 9.0], shrunk=2.5))[0] == "partly"
    # falls of less than 5x and no rank loss anywhere
    flat = {value: [0, 0, 0] for value in lost}
    assert verdicts(evidence(flat, accuracy, drops=[0.2, 0.3], shrunk=0.1)) == [
        "disagrees",
        "not testable here",
    ]
    # the rank goes while accuracy holds: the signal claim disagrees
    intact = {**accuracy, 0.04: [0.9, 0.89, 0.9]}
    assert verdicts(evidence(lost, intact, drops=[2.0, 9.0], shrunk=0.3))[1] == "disagrees"
    # accuracy had fallen a step before the rank went: partly
    early = {**accuracy, 0.02: [0.5, 0.55, 0.5]}
    assert verdicts(evidence(lost, early, drops=[2.0, 9.0], shrunk=0.3))[1] == "partly"
