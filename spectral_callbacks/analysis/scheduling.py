"""In what order, and in which groups, a model's matrices go to parallel workers.

Shared by the post-hoc analysis of files and the live analysis of snapshots: the largest SVD
first, then the small ones batched so that few tasks carry many small layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["guided_batches", "largest_first", "svd_cost"]


def largest_first(refs: Sequence[Any]) -> list[int]:
    """Indices of ``refs`` (anything with a ``shape``: arrays, parameter references), the
    largest SVD first: parallel workers then finish together, as the last task to start is a
    small one."""
    return sorted(range(len(refs)), key=lambda i: svd_cost(refs[i].shape), reverse=True)


def guided_batches(costs: Sequence[int], workers: int) -> list[list[int]]:
    """Consecutive runs of ``costs`` (largest first) as tasks: each takes at least a
    ``2 * workers``-th of the cost not yet taken, so tasks shrink toward the end.

    Guided self-scheduling (Polychronopoulos & Kuck, 1987): every task costs a few milliseconds
    of scheduling and messages, which dozens of small layers would pay each, while the last
    tasks stay small enough for the workers to finish together. One worker: one item per task.

    >>> guided_batches([8, 2, 1, 1, 1, 1, 1, 1], workers=2)
    [[0], [1], [2, 3], [4], [5], [6], [7]]
    """
    if workers == 1:
        return [[index] for index in range(len(costs))]
    remaining = sum(costs)
    batches: list[list[int]] = []
    batch: list[int] = []
    batch_cost = 0
    target = remaining / (2 * workers)
    for index, cost in enumerate(costs):
        batch.append(index)
        batch_cost += cost
        if batch_cost >= target:
            batches.append(batch)
            remaining -= batch_cost
            batch, batch_cost = [], 0
            target = remaining / (2 * workers)
    if batch:
        batches.append(batch)
    return batches


def svd_cost(shape: tuple[int, ...]) -> int:
    """Proportional to the flops of the SVDs of a parameter's matrices: ``m n min(m, n)`` each
    (a conv kernel's ``out x in`` slices, one per kernel position, are the same formula)."""
    return int(np.prod(shape, dtype=np.int64)) * min(shape[:2])
