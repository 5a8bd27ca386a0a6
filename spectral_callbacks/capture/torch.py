"""A torch model's analyzable weights as named numpy arrays with their matrix kind.

Linear (including materialized ``LazyLinear``), Conv1d/2d, Embedding and MultiheadAttention are
analyzable; everything else (biases, norms, transposed convs) is left out.

Conv2d layers can also be analyzed as operators on whole feature maps: :func:`operator_layers`
resolves the ``operators`` setting to modules, :class:`InputSizes` measures the input each one
receives, and :func:`operator_specs` turns them into the plain data the analysis process needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..operator_analysis import OperatorSpec
from ..selection import LayerFilter, fullmatch_name, select_layers
from ..spectra import ConvOperator

__all__ = [
    "InputSizes",
    "LayerWeight",
    "OperatorLayer",
    "analyzable_layers",
    "copy_weights",
    "operator_layers",
    "operator_specs",
]


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


@dataclass(frozen=True)
class OperatorLayer:
    """A Conv2d chosen for operator spectra: its name, the ``operators`` key that chose it, the
    module, and the input ``(H, W)`` the key gives (``None`` with ``"auto"``: measured)."""

    name: str
    key: str
    module: nn.Module
    input_hw: tuple[int, int] | None


def operator_layers(model: nn.Module, operators: Mapping[str, tuple[int, int]] | str) -> list[OperatorLayer]:
    """The Conv2d layers ``operators`` chooses (``"auto"``: all), checked as far as possible without data.

    A key is a module name or a regular expression fully matching module names; a regular
    expression chooses the matching modules that have a weight. A given input size is checked
    against the layer by building its operator.

    Raises:
        ValueError: a key matches no layer (the message lists the Conv2d layers), chooses a layer
            that is not a Conv2d (named with its type) or one ``ConvOperator`` refuses, a layer is
            given two input sizes, or ``"auto"`` finds no Conv2d.
    """
    modules = {name or type(module).__name__: module for name, module in model.named_modules()}
    convs = [name for name, module in modules.items() if isinstance(module, nn.Conv2d)]
    listed = ", ".join(convs) or "(none)"
    if operators == "auto":
        if not convs:
            raise ValueError("operators='auto' found no torch.nn.Conv2d layer in the model.")
        return [OperatorLayer(name, "auto", modules[name], None) for name in convs]
    chosen: dict[str, OperatorLayer] = {}
    for key, input_hw in operators.items():
        names = [key] if key in modules else [n for n in modules if _chosen(key, n, modules[n])]
        if not names:
            raise ValueError(f"operators key {key!r} matches no layer of the model. Conv2d layers: {listed}.")
        for name in names:
            _check_conv(key, name, modules[name], input_hw, listed)
            if name in chosen and chosen[name].input_hw != input_hw:
                raise ValueError(
                    f"Layer {name} is given two input sizes in operators: {chosen[name].input_hw} by key "
                    f"{chosen[name].key!r} and {input_hw} by key {key!r}."
                )
            chosen[name] = OperatorLayer(name, key, modules[name], input_hw)
    return [chosen[name] for name in modules if name in chosen]


class InputSizes:
    """Forward pre-hooks recording the ``(C, H, W)`` of the first input each layer receives.

    Remove them with :meth:`remove` once a batch has gone through.
    """

    def __init__(self, layers: Sequence[OperatorLayer]):
        self.sizes: dict[str, tuple[int, ...]] = {}
        self._handles = [
            layer.module.register_forward_pre_hook(self._recorder(layer.name)) for layer in layers
        ]

    def _recorder(self, name: str) -> Callable[[nn.Module, tuple], None]:
        def record(module: nn.Module, inputs: tuple) -> None:
            if name not in self.sizes and inputs and isinstance(inputs[0], torch.Tensor):
                self.sizes[name] = tuple(int(size) for size in inputs[0].shape[-3:])

        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def operator_specs(
    layers: Sequence[OperatorLayer], sizes: Mapping[str, tuple[int, ...]]
) -> tuple[list[OperatorSpec], dict[str, str]]:
    """The specs of the operator layers, with the input sizes measured in ``sizes``.

    Returns:
        The specs, and the layers left out with the reason (``"auto"`` layers that received no input).

    Raises:
        ValueError: a given input size differs from the one the layer received; the message names
            the expected one.
    """
    specs, left_out = [], {}
    for layer in layers:
        measured = sizes.get(layer.name)
        if layer.input_hw is None and measured is None:
            left_out[layer.name] = "it received no input in the first training batch"
            continue
        if layer.input_hw is not None and measured is not None and tuple(measured[-2:]) != layer.input_hw:
            raise ValueError(
                f"operators[{layer.key!r}]={layer.input_hw} does not fit layer {layer.name}: its input in "
                f"the first training batch has shape (C, H, W) = {measured}; expected (H, W) = "
                f"{tuple(measured[-2:])}."
            )
        input_hw = layer.input_hw or (measured[-2], measured[-1])
        operator = ConvOperator.from_torch(layer.module, input_hw)
        specs.append(OperatorSpec.of(layer.name, operator, layer.module.padding))
    return specs, left_out


def _check_conv(key: str, name: str, module: nn.Module, input_hw: tuple[int, int], listed: str) -> None:
    """Refuse what is not a Conv2d ConvOperator can build on ``input_hw``."""
    kind = type(module).__name__
    if getattr(module, "transposed", False) or not isinstance(module, nn.Conv2d):
        what = "a transposed convolution" if getattr(module, "transposed", False) else f"a {kind}"
        raise ValueError(
            f"operators key {key!r} chooses layer {name}, {what}; operator spectra need torch.nn.Conv2d "
            f"layers. Conv2d layers: {listed}."
        )
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        return  # a lazy layer: checked when its operator is built, after the first batch
    try:
        ConvOperator.from_torch(module, input_hw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"operators[{key!r}]={input_hw} for layer {name} ({kind}): {error}") from error


def _chosen(pattern: str, name: str, module: nn.Module) -> bool:
    """Whether a regular expression key chooses a module: it matches the name and the module has a weight."""
    matches = fullmatch_name(pattern, name, what="operators key")
    return matches and isinstance(getattr(module, "weight", None), torch.Tensor)
