"""How much two processes gain on this machine: the same SVD alone and two at once.

Each worker of a started pool of two forked processes builds its own float64 matrix (seeded, not
timed) and times its singular values, on one thread: once with the other worker idle, once with
both running together (after one untimed pass, so that no timed run pays a fresh process's first
touch of its memory). The speed-up ``2 x alone / together`` is what any two-worker analysis can
reach on SVDs of that size. Two LAPACKs: scipy's OpenBLAS (``scipy.linalg.svdvals``), whose
one-column-at-a-time bidiagonal reduction streams the trailing matrix from memory once it outgrows
the cache, and, if torch is installed with MKL, MKL's (``torch.linalg.svdvals``), which the
analysis uses from ``spectral_callbacks.analysis.mkl_svd.MKL_MIN_SIDE`` up.
Run: ``.venv/bin/python benchmarks/bench_svd_scaling.py [--sizes 2048 3072 4096] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import time

import numpy as np
import scipy.linalg
from common import load_average
from threadpoolctl import threadpool_limits

from spectral_callbacks.analysis import mkl_svd

_START_TOGETHER: list[multiprocessing.synchronize.Barrier] = []  # inherited by the forked workers


def timed_svd(library: str, size: int, together: bool) -> float:
    """Seconds of one SVD of a ``size x size`` Gaussian matrix; ``together``: both workers start at once."""
    matrix = np.asfortranarray(np.random.default_rng(size).standard_normal((size, size)))
    with threadpool_limits(limits=1):
        if together:
            _START_TOGETHER[0].wait()
        start = time.perf_counter()
        if library == "scipy":
            scipy.linalg.svdvals(matrix, overwrite_a=True, check_finite=False)
        else:
            torch = mkl_svd.mkl_torch()
            torch.set_num_threads(1)
            torch.linalg.svdvals(torch.from_numpy(matrix))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 3072, 4096])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    context = multiprocessing.get_context("fork")
    _START_TOGETHER[:] = [context.Barrier(2)]
    libraries = ["scipy"] + (["MKL"] if mkl_svd.mkl_torch() is not None else [])
    print(f"{'n x n float64':<16}{'LAPACK':<8}{'alone':>9}{'two at once':>14}{'speed-up':>10}")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        list(pool.map(time.sleep, [0.2, 0.2]))  # both workers started
        for size in args.sizes:
            for library in libraries:
                pair = ([library] * 2, [size] * 2, [True] * 2)
                list(pool.map(timed_svd, *pair))  # both workers' memory touched once
                alone = min(
                    pool.submit(timed_svd, library, size, False).result() for _ in range(args.repeats)
                )
                together = min(max(pool.map(timed_svd, *pair)) for _ in range(args.repeats))
                speedup = 2 * alone / together
                print(f"{size:<16}{library:<8}{alone:>8.3f}s{together:>13.3f}s{speedup:>9.2f}x")
    print(f"\n{load_average()}")


if __name__ == "__main__":
    main()
