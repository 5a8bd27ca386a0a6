"""The float64 column-major copy every SVD starts from (LAPACK overwrites its input)."""

from __future__ import annotations

import numpy as np

__all__ = ["COPY_TILE", "TILED_COPY_MIN_SIZE", "float64_fortran"]

# Square tiles of the tiled copy: 128 x 128 float64 is 128 KiB, read and written within cache;
# smaller tiles pay numpy's per-call overhead more often, larger ones no longer fit in it
# (benchmarks/bench_copy.py times the copy against numpy's).
COPY_TILE = 128
# Below this many elements numpy's copy is as fast (the whole matrix is in cache).
TILED_COPY_MIN_SIZE = 1 << 16


def float64_fortran(matrix: np.ndarray) -> np.ndarray:
    """``np.array(matrix, dtype=np.float64, order="F")``, copied tile by tile from a row-major matrix.

    numpy copies a row-major source into column-major order element by element down each column,
    touching a new cache line per element; copying square tiles keeps both sides in cache. A torch
    weight of ``out > in`` (an MLP up-projection, an embedding) is such a matrix.
    """
    if matrix.flags.f_contiguous or matrix.size < TILED_COPY_MIN_SIZE:
        return np.array(matrix, dtype=np.float64, order="F")
    copy = np.empty(matrix.shape, dtype=np.float64, order="F")
    rows, columns = matrix.shape
    for row in range(0, rows, COPY_TILE):
        for column in range(0, columns, COPY_TILE):
            tile = (slice(row, row + COPY_TILE), slice(column, column + COPY_TILE))
            copy[tile] = matrix[tile]
    return copy
