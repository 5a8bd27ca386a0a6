"""Singular values of very tall matrices: the streamed R factor against scipy's svdvals.

``spectra.streaming_qr.r_factor`` folds blocks of ``2n`` rows into the ``n x n`` R factor with
LAPACK's ``tpqrt``, then the SVD runs on R; scipy's ``svdvals`` runs ``gesdd`` (which takes the
QR step itself) on a float64 copy of the whole matrix. Both start from the same float32
row-major weight (a torch embedding, ``out x in``). The spectral core uses the streamed path
where ``streams_well(m, n)`` holds (``m >= 8n`` and ``n <= 1024``); the other shapes show why
not elsewhere. Every BLAS on one thread; best of ``--repeats``; the largest relative difference of
the eigenvalues (``sigma^2``) from scipy's is printed beside each ratio.
Run: ``.venv/bin/python benchmarks/bench_tall.py``
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.linalg
from common import best_time
from threadpoolctl import threadpool_limits

from spectral_callbacks.spectra.fortran_copy import float64_fortran
from spectral_callbacks.spectra.streaming_qr import r_factor, streams_well

SHAPES = {
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'float32 weight':<34}{'scipy':>9}{'streamed':>10}{'speed-up':>10}{'max rel d':>11}  used")
    with threadpool_limits(limits=1):
        for label, shape in SHAPES.items():
            weight = (rng.standard_t(3.0, size=shape) / np.sqrt(shape[1])).astype(np.float32)
            repeats = args.repeats if shape[1] <= 1024 else 1
            theirs, expected = best_time(lambda w=weight: scipy_svdvals(w), repeats)
            ours, result = best_time(lambda w=weight: streamed_svdvals(w), repeats)
            difference = np.max(np.abs(result**2 - expected**2) / expected**2)
            used = "yes" if streams_well(*shape) else "no"
            print(f"{label:<34}{theirs:>8.3f}s{ours:>9.3f}s{theirs / ours:>9.2f}x{difference:>11.1e}  {used}")


if __name__ == "__main__":
    main()
