"""Eigenvalues of the Gram matrix ``X = A^T A`` of a tall slice, with a proven bound on their error.

For a tall ``r x n`` slice ``A`` the ESD is the spectrum of ``X = A^T A``. Forming ``X`` in float64
and calling a symmetric eigensolver costs about half an SVD of ``A``, but every eigenvalue then
carries an *absolute* error of order ``eps * ||A||^2``: the large ones are exact to many digits,
those near that level are noise. This module computes the eigenvalues and a bound ``delta`` on
that error; :mod:`.esd` keeps a slice's Gram eigenvalues only when ``delta`` makes every one of
them accurate to a relative tolerance, and otherwise computes the slice by SVD.

The bound (``u = 2^-53`` the unit roundoff of float64, ``eps = 2u``, ``gamma_k = k u / (1 - k u)``):

1. Forming ``X``. The weights are converted to float64 exactly. Rows are taken in blocks of ``b``;
   each block's Gram matrix is one BLAS ``dsyrk`` (every entry a sum of ``b`` products in some
   order), and the blocks' matrices are added pairwise, ``L = ceil(log2(blocks))`` levels (in
   sequence, ``L = blocks - 1``, for ``n > 512``, to hold two ``n x n`` matrices, not ``L + 1``).
   Each product thus goes through at most ``k = b + L`` roundings, so elementwise
   ``|X^ - X| <= gamma_k |A|^T |A|`` (Higham, *Accuracy and Stability of Numerical Algorithms*,
   2nd ed., 2002: section 3.1 for the dot products, section 4.2 for pairwise summation, lemma 3.3
   to combine them). Cauchy-Schwarz gives ``|A|^T |A| <= d d^T`` with ``d_i = ||a_i||_2``, and
   ``||d d^T||_2 = ||A||_F^2``; a nonnegative matrix bounds the 2-norm of any matrix it dominates
   entrywise. Hence ``||X^ - X||_2 <= gamma_k ||A||_F^2``, and ``||A||_F^2`` is the trace of ``X^``
   up to a relative ``gamma_(k+n)`` (its terms are all positive). Blocking makes ``k`` about ``b``
   instead of ``r``: an 8x smaller bound for 512 rows, 100x for an embedding's 50257.
2. The eigensolver. LAPACK's symmetric eigensolvers are backward stable: the computed eigenvalues
   are exact for ``X^ + F`` with ``||F||_2 <= p(n) eps ||X^||_2``, ``p`` "a modestly growing
   function of n" (LAPACK Users' Guide, 3rd ed., 1999, section 4.7.1; Golub and Van Loan,
   *Matrix Computations*, 4th ed., 2013, section 8.3). We take ``p(n) = n``.
3. Weyl's inequality (Golub and Van Loan, section 8.1.2; Demmel, *Applied Numerical Linear
   Algebra*, 1997, section 5.2): each computed eigenvalue is within
   ``delta = gamma_k ||A||_F^2 + n eps ||X^||_2`` of the exact eigenvalue of the same rank.

The certificate: if the smallest computed eigenvalue exceeds ``delta (1 + 1 / rtol)``, every
eigenvalue ``lambda`` of the slice is positive and its computed value is within ``rtol * lambda``
(the square roots then within ``rtol / 2``), the largest ones far better (``delta / lambda``).
The bound takes every rounding at its worst, so actual errors are usually well below ``delta``;
``benchmarks/bench_gram.py`` compares the results with the SVD's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import scipy.linalg.blas
from scipy.linalg import lapack

from .fortran_copy import float64_fortran

__all__ = [
    "GRAM_BLOCK_ROWS",
    "GRAM_LARGE_BLOCK_ROWS",
    "EigValues",
    "GramWorkspace",
    "certified",
    "expected_certified",
    "gram_eigenvalues",
    "gram_error_bound",
    "gram_matrix",
    "lapack_eigvalsh",
]

# Eigenvalues, ascending, of a symmetric float64 column-major matrix given by its upper triangle,
# which the function may overwrite.
EigValues = Callable[[np.ndarray], np.ndarray]

# Rows per block of the Gram matrix's formation (section 1 of the module docstring). Smaller blocks
# mean fewer roundings per product (a smaller bound, fewer square slices sent to the SVD) but more
# dsyrk calls and additions; 64 halves 128's bound for 4% more time forming a 512 x 512 Gram
# matrix, while the n x n partial sums stay in cache (n <= 512). Beyond that, adding them is bound
# by memory bandwidth, and bigger blocks mean fewer additions (benchmarks/bench_gram.py).
GRAM_BLOCK_ROWS = 64
GRAM_LARGE_BLOCK_ROWS = 512
_CACHED_COLUMNS = 512
_UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2
# How far below the tolerance the bound predicted for a random matrix must be for "auto" to try
# the Gram path. The prediction's smallest eigenvalue, 1 / (4 n^2) for a square n x n slice, is
# about the median; a third of it falls below in 28% of square Gaussian matrices (Edelman, "Eigen-
# values and condition numbers of random matrices", SIAM J. Matrix Anal. Appl. 9, 1988:
# P(n sigma_min^2 <= x) = 1 - exp(-x/2 - sqrt(x)) for unit-variance entries). A failed try adds
# the Gram path's cost to the SVD's, a success saves the SVD's cost less the Gram path's; with the
# Gram path at about half an SVD (benchmarks/bench_gram.py), trying pays while fewer than about
# half the tries fail.
AUTO_MARGIN = 3.0
_WORKSPACES = threading.local()


def lapack_eigvalsh(gram: np.ndarray) -> np.ndarray:
    """scipy's LAPACK ``dsyevr`` without vectors, in place: the default :data:`EigValues`.

    Of ``dsyevr``, ``dsyevd``, ``dsyev`` and ``dsytrd+dsterf`` on one thread, the fastest without
    vectors from n = 256 up and as fast below; called directly, without ``scipy.linalg.eigh``'s
    checks.
    """
    values, _, _, _, info = lapack.dsyevr(gram, compute_v=0, range="A", lower=0, overwrite_a=1)
    if info != 0:  # an invalid argument (a bug here) or a failed convergence (never seen)
        raise RuntimeError(f"LAPACK dsyevr failed with info={info} on a {gram.shape} Gram matrix.")
    return values


def expected_certified(rows: int, columns: int, rtol: float) -> bool:
    """Whether a ``rows x columns`` slice (``rows >= columns``) with i.i.d. entries is expected to
    pass :func:`certified` with ``rtol`` by a margin of :data:`AUTO_MARGIN`.

    The Gram path is cheaper than the SVD on every shape, very tall ones included (against the
    streamed R factor): one level-3 ``dsyrk`` per block of rows, then the tridiagonal reduction
    of the ``n x n`` Gram matrix, half the flops of the bidiagonal reduction of an ``n x n``
    matrix that the SVD makes (``benchmarks/bench_gram.py`` times both paths). So the SVD wins
    only where the certificate is likely to fail and the Gram matrix would be computed in vain:
    square slices, whose smallest singular value falls with their size. For entries of variance
    ``1 / rows`` the eigenvalues' mean is 1, the largest about ``(1 + sqrt(columns / rows))^2``
    (Marchenko-Pastur) and the smallest about ``(sqrt(rows) - sqrt(columns - 1))^2 / rows``
    (Rudelson and Vershynin, "Smallest singular value of a random rectangular matrix", CPAM 62,
    2009), ``1 / (4 n^2)`` for a square one: this predicts the bound over the smallest eigenvalue.
    Trained weights may be worse conditioned; their slices then fail the certificate and are
    computed by SVD.
    """
    largest = (1 + np.sqrt(columns / rows)) ** 2
    smallest = (np.sqrt(rows) - np.sqrt(columns - 1)) ** 2 / rows
    block = min(_block_rows(columns), rows)
    roundings = block + _additions(-(-rows // block), columns)
    predicted = gram_error_bound(float(columns), float(largest), columns, roundings) / smallest
    return bool(predicted * AUTO_MARGIN <= rtol)


def gram_matrix(
    matrix: np.ndarray, block_rows: int | None = None, workspace: GramWorkspace | None = None
) -> tuple[np.ndarray, int]:
    """``X = A^T A`` (float64, column-major, upper triangle) of a real ``r x n`` matrix, from blocks
    of rows added pairwise (in sequence for ``n > 512``), and ``k``: the most roundings any of its
    products went through.

    Args:
        matrix: any float dtype and memory layout; converted to float64 block by block (exactly).
        block_rows: rows per block; default :data:`GRAM_BLOCK_ROWS`, or
            :data:`GRAM_LARGE_BLOCK_ROWS` when ``n`` exceeds 512.
        workspace: ``n x n`` buffers to compute in; the result is then one of them, to be handed
            back with :meth:`GramWorkspace.release`. Default: fresh arrays.
    """
    rows, columns = matrix.shape
    block_rows = max(1, block_rows or _block_rows(columns))
    workspace = workspace or GramWorkspace(columns)
    pairwise = columns <= _CACHED_COLUMNS
    # a binary counter of partial sums: (additions its entries went through, the sum)
    partial: list[tuple[int, np.ndarray]] = []
    for start in range(0, max(rows, 1), block_rows):
        total, level = _block_gram(matrix[start : start + block_rows], workspace.take()), 0
        while partial and (partial[-1][0] == level or not pairwise):
            total, level = _add(partial.pop(), (level, total), workspace)
        partial.append((level, total))
    level, total = partial.pop()
    while partial:
        total, level = _add(partial.pop(), (level, total), workspace)
    return total, min(block_rows, rows) + level


class GramWorkspace:
    """Reusable ``n x n`` float64 column-major buffers for :func:`gram_matrix`, lower triangles zero.

    Each block's ``dsyrk`` writes into a buffer and partial sums are added in place: a fresh
    ``n x n`` array per block would be a fresh ``mmap`` for ``n >= 128``, and its page faults cost
    more than the block's product (``benchmarks/bench_gram.py``). ``dsyrk`` and the eigensolvers
    read and write upper triangles only, so the zero lower triangles stay zero.
    """

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self._free: list[np.ndarray] = []

    def take(self) -> np.ndarray:
        """A buffer whose upper triangle holds anything and whose lower triangle is zero."""
        if self._free:
            return self._free.pop()
        return np.zeros((self.columns, self.columns), dtype=np.float64, order="F")

    def release(self, buffer: np.ndarray) -> None:
        """Hand a buffer from :meth:`take` (or :func:`gram_matrix`'s result) back for reuse."""
        self._free.append(buffer)


def _add(
    earlier: tuple[int, np.ndarray], later: tuple[int, np.ndarray], workspace: GramWorkspace
) -> tuple[np.ndarray, int]:
    """Two partial sums added into the earlier one's buffer; the later's is released."""
    (earlier_level, total), (later_level, other) = earlier, later
    np.add(total, other, out=total)
    workspace.release(other)
    return total, max(earlier_level, later_level) + 1


def gram_error_bound(trace: float, largest: float, columns: int, roundings: int) -> float:
    """``delta``: every computed eigenvalue of the Gram matrix is within it of the exact one.

    Args:
        trace: the trace of the computed Gram matrix (``||A||_F^2`` up to rounding).
        largest: the largest computed eigenvalue in absolute value.
        columns: ``n``, the order of the Gram matrix.
        roundings: ``k`` from :func:`gram_matrix`.
    """
    eps = 2 * _UNIT_ROUNDOFF
    frobenius_squared = trace / (1 - _gamma(roundings + columns))
    norm = largest / (1 - columns * eps)
    return _gamma(roundings) * frobenius_squared + columns * eps * norm


def gram_eigenvalues(
    matrix: np.ndarray, eigvalsh: EigValues = lapack_eigvalsh, *, accumulate: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """The eigenvalues of ``A^T A`` (float64, descending) for a tall ``A``, and their error bound.

    Args:
        matrix: the tall slice ``A``.
        eigvalsh: the symmetric eigensolver (:data:`EigValues`).
        accumulate: an ``n x n`` float64 array the Gram matrix's upper triangle is added to before
            the eigensolver overwrites it (the lower triangle adds zeros): the sum over a conv's
            slices is the Gram matrix the frame potential needs.

    Returns:
        ``(evals, delta)``: each computed eigenvalue is within ``delta`` of the exact one
        (see the module docstring). They may be negative for a (nearly) rank-deficient ``A``.
    """
    workspace = _thread_workspace(matrix.shape[1])
    gram, roundings = gram_matrix(matrix, workspace=workspace)
    try:
        if accumulate is not None:
            np.add(accumulate, gram, out=accumulate)
        trace = float(np.trace(gram))
        evals = np.asarray(eigvalsh(gram), dtype=np.float64)[::-1]
    finally:
        workspace.release(gram)
    largest = float(np.max(np.abs(evals))) if evals.size else 0.0
    return evals, gram_error_bound(trace, largest, matrix.shape[1], roundings)


def certified(evals: np.ndarray, delta: float, rtol: float) -> bool:
    """Whether every eigenvalue is within ``rtol`` (relative) of the exact one: the smallest
    computed eigenvalue exceeds ``delta (1 + 1 / rtol)`` (an exactly zero matrix never is)."""
    return bool(evals.size) and float(np.min(evals)) > delta * (1 + 1 / rtol)


def _block_gram(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """One block's ``B^T B`` by ``dsyrk`` into ``out``'s upper triangle, from a float64 copy read
    without a transposed copy."""
    if block.flags.c_contiguous:
        # a row-major block's transpose is column-major: dsyrk's B B^T of it needs no copy
        operand, trans = np.asarray(block, dtype=np.float64).T, 0
    else:
        operand, trans = float64_fortran(block), 1
    return scipy.linalg.blas.dsyrk(1.0, operand, beta=0.0, c=out, trans=trans, overwrite_c=1)


def _thread_workspace(columns: int) -> GramWorkspace:
    """This thread's workspace for ``columns x columns`` Gram matrices, kept between calls for
    the cached sizes (at most ``2 + log2(blocks)`` buffers of ``n <= 512``: 12 MB at 512) and
    fresh for larger ones."""
    if columns > _CACHED_COLUMNS:
        return GramWorkspace(columns)
    kept = getattr(_WORKSPACES, "by_columns", None)
    if kept is None:
        kept = _WORKSPACES.by_columns = {}
    return kept.setdefault(columns, GramWorkspace(columns))


def _block_rows(columns: int) -> int:
    return GRAM_BLOCK_ROWS if columns <= _CACHED_COLUMNS else GRAM_LARGE_BLOCK_ROWS


def _additions(blocks: int, columns: int) -> int:
    """The additions :func:`gram_matrix` puts a product through after its block's dsyrk."""
    return int(np.ceil(np.log2(blocks))) if columns <= _CACHED_COLUMNS else blocks - 1


def _gamma(k: int) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``: the relative error bound of ``k`` roundings."""
    return k * _UNIT_ROUNDOFF / (1 - k * _UNIT_ROUNDOFF)
