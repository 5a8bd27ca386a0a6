"""The R factor of a tall matrix, built from a few rows at a time (LAPACK's ``tpqrt``).

``W = QR`` gives ``W`` and ``R`` the same singular values, so the SVD of a tall ``m x n`` matrix
can run on the ``n x n`` triangle. LAPACK's ``gesdd`` takes that step itself, but on a float64
copy of the whole of ``W``; folding blocks of ``2n`` rows into ``R`` with Householder reflections
(``tpqrt``: the QR of ``R`` stacked on a block) keeps the work in cache and never holds more than
``3n`` rows in float64. Both are backward stable orthogonal reductions (``W^T W`` is never
formed), so the singular values agree to rounding.

The SVD path uses it (``method="svd"``, and slices whose Gram eigenvalues are not certified):
where the Gram eigenvalues are certified (:mod:`.gram`), they are the cheaper way on such slices too.
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

# Streamed: at least 8 rows per column, at most 1024 columns, at least 2^16 entries.
# Where streaming beats gesdd on the whole matrix: with many rows per column, most of gesdd's
# work is its own QR step, streamed from memory over a float64 copy of all of W, and the blocks
# keep that step in cache. With few rows per column the SVD of R dominates, and with many columns
# the blocks outgrow the cache themselves: the gain is gone. Below 2^16 entries the whole matrix
# is in cache anyway, and the blocks' per-call overhead makes streaming slower.
# benchmarks/bench_tall.py times both on shapes either side of these limits (docs/performance.md).
STREAMING_QR_MIN_ASPECT = 8
STREAMING_QR_MAX_COLUMNS = 1024
STREAMING_QR_MIN_SIZE = 1 << 16
# Block size of tpqrt's compact WY reflectors: larger blocks do more of the update as matrix-matrix
# products but add work for their triangular factors; 32 balances the two on the shapes of
# benchmarks/bench_tall.py.
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
