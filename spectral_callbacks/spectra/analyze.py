"""One layer's full spectral analysis: singular values once (SVD or certified Gram eigenvalues),
then every metric from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .erg import detx_condition
from .esd import (
    CONV2D_EIGENVALUE_SCALE,
    GRAM_RTOL,
    HALVED_KINDS,
    SvdValues,
    Thresholds,
    compute_singular_values,
    eigenvalues,
    lapack_svdvals,
)
from .fingers import ClippedPowerLawFit, fit_clipped_power_law
from .gram import EigValues, lapack_eigvalsh
from .matrices import DEFAULT_MIN_EVALS, MatrixView, SkippedParameter, matrices_of
from .metrics import (
    entropy_rank_tolerance,
    frame_potential,
    frame_potential_of_gram,
    matrix_entropy,
    norm_metrics,
    rank_metrics,
    rank_tolerances,
)
from .mp import fit_marchenko_pastur, phase_label
from .powerlaw import PowerLawFit, fit_power_law
from .traps import correlation_traps

__all__ = [
    "EVALS_THRESH",
    "FIX_FINGERS",
    "METRIC_NAMES",
    "OPTION_COLUMNS",
    "LayerSpectrum",
    "analyze_matrix",
    "analyze_view",
]

# The columns each of WeightWatcher's options adds (NaN in a row analyzed without it).
OPTION_COLUMNS = {
    "fix_fingers": ("num_fingers", "raw_alpha"),
    "randomize": (
        "rand_distance", "ww_softrank", "ww_maxdist", "max_rand_eval", "num_traps", "rand_num_spikes",
        "rand_sigma_mp", "rand_mp_softrank", "rand_W_scale", "rand_bulk_max", "rand_bulk_min",
    ),
    "detX": ("detX_num", "detX_val", "detX_val_unrescaled", "ERG_gap", "num_ERG_spikes"),
}  # fmt: skip
# WeightWatcher's fix_fingers values: no clipping, or its clip_xmax heuristic.
FIX_FINGERS = (None, "clip_xmax")
# WeightWatcher drops eigenvalues at or below this before the power-law fit (not for the norms).
EVALS_THRESH = 1e-5
_NAN = float("nan")


@dataclass(frozen=True)
class LayerSpectrum:
    """Spectral metrics of one matrix view; names are WeightWatcher's columns where they exist.

    ``status`` is ``"ok"``, ``"warning"`` (all computed, but alpha is doubtful: see ``reason``),
    ``"no-fit"`` (metrics computed but no power law: see ``reason``) or ``"skipped"`` (nothing
    computed: see ``reason``). Missing numbers are NaN with a reason, never silently.

    ``delta_W``, ``relative_delta``, ``delta_W_slices`` and ``cka`` are the layer's distances
    from a reference version of it (:mod:`spectral_callbacks.spectra.distances`; the previous
    snapshot during training), NaN without one.

    The columns of WeightWatcher's options are NaN unless asked for: ``num_fingers`` and
    ``raw_alpha`` with ``fix_fingers="clip_xmax"`` (:mod:`.fingers`), the ``rand_*``,
    ``ww_*``, ``max_rand_eval`` and ``num_traps`` columns with ``randomize``
    (:mod:`.traps`), ``detX_*``, ``ERG_gap`` and ``num_ERG_spikes`` with ``detX``
    (:mod:`.erg`).

    ``gram_slices`` and ``gram_fallbacks`` say how the singular values were computed (not
    metrics, left out of :meth:`metrics` and :meth:`row`): the number of slices whose values are
    certified Gram eigenvalues, and of slices where the Gram path was tried, failed its
    certificate and was replaced by an SVD (see :mod:`spectral_callbacks.spectra.esd`).
    """

    name: str
    kind: str
    N: int
    M: int
    Q: float
    num_evals: int
    status: str
    reason: str | None = None
    alpha: float = _NAN
    xmin: float = _NAN
    xmax: float = _NAN
    D: float = _NAN
    sigma: float = _NAN
    num_pl_spikes: int = 0
    alpha_weighted: float = _NAN
    log_alpha_norm: float = _NAN
    norm: float = _NAN
    log_norm: float = _NAN
    spectral_norm: float = _NAN
    log_spectral_norm: float = _NAN
    stable_rank: float = _NAN
    entropy: float = _NAN
    rank: int = 0
    rank_loss: int = 0
    rank_nr: int = 0
    rank_loss_nr: int = 0
    lambda_min: float = _NAN
    sv_min: float = _NAN
    sv_max: float = _NAN
    frame_potential: float = _NAN
    frame_potential_normalized: float = _NAN
    mp_s: float = _NAN
    lambda_plus: float = _NAN
    num_spikes: int = 0
    mp_softrank: float = _NAN
    delta_W: float = _NAN  # noqa: N815 - WeightWatcher's column name
    relative_delta: float = _NAN
    delta_W_slices: float = _NAN  # noqa: N815 - WeightWatcher's column name
    cka: float = _NAN
    num_fingers: float = _NAN
    raw_alpha: float = _NAN
    rand_distance: float = _NAN
    ww_softrank: float = _NAN
    ww_maxdist: float = _NAN
    max_rand_eval: float = _NAN
    num_traps: float = _NAN
    rand_num_spikes: float = _NAN
    rand_sigma_mp: float = _NAN
    rand_mp_softrank: float = _NAN
    rand_W_scale: float = _NAN  # noqa: N815 - WeightWatcher's column name
    rand_bulk_max: float = _NAN
    rand_bulk_min: float = _NAN
    detX_num: float = _NAN  # noqa: N815 - WeightWatcher's column name
    detX_val: float = _NAN  # noqa: N815 - WeightWatcher's column name
    detX_val_unrescaled: float = _NAN  # noqa: N815 - WeightWatcher's column name
    ERG_gap: float = _NAN
    num_ERG_spikes: float = _NAN  # noqa: N815 - WeightWatcher's column name
    phase: str = "unknown"
    evals: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    svals: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False, compare=False)
    gram_slices: int = field(default=0, repr=False, compare=False)
    gram_fallbacks: int = field(default=0, repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        """The numeric metrics as a flat dict (names in :data:`METRIC_NAMES`).

        A skipped matrix has only its shape: every other metric is NaN (its counts too, which a
        0 would misreport as, e.g., no rank loss).
        """
        if self.status == "skipped":
            return {name: float(getattr(self, name)) if name in _SHAPE else _NAN for name in METRIC_NAMES}
        return {name: float(getattr(self, name)) for name in METRIC_NAMES}

    def row(self) -> dict[str, object]:
        """Everything but the arrays, e.g. for a table or a DataFrame row."""
        record = asdict(self)
        for name in _NOT_IN_ROW:
            record.pop(name)
        return record

    @classmethod
    def skipped(cls, skipped: SkippedParameter, kind: str = "") -> LayerSpectrum:
        """A row for a parameter that has no analyzable matrix."""
        shape = (*skipped.shape, 1, 1)
        n, m = max(shape[:2]), min(shape[:2])
        return cls(skipped.name, kind, n, m, n / m if m else _NAN, 0, "skipped", skipped.reason)


_NOT_IN_ROW = ("evals", "svals", "gram_slices", "gram_fallbacks")
_NON_METRICS = {"name", "kind", "status", "reason", "phase", *_NOT_IN_ROW}
_SHAPE = {"N", "M", "Q", "num_evals"}
METRIC_NAMES = tuple(f.name for f in fields(LayerSpectrum) if f.name not in _NON_METRICS)


def analyze_matrix(
    W: np.ndarray,  # noqa: N803 - the matrix's conventional name
    *,
    kind: str | None = None,
    name: str = "W",
    normalize: str | None = None,
    conv2d_norm: bool = True,
    xmax: float | str | None = None,
    min_evals: int = DEFAULT_MIN_EVALS,
    method: str = "auto",
    gram_rtol: float = GRAM_RTOL,
    fix_fingers: str | None = None,
    detX: bool = False,  # noqa: N803 - WeightWatcher's option name
    randomize: np.random.Generator | None = None,
) -> LayerSpectrum:
    """Analyze one weight matrix (or conv kernel in torch layout) as WeightWatcher 0.7.x would.

    Args:
        W: a 2-D matrix, or a conv weight ``(out, in, *kernel)`` whose slices are pooled.
        kind: see :func:`~spectral_callbacks.spectra.matrices_of`; ``"attention"`` is refused here
            because it yields three matrices (use ``matrices_of`` and :func:`analyze_view`).
        name: used in error messages and in the result.
        normalize: ``None`` (ESD of ``W^T W``) or ``"N"`` (of ``W^T W / N``).
        conv2d_norm: halve conv2d eigenvalues as WeightWatcher does.
        xmax: ``None`` for the untruncated power law, ``"max"`` to truncate at the largest
            eigenvalue (``powerlaw.Fit(evals, xmax=max(evals))``), or a number.
        min_evals: fewer pooled eigenvalues than this is an error.
        method: how the singular values are computed: ``"auto"`` (Gram eigenvalues, kept where
            certified, for slices of shapes expected to pass; SVD elsewhere), ``"gram"`` (tried on
            every slice) or ``"svd"`` (an SVD of every slice); see
            :mod:`spectral_callbacks.spectra.esd`. Every metric means the same.
        gram_rtol: relative error allowed on every eigenvalue kept from the Gram path (the
            certificate's tolerance); eigenvalues near :data:`EVALS_THRESH` or a rank tolerance
            are moreover on the same side of it as the exact ones.
        fix_fingers: ``None``, or ``"clip_xmax"`` to refit without the outlying top eigenvalues
            (WeightWatcher's option; :func:`.fingers.fit_clipped_power_law`), with ``xmax=None``.
        detX: also compute the ERG / SETOL condition columns (:func:`.erg.detx_condition`).
        randomize: a random generator to shuffle the matrix's elements with, for the correlation
            trap columns (:func:`.traps.correlation_traps`); ``None`` to leave them out.

    Raises:
        ValueError: the array is not an analyzable real matrix, or its spectrum has no power-law fit.
    """
    array = np.asarray(W)
    if array.ndim < 2:
        raise ValueError(f"{name!r} has shape {array.shape}; a matrix needs at least 2 dimensions.")
    views = matrices_of(name, array, kind, min_evals=min_evals)
    if isinstance(views, SkippedParameter):
        raise ValueError(f"{name!r} with shape {array.shape} cannot be analyzed: {views.reason}.")
    if len(views) != 1:
        raise ValueError(f"{name!r} splits into {len(views)} matrices; analyze each with analyze_view.")
    return analyze_view(
        views[0],
        weights_dtype=array.dtype,
        normalize=normalize,
        conv2d_norm=conv2d_norm,
        xmax=xmax,
        strict=True,
        method=method,
        gram_rtol=gram_rtol,
        fix_fingers=fix_fingers,
        detX=detX,
        randomize=randomize,
    )


def analyze_view(
    view: MatrixView,
    *,
    weights_dtype: np.dtype | None = None,
    normalize: str | None = None,
    conv2d_norm: bool = True,
    xmax: float | str | None = None,
    strict: bool = False,
    svdvals: SvdValues = lapack_svdvals,
    method: str = "auto",
    eigvalsh: EigValues = lapack_eigvalsh,
    gram_rtol: float = GRAM_RTOL,
    fix_fingers: str | None = None,
    detX: bool = False,  # noqa: N803 - WeightWatcher's option name
    randomize: np.random.Generator | None = None,
) -> LayerSpectrum:
    """Analyze a matrix view; see :func:`analyze_matrix` for the options.

    Args:
        weights_dtype: dtype the weights were trained in; its epsilon sets the rank tolerance.
        strict: raise ``ValueError`` when the power law cannot be fitted, instead of returning
            the other metrics with ``status="no-fit"``.
        svdvals: the LAPACK call for one slice's singular values (scipy's by default).
        method, gram_rtol, fix_fingers, detX, randomize: as in :func:`analyze_matrix`.
        eigvalsh: the LAPACK call for one Gram matrix's eigenvalues (scipy's by default).
    """
    if fix_fingers not in FIX_FINGERS:
        raise ValueError(f"Invalid value for fix_fingers={fix_fingers!r}: expected one of {FIX_FINGERS}.")
    if fix_fingers is not None and xmax is not None:
        raise ValueError(f"fix_fingers={fix_fingers!r} chooses xmax itself: pass xmax=None with it.")
    dtype = np.dtype(weights_dtype if weights_dtype is not None else view.slices.dtype)
    eps = float(np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps)
    computed = compute_singular_values(
        view,
        svdvals,
        method=method,
        eigvalsh=eigvalsh,
        rtol=gram_rtol,
        thresholds=_thresholds(view, eps, normalize=normalize, conv2d_norm=conv2d_norm),
        neuron_gram=True,
    )
    svals = computed.values
    if not np.any(svals > 0):
        raise ValueError(f"{view.name!r} is all zeros; its spectrum is empty.")
    evals = eigenvalues(svals, kind=view.kind, N=view.N, normalize=normalize, conv2d_norm=conv2d_norm)
    rank = rank_metrics(svals, view.N, view.M, eps)
    if computed.neuron_gram is not None:  # scaled in place: nothing else reads it
        frame = frame_potential_of_gram(computed.neuron_gram, view.neurons.shape[1])
    else:
        frame = frame_potential(view.neurons)
    mp = fit_marchenko_pastur(np.square(svals).ravel() / view.N, view.N, view.M)
    to_esd_scale = evals[-1] / (float(svals.max()) ** 2 / view.N)

    status, reason, fit, clipped = "ok", None, None, None
    try:
        fit_evals = evals[evals > EVALS_THRESH]
        if fix_fingers == "clip_xmax":
            clipped = fit_clipped_power_law(fit_evals)
            fit = clipped.fit
        else:
            upper = float(fit_evals.max()) if xmax == "max" else xmax
            fit = fit_power_law(fit_evals, xmax=upper)
        if fit.warning:
            status, reason = "warning", fit.warning
    except ValueError as error:
        if strict:
            raise ValueError(f"{view.name!r}: {error}") from error
        status, reason = "no-fit", str(error)
    alpha = fit.alpha if fit else _NAN
    norms = norm_metrics(evals, alpha)
    num_pl_spikes = (clipped.num_pl_spikes if clipped else fit.n_tail) if fit else 0
    options: dict[str, float] = {}
    if clipped is not None:
        options.update(num_fingers=clipped.num_fingers, raw_alpha=clipped.raw_alpha)
    if detX:
        options.update(asdict(detx_condition(evals, num_pl_spikes=num_pl_spikes if fit else None)))
    if randomize is not None:
        traps = correlation_traps(
            view.slices, evals, kind=view.kind, rng=randomize, normalize=normalize,
            conv2d_norm=conv2d_norm, method=method,
        )  # fmt: skip
        options.update({name: value for name, value in asdict(traps).items() if name != "rand_evals"})
    return LayerSpectrum(
        name=view.name,
        kind=view.kind,
        N=view.N,
        M=view.M,
        Q=view.Q,
        num_evals=int(evals.size),
        status=status,
        reason=reason,
        alpha=alpha,
        xmin=fit.xmin if fit else _NAN,
        xmax=_fit_xmax(fit, clipped, evals) if fit else _NAN,
        D=fit.D if fit else _NAN,
        sigma=fit.sigma if fit else _NAN,
        num_pl_spikes=num_pl_spikes,
        alpha_weighted=norms.alpha_weighted,
        log_alpha_norm=norms.log_alpha_norm,
        norm=norms.norm,
        log_norm=norms.log_norm,
        spectral_norm=norms.spectral_norm,
        log_spectral_norm=norms.log_spectral_norm,
        stable_rank=norms.stable_rank,
        entropy=matrix_entropy(svals, view.N),
        rank=rank.rank,
        rank_loss=rank.rank_loss,
        rank_nr=rank.rank_nr,
        rank_loss_nr=rank.rank_loss_nr,
        lambda_min=float(evals[0]),
        sv_min=rank.sv_min,
        sv_max=rank.sv_max,
        frame_potential=frame.frame_potential,
        frame_potential_normalized=frame.frame_potential_normalized,
        mp_s=mp.s,
        lambda_plus=float(mp.lambda_plus * to_esd_scale),
        num_spikes=mp.num_spikes,
        mp_softrank=float(mp.mp_softrank),
        phase=phase_label(mp, alpha, rank.rank_loss, int(evals.size)),
        evals=evals,
        svals=svals,
        gram_slices=int(np.count_nonzero(computed.gram)),
        gram_fallbacks=int(np.count_nonzero(computed.fallback)),
        **options,
    )


def _fit_xmax(fit: PowerLawFit, clipped: ClippedPowerLawFit | None, evals: np.ndarray) -> float:
    """The largest eigenvalue the reported fit saw: its ``xmax``, else the ESD's largest (or, with
    fingers clipped, the largest kept)."""
    if clipped is not None:
        return clipped.xmax
    return fit.xmax if fit.xmax is not None else float(evals[-1])


def _thresholds(view: MatrixView, eps: float, *, normalize: str | None, conv2d_norm: bool) -> Thresholds:
    """What the metrics compare ``sigma^2`` with: the power-law fit's :data:`EVALS_THRESH` (on
    the ESD's scale), the rank tolerances (per slice) and the entropy's (over the view)."""
    scale = 1.0
    if conv2d_norm and view.kind in HALVED_KINDS:
        scale *= CONV2D_EIGENVALUE_SCALE
    if normalize == "N":
        scale /= view.N
    return Thresholds(
        absolute=(EVALS_THRESH / scale,),
        per_slice=tuple(t**2 for t in rank_tolerances(view.N, view.M, eps)),
        per_view=(entropy_rank_tolerance(view.N) ** 2,),
    )
