"""The environment variables BLAS libraries read once, when they load: how many threads they start.

numpy's and scipy's OpenBLAS, and torch's OpenMP and MKL, size their thread pools from these when
first imported; threadpoolctl can lower the count afterwards, but not undo what starting with
more threads did (see :func:`blas_threads_before_numpy`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["BLAS_THREAD_VARIABLES", "blas_threads_before_numpy", "blas_threads_for_children"]

BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads_before_numpy(threads: int) -> None:
    """Start this process's BLAS libraries with ``threads`` threads, unless the user set the
    variables or numpy is loaded already (the call comes from a program).

    Each post-hoc task limits BLAS to its thread count anyway, but a worker forked from a process
    whose OpenBLAS started with more threads ran its tasks 15% slower (user time 1.17 s against
    1.02 s for the same analyses): ``analyze`` on 2 workers took 1.01-1.04 s instead of 0.88-0.91 s.
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
