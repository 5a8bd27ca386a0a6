"""Marchenko-Pastur fit of the ESD bulk, spikes above it, and the phase-of-training label.

For an ``N x M`` matrix with i.i.d. entries of variance ``s^2`` and ``Q = N / M``, the ESD of
``W^T W / N`` fills ``[s^2 (1 - Q^-1/2)^2, s^2 (1 + Q^-1/2)^2]`` as ``N -> inf`` (Marchenko and
Pastur 1967). Its largest eigenvalue fluctuates on the Tracy-Widom scale (Johnstone 2001, Ann.
Statist. 29(2), eqs. 1.2-1.3). Phases: Martin and Mahoney, JMLR 22 (2021), section 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PHASES", "MPFit", "fit_marchenko_pastur", "phase_label", "spike_threshold"]

# The largest eigenvalue of a white Wishart matrix exceeds mu + 2.02 sigma_TW in 1% of draws (TW1).
TRACY_WIDOM_99 = 2.02
_MAX_ITERATIONS = 100

PHASES = (
    "random-like",
    "bleeding-out",
    "bulk+spikes",
    "bulk-decay",
    "heavy-tailed",
    "rank-collapse",
)
# Phase rule thresholds (see phase_label).
HEAVY_TAILED_ALPHA = 4.0
BULK_DECAY_SPIKE_FRACTION = 0.05
SEPARATED_SPIKE_SOFTRANK = 0.5


@dataclass(frozen=True)
class MPFit:
    """Marchenko-Pastur fit of the bulk of ``W^T W / N``.

    Attributes:
        s: fitted element scale (standard deviation of the entries of the bulk).
        lambda_plus: bulk edge ``s^2 (1 + Q^-1/2)^2`` in the ``W^T W / N`` scale.
        lambda_minus: lower edge ``s^2 (1 - Q^-1/2)^2``.
        spike_threshold: edge plus the Tracy-Widom 99% margin; eigenvalues above it are spikes.
        num_spikes: number of eigenvalues above ``spike_threshold``.
        mp_softrank: ``lambda_plus / lambda_max``: near 1 random-like, toward 0 when spikes dominate.
    """

    s: float
    lambda_plus: float
    lambda_minus: float
    spike_threshold: float
    num_spikes: int
    mp_softrank: float


def fit_marchenko_pastur(evals: np.ndarray, N: int, M: int) -> MPFit:  # noqa: N803
    """Fit ``s`` to the bulk of an ESD given in the ``W^T W / N`` scale.

    The trace of a white Wishart ``W^T W / N`` is ``M s^2``, so ``s^2`` is the mean eigenvalue of
    the bulk. Spikes inflate that mean, so the estimate is iterated: take the mean of the
    eigenvalues below the current spike threshold until the set stops changing.

    Args:
        evals: eigenvalues of ``W^T W / N`` (pooled slices allowed: each slice is ``N x M``).
        N, M: larger and smaller side of each slice.
    """
    evals = np.sort(np.asarray(evals, dtype=np.float64))
    if evals.size == 0 or evals[-1] <= 0:
        raise ValueError("the ESD has no positive eigenvalue; no Marchenko-Pastur bulk to fit.")
    Q = N / M  # noqa: N806
    bulk_count = evals.size
    variance = float(evals.mean())
    for _ in range(_MAX_ITERATIONS):
        threshold = variance * _tracy_widom_threshold(N, M)
        count = int(np.searchsorted(evals, threshold, side="right"))
        if count == bulk_count or count == 0:
            break
        bulk_count = count
        variance = float(evals[:count].mean())
    threshold = variance * _tracy_widom_threshold(N, M)
    lambda_plus = variance * (1 + 1 / math.sqrt(Q)) ** 2
    return MPFit(
        s=math.sqrt(variance),
        lambda_plus=lambda_plus,
        lambda_minus=variance * (1 - 1 / math.sqrt(Q)) ** 2,
        spike_threshold=threshold,
        num_spikes=int(evals.size - np.searchsorted(evals, threshold, side="right")),
        mp_softrank=lambda_plus / float(evals[-1]),
    )


def phase_label(mp: MPFit | None, alpha: float, rank_loss: int, num_evals: int) -> str:
    """The phase of training of one layer, by a fixed rule evaluated in this order.

    1. ``rank-collapse``: the numerical rank (numpy tolerance) is below full.
    2. ``heavy-tailed``: the power-law exponent ``alpha < 4`` (ESDs of well-trained layers, 2-4)
       and the MP bulk does not explain the spectrum (more than 5% of eigenvalues above its edge;
       a few strong spikes over an MP bulk can also give a small alpha).
    3. ``random-like``: no eigenvalue above the MP edge plus Tracy-Widom margin.
    4. ``bulk-decay``: more than 5% of the eigenvalues leave the MP bulk (the bulk itself decays).
    5. ``bulk+spikes``: a few spikes, well separated (``mp_softrank <= 0.5``).
    6. ``bleeding-out``: a few eigenvalues just above the edge.
    """
    if rank_loss > 0:
        return "rank-collapse"
    bulk_decays = mp is None or mp.num_spikes > BULK_DECAY_SPIKE_FRACTION * num_evals
    if np.isfinite(alpha) and alpha < HEAVY_TAILED_ALPHA and bulk_decays:
        return "heavy-tailed"
    if mp is None:
        return "unknown"
    if mp.num_spikes == 0:
        return "random-like"
    if mp.num_spikes > BULK_DECAY_SPIKE_FRACTION * num_evals:
        return "bulk-decay"
    if mp.mp_softrank <= SEPARATED_SPIKE_SOFTRANK:
        return "bulk+spikes"
    return "bleeding-out"


def spike_threshold(lambda_plus: float, N: int, M: int) -> float:  # noqa: N803
    """The spike threshold of an MP fit, from its bulk edge ``lambda_plus`` in any scale.

    Both are the fitted variance times a factor of ``N`` and ``M`` alone, so the threshold is the
    edge times their ratio, in the edge's scale: what :class:`MPFit` counts ``num_spikes`` above.
    """
    return lambda_plus / (1 + math.sqrt(M / N)) ** 2 * _tracy_widom_threshold(N, M)


def _tracy_widom_threshold(N: int, M: int) -> float:  # noqa: N803
    """Largest-eigenvalue 99% point of white Wishart ``W^T W / N`` with unit variance."""
    root_n, root_m = math.sqrt(max(N - 1, 1)), math.sqrt(M)
    mu = (root_n + root_m) ** 2
    sigma = (root_n + root_m) * (1 / root_n + 1 / root_m) ** (1 / 3)
    return (mu + TRACY_WIDOM_99 * sigma) / N
