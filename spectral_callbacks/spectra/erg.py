"""The ERG (detX = 1) condition of SETOL: where the ESD's tail has unit determinant.

SETOL (Martin & Hinrichs, 2025) treats the heavy tail of a layer's ESD as an effective correlation
space and asks that the map onto it preserve volume, the exact-renormalization-group (ERG)
condition ``det(X_tail) = 1``. On the eigenvalues ``lambda_i`` rescaled to unit mean,

    x_i = lambda_i * n / sum_j lambda_j,

the tail is the ``k`` largest values with ``prod x_i`` just below one: growing the tail from the
top, ``k`` is the first size at which the product drops under 1. As WeightWatcher 0.7.7 does, the
eigenvalue that tips it under is part of the tail, and ``detX_val`` is that smallest tail
eigenvalue. ``ERG_gap = detX_num - num_pl_spikes`` compares the ERG tail with the power-law fit's
tail, which SETOL expects to nearly coincide in well-trained layers.

The product is accumulated as a sum of logarithms, so large layers cannot overflow it (a plain
product of a few hundred rescaled eigenvalues can exceed the float64 range); a product within
rounding of exactly 1 may therefore be decided differently than by a plain product.

Reference:
    C. H. Martin, C. Hinrichs, "SETOL: A Semi-Empirical Theory of (Deep) Learning", arXiv (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DetXCondition", "detx_condition"]


@dataclass(frozen=True)
class DetXCondition:
    """Result of :func:`detx_condition`; field names are WeightWatcher's columns.

    Attributes:
        detX_num: number of eigenvalues in the ERG tail (0 when no tail exists: all equal).
        detX_val: smallest eigenvalue of the ERG tail, in the ESD's own units.
        detX_val_unrescaled: the same eigenvalue on the unit-mean scale ``x``; WeightWatcher's
            name, though this one is the rescaled value.
        ERG_gap: ``detX_num - num_pl_spikes``; NaN when no power-law tail size was given.
        num_ERG_spikes: equal to ``detX_num``, as WeightWatcher reports it.
    """

    detX_num: int  # noqa: N815 - WeightWatcher's column name
    detX_val: float  # noqa: N815 - WeightWatcher's column name
    detX_val_unrescaled: float  # noqa: N815 - WeightWatcher's column name
    ERG_gap: float
    num_ERG_spikes: int  # noqa: N815 - WeightWatcher's column name


def detx_condition(evals: np.ndarray, *, num_pl_spikes: int | None = None) -> DetXCondition:
    """Find the ERG tail of an ESD: the fewest largest eigenvalues whose rescaled product is < 1.

    Args:
        evals: the layer's whole ESD, zero eigenvalues included (their count ``n`` sets the
            rescaling, as in WeightWatcher); any order.
        num_pl_spikes: size of the power-law fit's tail, for ``ERG_gap``; ``None`` leaves it NaN.

    Returns:
        The tail's size and edge. When even the whole spectrum but its smallest eigenvalue has a
        product of at least 1, the tail is the whole spectrum and ``detX_val`` its smallest
        value (WeightWatcher 0.7.7 then reports the second smallest, which is not in the count's
        tail; by the AM-GM inequality this needs nearly equal eigenvalues).

    Raises:
        ValueError: empty, multi-dimensional input, or negative or non-finite eigenvalues.
    """
    values = np.asarray(evals, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"evals must be a non-empty 1-D array; received shape {values.shape}.")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("evals must be finite and non-negative (eigenvalues of W^T W).")
    if num_pl_spikes is not None and (
        isinstance(num_pl_spikes, bool)
        or not isinstance(num_pl_spikes, (int, np.integer))
        or num_pl_spikes < 0
    ):
        raise ValueError(f"Invalid value for num_pl_spikes={num_pl_spikes!r}. Must be an integer >= 0.")
    values = np.sort(values)
    if values.size < 2 or not values[0] < values[-1]:
        return _no_tail(num_pl_spikes)
    scale = values.size / float(values.sum())
    rescaled = values * scale
    with np.errstate(divide="ignore"):
        # log_products[i] = log of the product of rescaled[i:]; zeros give -inf, a product of 0.
        log_products = np.cumsum(np.log(rescaled)[::-1])[::-1]
    below_one = np.flatnonzero(log_products < 0.0)
    if below_one.size == 0:  # nearly equal eigenvalues: the whole product rounds to 1
        return _no_tail(num_pl_spikes)
    # Growing the tail from the top (the largest x is >= 1), the product rises while x > 1 and
    # falls after: once under 1 it stays under, so the first tail under 1 has the largest start.
    start = int(below_one[-1])
    count = values.size - start
    return DetXCondition(
        detX_num=count,
        detX_val=float(values[start]),
        detX_val_unrescaled=float(rescaled[start]),
        ERG_gap=_gap(count, num_pl_spikes),
        num_ERG_spikes=count,
    )


def _gap(count: int, num_pl_spikes: int | None) -> float:
    """``count - num_pl_spikes`` as a float, NaN without a power-law tail size."""
    return math.nan if num_pl_spikes is None else float(count - num_pl_spikes)


def _no_tail(num_pl_spikes: int | None) -> DetXCondition:
    """The result when no tail has a product below 1 (all eigenvalues equal)."""
    return DetXCondition(0, math.nan, math.nan, _gap(0, num_pl_spikes), 0)
