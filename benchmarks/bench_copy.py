"""The float64 column-major copy each SVD starts from: numpy's copy against the tiled one.

LAPACK wants column-major float64. A torch weight of ``out > in`` (tall, row-major, float32) is
analyzed as it is, so it must be transposed in memory as it is widened; numpy does that element
by element down each column. ``spectra.esd.float64_fortran`` copies 128 x 128 tiles instead.
Measured in one run, best of ``--repeats``; the two copies are checked equal.
Run: ``.venv/bin/python benchmarks/bench_copy.py``
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
from common import best_time

from spectral_callbacks.spectra.esd import float64_fortran

SHAPES = {
    "MLP up-projection 1536x384": (1536, 384),
    "token embedding 30522x384": (30522, 384),
    "attention 4096x4096": (4096, 4096),
    "MLP up-projection 11008x4096": (11008, 4096),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'row-major float32 weight':<32}{'numpy':>10}{'tiled':>10}{'speed-up':>10}")
    for label, shape in SHAPES.items():
        weight = rng.standard_normal(shape, dtype=np.float32)
        numpy_copy = functools.partial(np.array, weight, dtype=np.float64, order="F")
        numpy_time, expected = best_time(numpy_copy, args.repeats)
        tiled_time, copy = best_time(functools.partial(float64_fortran, weight), args.repeats)
        assert np.array_equal(copy, expected) and copy.flags.f_contiguous
        ratio = numpy_time / tiled_time
        print(f"{label:<32}{numpy_time * 1e3:>8.1f}ms{tiled_time * 1e3:>8.1f}ms{ratio:>9.2f}x")


if __name__ == "__main__":
    main()
