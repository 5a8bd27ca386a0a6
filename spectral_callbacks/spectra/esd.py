"""Singular values and the empirical spectral density (ESD) of a matrix view.

The ESD is the set of eigenvalues of ``X = W^T W``, computed as squared singular values of ``W``
(never by forming ``X``). WeightWatcher 0.7.x does not divide by ``N`` and halves the pooled
eigenvalues of conv2d slices (its ``conv2d_norm``); both are the defaults here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg

from .fortran_copy import float64_fortran
from .matrices import MatrixView
from .streaming_qr import r_factor, streams_well

__all__ = [
    "CONV2D_EIGENVALUE_SCALE",
    "SvdValues",
    "eigenvalues",
    "lapack_svdvals",
    "log10_histogram",
    "singular_values",
]

# Singular values, descending, of a float64 column-major matrix that the function may overwrite.
SvdValues = Callable[[np.ndarray], np.ndarray]

# WeightWatcher's conv2d_norm multiplies each pooled slice by sqrt(1/2), halving its eigenvalues.
CONV2D_EIGENVALUE_SCALE = 0.5


def lapack_svdvals(matrix: np.ndarray) -> np.ndarray:
    """scipy's LAPACK ``gesdd`` without vectors, in place: the default :data:`SvdValues`.

    scipy's, not numpy's: numpy ships its own OpenBLAS, and alternating between the two thread
    pools lets one's spinning workers starve the other's (2.5x slower with 2 threads).
    """
    return scipy.linalg.svdvals(matrix, overwrite_a=True, check_finite=False)


def singular_values(view: MatrixView, svdvals: SvdValues = lapack_svdvals) -> np.ndarray:
    """Singular values of every slice of ``view`` in float64, shape ``(S, M)``, descending per slice.

    ``svdvals`` computes those of one float64 slice (another LAPACK can be plugged in here).

    Raises:
        ValueError: the view holds NaN/Inf, or is not floating point (integer, complex).
    """
    slices = view.slices
    if not np.issubdtype(slices.dtype, np.floating):
        raise ValueError(f"{view.name!r} has dtype {slices.dtype}; expected real floating-point weights.")
    if not np.all(np.isfinite(slices)):
        raise ValueError(f"{view.name!r} contains NaN or Inf values.")
    if slices.shape[1] < slices.shape[2]:
        # W^T has the same singular values, and LAPACK's path for tall matrices is faster
        # (1.1-1.45x for wide float32 layers of 256x1024 to 2048x4096 on one thread)
        slices = slices.transpose(0, 2, 1)
    return np.stack([_slice_singular_values(matrix, svdvals) for matrix in slices])


def _slice_singular_values(matrix: np.ndarray, svdvals: SvdValues) -> np.ndarray:
    """Singular values of one tall slice, from a float64 column-major copy LAPACK may overwrite;
    a very tall slice (a token embedding) is first reduced to its R factor block by block."""
    square = r_factor(matrix) if streams_well(*matrix.shape) else float64_fortran(matrix)
    return svdvals(square)


def eigenvalues(
    svals: np.ndarray,
    *,
    kind: str,
    N: int,  # noqa: N803 - the larger dimension's conventional name
    normalize: str | None = None,
    conv2d_norm: bool = True,
) -> np.ndarray:
    """The pooled ESD of a matrix view from its singular values, sorted ascending.

    Args:
        svals: singular values from :func:`singular_values` (any shape; pooled).
        kind: the view's kind (conv2d eigenvalues may be halved).
        N: the larger side of each slice.
        normalize: ``None`` (WeightWatcher: ``W^T W``) or ``"N"`` (seed 001: ``W^T W / N``).
        conv2d_norm: halve conv2d eigenvalues (grouped ones too) as WeightWatcher does by default.
    """
    if normalize not in (None, "N"):
        raise ValueError(f"Invalid normalize={normalize!r}; expected None or 'N'.")
    evals = np.sort(np.square(svals, dtype=np.float64).ravel())
    if conv2d_norm and kind in ("conv2d", "grouped_conv2d", "depthwise_conv2d"):
        evals *= CONV2D_EIGENVALUE_SCALE
    if normalize == "N":
        evals /= N
    return evals


def log10_histogram(
    evals: np.ndarray, bins: int = 64, *, floor: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``log10(lambda)`` (heavy tails span decades); values below ``floor`` are clipped.

    Returns:
        ``(counts, edges)`` as ``numpy.histogram`` returns them.
    """
    logs = np.log10(np.maximum(np.asarray(evals, dtype=np.float64), floor))
    return np.histogram(logs, bins=bins)
