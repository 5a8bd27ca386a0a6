"""Power-law fit with the "fingers" clipped: WeightWatcher's ``fix_fingers="clip_xmax"``.

A few eigenvalues far above the bulk of a heavy tail (finite-size outliers, "fingers") can pull the
Kolmogorov-Smirnov search of :func:`~spectral_callbacks.spectra.powerlaw.fit_power_law` onto a
tiny, flat-looking tail whose exponent is much too large. WeightWatcher's heuristic drops the
largest eigenvalues one more at a time and refits: the first clipped fit whose exponent falls
clearly below the unclipped one is taken, and the number of eigenvalues dropped is the number of
fingers.

The search follows WeightWatcher 0.7.7: clipped fits drop ``2, 3, ..., max_fingers - 1`` of the
largest eigenvalues (never exactly one), a fit is accepted when its alpha is more than
``finger_thresh`` below the unclipped alpha, and the search gives up when a clipped alpha reaches
``min_alpha`` or below. Each fit is the untruncated power law of the remaining values, so the
reported ``xmax`` is their largest.

Reference (each fit):
    A. Clauset, C. R. Shalizi, M. E. J. Newman, "Power-law distributions in empirical data",
    SIAM Review 51(4), 661-703 (2009).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .powerlaw import PowerLawFit, fit_power_law

__all__ = ["DEFAULT_FINGER_THRESH", "DEFAULT_MAX_FINGERS", "ClippedPowerLawFit", "fit_clipped_power_law"]

DEFAULT_MAX_FINGERS = 10
DEFAULT_FINGER_THRESH = 1.0
# A clipped alpha at or below this ends the search: the tail is already as heavy as it plausibly gets.
_MIN_ALPHA = 2.0
# The fewest largest eigenvalues a clipped fit drops.
_FIRST_CLIP = 2


@dataclass(frozen=True)
class ClippedPowerLawFit:
    """Result of :func:`fit_clipped_power_law`; field names are WeightWatcher's columns.

    Attributes:
        num_fingers: number of largest eigenvalues left out of the reported fit (0: none).
        raw_alpha: exponent of the unclipped fit.
        alpha, xmin, D, sigma: the reported fit (the clipped one, or the unclipped one when no
            clipping lowered alpha enough).
        xmax: largest eigenvalue the reported fit saw.
        num_pl_spikes: eigenvalues at or above ``xmin`` in the whole input, fingers included.
        fit: the reported fit itself (its ``n_tail`` excludes the fingers; ``status``, ``warning``).
        raw_fit: the unclipped fit.
    """

    num_fingers: int
    raw_alpha: float
    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    num_pl_spikes: int
    fit: PowerLawFit
    raw_fit: PowerLawFit


def fit_clipped_power_law(
    evals: np.ndarray,
    *,
    max_fingers: int = DEFAULT_MAX_FINGERS,
    finger_thresh: float = DEFAULT_FINGER_THRESH,
    min_alpha: float | None = _MIN_ALPHA,
) -> ClippedPowerLawFit:
    """Fit a power law to ``evals`` after clipping the outliers at its top, if that lowers alpha.

    Args:
        evals: the eigenvalues to fit, as given to :func:`fit_power_law` (WeightWatcher passes
            those above its threshold ``1e-5``); any order.
        max_fingers: clipped fits drop from 2 up to ``max_fingers - 1`` of the largest values.
        finger_thresh: a clipped fit is accepted when its alpha is more than this below the
            unclipped alpha.
        min_alpha: the search stops, keeping the unclipped fit, at the first clipped alpha at or
            below this; ``None`` never stops early.

    Returns:
        The first accepted clipped fit, else the unclipped one with ``num_fingers=0``.
        ``num_fingers`` counts the eigenvalues actually clipped; WeightWatcher 0.7.7 reports one
        fewer than its own clipped fit leaves out (its ``xmax`` has ``num_fingers + 1`` values
        above it).

    Raises:
        ValueError: bad options, or the unclipped or a clipped fit is impossible (see
            :func:`fit_power_law`).
    """
    if isinstance(max_fingers, bool) or not isinstance(max_fingers, (int, np.integer)) or max_fingers < 0:
        raise ValueError(f"Invalid value for max_fingers={max_fingers!r}. Must be an integer >= 0.")
    if not np.isfinite(finger_thresh) or finger_thresh < 0:
        raise ValueError(f"Invalid value for finger_thresh={finger_thresh!r}. Must be finite and >= 0.")
    values = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    raw_fit = fit_power_law(values)
    chosen, clipped = raw_fit, 0
    for count in range(_FIRST_CLIP, max_fingers):
        if count >= values.size:
            break
        candidate = fit_power_law(values[:-count])
        if candidate.alpha + finger_thresh < raw_fit.alpha:
            chosen, clipped = candidate, count
            break
        if min_alpha is not None and candidate.alpha <= min_alpha:
            break
    kept = values[: values.size - clipped]
    return ClippedPowerLawFit(
        num_fingers=clipped,
        raw_alpha=raw_fit.alpha,
        alpha=chosen.alpha,
        xmin=chosen.xmin,
        xmax=float(kept[-1]) if chosen.xmax is None else float(chosen.xmax),
        D=chosen.D,
        sigma=chosen.sigma,
        num_pl_spikes=int(np.count_nonzero(values >= chosen.xmin)),
        fit=chosen,
        raw_fit=raw_fit,
    )
