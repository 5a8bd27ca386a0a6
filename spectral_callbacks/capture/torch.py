"""A torch model's analyzable weights as named numpy arrays with their matrix kind.

The layers found, and the rule for each (names are module names, as WeightWatcher's):

- ``nn.Linear`` (and its subclasses, ``LazyLinear`` once materialized): the weight ``(out, in)``.
- Hugging Face ``transformers.pytorch_utils.Conv1D`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``):
  a linear layer that stores its weight ``(in, out)``; read as ``(out, in)`` like a Linear.
- ``nn.Conv1d``/``nn.Conv2d``: the kernel ``(out, in, *kernel)``, its taps pooled. With
  ``groups > 1`` the kernel is read as ``(groups, out / groups, in / groups, *kernel)``, kind
  ``grouped_conv*d`` (``depthwise_conv*d`` with one input channel per group): see
  :mod:`spectral_callbacks.spectra.matrices` for why the groups are the blocks analyzed.
- ``nn.Embedding``/``nn.EmbeddingBag``: the table ``(num_embeddings, dim)``.
- ``nn.MultiheadAttention``: a packed ``in_proj_weight`` ``(3E, E)`` is analyzed whole, with its
  q, k, v blocks beside it; separate ``q/k/v_proj_weight`` as three linear matrices. Its
  ``out_proj`` is a Linear.
- Hugging Face ``peft`` LoRA layers: each adapter's update ``scaling * B @ A`` ``(out, in)`` as a
  linear matrix ``<module>.lora_update``, computed from the live factors, which are not analyzed
  on their own; the base layer by its own rule (see :mod:`spectral_callbacks.capture.lora`).

A parameter shared by several modules (tied weights: GPT-2's ``lm_head`` is ``wte``) is one
matrix, under the first name in ``named_modules()`` order, its other names kept as aliases.
Names lose ``torch.compile``'s ``_orig_mod.`` and, for a model wrapped in ``DataParallel`` or
``DistributedDataParallel``, the wrapper's ``module.``, so compiled and plain runs compare.
Every other parameter is listed with the reason it is not analyzed (biases and normalization
scales are 1-D; transposed and 3-D convolutions and unknown layer types have no rule here).

Conv2d layers can also be analyzed as operators on whole feature maps: :func:`operator_layers`
resolves the ``operators`` setting to modules, :class:`InputSizes` measures the input each one
receives, and :func:`operator_specs` turns them into the plain data the analysis process needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..spectra import ConvOperator
from ..spectra.operators import OperatorSpec
from .lora import lora_updates
from .names import clean_name
from .selection import LayerFilter, fullmatch_name, select_layers

__all__ = [
    "InputSizes",
    "LayerWeight",
    "ModelLayers",
    "OperatorLayer",
    "analyzable_layers",
    "copy_weights",
    "find_layers",
    "operator_layers",
    "operator_specs",
]

Layout = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayerWeight:
    """One analyzable weight: a layer name, its matrix kind and the live parameter.

    Attributes:
        name: the module's name (``_orig_mod.`` and a wrapper's ``module.`` removed).
        kind: the matrix kind of :func:`spectral_callbacks.spectra.matrices_of`.
        layer_class: the module's class, for layer filters by class.
        parameter: the live parameter.
        layout: a view of the parameter in the layout the kind expects (``None``: as stored), or
            the matrix computed from it (a LoRA update from its ``B`` factor).
        aliases: other names of the same parameter (tied weights).
    """

    name: str
    kind: str
    layer_class: type
    parameter: torch.Tensor = dataclasses.field(repr=False)
    layout: Layout | None = dataclasses.field(default=None, repr=False, compare=False)
    aliases: tuple[str, ...] = ()

    def matrix(self) -> torch.Tensor:
        """The parameter, detached, in the layout its kind expects (a view: no copy, except for a
        LoRA update, the product of its factors)."""
        tensor = self.parameter.detach()
        return tensor if self.layout is None else self.layout(tensor)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of :meth:`matrix`."""
        return tuple(int(size) for size in self.matrix().shape)


@dataclass(frozen=True)
class ModelLayers:
    """What layer discovery found: the analyzable weights, and every other parameter with why not."""

    weights: list[LayerWeight]
    skipped: dict[str, str]


def find_layers(model: nn.Module, layers: LayerFilter = None, exclude: LayerFilter = None) -> ModelLayers:
    """The model's analyzable weights, filtered by name (exact or regex) or layer type, and the rest.

    Parameters the filters leave out are not listed as skipped: the user chose them.

    Raises:
        ValueError: a filter entry matches no layer; the message lists the available ones.
    """
    unwrap = isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
    found: dict[int, LayerWeight] = {}  # by id of the parameter: a tied one is found once
    aliases: dict[int, list[str]] = {}
    reasons: dict[int, tuple[str, str]] = {}  # parameters of no analyzable layer: (name, reason)
    factors: set[int] = set()  # LoRA factors, analyzed as their product (met before their modules)
    for module_name, module in model.named_modules(remove_duplicate=False):
        cleaned = clean_name(module_name, unwrap)
        name = cleaned or type(module).__name__
        weights, used = _weights_of(name, module)
        weights = [weight for weight in weights if id(weight.parameter) not in factors]
        for update in lora_updates(name, module):
            factors.update(update.factors)
            weights.append(LayerWeight(update.name, "linear", type(module), update.factor_b, update.product))
        for weight in weights:
            key = id(weight.parameter)
            if key in found:
                aliases[key].append(name)
            else:
                found[key], aliases[key] = weight, []
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if parameter_name not in used:
                full_name = f"{cleaned}.{parameter_name}" if cleaned else parameter_name
                reasons.setdefault(id(parameter), (full_name, _reason_not_analyzed(module, parameter_name)))
    weights = [
        dataclasses.replace(weight, aliases=tuple(dict.fromkeys(aliases[key])))
        for key, weight in found.items()
    ]
    skipped = {name: reason for key, (name, reason) in reasons.items() if key not in found}
    return ModelLayers(select_layers(weights, layers, exclude), skipped)


def analyzable_layers(
    model: nn.Module,
    layers: LayerFilter = None,
    exclude: LayerFilter = None,
) -> list[LayerWeight]:
    """The model's analyzable weights (:func:`find_layers` without the skipped ones).

    Raises:
        ValueError: a filter entry matches no layer; the message lists the available ones.
    """
    return find_layers(model, layers, exclude).weights


def copy_weights(weights: Sequence[LayerWeight]) -> dict[str, np.ndarray]:
    """Copy each weight off its device as a contiguous float32/float64 numpy array in its kind's
    layout (the only blocking work)."""
    copies = {}
    with torch.no_grad():
        for weight in weights:
            tensor = weight.matrix()
            dtype = tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32
            copy = torch.empty(tensor.shape, dtype=dtype, device="cpu")
            copy.copy_(tensor)  # one copy: off the device, converted and made contiguous at once
            copies[weight.name] = copy.numpy()
    return copies


def _weights_of(name: str, module: nn.Module) -> tuple[list[LayerWeight], set[str]]:
    """The analyzable weights of one module (its own parameters only), and the parameter names used."""
    layer_class = type(module)
    if isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is not None:
            return [LayerWeight(f"{name}.in_proj", "attention", layer_class, module.in_proj_weight)], {
                "in_proj_weight"
            }
        parts = ("q", "k", "v")
        weights = [
            LayerWeight(f"{name}.{part}_proj", "linear", layer_class, getattr(module, f"{part}_proj_weight"))
            for part in parts
        ]
        return weights, {f"{part}_proj_weight" for part in parts}
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or isinstance(weight, nn.parameter.UninitializedParameter):
        return [], set()
    rule = _rule(module)
    if rule is None:
        return [], set()
    kind, layout = rule
    return [LayerWeight(name, kind, layer_class, weight, layout)], {"weight"}


def _rule(module: nn.Module) -> tuple[str, Layout | None] | None:
    """The matrix kind of a module's ``weight`` and the view that puts it in that kind's layout."""
    if isinstance(module, nn.Linear):
        return "linear", None
    if _is_transformers_conv1d(module) and module.weight.ndim == 2:
        return "linear", _transposed
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding", None
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        dims = "1d" if isinstance(module, nn.Conv1d) else "2d"
        if module.groups == 1:
            return f"conv{dims}", None
        depthwise = module.weight.shape[1] == 1
        return f"{'depthwise' if depthwise else 'grouped'}_conv{dims}", _grouped(module.groups)
    return None


def _transposed(weight: torch.Tensor) -> torch.Tensor:
    return weight.t()


def _grouped(groups: int) -> Layout:
    def view(weight: torch.Tensor) -> torch.Tensor:
        out_channels, in_per_group, *kernel = weight.shape
        return weight.reshape(groups, out_channels // groups, in_per_group, *kernel)

    return view


def _is_transformers_conv1d(module: nn.Module) -> bool:
    """Whether the module is Hugging Face's ``Conv1D`` (a Linear with its weight stored transposed),
    recognized without importing transformers."""
    classes = type(module).__mro__
    return any(cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers.") for cls in classes)


def _reason_not_analyzed(module: nn.Module, parameter_name: str) -> str:
    """Why a parameter of a module is not analyzed, naming the module's class."""
    parameter = getattr(module, parameter_name)
    kind = type(module).__name__
    if isinstance(parameter, nn.parameter.UninitializedParameter):
        return f"{kind}.{parameter_name} is not materialized yet (lazy layer)"
    if parameter.ndim < 2:
        return f"{parameter.ndim}-D parameter ({kind}.{parameter_name}) has no matrix view"
    if getattr(module, "transposed", False):
        return f"{kind} (transposed convolution) is not analyzed"
    if isinstance(module, nn.Conv3d):
        return "Conv3d is not analyzed"
    return f"{kind}.{parameter_name} with shape {tuple(parameter.shape)}: no matrix rule for this layer type"


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
    unwrap = isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
    modules = {
        clean_name(name, unwrap) or type(module).__name__: module for name, module in model.named_modules()
    }
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
