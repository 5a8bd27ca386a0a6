"""A budget for what the spectral analysis costs training: ``max_overhead`` of its time.

Each snapshot costs training the copy of its weights (in the training loop) and, on CPU
training, the analysis' CPU seconds (the worker runs on the cores training uses). The budget
admits a due snapshot only if the cost of every snapshot taken so far, plus this one's
estimate, stays within ``fraction`` of the time training has run. The estimate is the mean of
the measured costs (analyses not finished yet are counted at it). Until the first analysis has
been measured there is no estimate, and no further snapshot is admitted while one is unmeasured.
"""

from __future__ import annotations

import statistics

__all__ = ["OverheadBudget"]


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
        self._copies: list[float] = []
        self._analyses: dict[int, float] = {}  # step -> measured analysis seconds
        self._running: dict[int, float] = {}  # step -> when it was handed over, not measured yet
        self.taken = 0
        self.skipped = 0

    def admits(self, now: float) -> bool:
        """Whether a snapshot due at ``now`` fits in the budget (counts it as skipped if not)."""
        unknown = not self.measured and bool(self._running)
        fits = not unknown and self.spent() + self.estimate() <= self.fraction * (now - self.start)
        if not fits:
            self.skipped += 1
        return fits

    def taken_at(self, step: int, now: float, copy_seconds: float) -> None:
        """A snapshot was copied in ``copy_seconds`` and handed to the analysis at ``now``."""
        self.taken += 1
        self._copies.append(copy_seconds)
        self._running[step] = now

    def analyzed(self, step: int, seconds: float) -> None:
        """The analysis of the snapshot at ``step`` took ``seconds`` of CPU."""
        self._running.pop(step, None)
        self._analyses[step] = seconds

    @property
    def measured(self) -> bool:
        """Whether a snapshot's cost is known (an analysis measured, or analyses cost nothing)."""
        return not self.analysis_counts or bool(self._analyses)

    def analysis_estimate(self) -> float:
        """Estimated analysis seconds of one snapshot: the mean of those measured (0 before the
        first, or when they do not cost training)."""
        if not self.analysis_counts or not self._analyses:
            return 0.0
        return statistics.fmean(self._analyses.values())

    def estimate(self) -> float:
        """Estimated cost to training of one more snapshot, in seconds."""
        copy = statistics.fmean(self._copies) if self._copies else 0.0
        return copy + self.analysis_estimate()

    def spent(self) -> float:
        """Seconds the snapshots taken so far cost training (unfinished analyses estimated)."""
        analyses = sum(self._analyses.values()) if self.analysis_counts else 0.0
        return sum(self._copies) + analyses + self.analysis_estimate() * len(self._running)

    def explain(self, now: float) -> str:
        """What the budget did and why, for the one warning about it."""
        elapsed = max(now - self.start, 1e-9)
        per_snapshot = self.estimate()
        if not self.measured:
            return (
                f"max_overhead={self.fraction:g}: snapshots due before the first one's analysis "
                "has been measured are skipped (the budget needs its cost); they are in the run "
                "file's index (status 'dropped', with this reason). Pass max_overhead=None to "
                "analyze every due snapshot."
            )
        spacing = per_snapshot / self.fraction
        return (
            f"max_overhead={self.fraction:g}: a snapshot costs training about {per_snapshot:.3g} s "
            f"(weights copy{' and analysis CPU' if self.analysis_counts else ''}), so at most one "
            f"per {spacing:.3g} s of training fits; {self.taken} taken and {self.skipped} skipped in "
            f"the first {elapsed:.3g} s. Skipped snapshots are in the run file's index (status "
            "'dropped', with this reason). Raise max_overhead, snapshot less often, or pass "
            "max_overhead=None to analyze every due snapshot."
        )
