"""``OverheadBudget``: which due snapshots fit in ``max_overhead``, on a clock the test sets."""

from __future__ import annotations

import pytest

from spectral_callbacks.live.overhead_budget import OverheadBudget


def test_a_snapshot_is_admitted_once_training_has_run_long_enough_to_pay_for_it() -> None:
    budget = OverheadBudget(0.1, start=0.0)
    budget.taken_at(step=0, now=0.0, copy_seconds=0.01)
    budget.analyzed(step=0, seconds=0.99)
    # one snapshot spent 1 s; the next costs ~1 s more: 2 s fit in 10% of 20 s, not of 19.9 s
    assert not budget.admits(19.9)
    assert budget.admits(20.0)
    assert (budget.taken, budget.skipped) == (1, 1)
    assert budget.estimate() == pytest.approx(1.0)


def test_no_second_snapshot_is_admitted_before_the_first_ones_cost_is_known() -> None:
    budget = OverheadBudget(0.5, start=0.0)
    budget.taken_at(step=0, now=0.0, copy_seconds=0.0)
    assert not budget.admits(100.0)  # plenty of budget, but no estimate yet
    budget.analyzed(step=0, seconds=0.5)
    assert budget.spent() == pytest.approx(0.5)
    assert budget.admits(2.0)  # 0.5 + 0.5 <= 1.0
    assert "not" not in budget.explain(2.0)


def test_the_mean_of_measured_costs_is_the_estimate() -> None:
    budget = OverheadBudget(1.0, start=0.0)
    for step, seconds in ((0, 1.0), (1, 3.0)):
        budget.taken_at(step=step, now=float(step), copy_seconds=0.5)
        budget.analyzed(step=step, seconds=seconds)
    budget.taken_at(step=2, now=2.0, copy_seconds=0.5)  # running: estimated at the mean, 2 s
    assert budget.estimate() == pytest.approx(0.5 + 2.0)
    assert budget.spent() == pytest.approx(3 * 0.5 + 1.0 + 3.0 + 2.0)


def test_on_an_accelerator_only_the_copies_count() -> None:
    budget = OverheadBudget(0.01, start=0.0, analysis_counts=False)
    budget.taken_at(step=0, now=0.0, copy_seconds=0.02)
    budget.analyzed(step=0, seconds=100.0)
    assert budget.spent() == pytest.approx(0.02)
    assert not budget.admits(3.9)  # 0.04 > 0.039
    assert budget.admits(4.0)


def test_on_an_accelerator_the_first_snapshot_need_not_be_measured() -> None:
    budget = OverheadBudget(0.5, start=0.0, analysis_counts=False)
    budget.taken_at(step=0, now=0.0, copy_seconds=0.1)
    assert budget.admits(0.4)


def test_the_explanation_says_what_was_done_and_how_to_change_it() -> None:
    budget = OverheadBudget(0.03, start=0.0)
    budget.taken_at(step=0, now=0.0, copy_seconds=0.0)
    budget.analyzed(step=0, seconds=0.9)
    assert not budget.admits(1.0)
    text = budget.explain(1.0)
    assert "max_overhead=0.03" in text and "0.9 s" in text and "30 s of training" in text
    assert "1 taken and 1 skipped" in text and "max_overhead=None" in text
