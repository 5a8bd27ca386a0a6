"""Views of a network parameter as the matrices whose spectra are analyzed (WeightWatcher's conventions).

Parameters arrive in torch layout: linear ``(out, in)``, conv ``(out, in, *kernel)``, embedding
``(num_embeddings, dim)``, packed attention ``(3 * embed_dim, embed_dim)``. Keras layouts are
transposed to these by the capture layer before they get here.

Grouped convolutions (``groups > 1``, depthwise ones included) arrive as
``(groups, out / groups, in / groups, *kernel)``. At each kernel tap such a layer applies a
block-diagonal ``out x in`` matrix whose blocks are the groups, and the singular values of a
block-diagonal matrix are those of its blocks: so the pooled ESD is that of every block at every
tap, ``groups * prod(kernel)`` slices of ``(out / groups) x (in / groups)``. WeightWatcher instead
reads the stored ``(out, in / groups, *kernel)`` weight as if it were ungrouped, which for a
depthwise conv means ``prod(kernel)`` slices of ``out x 1`` mixing unrelated channels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DEFAULT_MIN_EVALS", "KINDS", "MatrixView", "SkippedParameter", "matrices_of"]

# WeightWatcher's default: matrices with fewer eigenvalues are skipped.
DEFAULT_MIN_EVALS = 8

KINDS = (
    "linear", "conv1d", "conv2d", "embedding", "attention",
    "grouped_conv1d", "grouped_conv2d", "depthwise_conv1d", "depthwise_conv2d",
)  # fmt: skip
_CONV_NDIM = {
    "conv1d": 3, "conv2d": 4,
    "grouped_conv1d": 4, "grouped_conv2d": 5, "depthwise_conv1d": 4, "depthwise_conv2d": 5,
}  # fmt: skip
_ATTENTION_PARTS = ("q", "k", "v")


@dataclass(frozen=True)
class MatrixView:
    """One analyzable matrix (or a stack of conv slices whose eigenvalues are pooled).

    Attributes:
        name: parameter name, with ``[q]``/``[k]``/``[v]`` for a split attention projection.
        kind: one of :data:`KINDS`.
        slices: array ``(S, out, in)``; ``S = 1`` except for conv, where ``S = prod(kernel)``
            (``groups * prod(kernel)`` for grouped convs, each slice one group's block).
        neurons: the parameter as rows of neurons ``(out, fan_in)``, for the frame potential.
        N, M: larger and smaller side of each slice; ``Q = N / M >= 1``.
    """

    name: str
    kind: str
    slices: np.ndarray = field(repr=False)
    neurons: np.ndarray = field(repr=False)

    @property
    def N(self) -> int:  # noqa: N802 - the field's name for the larger dimension
        return max(self.slices.shape[1:])

    @property
    def M(self) -> int:  # noqa: N802 - the field's name for the smaller dimension
        return min(self.slices.shape[1:])

    @property
    def Q(self) -> float:  # noqa: N802 - the field's name for the aspect ratio
        return self.N / self.M

    @property
    def num_evals(self) -> int:
        """Number of eigenvalues in the pooled ESD: ``S * M``."""
        return self.slices.shape[0] * self.M

    @property
    def neurons_span_slices(self) -> bool:
        """Whether the neurons' Gram matrix ``neurons @ neurons.T`` is the sum of the slices'
        ``W_s @ W_s.T``: each neuron's weights are its rows of every slice side by side. True
        but for grouped and depthwise convs, whose slices are blocks of different groups."""
        return not self.kind.startswith(("grouped_", "depthwise_"))


@dataclass(frozen=True)
class SkippedParameter:
    """A parameter that has no matrix view, and why."""

    name: str
    shape: tuple[int, ...]
    reason: str


def matrices_of(
    param_name: str,
    array: np.ndarray,
    kind: str | None = None,
    *,
    min_evals: int = DEFAULT_MIN_EVALS,
    max_evals: int | None = None,
) -> list[MatrixView] | SkippedParameter:
    """The matrix views of one parameter, or why it has none.

    Args:
        param_name: the parameter's name, e.g. ``"fc1.weight"``.
        array: its values in torch layout.
        kind: one of :data:`KINDS`; guessed from the name and number of dimensions when ``None``
            (``*in_proj_weight`` is attention, names containing ``embed`` are embeddings).
        min_evals: views with fewer pooled eigenvalues are skipped (WeightWatcher's default 8).
        max_evals: views whose matrices have more eigenvalues each are skipped (their SVDs would
            take too long); ``None`` for no limit.

    Returns:
        A list of views (for a packed attention projection the whole matrix, as WeightWatcher
        would see it, then its ``[q]``, ``[k]``, ``[v]`` blocks), or a :class:`SkippedParameter`
        for 1-D parameters, too-small matrices and unknown layouts.

    Raises:
        ValueError: an unknown ``kind`` or a shape that contradicts it.
    """
    values = np.asarray(array)
    shape = tuple(values.shape)
    if kind is None:
        kind = _guess_kind(param_name, values.ndim)
        if kind is None:
            return SkippedParameter(param_name, shape, f"{values.ndim}-D parameter has no matrix view")
    if kind not in KINDS:
        raise ValueError(f"Unknown kind={kind!r} for {param_name!r}; expected one of {KINDS}.")
    views = _views(param_name, values, kind)
    if views[0].num_evals < min_evals:
        return SkippedParameter(
            param_name, shape, f"{views[0].num_evals} eigenvalues < min_evals={min_evals}"
        )
    largest = max(view.M for view in views)
    if max_evals is not None and largest > max_evals:
        return SkippedParameter(
            param_name,
            shape,
            f"{largest} eigenvalues per matrix > max_evals={max_evals} (raise max_evals to analyze it)",
        )
    return views


def _guess_kind(param_name: str, ndim: int) -> str | None:
    if ndim == 2:
        if param_name.endswith("in_proj_weight"):
            return "attention"
        if re.search(r"embed", param_name, flags=re.IGNORECASE):
            return "embedding"
        return "linear"
    return {3: "conv1d", 4: "conv2d"}.get(ndim)


def _views(param_name: str, values: np.ndarray, kind: str) -> list[MatrixView]:
    expected_ndim = _CONV_NDIM.get(kind, 2)
    if values.ndim != expected_ndim:
        raise ValueError(
            f"{param_name!r} has shape {values.shape}; kind={kind!r} needs a {expected_ndim}-D array."
        )
    if kind == "attention":
        if values.shape[0] % 3:
            raise ValueError(
                f"{param_name!r} has shape {values.shape}; a packed attention projection needs "
                "a first dimension divisible by 3 (q, k, v)."
            )
        return [MatrixView(param_name, kind, values[None], values)] + [
            MatrixView(f"{param_name}[{part}]", kind, block[None], block)
            for part, block in zip(_ATTENTION_PARTS, np.split(values, 3, axis=0), strict=True)
        ]
    if kind.startswith(("grouped_", "depthwise_")):
        if kind.startswith("depthwise_") and values.shape[2] != 1:
            raise ValueError(
                f"{param_name!r} has shape {values.shape}; kind={kind!r} needs one input channel per "
                "group (groups, out / groups, 1, *kernel)."
            )
        groups, out_per_group, in_per_group = values.shape[:3]
        taps = values.reshape(groups, out_per_group, in_per_group, -1)
        slices = np.moveaxis(taps, -1, 1).reshape(-1, out_per_group, in_per_group)
        return [MatrixView(param_name, kind, slices, values.reshape(groups * out_per_group, -1))]
    if kind in ("conv1d", "conv2d"):
        out_channels, in_channels = values.shape[:2]
        slices = np.moveaxis(values.reshape(out_channels, in_channels, -1), -1, 0)
        return [MatrixView(param_name, kind, slices, values.reshape(out_channels, -1))]
    return [MatrixView(param_name, kind, values[None], values)]
