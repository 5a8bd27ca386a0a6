"""Singular values and the empirical spectral density (ESD) of a matrix view.

The ESD is the set of eigenvalues of ``X = W^T W`` (squared singular values of ``W``), computed
per slice in one of two ways, chosen by ``method``:

* ``"svd"``: an SVD of the slice (after a streamed R factor for very tall ones). Backward stable:
  every singular value is within about ``n eps sigma_max`` of the exact one.
* ``"gram"``: the eigenvalues of ``X`` formed in float64, kept only where they are certified
  (:mod:`.gram`): the smallest computed eigenvalue exceeds ``1 + 1/rtol`` times a proven bound on
  their absolute error, so every eigenvalue is within ``rtol`` of the exact one (the large ones,
  the power-law tail, norms and spikes, to ``bound / lambda``, far tighter). A slice that fails
  (near-rank-deficient, very ill-conditioned), or that has an eigenvalue whose error interval
  contains a threshold a metric compares it with (see :class:`Thresholds`), is computed by SVD.
  Cheaper per slice than the SVD, very tall slices (embeddings) included, where the SVD path
  streams an R factor first: see :func:`.gram.expected_certified`.
* ``"auto"`` (the default): the Gram path where a matrix of the slice's shape is expected to pass
  the certificate (:func:`.gram.expected_certified`: not large square ones, whose smallest
  eigenvalues are too small for a tight ``rtol``), else the SVD. The Gram path is faster on every
  shape, so ``auto`` only avoids forming Gram matrices in vain.

``GRAM_RTOL = 1e-4`` keeps every eigenvalue within 1e-4 of the exact one, provably, and those the
power-law tail, the norms and the spikes are made of within ``bound / lambda`` (for the largest,
about ``(k + 2) n u`` at most, ``k`` and ``u`` as in :mod:`.gram`, since ``||A||_F^2 <= n
lambda_max``); a slice whose eigenvalue interval straddles a threshold is redone by SVD
(:class:`Thresholds`), so counts (ranks, eigenvalues in the fit, spikes) never change. Why not
tighter: the certificate needs the smallest eigenvalue above ``bound (1 + 1/rtol)``, and a random
square slice's smallest is about ``1 / (4 n^2)`` of the mean, so at ``rtol=1e-6`` large square
slices (3x3 convs) go to the SVD and much of the gain is lost. ``benchmarks/bench_gram.py``
measures the time and the differences from the SVD at both tolerances (docs/performance.md).

WeightWatcher 0.7.x does not divide by ``N`` and halves the pooled eigenvalues of conv2d slices
(its ``conv2d_norm``); both are the defaults here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .fortran_copy import float64_fortran
from .gram import EigValues, certified, expected_certified, gram_eigenvalues, lapack_eigvalsh
from .matrices import MatrixView
from .streaming_qr import r_factor, streams_well

__all__ = [
    "CONV2D_EIGENVALUE_SCALE",
    "GRAM_RTOL",
    "HALVED_KINDS",
    "METHODS",
    "SingularValues",
    "SvdValues",
    "Thresholds",
    "compute_singular_values",
    "eigenvalues",
    "lapack_svdvals",
    "log10_histogram",
    "singular_values",
]

# Singular values, descending, of a float64 column-major matrix that the function may overwrite.
SvdValues = Callable[[np.ndarray], np.ndarray]

# WeightWatcher's conv2d_norm multiplies each pooled slice by sqrt(1/2), halving its eigenvalues.
CONV2D_EIGENVALUE_SCALE = 0.5
HALVED_KINDS = ("conv2d", "grouped_conv2d", "depthwise_conv2d")

METHODS = ("auto", "gram", "svd")
# Relative error allowed on every eigenvalue kept from the Gram path (see the module docstring):
# the certificate's safety multiple of the error bound is 1 + 1 / GRAM_RTOL.
GRAM_RTOL = 1e-4
_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Thresholds:
    """Values of ``sigma^2`` the metrics compare eigenvalues with.

    A Gram eigenvalue whose error interval contains one of them is recomputed by SVD (its whole
    slice), so the comparisons come out as they would with the exact eigenvalues.

    Attributes:
        absolute: thresholds on ``sigma^2`` itself (``EVALS_THRESH`` over the ESD's scale).
        per_slice: multiples of each slice's largest ``sigma^2`` (numerical-rank tolerances).
        per_view: multiples of the view's largest ``sigma^2`` (the entropy's rank tolerance).
    """

    absolute: tuple[float, ...] = ()
    per_slice: tuple[float, ...] = ()
    per_view: tuple[float, ...] = ()


@dataclass(frozen=True)
class SingularValues:
    """Singular values of a view's slices and how each slice got them.

    Attributes:
        values: float64, shape ``(S, M)``, descending per slice.
        gram: per slice, whether its values are certified Gram eigenvalues' square roots.
        fallback: per slice, whether the Gram path was tried and failed its certificate (or a
            threshold fell in an error interval), so that the slice was computed by SVD.
        bound: per slice, the absolute error bound ``delta`` on its Gram eigenvalues ``sigma^2``
            (NaN where the values come from the SVD).
        neuron_gram: when asked for and every slice went through the Gram path with its neurons
            as columns of ``A``: the upper triangle of ``neurons @ neurons.T`` (float64, the lower
            triangle zero), summed over the slices; else None.
    """

    values: np.ndarray
    gram: np.ndarray
    fallback: np.ndarray
    bound: np.ndarray
    neuron_gram: np.ndarray | None = None


def lapack_svdvals(matrix: np.ndarray) -> np.ndarray:
    """scipy's LAPACK ``gesdd`` without vectors, in place: the default :data:`SvdValues`.

    scipy's, not numpy's: numpy ships its own OpenBLAS, and alternating between the two thread
    pools lets one's spinning workers starve the other's whenever they run more than one thread.
    """
    return scipy.linalg.svdvals(matrix, overwrite_a=True, check_finite=False)


def singular_values(
    view: MatrixView,
    svdvals: SvdValues = lapack_svdvals,
    *,
    method: str = "auto",
    eigvalsh: EigValues = lapack_eigvalsh,
    rtol: float = GRAM_RTOL,
    thresholds: Thresholds | None = None,
) -> np.ndarray:
    """Singular values of every slice of ``view`` in float64, shape ``(S, M)``, descending per slice.

    See :func:`compute_singular_values` for the arguments; this returns only the values.
    """
    return compute_singular_values(
        view, svdvals, method=method, eigvalsh=eigvalsh, rtol=rtol, thresholds=thresholds
    ).values


def compute_singular_values(
    view: MatrixView,
    svdvals: SvdValues = lapack_svdvals,
    *,
    method: str = "auto",
    eigvalsh: EigValues = lapack_eigvalsh,
    rtol: float = GRAM_RTOL,
    thresholds: Thresholds | None = None,
    neuron_gram: bool = False,
) -> SingularValues:
    """Singular values of every slice of ``view``, and which slices came from the Gram path.

    Args:
        view: the matrix view; wide slices are analyzed as their transposes (same values).
        svdvals: computes one float64 slice's singular values (another LAPACK can be plugged in).
        method: ``"auto"``, ``"gram"`` or ``"svd"`` (see the module docstring); ``"gram"`` tries
            the Gram path on every slice, ``"auto"`` on slices of shapes expected to pass.
        eigvalsh: computes the eigenvalues of one Gram matrix (:data:`.gram.EigValues`).
        rtol: relative error allowed on every Gram eigenvalue kept, in ``(0, 1)``.
        thresholds: values the metrics compare eigenvalues with; none by default.
        neuron_gram: also return the neurons' Gram matrix where the Gram path forms it anyway
            (:attr:`SingularValues.neuron_gram`): slices with no more rows than columns, whose
            Gram matrices are then taken as ``W_s W_s^T`` (square ones too, at the same cost),
            of a view whose neurons span its slices (:attr:`.MatrixView.neurons_span_slices`).

    Raises:
        ValueError: the view holds NaN/Inf or is not floating point (integer, complex); or an
            invalid ``method`` or ``rtol``.
    """
    if method not in METHODS:
        raise ValueError(f"Invalid method={method!r}; expected one of {METHODS}.")
    if not 0 < rtol < 1:
        raise ValueError(f"Invalid rtol={rtol!r}; expected a number in (0, 1), e.g. {GRAM_RTOL}.")
    slices = view.slices
    if not np.issubdtype(slices.dtype, np.floating):
        raise ValueError(f"{view.name!r} has dtype {slices.dtype}; expected real floating-point weights.")
    if not np.all(np.isfinite(slices)):
        raise ValueError(f"{view.name!r} contains NaN or Inf values.")
    rows, columns = slices.shape[1:]
    expected = expected_certified(max(rows, columns), min(rows, columns), rtol)
    try_gram = method == "gram" or (method == "auto" and expected)
    summed = None
    if try_gram and neuron_gram and view.neurons_span_slices and rows <= columns:
        summed = np.zeros((rows, rows), dtype=np.float64, order="F")
    if rows < columns or summed is not None:
        # W^T has the same singular values, and LAPACK's path for tall matrices is the faster one;
        # the transpose of a row-major wide slice is also column-major, copied without transposing.
        # A square slice is taken as W^T when its Gram matrix W W^T is to be summed for the neurons.
        slices = slices.transpose(0, 2, 1)
    thresholds = thresholds or Thresholds()
    count, columns = slices.shape[0], slices.shape[2]
    values = np.empty((count, columns), dtype=np.float64)
    gram = np.zeros(count, dtype=bool)
    fallback = np.zeros(count, dtype=bool)
    bound = np.full(count, np.nan)
    for index, matrix in enumerate(slices):
        if try_gram:
            evals, delta = gram_eigenvalues(matrix, eigvalsh, accumulate=summed)
            if certified(evals, delta, rtol) and not _near_threshold(evals, delta, thresholds):
                values[index], gram[index], bound[index] = np.sqrt(evals), True, delta
                continue
            fallback[index] = True
        values[index] = _slice_singular_values(matrix, svdvals)
    if thresholds.per_view and np.any(gram):
        # the view's largest eigenvalue is known only now; redo the slices a tolerance relative to
        # it falls near (it moves by at most the bound of the slice holding it)
        top = int(np.argmax(values[:, 0]))
        largest, moves = float(values[top, 0]) ** 2, float(bound[top]) if gram[top] else 0.0
        per_view = Thresholds(absolute=tuple(c * largest for c in thresholds.per_view))
        for index in np.flatnonzero(gram):
            spread = float(bound[index]) + moves * max(thresholds.per_view)
            if _near_threshold(np.square(values[index]), spread, per_view):
                values[index] = _slice_singular_values(slices[index], svdvals)
                gram[index], fallback[index], bound[index] = False, True, np.nan
    return SingularValues(values, gram, fallback, bound, summed)


def _near_threshold(evals: np.ndarray, delta: float, thresholds: Thresholds) -> bool:
    """Whether a threshold lies within an eigenvalue's error interval ``[lambda - delta, lambda +
    delta]`` (per-slice ones move with the largest eigenvalue; 16 ulps cover the roundings of
    the metrics' own comparisons, made on square roots)."""
    relative = np.asarray(thresholds.per_slice, dtype=np.float64)
    values = np.concatenate([thresholds.absolute, relative * evals[0]])
    spreads = np.concatenate([np.full(len(thresholds.absolute), delta), delta * (1 + relative)])
    slack = spreads + 16 * _EPS * np.abs(values)
    return bool(np.any(np.abs(evals[:, None] - values) <= slack))


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
        normalize: ``None`` (WeightWatcher: ``W^T W``) or ``"N"`` (Martin & Mahoney, 2021: ``W^T W / N``).
        conv2d_norm: halve conv2d eigenvalues (grouped ones too) as WeightWatcher does by default.
    """
    if normalize not in (None, "N"):
        raise ValueError(f"Invalid normalize={normalize!r}; expected None or 'N'.")
    evals = np.sort(np.square(svals, dtype=np.float64).ravel())
    if conv2d_norm and kind in HALVED_KINDS:
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
