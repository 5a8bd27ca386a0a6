"""A Keras 3 model's analyzable weights as named numpy arrays in torch layout, with their matrix kind.

Keras stores kernels input-first; the spectra expect torch's layouts (``spectra/matrices.py``), so
each weight is copied already transposed (Keras kernel -> torch layout, kind):

- ``Dense``: ``(in, out)`` -> ``(out, in)``, linear;
- ``Conv1D``: ``(k, in, out)`` -> ``(out, in, k)``, conv1d;
- ``Conv2D``: ``(kh, kw, in, out)`` -> ``(out, in, kh, kw)``, conv2d;
- ``Conv1D``/``Conv2D`` with ``groups=g > 1``: ``(*kernel, in / g, out)`` ->
  ``(g, out / g, in / g, *kernel)``, grouped_conv1d / grouped_conv2d (depthwise_conv1d /
  depthwise_conv2d when ``in / g == 1``). Keras gives group ``i`` the output channels
  ``i * out / g`` to ``(i + 1) * out / g - 1``, as torch does;
- ``DepthwiseConv1D``/``DepthwiseConv2D``: ``(*kernel, in, multiplier)`` ->
  ``(in, multiplier, 1, *kernel)``, depthwise_conv1d / depthwise_conv2d (input channel ``c``
  makes the outputs ``c * multiplier`` to ``c * multiplier + multiplier - 1``, as torch's
  ``Conv2d(groups=in)``);
- ``SeparableConv1D``/``SeparableConv2D``: two matrices, ``<layer>.depthwise`` (as a depthwise
  conv) and ``<layer>.pointwise``, its ``1 x 1`` kernel as a conv1d / conv2d;
- ``EinsumDense``: the linear map ``(out, in)``, linear, where ``in`` merges the kernel axes
  the equation contracts with the input and ``out`` the kernel axes that appear in the output
  (see :func:`einsum_matrix_axes`);
- ``Embedding``: ``(vocab, dim)`` as it is (torch's ``nn.Embedding`` layout), embedding;
- ``MultiHeadAttention``: its query, key and value projections ``(in, heads, head_dim)`` ->
  ``(heads * head_dim, in)`` and its output ``(heads, head_dim, out)`` -> ``(out, heads * head_dim)``,
  linear (the ``EinsumDense`` rule on its four projections).

Grouped and depthwise convolutions are analyzed as the block-diagonal maps they apply at each
kernel tap (``spectra/matrices.py`` says why); WeightWatcher instead reads the stored kernel as an
ungrouped conv. The four projections of a ``MultiHeadAttention`` are separate matrices named
``<layer>.query``, ``.key``, ``.value`` and ``.output``: they are "linear" like torch's separate
``q_proj_weight`` (the "attention" kind splits one packed ``(3 * E, E)`` matrix, which Keras
never stores). A ``Dense``, ``EinsumDense`` or ``Embedding`` with LoRA enabled is analyzed as
the merged kernel its ``kernel`` (``embeddings``) property returns.

Layer names are the Keras layer names joined by ``/`` from the model down (``block/proj``), the
same for Functional, Sequential and subclassed models (Keras' own ``layer.path`` starts with the
model's name for some of them and not for others). Every other weight (biases, normalizations,
transposed and 3-D convolutions, quantized layers, recurrent cells, an ``EinsumDense`` whose kernel
is not one matrix, unknown layers) is not analyzed; :func:`skipped_weights` lists each one with
the reason. No layer, however unusual its weights, makes discovery fail.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from .selection import LayerFilter, select_layers

__all__ = [
    "KerasWeight",
    "analyzable_layers",
    "copy_weights",
    "einsum_matrix_axes",
    "layer_names",
    "skipped_weights",
    "to_numpy",
]

_ATTENTION_PARTS = (("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense"),
                    ("output", "output_dense"))  # fmt: skip
_EQUATION = re.compile(r"(?P<input>[a-zA-Z.]+),(?P<kernel>[a-zA-Z]+)->(?P<output>[a-zA-Z.]+)")


@dataclass(frozen=True)
class KerasWeight:
    """One analyzable weight: its name, matrix kind, and where and how to read it.

    Attributes:
        name: the layer name (``<layer>.query`` ... for attention projections, ``<layer>.depthwise``
            and ``<layer>.pointwise`` for separable convolutions).
        kind: the matrix kind of ``spectra.matrices``.
        layer_class: the Keras layer class, for layer filters by class.
        owner: the (sub)layer holding the weight.
        attribute: the attribute of ``owner`` that holds it (``kernel``, ``embeddings``,
            ``depthwise_kernel``, ``pointwise_kernel``).
        axes: the transpose applied first (``None``: none).
        reshape: the torch-layout shape the transposed kernel is reshaped to (``None``: kept).
    """

    name: str
    kind: str
    layer_class: type
    owner: Any
    attribute: str
    axes: tuple[int, ...] | None = None
    reshape: tuple[int, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the copied weight (torch layout)."""
        if self.reshape is not None:
            return self.reshape
        shape = _shape(getattr(self.owner, self.attribute))
        return shape if self.axes is None else tuple(shape[axis] for axis in self.axes)

    def read(self) -> np.ndarray:
        """The weight's current values in torch layout (a numpy view of a host copy)."""
        array = to_numpy(getattr(self.owner, self.attribute))
        if self.axes is not None:
            array = array.transpose(self.axes)
        return array if self.reshape is None else array.reshape(self.reshape)


def analyzable_layers(
    model: keras.Model, layers: LayerFilter = None, exclude: LayerFilter = None
) -> list[KerasWeight]:
    """The model's analyzable weights in model order, filtered by name (exact or regex) or class.

    Raises:
        ValueError: a filter entry matches no layer (the message lists the available ones), or
            two analyzable layers have the same name.
    """
    found = [weight for name, layer in _named_layers(model) for weight in _rule(name, layer).weights]
    names = [weight.name for weight in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Layers need unique names to be told apart in the run file; give these layers distinct "
            f"`name=` arguments. Received: duplicate layer names {duplicates}"
        )
    return select_layers(found, layers, exclude)


def skipped_weights(model: keras.Model) -> dict[str, str]:
    """Every weight of the model that no analyzable matrix holds, with the reason, in model order.

    Keys are ``<layer>.<variable>`` (``block/norm.gamma``, ``mha.query.bias``; a variable of the
    model itself is its bare name), the layer named as in :func:`analyzable_layers`. Trainable and
    non-trainable weights are listed (a ``BatchNormalization``'s moving statistics too); a
    variable shared by several layers is listed once. Weights of analyzable layers that layer
    filters leave out are not listed: they have a matrix, the user chose not to analyze it.
    """
    used = {key for name, layer in _named_layers(model) for key in _rule(name, layer).variables}
    skipped: dict[str, str] = {}
    for name, layer in _all_layers(model):
        variables = [variable for variable in _own_weights(layer) if id(variable) not in used]
        layer_reason = _rule(name, layer).reason if variables else None
        for variable in variables:
            used.add(id(variable))  # a shared variable is listed once
            key = f"{name}.{variable.name}" if name else str(variable.name)
            skipped[key] = _reason(layer, variable, layer_reason)
    return skipped


def einsum_matrix_axes(equation: str, kernel_ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The kernel axes of an ``EinsumDense`` equation that form the matrix's rows and columns.

    An ``EinsumDense`` computes ``y = einsum(equation, x, kernel)``. A kernel axis whose letter is
    in the input but not in the output is summed against the input: it indexes the map's inputs.
    A kernel axis whose letter is in the output but not in the input indexes its outputs. Merging
    each group of axes turns the kernel into the ``(out, in)`` matrix of the linear map from the
    contracted input features to the output features, which is what a Dense's kernel is, so its
    spectrum means the same (``"abc,cd->abd"`` is a Dense; MultiHeadAttention's
    ``"abc,cde->abde"`` maps ``c`` to ``(d, e)``). Axes in both input and output (a batch of
    separate maps, e.g. one per head) or in neither have no place in one matrix.

    Args:
        equation: the layer's ``equation``, e.g. ``"abc,cde->abde"``.
        kernel_ndim: the number of dimensions of its kernel.

    Returns:
        ``(out_axes, in_axes)``, each in kernel order: ``kernel.transpose(out_axes + in_axes)``
        reshaped to two dimensions is the matrix.

    Raises:
        ValueError: the equation is not ``input,kernel->output``, its kernel term does not have
            ``kernel_ndim`` distinct letters, or some kernel axis is neither input nor output.
    """
    match = _EQUATION.fullmatch(equation.replace(" ", ""))
    if match is None:
        raise ValueError(
            f"Invalid EinsumDense equation={equation!r}; expected 'input,kernel->output' such as 'ab,bc->ac'."
        )
    inputs, kernel, outputs = match.group("input", "kernel", "output")
    if len(kernel) != kernel_ndim or len(set(kernel)) != len(kernel):
        raise ValueError(
            f"EinsumDense equation={equation!r}: the kernel term {kernel!r} does not name the "
            f"{kernel_ndim} axes of the kernel once each."
        )
    in_axes = tuple(axis for axis, letter in enumerate(kernel) if letter in inputs and letter not in outputs)
    out_axes = tuple(axis for axis, letter in enumerate(kernel) if letter in outputs and letter not in inputs)
    others = "".join(letter for axis, letter in enumerate(kernel) if axis not in in_axes + out_axes)
    if others:
        raise ValueError(
            f"EinsumDense equation={equation!r}: kernel axes {others!r} are in both input and output "
            "or in neither (a batch of maps, not one matrix)"
        )
    if not in_axes or not out_axes:
        missing = "input" if not in_axes else "output"
        raise ValueError(f"EinsumDense equation={equation!r}: its kernel has no {missing} axis")
    return out_axes, in_axes


def copy_weights(weights: Sequence[KerasWeight]) -> dict[str, np.ndarray]:
    """Copy each weight to host memory in torch layout, float32 or float64 (the only blocking work).

    On the jax backend, read the weights after ``Callback.model`` has synced the training state
    into the model's variables.
    """
    copies = {}
    for weight in weights:
        array = weight.read()
        dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float32
        # one copy: detached from the backend's buffer (torch's CPU tensors share it) and contiguous
        copies[weight.name] = np.array(array, dtype=dtype, order="C", copy=True)
    return copies


def to_numpy(value: Any) -> np.ndarray:
    """``keras.ops.convert_to_numpy`` on any backend, without numpy 2's deprecation noise.

    numpy 2 asks a torch tensor's ``__array__`` for a ``copy`` keyword that torch's lacks, and warns
    about it on every conversion; there is nothing a user could do about it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        return np.asarray(keras.ops.convert_to_numpy(value))


def layer_names(model: keras.Model) -> list[str]:
    """``name (Class)`` of every layer of the model, nested ones included, for error messages."""
    return [f"{name} ({type(layer).__name__})" for name, layer in _named_layers(model)]


# -- layer walk -----------------------------------------------------------------------------------
def _named_layers(model: keras.Model) -> Iterator[tuple[str, Any]]:
    """Every layer below ``model`` once (shared layers under their first name), depth first; the
    parts of a MultiHeadAttention are not visited (its rule reads them)."""
    for name, layer, inside_attention in _walk(model):
        if not inside_attention:
            yield name, layer


def _all_layers(model: keras.Model) -> Iterator[tuple[str, Any]]:
    """``model`` itself (named ``""``), then every layer below it as :func:`_named_layers`, plus
    the parts of each MultiHeadAttention named ``<layer>.query`` ... like its matrices."""
    yield "", model
    for name, layer, _ in _walk(model):
        yield name, layer


def _walk(model: keras.Model) -> Iterator[tuple[str, Any, bool]]:
    seen: set[int] = set()

    def walk(parent: Any, prefix: str, inside_attention: bool) -> Iterator[tuple[str, Any, bool]]:
        parts = _attention_parts(parent) if isinstance(parent, keras.layers.MultiHeadAttention) else {}
        for layer in _children(parent):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            part = parts.get(id(layer))
            name = f"{prefix[:-1]}.{part}" if part is not None else f"{prefix}{layer.name}"
            yield name, layer, inside_attention
            below = inside_attention or isinstance(layer, keras.layers.MultiHeadAttention)
            yield from walk(layer, f"{name}/", below)

    yield from walk(model, "", False)


def _children(layer: Any) -> list[Any]:
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    # Keras 3 tracks the sublayers a custom layer assigns to its attributes in ``_layers``
    return list(getattr(layer, "_layers", []))


def _attention_parts(layer: Any) -> dict[int, str]:
    """``{id(sublayer): part}`` of a MultiHeadAttention's four projections."""
    parts = {}
    for part, attribute in _ATTENTION_PARTS:
        dense = getattr(layer, attribute, None) or getattr(layer, f"_{attribute}", None)
        if dense is not None:
            parts[id(dense)] = part
    return parts


def _own_weights(layer: Any) -> list[Any]:
    """The weights a layer holds itself, not through its sublayers."""
    below = {id(variable) for child in _children(layer) for variable in child.weights}
    return [variable for variable in layer.weights if id(variable) not in below]


# -- rules ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    """What a layer contributes: its analyzable weights, the ids of the variables they read, and
    why its other weights are not analyzed (``None``: the generic reasons)."""

    weights: list[KerasWeight]
    variables: frozenset[int] = frozenset()
    reason: str | None = None


_NOTHING = _Rule([])


def _rule(name: str, layer: Any) -> _Rule:
    """The analyzable weights of one layer (its own, or its attention parts'), never raising."""
    layer_class = type(layer)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _merge_rules(
            _einsum_rule(f"{name}.{part}", dense, layer_class)
            for part, attribute in _ATTENTION_PARTS
            if (dense := getattr(layer, attribute, None) or getattr(layer, f"_{attribute}", None)) is not None
        )
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_rule(name, layer, layer_class)
    if isinstance(layer, keras.layers.Dense):
        return _weight_rule(name, "linear", layer, "kernel", 2, (1, 0))
    if isinstance(layer, keras.layers.Embedding):
        return _weight_rule(name, "embedding", layer, "embeddings", 2, None)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        return _conv_rule(name, layer)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return _depthwise_rule(name, layer, "kernel")
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return _merge_rules([
            _depthwise_rule(f"{name}.depthwise", layer, "depthwise_kernel"),
            _weight_rule(f"{name}.pointwise", _conv_kind(layer), layer, "pointwise_kernel", layer.rank + 2,
                         (layer.rank + 1, layer.rank, *range(layer.rank))),
        ])  # fmt: skip
    if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                          keras.layers.Conv3DTranspose)):  # fmt: skip
        return _Rule([], reason=f"{layer_class.__name__} (transposed convolution) is not analyzed")
    if isinstance(layer, keras.layers.Conv3D):
        return _Rule([], reason="Conv3D is not analyzed")
    return _NOTHING


def _weight_rule(
    name: str, kind: str, layer: Any, attribute: str, ndim: int, axes: tuple[int, ...] | None
) -> _Rule:
    """One kernel read whole (transposed by ``axes``), if built and of the expected rank."""
    if getattr(layer, "quantization_mode", None):
        return _quantized(layer)
    value = getattr(layer, attribute, None)
    if value is None:
        return _NOTHING  # not built yet: no weights to list either
    if len(_shape(value)) != ndim:
        return _Rule([], reason=_unknown_layout(layer, attribute, value))
    weight = KerasWeight(name, kind, type(layer), layer, attribute, axes)
    return _Rule([weight], _variables_read(layer, attribute))


def _conv_rule(name: str, layer: Any) -> _Rule:
    """Conv1D/Conv2D: ``(*kernel, in / groups, out)``, grouped when ``groups > 1``."""
    rank = layer.rank
    axes = (rank + 1, rank, *range(rank))  # -> (out, in / groups, *kernel)
    groups = int(getattr(layer, "groups", 1) or 1)
    if groups == 1:
        return _weight_rule(name, _conv_kind(layer), layer, "kernel", rank + 2, axes)
    rule = _weight_rule(name, "", layer, "kernel", rank + 2, axes)
    if not rule.weights:
        return rule
    *kernel, in_per_group, out_channels = _shape(layer.kernel)
    if out_channels % groups:
        return _Rule([], reason=_unknown_layout(layer, "kernel", layer.kernel))
    kind = f"{'depthwise' if in_per_group == 1 else 'grouped'}_{_conv_kind(layer)}"
    layout = (groups, out_channels // groups, in_per_group, *kernel)
    return _Rule([KerasWeight(name, kind, type(layer), layer, "kernel", axes, layout)], rule.variables)


def _depthwise_rule(name: str, layer: Any, attribute: str) -> _Rule:
    """A depthwise kernel ``(*kernel, in, multiplier)`` as ``(in, multiplier, 1, *kernel)``."""
    rank = layer.rank
    rule = _weight_rule(name, "", layer, attribute, rank + 2, None)
    if not rule.weights:
        return rule
    *kernel, channels, multiplier = _shape(getattr(layer, attribute))
    weight = KerasWeight(
        name, f"depthwise_{_conv_kind(layer)}", type(layer), layer, attribute,
        (rank, rank + 1, *range(rank)), (channels, multiplier, 1, *kernel),
    )  # fmt: skip
    return _Rule([weight], rule.variables)


def _einsum_rule(name: str, layer: Any, layer_class: type) -> _Rule:
    """An EinsumDense kernel as the ``(out, in)`` matrix of :func:`einsum_matrix_axes`."""
    if getattr(layer, "quantization_mode", None):
        return _quantized(layer)
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return _NOTHING
    shape = _shape(kernel)
    try:
        out_axes, in_axes = einsum_matrix_axes(str(layer.equation), len(shape))
    except ValueError as error:
        return _Rule([], reason=f"{error}; not analyzed")
    matrix = (int(np.prod([shape[a] for a in out_axes])), int(np.prod([shape[a] for a in in_axes])))
    weight = KerasWeight(name, "linear", layer_class, layer, "kernel", out_axes + in_axes, matrix)
    return _Rule([weight], _variables_read(layer, "kernel"))


def _merge_rules(rules: Any) -> _Rule:
    rules = list(rules)
    reasons = [rule.reason for rule in rules if rule.reason]
    return _Rule(
        [weight for rule in rules for weight in rule.weights],
        frozenset().union(*(rule.variables for rule in rules)),
        "; ".join(reasons) or None,
    )


def _conv_kind(layer: Any) -> str:
    return f"conv{layer.rank}d"


def _variables_read(layer: Any, attribute: str) -> frozenset[int]:
    """The variables behind ``layer.<attribute>``: the kernel itself and, with LoRA enabled, its
    two factors (the property then returns the merged kernel)."""
    names = {attribute, f"lora_{attribute}_a", f"lora_{attribute}_b"}
    return frozenset(id(variable) for variable in _own_weights(layer) if variable.name in names)


# -- reasons --------------------------------------------------------------------------------------
def _reason(layer: Any, variable: Any, layer_reason: str | None) -> str:
    """Why a weight of ``layer`` is not analyzed, naming the layer's class."""
    where = f"{type(layer).__name__}.{variable.name}"
    ndim = len(_shape(variable))
    if ndim < 2:
        return f"{ndim}-D weight ({where}) has no matrix view"
    if variable.name == "bias":
        return f"bias ({where}, shape {_shape(variable)}) has no matrix view"
    if layer_reason is not None:
        return layer_reason
    return _unknown_layout(layer, variable.name, variable)


def _quantized(layer: Any) -> _Rule:
    return _Rule([], reason=f"{type(layer).__name__} is quantized ({layer.quantization_mode}); not analyzed")


def _unknown_layout(layer: Any, attribute: str, value: Any) -> str:
    return f"{type(layer).__name__}.{attribute} with shape {_shape(value)} has no known matrix layout"


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(size) for size in value.shape)
