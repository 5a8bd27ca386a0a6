"""Correlation traps: the ESD of a layer whose elements are shuffled, as WeightWatcher 0.7.x's
``analyze(randomize=True)`` measures it.

Shuffling the entries of ``W`` keeps their distribution but destroys every correlation between
them, so the ESD of the shuffled matrix should be a Marchenko-Pastur bulk (Marchenko and Pastur
1967). Eigenvalues it still has beyond the bulk come from a few unusually large elements, not
from learned structure: Martin and Mahoney (2021, JMLR 22, section 6) call them correlation
traps. A trained ESD far from its shuffled one (``rand_distance``) has learned correlations.

WeightWatcher's rules, per view (its column names):

* each slice is shuffled over all its entries (conv slices one by one, never across taps); when
  the pooled ESD has fewer than 100 eigenvalues, five shuffles are pooled instead of one;
* ``max_rand_eval``: the largest eigenvalue of that (pooled) shuffled ESD;
* ``rand_distance``, ``ww_softrank``, ``ww_maxdist`` use a second, single shuffle of each slice:
  the Jensen-Shannon distance (natural log) between the two ascending eigenvalue vectors read as
  weights (not histograms), ``max(shuffled) / max(ESD)`` and ``max(ESD) - max(shuffled)``;
* the ``rand_*`` columns fit the MP law to the pooled shuffled ESD rescaled to mean 1
  (``rand_W_scale`` is the factor applied to ``W``): a linear-kernel density estimate (bandwidth
  0.1) on 1000 points is compared with the MP density of scale ``sigma`` over a grid of
  ``sigma`` then refined by Nelder-Mead, fits putting the bulk edge outside the density's support
  or below its mode being penalized; square slices (``Q = 1``) fit the quarter-circle density of
  the singular values instead;
* ``rand_bulk_max``/``rand_bulk_min`` are that fit's MP edges back in the ESD's scale, and
  ``num_traps = rand_num_spikes`` counts the rescaled shuffled eigenvalues above
  ``bulk_max + sqrt(Q^-1/2 bulk_max^(2/3) M^(-2/3))`` (a Tracy-Widom-sized margin);
  ``rand_mp_softrank`` is ``bulk_max / lambda_max`` of the rescaled shuffled ESD.

WeightWatcher's quarter-circle density is ``sqrt(4 - x^2) / (pi sigma^2)``, whose support does
not scale with ``sigma`` (the exact one is ``sqrt(4 sigma^2 - x^2) / (pi sigma^2)``); it is kept,
as are the other rules, so that every column means what WeightWatcher's does.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from .esd import HALVED_KINDS, compute_singular_values, eigenvalues
from .matrices import MatrixView

__all__ = ["FEW_EVALS", "CorrelationTraps", "correlation_traps", "jensen_shannon_distance"]

# Pooled ESDs with fewer eigenvalues than this get several shuffles (WeightWatcher's rule).
FEW_EVALS = 100
FEW_EVALS_SHUFFLES = 5
# The MP fit's density estimate: bandwidth, grid size, grid margin past the largest value, and
# the density below which grid points are left out of the residual.
_BANDWIDTH = 0.1
_GRID_POINTS = 1000
_GRID_MARGIN = 0.5
_DENSITY_FLOOR = 0.01
# The sigma grid: from 0.05 to 2 times the sigma that puts the bulk edge at the largest value,
# in steps of 0.01 times it; a fit out of bounds costs this residual per grid point.
_SIGMA_GRID = (0.05, 2.0, 0.01)
_PENALTY = 1000.0


@dataclass(frozen=True)
class CorrelationTraps:
    """WeightWatcher's ``randomize=True`` columns for one matrix view (see the module docstring).

    Attributes:
        rand_distance: Jensen-Shannon distance between the ESD and a shuffled ESD, in ``[0, sqrt(ln 2)]``.
        ww_softrank: largest shuffled eigenvalue over the largest ESD eigenvalue.
        ww_maxdist: largest ESD eigenvalue minus the largest shuffled one.
        max_rand_eval: largest eigenvalue of the pooled shuffled ESD.
        num_traps: shuffled eigenvalues above the fitted MP edge plus margin (``rand_num_spikes``).
        rand_num_spikes: the same count, under WeightWatcher's other name.
        rand_sigma_mp: fitted MP scale of the shuffled ESD rescaled to mean 1.
        rand_mp_softrank: fitted bulk edge over the largest shuffled eigenvalue (rescaled ESD).
        rand_W_scale: factor applied to ``W`` to rescale its shuffled ESD to mean 1.
        rand_bulk_max, rand_bulk_min: fitted MP edges, in the ESD's scale.
        rand_evals: the pooled shuffled ESD, ascending.
    """

    rand_distance: float
    ww_softrank: float
    ww_maxdist: float
    max_rand_eval: float
    num_traps: int
    rand_num_spikes: int
    rand_sigma_mp: float
    rand_mp_softrank: float
    rand_W_scale: float  # noqa: N815 - WeightWatcher's column name
    rand_bulk_max: float
    rand_bulk_min: float
    rand_evals: np.ndarray = field(repr=False, compare=False)


def correlation_traps(
    slices: np.ndarray,
    evals: np.ndarray,
    *,
    kind: str,
    rng: np.random.Generator | np.random.RandomState,
    normalize: str | None = None,
    conv2d_norm: bool = True,
    method: str = "auto",
) -> CorrelationTraps:
    """Shuffle a view's slices and measure its correlation traps as WeightWatcher 0.7.x does.

    Args:
        slices: the view's slices ``(S, rows, cols)`` (:attr:`MatrixView.slices`).
        evals: the view's ESD as :func:`~spectral_callbacks.spectra.analyze_view` computes it,
            with the same ``normalize`` and ``conv2d_norm``.
        kind: the view's kind (conv2d eigenvalues are halved as in ``evals``).
        rng: the source of the shuffles; only ``rng.shuffle`` is called, on the row-major
            entries of each slice (of its tall transpose for a wide conv2d slice), once per slice
            and shuffle, in order: the pooled shuffles slice by slice, then the single one. So
            ``numpy.random.RandomState(seed)`` draws the permutations that WeightWatcher's
            ``numpy.random.shuffle`` draws after ``numpy.random.seed(seed)``.
        normalize, conv2d_norm: as given to ``analyze_view`` for ``evals``.
        method: how singular values are computed (see :mod:`spectral_callbacks.spectra.esd`).

    Raises:
        ValueError: ``slices`` is not a non-empty 3-D array of finite floats, or ``evals`` does
            not have one eigenvalue per singular value of the slices, or is all zeros.
    """
    slices = np.asarray(slices)
    if slices.ndim != 3 or 0 in slices.shape:
        raise ValueError(
            f"Invalid slices of shape {slices.shape}; expected a non-empty (S, rows, cols) array."
        )
    count, rows, cols = slices.shape
    n, m = max(rows, cols), min(rows, cols)
    evals = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    if evals.size != count * m:
        raise ValueError(
            f"Invalid evals of size {evals.size}; slices of shape {slices.shape} have {count * m}."
        )
    if not evals[-1] > 0:
        raise ValueError("Invalid evals: the ESD has no positive eigenvalue.")

    def shuffled_esd(shuffles: int) -> np.ndarray:
        mixed = np.stack([_shuffled(piece, kind, rng) for _ in range(shuffles) for piece in slices])
        view = MatrixView("shuffled", kind, mixed, mixed[0])
        svals = compute_singular_values(view, method=method).values
        return eigenvalues(svals, kind=kind, N=n, normalize=normalize, conv2d_norm=conv2d_norm)

    pooled = shuffled_esd(FEW_EVALS_SHUFFLES if evals.size < FEW_EVALS else 1)
    single = shuffled_esd(1)
    top, single_top = float(evals[-1]), float(single[-1])
    fit = _fit_mp(pooled, n, m)
    return CorrelationTraps(
        rand_distance=jensen_shannon_distance(evals, single),
        ww_softrank=single_top / top,
        ww_maxdist=top - single_top,
        max_rand_eval=float(pooled[-1]),
        num_traps=fit.num_spikes,
        rand_num_spikes=fit.num_spikes,
        rand_sigma_mp=fit.sigma,
        rand_mp_softrank=fit.softrank,
        rand_W_scale=fit.scale,
        rand_bulk_max=fit.bulk_max,
        rand_bulk_min=fit.bulk_min,
        rand_evals=pooled,
    )


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between two equally long weight vectors.

    WeightWatcher normalizes ``p`` and ``q`` and their unnormalized mean separately; that equals
    the textbook mixture of the normalized vectors when the sums are equal, as for an ESD and its
    shuffle (both sum to ``||W||_F^2``), and the unnormalized mean is used here as there.

    >>> round(jensen_shannon_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) ** 2, 6)  # ln 2
    0.693147
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    mean = (p + q) / 2
    divergence = (_relative_entropy(p, mean) + _relative_entropy(q, mean)) / 2
    return math.sqrt(divergence)


def _relative_entropy(p: np.ndarray, q: np.ndarray) -> float:
    """Kullback-Leibler divergence of the normalized ``p`` from the normalized ``q``."""
    p, q = p / p.sum(), q / q.sum()
    terms = np.zeros_like(p)
    positive = p > 0
    terms[positive] = p[positive] * np.log(p[positive] / q[positive])
    return float(terms.sum())


def _shuffled(piece: np.ndarray, kind: str, rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """A copy of one slice with its entries in random order.

    The permutation acts on the row-major entries of the slice as stored, except that a wide
    conv2d slice is permuted as its tall transpose: WeightWatcher's layout, so that the same
    permutations give the same matrices (the shuffled spectra have the same law either way).
    """
    if kind in HALVED_KINDS and piece.shape[0] < piece.shape[1]:
        return _shuffled(piece.T, "", rng)
    entries = piece.flatten()
    rng.shuffle(entries)
    return entries.reshape(piece.shape)


@dataclass(frozen=True)
class _MPFit:
    sigma: float
    scale: float
    bulk_max: float
    bulk_min: float
    num_spikes: int
    softrank: float


def _fit_mp(evals: np.ndarray, N: int, M: int) -> _MPFit:  # noqa: N803
    """WeightWatcher's MP fit of an ESD rescaled to mean 1 (see the module docstring)."""
    Q = N / M  # noqa: N806
    scale = math.sqrt(evals.size) / math.sqrt(float(evals.sum()))
    rescaled = scale * scale * evals
    largest = float(rescaled.max())
    square = Q == 1
    grid, density = _density_estimate(np.sqrt(rescaled) if square else rescaled)

    def residual(sigma: np.ndarray) -> float:
        return _residual(float(np.ravel(sigma)[0]), grid, density, Q)

    unit = math.sqrt(largest / (1 + 1 / math.sqrt(Q)) ** 2)
    start, stop, step = (factor * unit for factor in _SIGMA_GRID)
    candidates = np.arange(start, stop, step)
    costs = np.array([residual(np.array([sigma])) for sigma in candidates])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        best = scipy.optimize.fmin(residual, candidates[int(np.argmin(costs))], full_output=True, disp=False)
    sigma = float(best[0][0])
    bulk_max = (sigma * (1 + 1 / math.sqrt(Q))) ** 2
    bulk_min = (sigma * (1 - 1 / math.sqrt(Q))) ** 2
    margin = math.sqrt(1 / math.sqrt(Q) * bulk_max ** (2 / 3) * M ** (-2 / 3))
    return _MPFit(
        sigma=sigma,
        scale=scale,
        bulk_max=bulk_max / scale**2,
        bulk_min=bulk_min / scale**2,
        num_spikes=int(np.count_nonzero(rescaled > bulk_max + margin)),
        softrank=bulk_max / largest,
    )


def _density_estimate(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear-kernel (triangular) density estimate of ``values`` on ``[0, max + 0.5]``."""
    grid = np.linspace(0, float(values.max()) + _GRID_MARGIN, _GRID_POINTS)
    density = np.zeros(_GRID_POINTS)
    rows = max(1, (1 << 22) // max(values.size, 1))
    for begin in range(0, _GRID_POINTS, rows):
        distance = np.abs(grid[begin : begin + rows, None] - values[None, :])
        density[begin : begin + rows] = np.maximum(0.0, 1 - distance / _BANDWIDTH).sum(axis=1)
    return grid, density / (values.size * _BANDWIDTH)


def _residual(sigma: float, grid: np.ndarray, density: np.ndarray, Q: float) -> float:  # noqa: N803
    """Sum of squared differences between the model density and the estimate where the estimate
    exceeds the floor; an MP edge below the estimate's mode or beyond its grid is penalized."""
    keep = density > _DENSITY_FLOOR
    x, observed = grid[keep], density[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        if Q == 1:
            model = np.nan_to_num(1 / (np.pi * sigma * sigma) * np.sqrt(4 - x**2))
            return float(np.sum((model - observed) ** 2))
        upper = (sigma * (1 + math.sqrt(1 / Q))) ** 2
        lower = (sigma * (1 - math.sqrt(1 / Q))) ** 2
        mode = x[int(np.argmax(observed))]
        if upper < mode or upper > x.max() or lower > mode:
            return float(x.size * _PENALTY**2)
        model = np.nan_to_num(
            1 / (2 * np.pi * sigma * sigma * x * (1 / Q)) * np.sqrt((upper - x) * (x - lower))
        )
    return float(np.sum((model - observed) ** 2))
