"""Scalar spectral metrics of a layer: norms, stable rank, numerical rank, entropy, frame potential.

Names follow WeightWatcher's columns where they exist. References: C. H. Martin and M. W. Mahoney,
"Implicit Self-Regularization in Deep Neural Networks", JMLR 22 (2021); numpy.linalg.matrix_rank;
W. H. Press et al., Numerical Recipes (3rd ed.), section 2.6; J. J. Benedetto and M. Fickus,
"Finite normalized tight frames", Adv. Comput. Math. 18 (2003) for the frame potential's minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg.blas

__all__ = [
    "FramePotential",
    "NormMetrics",
    "RankMetrics",
    "entropy_rank_tolerance",
    "frame_potential",
    "frame_potential_of_gram",
    "matrix_entropy",
    "norm_metrics",
    "rank_metrics",
    "rank_tolerances",
]

# The frame potential normalizes and multiplies blocks of about this many weights (4 MB of
# float32, in cache), of at least this many rows or columns (fewer slow the rank-k update down).
FRAME_BLOCK_ELEMENTS = 1 << 20
FRAME_BLOCK_MIN = 256


@dataclass(frozen=True)
class NormMetrics:
    """Norm-based metrics of an ESD (eigenvalues ``lambda``) and a fitted exponent ``alpha``."""

    norm: float
    log_norm: float
    spectral_norm: float
    log_spectral_norm: float
    alpha_weighted: float
    log_alpha_norm: float
    stable_rank: float


@dataclass(frozen=True)
class RankMetrics:
    """Numerical rank with numpy's and Numerical Recipes' tolerances, summed over slices."""

    rank: int
    rank_loss: int
    rank_nr: int
    rank_loss_nr: int
    sv_min: float
    sv_max: float


@dataclass(frozen=True)
class FramePotential:
    """Frame potential of the unit-normalized neurons and its ratio to the tight-frame minimum."""

    frame_potential: float
    frame_potential_normalized: float


def norm_metrics(evals: np.ndarray, alpha: float) -> NormMetrics:
    """Norm metrics over all eigenvalues (WeightWatcher uses all of them, not only the tail).

    ``norm = sum(lambda)`` (squared Frobenius), ``spectral_norm = max(lambda)``,
    ``alpha_weighted = alpha * log10(max(lambda))``, ``log_alpha_norm = log10(sum(lambda^alpha))``,
    ``stable_rank = norm / spectral_norm``. ``alpha`` may be NaN when no fit exists.
    """
    evals = np.asarray(evals, dtype=np.float64)
    norm = float(evals.sum())
    spectral_norm = float(evals.max())
    log_spectral_norm = _log10(spectral_norm)
    if np.isfinite(alpha):
        with np.errstate(over="ignore"):
            alpha_sum = float(np.sum(evals**alpha))
        log_alpha_norm = _log10(alpha_sum)
    else:
        log_alpha_norm = float("nan")
    return NormMetrics(
        norm=norm,
        log_norm=_log10(norm),
        spectral_norm=spectral_norm,
        log_spectral_norm=log_spectral_norm,
        alpha_weighted=alpha * log_spectral_norm,
        log_alpha_norm=log_alpha_norm,
        stable_rank=norm / spectral_norm if spectral_norm > 0 else float("nan"),
    )


def rank_metrics(svals: np.ndarray, N: int, M: int, eps: float) -> RankMetrics:  # noqa: N803
    """Numerical rank of each slice, summed, with two tolerances.

    numpy: ``sigma > sigma_max * max(N, M) * eps``. Numerical Recipes:
    ``sigma > 0.5 * sqrt(M + N + 1) * sigma_max * eps``. ``eps`` is the machine epsilon of the
    dtype the weights came in (what ``numpy.linalg.matrix_rank(W)`` uses).

    Args:
        svals: singular values, shape ``(S, M)``.
    """
    svals = np.atleast_2d(np.asarray(svals, dtype=np.float64))
    largest = svals.max(axis=1, keepdims=True)
    numpy_tolerance, nr_tolerance = rank_tolerances(N, M, eps)
    rank = int(np.count_nonzero(svals > largest * numpy_tolerance))
    rank_nr = int(np.count_nonzero(svals > largest * nr_tolerance))
    return RankMetrics(
        rank=rank,
        rank_loss=svals.size - rank,
        rank_nr=rank_nr,
        rank_loss_nr=svals.size - rank_nr,
        sv_min=float(svals.min()),
        sv_max=float(svals.max()),
    )


def rank_tolerances(N: int, M: int, eps: float) -> tuple[float, float]:  # noqa: N803
    """The numerical-rank tolerances of :func:`rank_metrics` relative to ``sigma_max``: numpy's
    ``N * eps`` and Numerical Recipes' ``0.5 * sqrt(M + N + 1) * eps``."""
    return N * eps, 0.5 * float(np.sqrt(M + N + 1.0)) * eps


def matrix_entropy(svals: np.ndarray, N: int) -> float:  # noqa: N803
    """WeightWatcher's matrix entropy: Shannon entropy of ``sigma^2 / sum(sigma^2)`` over ``ln(rank)``.

    1 for a flat spectrum, toward 0 when a few directions carry all the weight; NaN for rank <= 1.
    The rank here uses float64's epsilon, as WeightWatcher does.
    """
    svals = np.asarray(svals, dtype=np.float64).ravel()
    rank = np.count_nonzero(svals > svals.max() * entropy_rank_tolerance(N))
    if rank <= 1:
        return float("nan")
    p = np.square(svals)
    p = p[p > 0] / p.sum()
    return float(-np.sum(p * np.log(p)) / np.log(rank))


def entropy_rank_tolerance(N: int) -> float:  # noqa: N803
    """The rank tolerance of :func:`matrix_entropy` relative to the largest singular value."""
    return N * float(np.finfo(np.float64).eps)


def frame_potential(neurons: np.ndarray) -> FramePotential:
    """Frame potential ``FP = sum_ij <w_i, w_j>^2`` of the unit-normalized rows (Heitmann, 2020).

    Over ``n`` unit vectors in dimension ``d`` its minimum is ``max(n, n^2 / d)``, reached exactly
    by tight frames (orthonormal sets when ``n <= d``), so the normalized value is 1 for a tight
    frame and grows with redundancy. All-zero rows have no direction and are left out.

    The shorter side's Gram matrix is accumulated over blocks of the longer side, each normalized
    as it goes: no normalized copy of the whole weight (180 MB for a float32 11008x4096), and no
    stall on allocating one. float32 weights keep float32 products (``ssyrk`` moves half the bytes
    of ``dsyrk`` and holds twice the values per vector instruction), at float32's rounding; row
    lengths and the final sum are accumulated in float64.
    """
    rows = np.asarray(neurons)
    rows = rows.reshape(rows.shape[0], -1).astype(
        np.float32 if rows.dtype == np.float32 else np.float64, copy=False
    )
    lengths = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    if not np.all(lengths > 0):
        rows, lengths = rows[lengths > 0], lengths[lengths > 0]
    n, d = rows.shape
    if n == 0:
        return FramePotential(float("nan"), float("nan"))
    inverse = (1.0 / lengths).astype(rows.dtype)
    # Upper triangle of the Gram matrix (symmetric rank-k update, the rest is zero), with scipy's
    # BLAS, the SVDs' library, not numpy's (see singular_values). A block's transpose is Fortran
    # ordered: syrk reads it without a copy. Rows longer than columns: the d x d Gram of the
    # columns, over blocks of rows; otherwise the n x n Gram of the rows, over blocks of columns.
    syrk = scipy.linalg.blas.ssyrk if rows.dtype == np.float32 else scipy.linalg.blas.dsyrk
    tall = n > d
    step = max(FRAME_BLOCK_MIN, FRAME_BLOCK_ELEMENTS // min(n, d))
    upper = None
    for start in range(0, max(n, d), step):
        block = slice(start, start + step)
        scaled = rows[block] * inverse[block, None] if tall else rows[:, block] * inverse[:, None]
        if upper is None:
            upper = syrk(1.0, scaled.T, trans=int(not tall))
        else:
            upper = syrk(1.0, scaled.T, beta=1.0, c=upper, trans=int(not tall), overwrite_c=1)
    return _of_unit_gram(upper, n, d)


def frame_potential_of_gram(upper: np.ndarray, fan_in: int) -> FramePotential:
    """:func:`frame_potential` from the rows' Gram matrix ``G = W W^T``, given by its upper triangle
    with the lower one zero, which this overwrites (no copy: ``n x n`` float64 is 134 MB at 4096).

    ``<w_i, w_j>^2`` of the unit-normalized rows is ``G_ij^2 / (G_ii G_jj)``; rows with
    ``G_ii = 0`` are left out, as all-zero rows are there. The Gram path of the ESD forms ``G``
    in float64 anyway for slices no taller than wide (:func:`.esd.compute_singular_values`),
    which saves the frame potential its own pass over the weights.

    Args:
        upper: ``n x n`` float64, the upper triangle of ``W W^T``, zeros below the diagonal.
        fan_in: ``d``, the length of each row, for the normalization ``max(n, n^2 / d)``.
    """
    diagonal = np.diagonal(upper).copy()
    kept = np.flatnonzero(diagonal > 0)
    n = kept.size
    if n == 0:
        return FramePotential(float("nan"), float("nan"))
    if n < diagonal.size:
        upper, diagonal = upper[np.ix_(kept, kept)], diagonal[kept]
    inverse = 1.0 / np.sqrt(diagonal)
    upper *= inverse[:, None]
    upper *= inverse[None, :]
    return _of_unit_gram(upper, n, fan_in)


def _of_unit_gram(upper: np.ndarray, n: int, d: int) -> FramePotential:
    """The frame potential of ``n`` unit rows of length ``d`` from the upper triangle (zeros
    below) of their Gram matrix, of the rows or of the columns (the same squared entries' sum):
    the off-diagonal entries count twice. Sums in float64 whatever the matrix's dtype."""
    diagonal = np.diagonal(upper).astype(np.float64)
    value = 2.0 * float(np.einsum("ij,ij->", upper, upper, dtype=np.float64)) - float(diagonal @ diagonal)
    return FramePotential(value, value / max(n, n * n / d))


def _log10(value: float) -> float:
    return float(np.log10(value)) if value > 0 else float("-inf")
