"""Spectra of conv layers as the linear maps they apply to whole feature maps (anonymous, 2019), per snapshot.

The training side describes each operator layer as plain data (:class:`OperatorSpec`: input size,
stride, padding, ...); the analysis process rebuilds the operator from a snapshot's kernel
(:class:`~spectral_callbacks.spectra.ConvOperator`) and estimates the spectrum of its Gram
operator: the ``top_k`` largest eigenvalues by Lanczos (the spikes) and a histogram of all of them
by the Kernel Polynomial Method on ``[0, (1 + margin) lambda_1]`` (the bulk; Weisse et al.,
2006). Eigenvalues are squared singular values of the conv map ``A``, so ``sqrt(top[0])`` is its
spectral norm ``sigma_max(A)``.

Pure numpy/scipy, like the spectral core; nothing here raises on a bad kernel: a failed layer is an
:class:`OperatorSpectrum` with NaN values and the reason.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..spectra import MatvecBudgetWarning, kpm_density, top_eigenvalues
from ..spectra.kpm import LAMBDA_MAX_MARGIN
from ..spectra.operators import OperatorSpec

__all__ = [
    "LAMBDA_MAX_MARGIN",
    "OperatorOptions",
    "OperatorSpec",
    "OperatorSpectrum",
    "analyze_operator",
    "analyze_operators",
    "estimate_operator_seconds",
    "operator_budget_warning",
]

# Lanczos products assumed per layer in the estimate: the first factorization (ncv = top_k + 40)
# and two restarts; convs with tightly clustered top eigenvalues can take more (up to 3000).
_LANCZOS_FACTORIZATIONS = 3


@dataclass(frozen=True)
class OperatorOptions:
    """When and how finely operator spectra are estimated.

    Attributes:
        every_n_epochs: analyze snapshots whose epoch is a multiple of this (epoch 0 included).
        top_k: largest eigenvalues (spikes) by Lanczos.
        bins: equal bins of the KPM histogram on ``[0, (1 + LAMBDA_MAX_MARGIN) lambda_1]``.
        num_moments, num_probes: Chebyshev moments and Rademacher probes of the KPM estimate.
    """

    every_n_epochs: int = 1
    top_k: int = 8
    bins: int = 50
    num_moments: int = 256
    num_probes: int = 8

    def due(self, epoch: int) -> bool:
        """Whether a snapshot of this epoch gets operator spectra."""
        return epoch % self.every_n_epochs == 0


@dataclass(frozen=True)
class OperatorSpectrum:
    """One operator layer's spectrum at one snapshot.

    Attributes:
        name: the layer.
        top: the ``top_k`` largest eigenvalues of the Gram operator, descending (NaN where
            Lanczos did not converge, or all NaN when the analysis failed).
        edges, counts, count_errors: the KPM histogram (``bins + 1`` edges; counts sum to
            ``dimension``) and the standard error of each count over probes.
        dimension: size of the Gram operator.
        seconds: time the estimate took.
        reason: empty when all went through; otherwise what failed or was approximate.
    """

    name: str
    top: np.ndarray = field(repr=False)
    edges: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    count_errors: np.ndarray = field(repr=False)
    dimension: int
    seconds: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether there is a histogram (the analysis did not fail)."""
        return bool(np.all(np.isfinite(self.counts)))

    @property
    def spectral_norm(self) -> float:
        """``sigma_max(A) = sqrt(lambda_1)`` (NaN when unknown)."""
        return float(np.sqrt(self.top[0]))


def analyze_operators(
    specs: Sequence[OperatorSpec], arrays: Mapping[str, np.ndarray], options: OperatorOptions, epoch: int
) -> list[OperatorSpectrum]:
    """Every operator layer's spectrum for one snapshot, or none when ``epoch`` is not due.

    Never raises: a layer whose kernel is missing or whose analysis fails gets a NaN spectrum with
    the reason.
    """
    if not options.due(epoch):
        return []
    found = []
    for spec in specs:
        if spec.name in arrays:
            found.append(analyze_operator(spec, arrays[spec.name], options))
        else:
            found.append(_failed(spec, options, 0.0, "its kernel is not in the snapshot"))
    return found


def analyze_operator(spec: OperatorSpec, weight: np.ndarray, options: OperatorOptions) -> OperatorSpectrum:
    """Lanczos spikes and the KPM histogram of one layer's Gram operator; never raises.

    The probes and the Lanczos start vector are seeded, so the same kernel gives the same numbers.
    """
    started = time.perf_counter()
    try:
        operator = spec.build(weight)
        k = min(options.top_k, spec.dimension)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MatvecBudgetWarning)
            top = top_eigenvalues(operator, k)
            lambda_max = float(top[0]) * (1.0 + LAMBDA_MAX_MARGIN) if top.size else None
            density = kpm_density(
                operator,
                options.bins,
                num_moments=options.num_moments,
                num_probes=options.num_probes,
                lambda_max=lambda_max,
            )
    except Exception as error:  # noqa: BLE001 - recorded in the run file, never raised
        return _failed(spec, options, time.perf_counter() - started, f"{type(error).__name__}: {error}")
    padded = np.full(options.top_k, np.nan)
    padded[: top.size] = top
    return OperatorSpectrum(
        name=spec.name,
        top=padded,
        edges=density.edges,
        counts=density.counts,
        count_errors=density.count_errors,
        dimension=density.dimension,
        seconds=time.perf_counter() - started,
        reason=" ".join(str(w.message) for w in caught if issubclass(w.category, MatvecBudgetWarning)),
    )


def estimate_operator_seconds(spec: OperatorSpec, weight: np.ndarray, options: OperatorOptions) -> float:
    """About how long :func:`analyze_operator` takes on this layer, from one timed product.

    One product of the Gram operator with a block of ``num_probes`` vectors and one with a single
    vector are timed; the analysis makes about ``num_moments / 2`` of the former (the Chebyshev
    recurrence gives two moments per product) and ``3 * (top_k + 40)`` of the latter (Lanczos).
    Costs a few conv passes, so it is done once per run, not per snapshot.
    """
    gram = spec.build(weight).gram()
    n = gram.shape[0]
    rng = np.random.default_rng(0)
    block = rng.standard_normal((n, options.num_probes))
    started = time.perf_counter()
    gram.matmat(block)
    block_seconds = time.perf_counter() - started
    started = time.perf_counter()
    gram.matvec(block[:, 0])
    vector_seconds = time.perf_counter() - started
    lanczos_products = _LANCZOS_FACTORIZATIONS * min(n, options.top_k + 40)
    return math.ceil(options.num_moments / 2) * block_seconds + lanczos_products * vector_seconds


def operator_budget_warning(
    estimate_seconds: float, epoch_seconds: float, options: OperatorOptions
) -> str | None:
    """What to tell the user when the operator spectra of a snapshot would take longer than the
    training they run beside (an epoch times ``every_n_epochs``), else ``None``.

    The worker then falls further behind at every operator snapshot: with ``on_full="block"``
    training ends up waiting for it, with ``"drop"`` snapshots are lost.
    """
    shadowed = epoch_seconds * options.every_n_epochs
    if estimate_seconds <= shadowed:
        return None
    return (
        f"operator spectra take about {estimate_seconds:.3g} s of one core per snapshot (estimated "
        f"before the first one), more than the {shadowed:.3g} s of training between two operator "
        f"snapshots (one epoch took {epoch_seconds:.3g} s; operator_every_n_epochs="
        f"{options.every_n_epochs}): the analysis will fall behind. Raise operator_every_n_epochs, "
        f"lower operator_moments={options.num_moments} or operator_probes={options.num_probes}, or "
        "choose fewer layers with operators={'name or regex': (H, W)}."
    )


def _failed(spec: OperatorSpec, options: OperatorOptions, seconds: float, reason: str) -> OperatorSpectrum:
    return OperatorSpectrum(
        name=spec.name,
        top=np.full(options.top_k, np.nan),
        edges=np.full(options.bins + 1, np.nan),
        counts=np.full(options.bins, np.nan),
        count_errors=np.full(options.bins, np.nan),
        dimension=spec.dimension,
        seconds=seconds,
        reason=reason,
    )
