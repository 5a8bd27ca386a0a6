"""Shared set-up for the spectral-core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_blas() -> Iterator[None]:
    """Run BLAS on one thread: the matrices here are small, and on a shared 2-core machine
    multi-threaded OpenBLAS spins against other processes (measured: 15 s -> 75 s for the suite)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
