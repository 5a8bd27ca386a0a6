"""Conv operator spectra study (anonymous, 2019): the smoke run's runs, CSV, figures and section; the
learning-rate schedule; and the course of a spectral norm read from its numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import assert_png, read_csv, section_of

from experiments.conv_operator_report import CSV_COLUMNS, LayerTrend, Schedule
from experiments.conv_operator_spectra import LR, SMOKE, STUDY, WEIGHT_DECAYS, StepDecayClassifier, schedule
from experiments.models import ConvNet
from spectral_callbacks import open_run
from spectral_callbacks.spectra import exact_circular_conv_svals

CONVS = ("network.conv1_1", "network.conv1_2")


@pytest.mark.slow
def test_smoke_run_writes_runs_csv_figures_and_a_section(smoke) -> None:
    runs, out, results = smoke
    for value in WEIGHT_DECAYS:
        with open_run(runs / STUDY / f"wd_{value}") as run:
            assert run.operators == list(CONVS)
            assert run.operator_epochs("network.conv1_1").tolist() == [0, 1, 2]
            assert run.operator_info("network.conv1_2")["input_hw"] == (SMOKE.image_size,) * 2
            # Lanczos gives the exact top eigenvalue; zero padding keeps it under the circular conv's
            weights = run.weights("network.conv1_1", 2)
            circular = exact_circular_conv_svals(weights, (SMOKE.image_size + 2,) * 2)[0]
            assert 0 < run.operator_spectral_norm("network.conv1_1")[-1] <= circular * (1 + 1e-9)
    rows = read_csv(out / "spectral_norm.csv", CSV_COLUMNS)
    assert len(rows) == 2 * len(CONVS) * 3  # runs x layers x snapshots
    assert {float(row["lr"]) for row in rows if row["epoch"] == "2"} == {LR * 0.1}
    for name in ("spectral_norm.png", "esd.png"):
        assert_png(out / name)
    section = section_of(results, STUDY)
    assert section.strip().startswith("## Conv operator spectra with a learning-rate decay (anonymous, 2019)")
    assert "python -m experiments.conv_operator_spectra --smoke" in section
    assert re.search(r"\*\*(Agrees|Does not agree)[^*]*\.\*\*", section)
    for value in WEIGHT_DECAYS:
        assert len([line for line in section.splitlines() if line.startswith(f"| {value} |")]) == len(CONVS)
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", section):
        assert_png(results.parent / link)


def test_schedule_of_the_report_is_the_trainings() -> None:
    plan = schedule(SMOKE)
    assert plan == Schedule(epochs=2, decay_epoch=1, lr=LR, gamma=0.1, momentum=0.9, steps_per_epoch=5)
    assert np.isnan(plan.lr_of(0)) and plan.lr_of(1) == LR and plan.lr_of(2) == pytest.approx(LR / 10)
    # weight decay alone: 5 steps of lr / (1 - momentum) = 0.1 times the weight decay
    assert plan.shrinkage(0.0) == 1 and plan.shrinkage(1e-2) == pytest.approx(np.exp(-5 * 0.1 * 1e-2))


def test_learning_rate_is_cut_after_the_decay_epoch() -> None:
    model = StepDecayClassifier(ConvNet((3, 8, 8), 10, channels=[[2]], hidden=(4,)), decay_epoch=3, lr=LR)
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([LR] * 3 + [LR / 10] * 2)


@pytest.mark.parametrize(
    ("norms", "before", "after", "seed_course"),
    [
        ([1.0, 2.0, 3.0, 2.5, 2.0], "rises until the decay", "falls", True),
        ([1.0, 2.0, 3.0, 3.2, 3.5], "rises until the decay", "keeps rising", False),
        ([1.0, 2.0, 3.0, 3.01, 3.0], "rises until the decay", "stays flat", False),
        ([1.0, 3.0, 2.5, 2.4, 2.0], "peaks at epoch 1", "falls", False),
        ([1.0, 1.0, 1.0, 0.5, 0.4], "does not rise", "falls", False),
    ],
)
def test_course_of_the_spectral_norm_is_read_from_its_values(norms, before, after, seed_course) -> None:
    trend = LayerTrend(np.arange(5), np.array(norms), np.zeros(5), decay_epoch=2)
    assert (trend.before, trend.after, trend.seed_course) == (before, after, seed_course)
    assert trend.rate(0, 2) == pytest.approx(np.sqrt(norms[2] / norms[0]) - 1)
