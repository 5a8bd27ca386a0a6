"""What each SVD starts from: a weight read from its file, copied to column-major float64.

LAPACK wants column-major float64. A torch weight of ``out > in`` (tall, row-major, float32) is
analyzed as it is, so it must be transposed in memory as it is widened; numpy does that element
by element down each column, ``spectra.fortran_copy.float64_fortran`` copies 128 x 128 tiles instead.
Read from a ``.safetensors`` file, ``safe_open(...).get_tensor`` copies the tensor out of the
file; ``posthoc.formats.load_safetensors`` maps it, so the float64 copy reads the file's pages.
Measured in one run, best of ``--repeats``; the results are checked equal.
Run: ``.venv/bin/python benchmarks/bench_copy.py``
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import best_time
from safetensors import safe_open
from safetensors.numpy import save_file

from spectral_callbacks.posthoc.formats import load_safetensors
from spectral_callbacks.spectra.fortran_copy import float64_fortran

SHAPES = {
    "MLP up-projection 1536x384": (1536, 384),
    "token embedding 30522x384": (30522, 384),
    "attention 4096x4096": (4096, 4096),
    "MLP up-projection 11008x4096": (11008, 4096),
}


Copy = Callable[[], np.ndarray]


def compare(label: str, theirs: Copy, ours: Copy, repeats: int) -> None:
    their_time, expected = best_time(theirs, repeats)
    our_time, result = best_time(ours, repeats)
    assert np.array_equal(result, expected) and result.flags.f_contiguous
    ratio = their_time / our_time
    print(f"{label:<32}{their_time * 1e3:>9.1f}ms{our_time * 1e3:>9.1f}ms{ratio:>9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    weights = {label: rng.standard_normal(shape, dtype=np.float32) for label, shape in SHAPES.items()}
    print(f"{'copy of a row-major float32':<32}{'numpy':>11}{'tiled':>11}{'speed-up':>9}")
    for label, weight in weights.items():
        numpy_copy = functools.partial(np.array, weight, dtype=np.float64, order="F")
        compare(label, numpy_copy, functools.partial(float64_fortran, weight), args.repeats)
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "model.safetensors")
        save_file({label: weight for label, weight in weights.items()}, path)
        print(f"\n{'read from safetensors, then copy':<32}{'get_tensor':>11}{'mapped':>11}{'speed-up':>9}")
        for label in weights:

            def library(key: str = label) -> np.ndarray:
                with safe_open(path, framework="numpy") as handle:
                    return float64_fortran(handle.get_tensor(key))

            def mapped(key: str = label) -> np.ndarray:
                return float64_fortran(load_safetensors(path, key, "F32"))

            compare(label, library, mapped, args.repeats)


if __name__ == "__main__":
    main()
