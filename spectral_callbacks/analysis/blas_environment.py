"""How many threads the BLAS libraries run: the variables they read once, when they load, and the
limits set while they run.

numpy's and scipy's OpenBLAS, and torch's OpenMP and MKL, size their thread pools from these when
first imported; threadpoolctl can lower the count afterwards, but not undo what starting with
more threads did (see :func:`blas_threads_before_numpy` and :func:`blas_threads_limited`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = [
    "BLAS_THREAD_VARIABLES",
    "blas_pools",
    "blas_threads_before_numpy",
    "blas_threads_for_children",
    "blas_threads_limited",
]

BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads_before_numpy(threads: int) -> None:
    """Start this process's BLAS libraries with ``threads`` threads, unless the user set the
    variables or numpy is loaded already (the call comes from a program).

    Each post-hoc task limits BLAS to its thread count anyway, but OpenBLAS starts its threads
    when it loads and restarts them whenever a count is set after a fork, each new thread spinning
    for work a while (:func:`blas_threads_limited`). Started with one thread, it has no pool to
    start or restart, in this process or its workers, and no spinning thread takes a core from a
    task (docs/performance.md, "Forked workers keep one BLAS thread").
    """
    if threads < 1 or "numpy" in sys.modules:
        return  # an invalid value is reported where the caller checks its options
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))


@contextlib.contextmanager
def blas_threads_for_children(threads: int) -> Iterator[None]:
    """The spawned child reads these when it loads its BLAS; the parent's stay as they were."""
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in BLAS_THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.cache
def blas_pools() -> Any:
    """This process's BLAS/OpenMP thread pools (a ``threadpoolctl.ThreadpoolController``), found
    once: looking them up costs milliseconds."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def blas_threads_limited(threads: int) -> contextlib.AbstractContextManager[Any]:
    """Run the block with every BLAS/OpenMP pool at ``threads`` threads, setting only those at
    another count.

    A fork stops OpenBLAS's thread pool, and any count set in the child starts it again with the
    parent's size, whatever the count: its new threads then spin a while waiting for work, taking
    a busy core's time, which adds to the workers' CPU time (docs/performance.md). A worker forked
    with its pools at ``threads`` already sets nothing.
    """
    pools = blas_pools()
    others = [pool.filepath for pool in pools.lib_controllers if pool.num_threads != threads]
    return pools.select(filepath=others).limit(limits=threads)
