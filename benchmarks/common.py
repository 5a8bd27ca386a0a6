"""What the benchmark scripts share: best-of-k timing, a quiet WeightWatcher run, the load line."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg


def best_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Smallest wall time of ``repeats`` calls, and the last result."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def svd_floor(matrices: Any) -> list[np.ndarray]:
    """Singular values of each matrix in float64: the SVD cost every analysis pays, nothing else."""
    return [scipy.linalg.svdvals(np.asarray(m, dtype=np.float64), check_finite=False) for m in matrices]


def own_svd_floor(matrices: Any) -> list[np.ndarray]:
    """The same, as the analysis makes its LAPACK calls: on the tall orientation, from its float64
    copy, with MKL's LAPACK for large matrices when torch carries it."""
    from spectral_callbacks.analysis import mkl_svd
    from spectral_callbacks.spectra.fortran_copy import float64_fortran

    tall = (m if m.shape[0] >= m.shape[1] else m.T for m in matrices)
    return [mkl_svd.svdvals(float64_fortran(m), threads=1) for m in tall]


def weightwatcher_details(model: Any) -> Any:
    """WeightWatcher's default ``analyze()`` of a model or path, its output silenced; None if absent."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import weightwatcher
        except ImportError:
            return None
        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        return weightwatcher.WeightWatcher(model=model).analyze()


def load_average() -> str:
    """The machine's 1-minute load, printed after the runs so a busy machine shows in the figures."""
    return f"load average (1 min) after the runs: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
