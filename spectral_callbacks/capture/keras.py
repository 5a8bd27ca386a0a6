"""A Keras 3 model's analyzable weights as named numpy arrays in torch layout, with their matrix kind.

Keras stores kernels input-first; the spectra expect torch's layouts (``spectra/matrices.py``), so
each weight is copied already transposed (Keras kernel -> torch layout, kind):

- ``Dense``: ``(in, out)`` -> ``(out, in)``, linear;
- ``Conv1D``: ``(k, in, out)`` -> ``(out, in, k)``, conv1d;
- ``Conv2D``: ``(kh, kw, in, out)`` -> ``(out, in, kh, kw)``, conv2d;
- ``Embedding``: ``(vocab, dim)`` as it is (torch's ``nn.Embedding`` layout), embedding;
- ``MultiHeadAttention``: query/key/value ``(in, heads, head_dim)`` -> ``(heads * head_dim, in)``
  and output ``(heads, head_dim, out)`` -> ``(out, heads * head_dim)``, linear.

The four projections of a ``MultiHeadAttention`` are separate matrices named ``<layer>.query``,
``.key``, ``.value`` and ``.output``: they are "linear" like torch's separate ``q_proj_weight``
(the "attention" kind splits one packed ``(3 * E, E)`` matrix, which Keras never stores).

Layer names are the Keras layer names joined by ``/`` from the model down (``block/proj``), the
same for Functional, Sequential and subclassed models (Keras' own ``layer.path`` starts with the
model's name for some of them and not for others). Everything else (biases, normalizations,
transposed, depthwise and separable convolutions, 3-D convolutions) is left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ..selection import LayerFilter, select_layers

__all__ = ["KerasWeight", "analyzable_layers", "copy_weights", "layer_names", "to_numpy"]

_ATTENTION_PARTS = (("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense"),
                    ("output", "output_dense"))  # fmt: skip


@dataclass(frozen=True)
class KerasWeight:
    """One analyzable weight: its name, matrix kind, and where and how to read it.

    Attributes:
        name: the layer name (``<layer>.query`` ... for attention projections).
        kind: the matrix kind of ``spectra.matrices``.
        layer_class: the Keras layer class, for layer filters by class.
        owner: the (sub)layer holding the weight.
        attribute: the attribute of ``owner`` that holds it (``kernel``, ``embeddings``).
        merge: ``"outputs"`` merges all axes after the first (``(in, heads, dim)`` to
            ``(in, heads * dim)``), ``"inputs"`` all before the last; ``None`` keeps the shape.
        axes: the transpose to torch layout, or ``None``.
    """

    name: str
    kind: str
    layer_class: type
    owner: Any
    attribute: str
    merge: str | None = None
    axes: tuple[int, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the copied weight (torch layout)."""
        shape = tuple(int(size) for size in getattr(self.owner, self.attribute).shape)
        shape = _merged(shape, self.merge)
        return shape if self.axes is None else tuple(shape[axis] for axis in self.axes)


def analyzable_layers(
    model: keras.Model, layers: LayerFilter = None, exclude: LayerFilter = None
) -> list[KerasWeight]:
    """The model's analyzable weights in model order, filtered by name (exact or regex) or class.

    Raises:
        ValueError: a filter entry matches no layer (the message lists the available ones), or
            two analyzable layers have the same name.
    """
    found: list[KerasWeight] = []
    for name, layer in _named_layers(model):
        found.extend(_weights_of(name, layer))
    names = [weight.name for weight in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Layers need unique names to be told apart in the run file; give these layers distinct "
            f"`name=` arguments. Received: duplicate layer names {duplicates}"
        )
    return select_layers(found, layers, exclude)


def copy_weights(weights: Sequence[KerasWeight]) -> dict[str, np.ndarray]:
    """Copy each weight to host memory in torch layout, float32 or float64 (the only blocking work).

    On the jax backend, read the weights after ``Callback.model`` has synced the training state
    into the model's variables.
    """
    copies = {}
    for weight in weights:
        array = to_numpy(getattr(weight.owner, weight.attribute))
        array = array.reshape(_merged(array.shape, weight.merge))
        if weight.axes is not None:
            array = array.transpose(weight.axes)
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


# -- internals ------------------------------------------------------------------------------------
def _named_layers(model: keras.Model) -> Iterator[tuple[str, Any]]:
    """Every layer below ``model`` once (shared layers under their first name), depth first."""
    seen: set[int] = set()

    def walk(parent: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for layer in _children(parent):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            name = f"{prefix}{layer.name}"
            yield name, layer
            if not isinstance(layer, keras.layers.MultiHeadAttention):  # its parts are read below
                yield from walk(layer, f"{name}/")

    yield from walk(model, "")


def _children(layer: Any) -> list[Any]:
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    # Keras 3 tracks the sublayers a custom layer assigns to its attributes in ``_layers``
    return list(getattr(layer, "_layers", []))


def _weights_of(name: str, layer: Any) -> list[KerasWeight]:
    layer_class = type(layer)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _attention_weights(name, layer)
    if isinstance(layer, keras.layers.Dense):
        return _if_built(KerasWeight(name, "linear", layer_class, layer, "kernel", axes=(1, 0)))
    if isinstance(layer, keras.layers.Conv1D):
        return _if_built(KerasWeight(name, "conv1d", layer_class, layer, "kernel", axes=(2, 1, 0)))
    if isinstance(layer, keras.layers.Conv2D):
        return _if_built(KerasWeight(name, "conv2d", layer_class, layer, "kernel", axes=(3, 2, 0, 1)))
    if isinstance(layer, keras.layers.Embedding):
        return _if_built(KerasWeight(name, "embedding", layer_class, layer, "embeddings"))
    return []


def _attention_weights(name: str, layer: Any) -> list[KerasWeight]:
    weights = []
    for part, attribute in _ATTENTION_PARTS:
        dense = getattr(layer, attribute, None) or getattr(layer, f"_{attribute}", None)
        if dense is None:
            continue
        # query/key/value kernels are (in, heads, head_dim); the output kernel (heads, head_dim, out)
        merge = "inputs" if part == "output" else "outputs"
        weights.extend(
            _if_built(KerasWeight(f"{name}.{part}", "linear", type(layer), dense, "kernel", merge, (1, 0)))
        )
    return weights


def _if_built(weight: KerasWeight) -> list[KerasWeight]:
    return [weight] if getattr(weight.owner, weight.attribute, None) is not None else []


def _merged(shape: tuple[int, ...], merge: str | None) -> tuple[int, ...]:
    if merge == "outputs":
        return (shape[0], int(np.prod(shape[1:])))
    if merge == "inputs":
        return (int(np.prod(shape[:-1])), shape[-1])
    return tuple(shape)
