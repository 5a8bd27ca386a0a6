"""The scalars of one snapshot: per-layer metrics and the model averages, by TensorBoard tag.

The same names and values go to TensorBoard, to the user's own loggers and into comparisons of
runs, so which layers enter a model average is decided here, once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..spectra import LayerSpectrum
from ..spectra.analyze import OPTION_COLUMNS
from .operators import OperatorSpectrum
from .options import SpectrumOptions

__all__ = [
    "AVERAGED_METRICS",
    "SCALAR_METRICS",
    "averaged_layers",
    "layout_metrics",
    "metric_names",
    "model_averages",
    "scalar_metrics",
]

SCALAR_METRICS = (
    "alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank",
    "frame_potential", "frame_potential_normalized", "rank_loss", "lambda_min",
    "num_spikes", "mp_softrank", "relative_delta", "delta_W",
    "num_fingers", "raw_alpha", "num_traps", "rand_distance", "detX_num", "ERG_gap",
)  # fmt: skip
AVERAGED_METRICS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")


def layout_metrics(options: SpectrumOptions) -> tuple[str, ...]:
    """The per-layer scalars a run with these options can log: :data:`SCALAR_METRICS` but the
    columns of WeightWatcher's options it has off (their charts would stay empty)."""
    off = {
        column
        for option, columns in OPTION_COLUMNS.items()
        if not getattr(options, option)
        for column in columns
    }
    return tuple(metric for metric in SCALAR_METRICS if metric not in off)


def averaged_layers(statuses: Sequence[str]) -> list[int]:
    """Positions of the layers that enter a model average, from their statuses in model order.

    The fitted layers (status ``"ok"`` or ``"warning"``), leaving out the last layer: Martin & Mahoney (2021)
    averages alpha and log norms over layers without the final classifier, whose spectrum
    reflects the number of classes more than training quality.

    >>> averaged_layers(["ok", "skipped", "warning", "ok"])
    [0, 2]
    >>> averaged_layers(["ok", "ok", "no-fit"])
    [0, 1]
    """
    fitted = [i for i, status in enumerate(statuses) if status in ("ok", "warning")]
    if len(fitted) > 1 and fitted[-1] == len(statuses) - 1:
        fitted = fitted[:-1]
    return fitted


def model_averages(spectra: Sequence[LayerSpectrum]) -> dict[str, float]:
    """Mean of each averaged metric over the layers :func:`averaged_layers` selects."""
    fitted = [spectra[i] for i in averaged_layers([spectrum.status for spectrum in spectra])]
    averages = {}
    for metric in AVERAGED_METRICS:
        values = [getattr(s, metric) for s in fitted if math.isfinite(getattr(s, metric))]
        if values:
            averages[metric] = float(np.mean(values))
    return averages


def scalar_metrics(
    spectra: Sequence[LayerSpectrum],
    operators: Sequence[OperatorSpectrum] = (),
    changes: Sequence[LayerSpectrum] = (),
) -> dict[str, float]:
    """The scalars of one snapshot by their TensorBoard tag, as plain floats.

    ``<metric>/<layer>`` for every finite metric of every analyzed layer (skipped layers and NaN
    values are left out), ``model/<metric>`` for the model averages and
    ``operator_spectral_norm/<layer>`` for the operator layers that succeeded. The same names and
    values go to TensorBoard and, through the training process, to the user's own loggers.
    ``changes`` are rows of the weights' changes (``<layer>.delta_init``): per-layer scalars, left
    out of the model averages.
    """
    scalars = {}
    for spectrum in [*spectra, *changes]:
        if spectrum.status == "skipped" or spectrum.evals.size == 0:
            continue
        for metric in SCALAR_METRICS:
            value = float(getattr(spectrum, metric))
            if math.isfinite(value):
                scalars[f"{metric}/{spectrum.name}"] = value
    for metric, value in model_averages(spectra).items():
        scalars[f"model/{metric}"] = value
    for operator in operators:
        if operator.ok and math.isfinite(operator.spectral_norm):
            scalars[f"operator_spectral_norm/{operator.name}"] = float(operator.spectral_norm)
    return scalars


def metric_names(layers: Sequence[str]) -> list[str]:
    """Every per-layer and model-average name :func:`scalar_metrics` can give for these layers.

    >>> metric_names(["fc1"])[:2], metric_names(["fc1"])[-1]
    (['alpha/fc1', 'alpha_weighted/fc1'], 'model/stable_rank')
    """
    per_layer = [f"{metric}/{layer}" for layer in layers for metric in SCALAR_METRICS]
    return per_layer + [f"model/{metric}" for metric in AVERAGED_METRICS]
