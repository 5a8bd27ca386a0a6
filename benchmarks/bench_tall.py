"""Singular values of very tall matrices: the streamed R factor against scipy's svdvals.

``spectra.streaming_qr.r_factor`` folds blocks of ``2n`` rows into the ``n x n`` R factor with
LAPACK's ``tpqrt``, then the SVD runs on R; scipy's ``svdvals`` runs ``gesdd`` (which takes the
QR step itself) on a float64 copy of the whole matrix. Both start from the same float32
row-major weight (a torch embedding, ``out x in``). The spectral core uses the streamed path
where ``streams_well(m, n)`` holds (``m >= 8n``, ``n <= 1024``, ``mn >= 2^16``); the other
shapes show why not elsewhere. Every BLAS on one thread; best of ``--repeats``; the largest
relative difference of the eigenvalues (``sigma^2``) from scipy's is printed beside each ratio.
Run: ``.venv/bin/python benchmarks/bench_tall.py``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
from common import best_time
from threadpoolctl import threadpool_limits

from spectral_callbacks.spectra.fortran_copy import float64_fortran
from spectral_callbacks.spectra.streaming_qr import r_factor, streams_well

SHAPES = {
    "conv kernel slice 512x16": (512, 16),
    "narrow layer 8192x128": (8192, 128),
    "MLP up-projection 1536x384": (1536, 384),
    "8 rows per column 3072x384": (3072, 384),
    "MiniLM token embedding 30522x384": (30522, 384),
    "BERT token embedding 30522x768": (30522, 768),
    "GPT-2 token embedding 50257x768": (50257, 768),
    "wide embedding 50257x1024": (50257, 1024),
    "LLaMA-sized head 32000x2048": (32000, 2048),
}


def scipy_svdvals(weight: np.ndarray) -> np.ndarray:
    return scipy.linalg.svdvals(float64_fortran(weight), overwrite_a=True, check_finite=False)


def streamed_svdvals(weight: np.ndarray) -> np.ndarray:
    return scipy.linalg.svdvals(r_factor(weight), overwrite_a=True, check_finite=False)


def per_call(
    svdvals: Callable[[np.ndarray], np.ndarray], weight: np.ndarray, repeats: int
) -> tuple[float, Any]:
    """Best seconds per call and the singular values; a small matrix is timed over many calls."""
    calls = max(1, 2**20 // weight.size)
    seconds, values = best_time(lambda: [svdvals(weight) for _ in range(calls)], repeats)
    return seconds / calls, values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'float32 weight':<34}{'scipy':>10}{'streamed':>11}{'speed-up':>9}{'max rel d':>11}  used")
    with threadpool_limits(limits=1):
        for label, shape in SHAPES.items():
            weight = (rng.standard_t(3.0, size=shape) / np.sqrt(shape[1])).astype(np.float32)
            repeats = args.repeats if shape[1] <= 1024 else 1
            theirs, expected = per_call(scipy_svdvals, weight, repeats)
            ours, result = per_call(streamed_svdvals, weight, repeats)
            difference = np.max(np.abs(result**2 - expected**2) / expected**2)
            used = "yes" if streams_well(*shape) else "no"
            times = f"{theirs * 1e3:>8.2f}ms{ours * 1e3:>9.2f}ms{theirs / ours:>9.2f}x"
            print(f"{label:<34}{times}{difference:>11.1e}  {used}")


if __name__ == "__main__":
    main()
