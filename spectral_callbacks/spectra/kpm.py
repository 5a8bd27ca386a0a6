"""Spectra of large implicit symmetric operators (anonymous, 2019): Lanczos spikes and KPM bulk histograms.

The operator is only applied to blocks of vectors (e.g. a :class:`ConvOperator`'s ``A^T A``, one
forward and one transpose convolution per product). The largest eigenvalues come from ARPACK's
implicitly restarted Lanczos method (``scipy.sparse.linalg.eigsh``; R. B. Lehoucq, D. C. Sorensen
and C. Yang, ARPACK Users' Guide, SIAM 1998). The histogram of all eigenvalues comes from the
Kernel Polynomial Method (A. Weisse, G. Wellein, A. Alvermann and H. Fehske, "The kernel
polynomial method", Rev. Mod. Phys. 78, 275 (2006)): Chebyshev moments of the spectrum estimated
with Hutchinson's trace estimator (M. F. Hutchinson, Commun. Stat. Simul. Comput. 19 (1990)),
damped by the Jackson kernel, integrated over each bin in closed form (E. Di Napoli, E. Polizzi and
Y. Saad, "Efficient estimation of eigenvalue counts in an interval", Numer. Linear Algebra Appl.
23 (2016)).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, aslinearoperator, eigsh

from .operators import ConvOperator

__all__ = ["LAMBDA_MAX_MARGIN", "KPMDensity", "MatvecBudgetWarning", "kpm_density", "top_eigenvalues"]

# Spectrum mapped from [lambda_min, lambda_max * (1 + margin)]: keeps the top eigenvalue off x = 1
# (Weisse et al. 2006 rescale with a margin epsilon of this size).
LAMBDA_MAX_MARGIN = 0.01


class MatvecBudgetWarning(RuntimeWarning):
    """Lanczos ran out of its matrix-vector product budget before all eigenvalues converged."""


@dataclass(frozen=True)
class KPMDensity:
    """A KPM histogram of an operator's eigenvalues.

    Attributes:
        edges: bin edges, ``(bins + 1,)``.
        counts: estimated number of eigenvalues per bin; they sum to ``dimension`` (exactly, up to
            rounding, with Rademacher probes).
        count_errors: standard error of each count from the spread over probes (NaN with one
            probe); the Jackson kernel's smoothing bias is not included.
        dimension: the operator's size ``n``.
        num_moments, num_probes: Chebyshev moments and random probe vectors used.
        lambda_min, lambda_max: the interval mapped onto ``[-1, 1]``.
        num_matvecs: products of the operator with one vector, Lanczos included.
        moments: the probes' undamped Chebyshev moments ``z^T T_k(B) z / n``, ``(probes, moments)``.
    """

    edges: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    count_errors: np.ndarray = field(repr=False)
    dimension: int
    num_moments: int
    num_probes: int
    lambda_min: float
    lambda_max: float
    num_matvecs: int
    moments: np.ndarray = field(repr=False, compare=False)

    @property
    def density(self) -> np.ndarray:
        """The histogram as a probability density: ``counts / (dimension * bin width)``."""
        return self.counts / (self.dimension * np.diff(self.edges))

    def rebin(self, bins: int | np.ndarray) -> KPMDensity:
        """The same estimate on other bins (e.g. logarithmic ones), from the stored moments."""
        edges = _edges(bins, self.lambda_min, self.lambda_max)
        counts, errors = _bin_counts(self.moments, edges, self.lambda_min, self.lambda_max, self.dimension)
        return replace(self, edges=edges, counts=counts, count_errors=errors)


def top_eigenvalues(
    op: Any,
    k: int = 1,
    *,
    max_matvecs: int = 3000,
    tol: float = 1e-8,
    ncv: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The ``k`` largest eigenvalues of a symmetric operator, descending, by ARPACK's Lanczos.

    Args:
        op: a :class:`ConvOperator` (its :meth:`~ConvOperator.gram`: squared singular values), a
            symmetric ``scipy.sparse.linalg.LinearOperator`` or a symmetric array.
        k: how many.
        max_matvecs: budget of products with one vector. The Lanczos basis and ARPACK's restarts
            are capped so that ``ncv + maxiter * (ncv - k + 1) <= max_matvecs``.
        tol: relative residual at convergence; an eigenvalue's error is at most ``tol * lambda``
            (usually far less: ``benchmarks/bench_operators.py`` compares with exact spectra).
        ncv: Lanczos basis size (default ``k + 40``, capped by the budget and ``n``): conv
            spectra have tiny gaps at the top (neighbouring frequencies give nearly equal
            eigenvalues), where a larger basis than scipy's default of 20 restarts less often
            and so needs fewer products (``benchmarks/bench_operators.py`` counts them).
        seed: seeds the start vector, so the result is reproducible.

    Returns:
        The eigenvalues, largest first. When the budget runs out first, the ones that converged
        (possibly none) with a :class:`MatvecBudgetWarning`.
    """
    operator, n = _symmetric(op)
    if not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"Invalid k={k}; expected 1 <= k <= n = {n}.")
    if k >= n - 1:  # ARPACK needs k < n - 1: the operator is tiny, form it
        dense = operator.matmat(np.eye(n, dtype=operator.dtype))
        return scipy.linalg.eigvalsh(dense)[::-1][:k].astype(np.float64)
    # The first factorization takes ncv products and each restart at most ncv - k + 1 more.
    ncv = min(n, k + 40 if ncv is None else ncv, (max_matvecs + k - 1) // 2)
    if ncv <= k:
        raise ValueError(
            f"Invalid max_matvecs={max_matvecs} (or ncv) for k={k}: the budget must allow a Lanczos "
            f"basis larger than k and one restart (max_matvecs >= k + 3, ncv > k)."
        )
    maxiter = (max_matvecs - ncv) // (ncv - k + 1)
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        values = eigsh(
            operator, k=k, which="LA", ncv=ncv, maxiter=maxiter, tol=tol, v0=v0, return_eigenvectors=False
        )
    except ArpackNoConvergence as error:
        values = error.eigenvalues
        warnings.warn(
            f"Lanczos used its budget of max_matvecs={max_matvecs} (ncv={ncv}, {maxiter} restarts) "
            f"before converging: {len(values)} of k={k} eigenvalues converged.",
            MatvecBudgetWarning,
            stacklevel=2,
        )
    except ArpackError:
        if np.any(operator.matvec(v0)):
            raise
        return np.zeros(k)  # a random vector in the kernel: the zero operator (no Krylov space)
    return np.sort(np.real(values).astype(np.float64))[::-1]


def kpm_density(
    op: Any,
    bins: int | np.ndarray = 50,
    *,
    num_moments: int = 256,
    num_probes: int = 8,
    lambda_max: float | None = None,
    lambda_min: float = 0.0,
    seed: int = 0,
    block_size: int | None = None,
) -> KPMDensity:
    """Histogram of all eigenvalues of a symmetric operator by the Kernel Polynomial Method.

    The spectrum is mapped onto ``[-1, 1]`` by ``B = (2 H - (b + a) I) / (b - a)`` with
    ``[a, b] = [lambda_min, lambda_max]``. The moments ``mu_k = tr T_k(B) / n`` are estimated as
    ``z^T T_k(B) z / n`` over Rademacher probes ``z`` (Hutchinson 1990), with the Chebyshev
    recurrence ``T_{k+1} = 2 B T_k - T_{k-1}`` and two moments per product,
    ``mu_2k = 2 <v_k, v_k> - mu_0`` and ``mu_2k+1 = 2 <v_k+1, v_k> - mu_1`` (Weisse et al. 2006,
    calculation of moments). The count in a bin ``[l, u]`` (in x) is ``n * sum_k b_k g_k mu_k``, with the
    Jackson damping ``g_k`` (Weisse et al. 2006, Jackson kernel) and the indicator's Chebyshev
    coefficients ``b_0 = (acos l - acos u) / pi``, ``b_k = 2 (sin(k acos l) - sin(k acos u)) / (pi k)``
    (Di Napoli, Polizzi and Saad 2016).

    Defaults: 50 bins, as in (anonymous, 2019). 256 moments resolve ~pi/256 in x (a third of a bin), and 8
    probes leave a noise of ~sqrt(2 c / 8) on a bin holding c eigenvalues, an L1 (in fractions of
    n) of at most sqrt(2 bins / (8 n)) ~ 0.011 at n = 102,400, within the target of 0.05, for 128
    products per probe (``benchmarks/bench_operators.py`` measures the L1 against exact spectra).

    Args:
        op: a :class:`ConvOperator` (its :meth:`~ConvOperator.gram`: squared singular values), a
            symmetric ``LinearOperator`` or a symmetric array, with eigenvalues in
            ``[lambda_min, lambda_max]``.
        bins: number of equal bins on ``[lambda_min, lambda_max]``, or increasing bin edges.
        num_moments: Chebyshev moments (about half as many products per probe).
        num_probes: Rademacher probe vectors; their spread gives ``count_errors``.
        lambda_max: an upper bound of the spectrum; by default the largest eigenvalue from
            :func:`top_eigenvalues`, enlarged by 1% (for a :class:`ConvOperator` whose Lanczos
            does not converge, its :meth:`~ConvOperator.norm_bound` squared).
        lambda_min: a lower bound of the spectrum (0 for ``A^T A``).
        seed: seeds the probes and the Lanczos start vector: same seed, same result.
        block_size: probes per block product (default: all, within ~128 MiB per block).
    """
    operator, n = _symmetric(op)
    for name, value, low in (("num_moments", num_moments, 2), ("num_probes", num_probes, 1)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"Invalid {name}={value}; expected an int >= {low}.")
    probe_seed, lanczos_seed = np.random.SeedSequence(seed).generate_state(2)
    num_matvecs = 0
    if lambda_max is None:
        lambda_max, num_matvecs = _upper_bound(op, operator, int(lanczos_seed))
    if not lambda_max > lambda_min:
        raise ValueError(
            f"lambda_max={lambda_max} must exceed lambda_min={lambda_min} (an all-zero operator has no "
            "spectrum to resolve)."
        )
    edges = _edges(bins, lambda_min, lambda_max)
    if block_size is None:
        block_size = max(1, min(num_probes, (1 << 24) // n))
    rng = np.random.default_rng(probe_seed)
    probes = [2.0 * rng.integers(0, 2, size=n, dtype=np.int8) - 1.0 for _ in range(num_probes)]
    moments = []
    for start in range(0, num_probes, block_size):
        block = np.stack(probes[start : start + block_size], axis=1).astype(operator.dtype)
        block_moments, products = _chebyshev_moments(operator, block, num_moments, lambda_min, lambda_max)
        moments.append(block_moments)
        num_matvecs += products * block.shape[1]
    moments = np.concatenate(moments) / n
    if np.max(np.abs(moments)) > 1.001:  # |z^T T_k(B) z| <= n when the spectrum is in [-1, 1]
        raise ValueError(
            f"The spectrum exceeds [lambda_min, lambda_max] = [{lambda_min:g}, {lambda_max:g}]: the "
            "Chebyshev moments diverge. Pass bounds that contain all eigenvalues."
        )
    counts, errors = _bin_counts(moments, edges, lambda_min, lambda_max, n)
    return KPMDensity(
        edges=edges,
        counts=counts,
        count_errors=errors,
        dimension=n,
        num_moments=num_moments,
        num_probes=num_probes,
        lambda_min=float(lambda_min),
        lambda_max=float(lambda_max),
        num_matvecs=num_matvecs,
        moments=moments,
    )


def _jackson_kernel(num_moments: int) -> np.ndarray:
    """Jackson damping factors ``g_k = ((N - k + 1) cos(pi k / (N + 1)) + sin(pi k / (N + 1))
    cot(pi / (N + 1))) / (N + 1)`` for ``k < N`` moments (Weisse et al. 2006)."""
    k = np.arange(num_moments)
    angle = np.pi / (num_moments + 1)
    return ((num_moments - k + 1) * np.cos(angle * k) + np.sin(angle * k) / np.tan(angle)) / (num_moments + 1)


def _symmetric(op: Any) -> tuple[LinearOperator, int]:
    operator = op.gram() if isinstance(op, ConvOperator) else aslinearoperator(op)
    if operator.shape[0] != operator.shape[1]:
        raise ValueError(f"Expected a symmetric (square) operator; received shape {operator.shape}.")
    return operator, operator.shape[0]


def _upper_bound(op: Any, operator: LinearOperator, seed: int) -> tuple[float, int]:
    """``lambda_max`` from Lanczos (enlarged by the margin), and the products it took."""
    counted = _Counted(operator)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MatvecBudgetWarning)
        top = top_eigenvalues(counted, 1, tol=1e-4, seed=seed)
    for warning in caught:
        if not issubclass(warning.category, MatvecBudgetWarning):
            warnings.warn(warning.message, warning.category, stacklevel=3)
    if top.size:
        return float(top[0]) * (1.0 + LAMBDA_MAX_MARGIN), counted.count
    message = next(w.message for w in caught if issubclass(w.category, MatvecBudgetWarning))
    if isinstance(op, ConvOperator):
        warnings.warn(
            f"{message} Using the FFT bound of the spectral norm as lambda_max instead.",
            MatvecBudgetWarning,
            stacklevel=3,
        )
        return op.norm_bound() ** 2 * (1.0 + 1e-9), counted.count
    raise RuntimeError(f"{message} Pass lambda_max (an upper bound of the spectrum).")


class _Counted(LinearOperator):
    """Counts the vectors an operator is applied to."""

    def __init__(self, operator: LinearOperator) -> None:
        super().__init__(operator.dtype, operator.shape)
        self.operator, self.count = operator, 0

    def _matmat(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - scipy's argument name
        self.count += X.shape[1]
        return self.operator.matmat(X)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        self.count += 1
        return self.operator.matvec(x)


def _edges(bins: int | np.ndarray, lambda_min: float, lambda_max: float) -> np.ndarray:
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise ValueError(f"Invalid bins={bins}; expected an int >= 1 or increasing edges.")
        return np.linspace(lambda_min, lambda_max, int(bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"Invalid bins: expected an int or increasing edges; received {bins!r}.")
    return edges


def _chebyshev_moments(
    operator: LinearOperator, probes: np.ndarray, num_moments: int, lambda_min: float, lambda_max: float
) -> tuple[np.ndarray, int]:
    """Per probe, ``z^T T_k(B) z`` for ``k < num_moments``; and the number of block products."""
    scale = 2.0 / (lambda_max - lambda_min)
    shift = (lambda_max + lambda_min) / (lambda_max - lambda_min)

    def dots(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->j", left, right)

    moments = np.empty((probes.shape[1], num_moments))
    previous = probes
    current = scale * operator.matmat(probes) - shift * probes  # v_1 = B z
    moments[:, 0] = dots(probes, probes)
    moments[:, 1] = dots(current, probes)
    products, k = 1, 1
    while 2 * k < num_moments:
        moments[:, 2 * k] = 2.0 * dots(current, current) - moments[:, 0]
        if 2 * k + 1 < num_moments:
            following = operator.matmat(current)  # v_{k+1} = 2 B v_k - v_{k-1}
            following *= 2.0 * scale
            following -= 2.0 * shift * current
            following -= previous
            products += 1
            moments[:, 2 * k + 1] = 2.0 * dots(following, current) - moments[:, 1]
            previous, current = current, following
        k += 1
    return moments, products


def _bin_counts(
    moments: np.ndarray, edges: np.ndarray, lambda_min: float, lambda_max: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin for each probe's moments: their mean and standard error over probes."""
    num_moments = moments.shape[1]
    x = np.clip((2.0 * edges - (lambda_max + lambda_min)) / (lambda_max - lambda_min), -1.0, 1.0)
    angles = np.arccos(x)  # decreasing along the edges
    k = np.arange(1, num_moments)[:, None]
    coefficients = np.empty((num_moments, edges.size - 1))
    coefficients[0] = (angles[:-1] - angles[1:]) / np.pi
    coefficients[1:] = 2.0 * (np.sin(k * angles[:-1]) - np.sin(k * angles[1:])) / (np.pi * k)
    per_probe = n * (moments * _jackson_kernel(num_moments)) @ coefficients
    if per_probe.shape[0] == 1:
        return per_probe[0], np.full(per_probe.shape[1], np.nan)
    errors = per_probe.std(axis=0, ddof=1) / np.sqrt(per_probe.shape[0])
    return per_probe.mean(axis=0), errors
