"""Keras 3 weights read with h5py, without importing Keras: ``.keras`` archives and ``.weights.h5``.

A ``.keras`` file is a zip archive holding ``model.weights.h5``. In it each layer is a group
named after its class (``layers/dense_1``, nested models as ``layers/sequential/layers/dense``,
sub-layers by attribute: ``multi_head_attention/query_dense``) whose ``vars`` subgroup holds the
variables in order (kernel first) and, as the attribute ``name``, the layer's own name. Layers
are named by the path of those names (``head/dense_1``, ``multi_head_attention/query``).

Kernels are transposed to torch layout: Dense ``(in, out)`` to ``(out, in)``, Conv1D/2D
``(*kernel, in, out)`` to ``(out, in, *kernel)``; Embedding tables ``(vocabulary, dim)`` stay.
MultiHeadAttention's projections ``(dim, heads, head_dim)`` are the linear maps
``(heads * head_dim, dim)``, its output ``(heads, head_dim, dim)`` the map ``(dim, heads * head_dim)``.
Other layers' variables (LSTM cells, EinsumDense, normalizations) are listed as not analyzed.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from collections.abc import Iterator

import h5py
import numpy as np

from .formats import SourceError, TensorInfo

__all__ = ["list_keras", "load_keras"]

WEIGHTS_MEMBER = "model.weights.h5"
# the class part of a layer's group name (dense_3 -> dense) and its matrix kind
_KINDS = {"dense": "linear", "conv1d": "conv1d", "conv2d": "conv2d", "embedding": "embedding"}
_CLASS_KEY = re.compile(r"(?P<key>.+?)(?:_\d+)?")
_ATTENTION_PARTS = ("query_dense", "key_dense", "value_dense", "output_dense")


def list_keras(file: str) -> list[TensorInfo]:
    """The kernels of a Keras file's layers, in file order; other matrices with their reason."""
    try:
        with _weights(file) as weights:
            return list(_layer_kernels(weights, "", ""))
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise SourceError(
            f"{file}: not a readable Keras weights file (truncated or corrupt?): {error}"
        ) from error


def load_keras(file: str, key: str, kind: str) -> np.ndarray:
    """One kernel, as a matrix (or conv kernel) in torch layout."""
    with _weights(file) as weights:
        kernel = weights[key][...]
    if kind == "embedding":
        return kernel
    if kind == "linear":
        return kernel.reshape(_matrix_shape(key, kernel.shape)).T
    return np.transpose(kernel, (kernel.ndim - 1, kernel.ndim - 2, *range(kernel.ndim - 2)))


@contextlib.contextmanager
def _weights(file: str) -> Iterator[h5py.File]:
    if file.endswith(".weights.h5"):
        with h5py.File(file, "r") as weights:
            yield weights
        return
    with zipfile.ZipFile(file) as archive:
        if WEIGHTS_MEMBER not in archive.namelist():
            raise SourceError(
                f"{file}: the archive has no {WEIGHTS_MEMBER} (members: {', '.join(archive.namelist())}); "
                "expected a Keras 3 .keras file."
            )
        # Keras stores the member uncompressed, so h5py's seeks in it are cheap
        with archive.open(WEIGHTS_MEMBER) as stream, h5py.File(stream, "r") as weights:
            yield weights


def _layer_kernels(group: h5py.Group, path: str, prefix: str) -> Iterator[TensorInfo]:
    """Depth first: each layer's kernel (or its other matrices, not analyzed), then its sub-layers."""
    for key, child in group.items():
        if key == "vars" or not isinstance(child, h5py.Group):
            continue
        child_path = f"{path}{key}"
        variables = child.get("vars")
        if variables is None:  # a container such as "layers"
            yield from _layer_kernels(child, f"{child_path}/", prefix)
            continue
        name = f"{prefix}{variables.attrs.get('name', key)}"
        kind = _kind(key, path)
        if kind is not None and "0" in variables:
            kernel = variables["0"]
            yield TensorInfo(
                f"{child_path}/vars/0", _torch_shape(child_path, kind, kernel.shape), str(kernel.dtype),
                None if kernel.dtype.kind == "f" else f"dtype {kernel.dtype} is not floating point",
                kind, name,
            )  # fmt: skip
        else:
            for index, variable in variables.items():
                if isinstance(variable, h5py.Dataset) and variable.ndim >= 2:
                    yield TensorInfo(
                        f"{child_path}/vars/{index}", variable.shape, str(variable.dtype),
                        f"Keras layer {key!r} is not analyzed (Dense, Conv1D, Conv2D, Embedding and "
                        "MultiHeadAttention are)", None, f"{name}/{index}",
                    )  # fmt: skip
        yield from _layer_kernels(child, f"{child_path}/", f"{name}/")


def _kind(key: str, parent: str) -> str | None:
    if key in _ATTENTION_PARTS and re.search(r"(^|/)multi_head_attention(_\d+)?/$", parent):
        return "linear"
    return _KINDS.get(_CLASS_KEY.fullmatch(key).group("key"))


def _matrix_shape(key: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(in, out)`` of a Dense kernel, or of an attention projection's 3-D kernel."""
    if key.endswith("/output_dense/vars/0"):  # (heads, head_dim, dim)
        return int(np.prod(shape[:-1])), int(shape[-1])
    return int(shape[0]), int(np.prod(shape[1:]))


def _torch_shape(path: str, kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "embedding":
        return tuple(shape)
    if kind == "linear":
        fan_in, fan_out = _matrix_shape(f"{path}/vars/0", shape)
        return (fan_out, fan_in)
    return (shape[-1], shape[-2], *shape[:-2])
