"""A torch model's analyzable weights as named numpy arrays with their matrix kind.

Linear (including materialized ``LazyLinear``), Conv1d/2d, Embedding and MultiheadAttention are
analyzable; everything else (biases, norms, transposed convs) is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..selection import LayerFilter, select_layers

__all__ = ["LayerWeight", "analyzable_layers", "copy_weights"]


@dataclass(frozen=True)
class LayerWeight:
    """One analyzable weight: a layer name, its matrix kind and the live parameter."""

    name: str
    kind: str
    layer_class: type
    parameter: torch.Tensor


def analyzable_layers(
    model: nn.Module,
    layers: LayerFilter = None,
    exclude: LayerFilter = None,
) -> list[LayerWeight]:
    """The model's analyzable weights, filtered by name (exact or regex) or layer type.

    Raises:
        ValueError: a filter entry matches no layer; the message lists the available ones.
    """
    found = []
    for module_name, module in model.named_modules():
        found.extend(_weights_of(module_name or type(module).__name__, module))
    return select_layers(found, layers, exclude)


def copy_weights(weights: Sequence[LayerWeight]) -> dict[str, np.ndarray]:
    """Copy each weight off its device as a float32/float64 numpy array (the only blocking work)."""
    copies = {}
    with torch.no_grad():
        for weight in weights:
            tensor = weight.parameter.detach()
            if tensor.dtype not in (torch.float32, torch.float64):
                tensor = tensor.float()
            copies[weight.name] = tensor.to("cpu", copy=True).numpy()
    return copies


def _weights_of(name: str, module: nn.Module) -> list[LayerWeight]:
    layer_class = type(module)
    if isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is not None:
            return [LayerWeight(f"{name}.in_proj", "attention", layer_class, module.in_proj_weight)]
        return [
            LayerWeight(f"{name}.{part}_proj", "linear", layer_class, getattr(module, f"{part}_proj_weight"))
            for part in ("q", "k", "v")
        ]
    kind = next((kind for cls, kind in _KINDS.items() if isinstance(module, cls)), None)
    weight = getattr(module, "weight", None)
    if kind is None or weight is None or isinstance(weight, nn.parameter.UninitializedParameter):
        return []
    return [LayerWeight(name, kind, layer_class, weight)]


_KINDS: dict[type, str] = {
    nn.Linear: "linear",
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Embedding: "embedding",
}
