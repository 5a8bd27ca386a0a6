"""Which snapshots keep their weights in the run file, so that a run stays under a chosen size.

Spectra are small (a few kilobytes per layer and snapshot) and always kept; weights are as large
as the model (45 MB for a ResNet-18 in float32, 28 GB for a 7B model) and come again at every
snapshot. The policy keeps the weights of every ``stride``-th snapshot, the first (the
initialization) always, with ``stride`` chosen at the start from the expected number of
snapshots so that they fit in ``max_bytes``; and it never lets the file pass ``max_bytes`` by
adding weights, whatever the count turns out to be: once the file's size plus the next
snapshot's weights would, they are no longer kept. Spectra go on being added (kilobytes per
snapshot). Which snapshots kept their weights is in the run file (each parameter's
``snapshot`` rows; ``RunReader.weight_epochs``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_MAX_RUN_FILE_BYTES", "WeightPolicy", "plan_weights", "snapshot_bytes", "spectra_bytes"]

DEFAULT_MAX_RUN_FILE_BYTES = 2 * 1024**3
_LAYOUT_BYTES = 256 * 1024  # HDF5's structures and the run's attributes
_ROW_BYTES = 1024  # one layer's metrics, status and reason at one snapshot


@dataclass(frozen=True)
class WeightPolicy:
    """Whether a snapshot's weights are kept.

    Attributes:
        snapshot_bytes: the weights of one snapshot in the run file (0: weights not saved).
        max_bytes: the run file's size that adding weights may not pass, or None for no limit.
        stride: keep the weights of snapshots ``0, stride, 2 * stride, ...`` (index rows).
    """

    snapshot_bytes: int
    max_bytes: int | None = None
    stride: int = 1

    def keeps(self, snapshot: int, file_bytes: int) -> bool:
        """Whether snapshot ``snapshot`` (its index row) keeps its weights in a run file of
        ``file_bytes`` now."""
        if self.snapshot_bytes == 0 or snapshot % self.stride:
            return False
        return self.max_bytes is None or file_bytes + self.snapshot_bytes <= self.max_bytes

    def estimate(self, expected_snapshots: int | None, *, may_skip: bool = False) -> str:
        """One sentence: what the run will write, and how to change it; ``may_skip``: snapshots
        may be skipped (``max_overhead``), so the figures are the most it writes."""
        if self.snapshot_bytes == 0:
            return "weights are not saved (save_weights=False); the run file holds the spectra only"
        per = _size(self.snapshot_bytes)
        if expected_snapshots is None:
            budget = "no limit" if self.max_bytes is None else f"at most {_size(self.max_bytes)}"
            return f"each snapshot's weights take {per} in the run file ({budget}, max_run_file_bytes)"
        kept = len(range(0, expected_snapshots, self.stride))
        if self.max_bytes is not None:
            kept = min(kept, self.max_bytes // self.snapshot_bytes)
        amount = ("at most about " if may_skip else "about ") + _size(kept * self.snapshot_bytes)
        text = f"this run will write {amount} of weights ({per} per snapshot"
        if self.stride == 1 and kept == expected_snapshots:
            every = "if max_overhead skips none of the" if may_skip else "all"
            return f"{text}, {every} {expected_snapshots} snapshots)"
        return (
            f"{text}): to stay under max_run_file_bytes={_size(self.max_bytes or 0)}, weights are kept "
            f"for {kept} of the {expected_snapshots} snapshots (every {_ordinal(self.stride)}), "
            "spectra for all. "
            "Raise max_run_file_bytes (None: no limit) to keep more, or pass weights_dtype='float16'"
        )


def snapshot_bytes(shapes: Iterable[tuple[int, ...]], weights_dtype: str | None) -> int:
    """The bytes of one snapshot's weights of these shapes in ``weights_dtype`` (None: none)."""
    if weights_dtype is None:
        return 0
    itemsize = np.dtype(weights_dtype).itemsize
    return sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes) * itemsize


def spectra_bytes(shapes: Iterable[tuple[int, ...]], expected_snapshots: int | None) -> int:
    """What a run file holds besides weights, about: its layout, and per snapshot each matrix's
    singular values (float64, ``min(out, in)`` per slice) and metrics."""
    per_snapshot = sum(
        int(np.prod(shape[2:], dtype=np.int64)) * min(shape[:2]) * 8 + _ROW_BYTES
        for shape in shapes
        if len(shape) >= 2
    )
    return _LAYOUT_BYTES + per_snapshot * (expected_snapshots or 0)


def plan_weights(
    snapshot_size: int, expected_snapshots: int | None, max_bytes: int | None, other_bytes: int = 0
) -> WeightPolicy:
    """The stride that spreads the kept weights over ``expected_snapshots`` within ``max_bytes``
    less ``other_bytes`` (the spectra and the file's own structures; see :func:`spectra_bytes`),
    1 when all fit or when the count is not known."""
    if snapshot_size == 0 or max_bytes is None or not expected_snapshots:
        return WeightPolicy(snapshot_size, max_bytes)
    fitting = max(1, (max_bytes - other_bytes) // snapshot_size)
    stride = max(1, math.ceil(expected_snapshots / fitting))
    return WeightPolicy(snapshot_size, max_bytes, stride)


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"
