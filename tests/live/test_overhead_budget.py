"""``OverheadBudget``: which due snapshots fit in ``max_overhead``, from a fit's ``SnapshotCosts``,
on a clock the test sets."""

from __future__ import annotations

import pytest

from spectral_callbacks.live.overhead_budget import OverheadBudget, SnapshotCosts


def take(costs: SnapshotCosts, copy_seconds: float) -> None:
    """A snapshot copied in ``copy_seconds`` and handed to the analysis, as the session counts it."""
    costs.taken += 1
    costs.copy_seconds += copy_seconds


def analyzed(costs: SnapshotCosts, seconds: float) -> None:
    """The worker measured one analysis at ``seconds`` of CPU, as the session counts it."""
    costs.analyzed += 1
    costs.analysis_seconds += seconds


def test_a_snapshot_is_admitted_once_training_has_run_long_enough_to_pay_for_it() -> None:
    budget, costs = OverheadBudget(0.1, start=0.0), SnapshotCosts()
    take(costs, copy_seconds=0.01)
    analyzed(costs, seconds=0.99)
    # one snapshot spent 1 s; the next costs ~1 s more: 2 s fit in 10% of 20 s, not of 19.9 s
    assert not budget.admits(costs, 19.9)
    assert budget.admits(costs, 20.0)
    assert (costs.taken, costs.skipped) == (1, 1)
    assert budget.estimate(costs) == pytest.approx(1.0)


def test_no_second_snapshot_is_admitted_before_the_first_ones_cost_is_known() -> None:
    budget, costs = OverheadBudget(0.5, start=0.0), SnapshotCosts()
    take(costs, copy_seconds=0.0)
    assert not budget.admits(costs, 100.0)  # plenty of budget, but no estimate yet
    analyzed(costs, seconds=0.5)
    assert budget.spent(costs) == pytest.approx(0.5)
    assert budget.admits(costs, 2.0)  # 0.5 + 0.5 <= 1.0
    assert "not" not in budget.explain(costs, 2.0)


def test_the_mean_of_measured_costs_is_the_estimate() -> None:
    budget, costs = OverheadBudget(1.0, start=0.0), SnapshotCosts()
    for seconds in (1.0, 3.0):
        take(costs, copy_seconds=0.5)
        analyzed(costs, seconds=seconds)
    take(costs, copy_seconds=0.5)  # running: estimated at the mean, 2 s
    assert budget.estimate(costs) == pytest.approx(0.5 + 2.0)
    assert budget.spent(costs) == pytest.approx(3 * 0.5 + 1.0 + 3.0 + 2.0)


def test_on_an_accelerator_only_the_copies_count() -> None:
    budget, costs = OverheadBudget(0.01, start=0.0, analysis_counts=False), SnapshotCosts()
    take(costs, copy_seconds=0.02)
    analyzed(costs, seconds=100.0)
    assert budget.spent(costs) == pytest.approx(0.02)
    assert not budget.admits(costs, 3.9)  # 0.04 > 0.039
    assert budget.admits(costs, 4.0)


def test_on_an_accelerator_the_first_snapshot_need_not_be_measured() -> None:
    budget, costs = OverheadBudget(0.5, start=0.0, analysis_counts=False), SnapshotCosts()
    take(costs, copy_seconds=0.1)
    assert budget.admits(costs, 0.4)


def test_the_explanation_says_what_was_done_and_how_to_change_it() -> None:
    budget, costs = OverheadBudget(0.03, start=0.0), SnapshotCosts()
    take(costs, copy_seconds=0.0)
    analyzed(costs, seconds=0.9)
    assert not budget.admits(costs, 1.0)
    text = budget.explain(costs, 1.0)
    assert "max_overhead=0.03" in text and "0.9 s" in text and "30 s of training" in text
    assert "1 taken and 1 skipped" in text and "max_overhead=None" in text
