"""The R factor of a tall matrix, built from a few rows at a time (LAPACK's ``tpqrt``).

``W = QR`` gives ``W`` and ``R`` the same singular values, so the SVD of a tall ``m x n`` matrix
can run on the ``n x n`` triangle. LAPACK's ``gesdd`` takes that step itself, but on a float64
copy of the whole of ``W``; folding blocks of ``2n`` rows into ``R`` with Householder reflections
(``tpqrt``: the QR of ``R`` stacked on a block) keeps the work in cache and never holds more than
``3n`` rows in float64. Both are backward stable orthogonal reductions (``W^T W`` is never
formed), so the singular values agree to rounding.

The SVD path uses it (``method="svd"``, and slices whose Gram eigenvalues are not certified):
where the Gram eigenvalues are certified (:mod:`.gram`), they are 2.2-2.6x faster on such slices.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from .fortran_copy import float64_fortran

__all__ = [
    "STREAMING_QR_MAX_COLUMNS",
    "STREAMING_QR_MIN_ASPECT",
    "STREAMING_QR_MIN_SIZE",
    "r_factor",
    "streams_well",
]

# Measured in benchmarks/bench_tall.py (one thread, against scipy's svdvals of the whole matrix):
# 1.3-1.85x faster for 30522-50257 rows of 384-1024 columns, 1.15x at 8 rows per column; at 4 rows
# per column or 2048 columns the gain is 1.1x or less, and 3072x768 or 11008x4096 run slower.
# Below 2^16 entries the whole matrix is in cache anyway and the blocks' overhead makes it slower
# (0.4-0.5x on 64x3 and 512x16 conv slices; 1.1x at 1024x64, 2.8x at 8192x128).
STREAMING_QR_MIN_ASPECT = 8
STREAMING_QR_MAX_COLUMNS = 1024
STREAMING_QR_MIN_SIZE = 1 << 16
# Block size of tpqrt's compact WY reflectors (32 fastest of 32/64/128 on every shape measured).
REFLECTOR_BLOCK = 32


def streams_well(rows: int, columns: int) -> bool:
    """Whether :func:`r_factor` is the faster way to the singular values of a ``rows x columns`` slice."""
    return (
        rows >= STREAMING_QR_MIN_ASPECT * columns
        and columns <= STREAMING_QR_MAX_COLUMNS
        and rows * columns >= STREAMING_QR_MIN_SIZE
    )


def r_factor(matrix: np.ndarray, block_rows: int | None = None) -> np.ndarray:
    """Upper-triangular ``R`` (float64, column-major, ``n x n``) of ``matrix = QR`` for ``m >= n``.

    Args:
        matrix: a real ``m x n`` array of any float dtype and memory layout.
        block_rows: rows folded in per step (default ``2n``).

    Raises:
        ValueError: ``matrix`` is not 2-D with at least as many rows as columns.
    """
    if matrix.ndim != 2 or matrix.shape[0] < matrix.shape[1]:
        raise ValueError(f"r_factor needs a tall 2-D matrix (rows >= columns); got shape {matrix.shape}.")
    rows, columns = matrix.shape
    block = max(block_rows or 2 * columns, 1)
    reflector_block = max(min(REFLECTOR_BLOCK, columns), 1)
    r = np.zeros((columns, columns), dtype=np.float64, order="F")
    for start in range(0, rows, block):
        rows_of_block = float64_fortran(matrix[start : start + block])
        r, _, _, info = lapack.dtpqrt(
            0, reflector_block, r, rows_of_block, overwrite_a=True, overwrite_b=True
        )
        if info != 0:  # only an invalid argument sets it: a bug here, not bad input
            raise RuntimeError(f"LAPACK dtpqrt failed with info={info} on a {matrix.shape} matrix.")
    return r
