"""Training lends a core to the analysis while the worker has snapshots to analyze.

When training keeps every core busy (a CPU run whose intra-op pool has a thread per core), the
worker, at the lowest CPU priority, would not run until training ends; at normal priority it
would preempt one of the pool's threads and stall the others at their next barrier, costing about
twice its CPU time. Running the pool one thread short while an analysis runs costs training
less than either: the pool rarely scales perfectly with its last thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["ThreadLender", "ThreadPool", "torch_thread_pool"]


def _always() -> bool:
    return True


class ThreadPool(NamedTuple):
    """A thread pool's size accessors, and whether it may be resized now."""

    get: Callable[[], int]
    set: Callable[[int], None]
    resizable: Callable[[], bool] = _always


def torch_thread_pool() -> ThreadPool:
    """torch's intra-op pool, the one CPU training keeps busy (torch is imported here, on call).

    Not resizable while torch's deterministic algorithms are on (Lightning's
    ``Trainer(deterministic=True)``, which turns them on after the callback is made): a CPU
    kernel splits its reductions by the pool's size, so training would round differently
    whenever a snapshot happened to be analyzed, and two runs of one seed would drift apart (a
    MiniLM's weights differed by up to 4e-6 after one epoch).
    """
    import torch

    return ThreadPool(
        torch.get_num_threads,
        torch.set_num_threads,
        lambda: not torch.are_deterministic_algorithms_enabled(),
    )


class ThreadLender:
    """Shrinks a thread pool by ``count`` threads on :meth:`lend`, restores it on :meth:`give_back`.

    Args:
        get_threads, set_threads: the pool's size accessors (``torch.get_num_threads`` and
            ``torch.set_num_threads``).
        resizable: whether the pool may be resized now (checked at each :meth:`lend`).
        count: threads to lend; a pool that would be left with none is not touched.
    """

    def __init__(
        self,
        get_threads: Callable[[], int],
        set_threads: Callable[[int], None],
        resizable: Callable[[], bool] = _always,
        *,
        count: int,
    ):
        self._get_threads = get_threads
        self._set_threads = set_threads
        self._resizable = resizable
        self._count = count
        self._full: int | None = None  # the pool's size before lending, while lent
        self._lent_at = 0.0
        self.lent_seconds = 0.0  # how long the pool has run short, over all lendings

    @property
    def lent(self) -> bool:
        """Whether the pool runs short now."""
        return self._full is not None

    def lend(self) -> None:
        """Shrink the pool (no-op if lent already, if the pool is too small to lend from, or if it
        may not be resized now)."""
        if self._full is not None or not self._resizable():
            return
        full = self._get_threads()
        if full <= self._count:
            return
        self._set_threads(full - self._count)
        self._full = full
        self._lent_at = time.perf_counter()

    def give_back(self) -> None:
        """Restore the pool's size, unless the user resized it meanwhile (then theirs stays)."""
        if self._full is None:
            return
        full, self._full = self._full, None
        self.lent_seconds += time.perf_counter() - self._lent_at
        if self._get_threads() == full - self._count:
            self._set_threads(full)
