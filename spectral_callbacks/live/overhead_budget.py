"""What the snapshots of a fit cost training, and a budget for it: ``max_overhead`` of its time.

Each snapshot costs training the copy of its weights (in the training loop) and, on CPU
training, the analysis' CPU seconds (the worker runs on the cores training uses). The budget
admits a due snapshot only if the cost of every snapshot taken so far, plus this one's
estimate, stays within ``fraction`` of the time training has run. The estimate is the mean of
the measured costs (analyses not finished yet are counted at it). Until the first analysis has
been measured there is no estimate, and no further snapshot is admitted while one is unmeasured.
Everything is derived from the fit's :class:`SnapshotCosts`, the one account of what was spent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OverheadBudget", "SnapshotCosts"]


@dataclass
class SnapshotCosts:
    """What the snapshots of one fit cost, part by part, so the overhead can be accounted for.

    Attributes:
        taken: snapshots handed to the analysis.
        skipped: due snapshots ``max_overhead`` skipped.
        analyzed: snapshots whose analysis the worker has finished and measured.
        copy_seconds: training's wall time copying weights off the model.
        handover_seconds: training's wall time putting snapshots in the queue (it waits there
            when the queue is full and ``on_full="block"``).
        lent_seconds: wall time training's thread pool ran ``blas_threads`` short for the analysis.
        analysis_seconds: CPU seconds the analysis process spent on the snapshots it finished.
    """

    taken: int = 0
    skipped: int = 0
    analyzed: int = 0
    copy_seconds: float = 0.0
    handover_seconds: float = 0.0
    lent_seconds: float = 0.0
    analysis_seconds: float = 0.0

    def summary(self) -> str:
        """One line for the end of a fit."""
        skipped = f" ({self.skipped} skipped by max_overhead)" if self.skipped else ""
        return (
            f"{self.taken} snapshot(s){skipped}: training spent {self.copy_seconds:.3g} s copying "
            f"weights and {self.handover_seconds:.3g} s handing them over, and ran "
            f"{self.lent_seconds:.3g} s a thread short; the analysis used {self.analysis_seconds:.3g} s "
            "of CPU."
        )


class OverheadBudget:
    """Admits due snapshots while their cost stays within ``fraction`` of training time.

    Args:
        fraction: the budget, a fraction of training's wall time (``0.03``: 3%).
        start: when training started, on the clock the ``now`` arguments use.
        analysis_counts: whether the analysis' CPU seconds cost training (CPU training: they run
            on its cores) or only the copy does (the model trains on an accelerator).
    """

    def __init__(self, fraction: float, start: float, *, analysis_counts: bool = True):
        self.fraction = fraction
        self.start = start
        self.analysis_counts = analysis_counts

    def admits(self, costs: SnapshotCosts, now: float) -> bool:
        """Whether a snapshot due at ``now`` fits in the budget (counted in ``costs.skipped`` if not)."""
        unknown = not self.measured(costs) and costs.taken > costs.analyzed
        fits = not unknown and self.spent(costs) + self.estimate(costs) <= self.fraction * (now - self.start)
        if not fits:
            costs.skipped += 1
        return fits

    def measured(self, costs: SnapshotCosts) -> bool:
        """Whether a snapshot's cost is known (an analysis measured, or analyses cost nothing)."""
        return not self.analysis_counts or costs.analyzed > 0

    def analysis_estimate(self, costs: SnapshotCosts) -> float:
        """Estimated analysis seconds of one snapshot: the mean of those measured (0 before the
        first, or when they do not cost training)."""
        if not self.analysis_counts or not costs.analyzed:
            return 0.0
        return costs.analysis_seconds / costs.analyzed

    def estimate(self, costs: SnapshotCosts) -> float:
        """Estimated cost to training of one more snapshot, in seconds."""
        copy = costs.copy_seconds / costs.taken if costs.taken else 0.0
        return copy + self.analysis_estimate(costs)

    def spent(self, costs: SnapshotCosts) -> float:
        """Seconds the snapshots taken so far cost training (unfinished analyses estimated)."""
        analyses = costs.analysis_seconds if self.analysis_counts else 0.0
        running = max(costs.taken - costs.analyzed, 0)
        return costs.copy_seconds + analyses + self.analysis_estimate(costs) * running

    def explain(self, costs: SnapshotCosts, now: float) -> str:
        """What the budget did and why, for the one warning about it."""
        elapsed = max(now - self.start, 1e-9)
        if not self.measured(costs):
            return (
                f"max_overhead={self.fraction:g}: snapshots due before the first one's analysis "
                "has been measured are skipped (the budget needs its cost); they are in the run "
                "file's index (status 'dropped', with this reason). Pass max_overhead=None to "
                "analyze every due snapshot."
            )
        per_snapshot = self.estimate(costs)
        spacing = per_snapshot / self.fraction
        return (
            f"max_overhead={self.fraction:g}: a snapshot costs training about {per_snapshot:.3g} s "
            f"(weights copy{' and analysis CPU' if self.analysis_counts else ''}), so at most one "
            f"per {spacing:.3g} s of training fits; {costs.taken} taken and {costs.skipped} skipped in "
            f"the first {elapsed:.3g} s. Skipped snapshots are in the run file's index (status "
            "'dropped', with this reason). Raise max_overhead, snapshot less often, or pass "
            "max_overhead=None to analyze every due snapshot."
        )
