"""Keras 3 weights read with h5py, without importing Keras: ``.keras`` archives and ``.weights.h5``.

A ``.keras`` file is a zip archive holding ``model.weights.h5``. In it each layer is a group
named after its class (``layers/dense_1``, nested models as ``layers/sequential/layers/dense``,
sub-layers by attribute: ``multi_head_attention/query_dense``) whose ``vars`` subgroup holds the
variables in order (kernel first) and, as the attribute ``name``, the layer's own name. Layers
are named by the path of those names (``head/dense_1``, ``multi_head_attention/query``).

Kernels are transposed to torch layout with the rules of the live capture
(:mod:`spectral_callbacks.capture.keras`): Dense ``(in, out)`` to ``(out, in)``, Conv1D/2D
``(*kernel, in, out)`` to ``(out, in, *kernel)``; Embedding tables ``(vocabulary, dim)`` stay.
MultiHeadAttention's projections ``(dim, heads, head_dim)`` are the linear maps
``(heads * head_dim, dim)``, its output ``(heads, head_dim, dim)`` the map ``(dim, heads * head_dim)``.
A DepthwiseConv1D/2D kernel ``(*kernel, in, multiplier)`` is ``(in, multiplier, 1, *kernel)``
(kind ``depthwise_conv1d``/``2d``); a SeparableConv1D/2D is two matrices, ``<layer>.depthwise``
(so) and ``<layer>.pointwise`` (its ``1 x 1`` conv). A Conv1D/2D with ``groups > 1`` in the
archive's ``config.json`` is ``(groups, out / groups, in / groups, *kernel)`` (kind
``grouped_conv*``, ``depthwise_conv*`` with one input channel per group); a ``.weights.h5`` file
has no configuration, so there every Conv1D/2D is read with one group. Other layers' variables
(LSTM cells, EinsumDense, normalizations) are listed as not analyzed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from .formats import MAX_DEFLATE_RATIO, SourceError, TensorInfo, check_member_size, one_line

__all__ = ["list_keras", "load_keras"]

WEIGHTS_MEMBER = "model.weights.h5"
MAX_CONFIG_BYTES = 64 << 20  # a .keras file's config.json: far above any real model's, bounded
# the class part of a layer's group name (dense_3 -> dense) and its matrix kind
_KINDS = {
    "dense": "linear", "conv1d": "conv1d", "conv2d": "conv2d", "embedding": "embedding",
    "depthwise_conv1d": "depthwise_conv1d", "depthwise_conv2d": "depthwise_conv2d",
    "separable_conv1d": "depthwise_conv1d", "separable_conv2d": "depthwise_conv2d",
}  # fmt: skip
_NOT_ANALYZED = (
    "is not analyzed (Dense, Conv1D, Conv2D, DepthwiseConv1D/2D, SeparableConv1D/2D, Embedding and "
    "MultiHeadAttention are)"
)
_CLASS_KEY = re.compile(r"(?P<key>.+?)(?:_\d+)?")
_ATTENTION_PARTS = ("query_dense", "key_dense", "value_dense", "output_dense")
# the dimensions of each kind's kernel as Keras stores it
_KERNEL_NDIMS = {
    "linear": (2, 3), "embedding": (2,), "conv1d": (3,), "conv2d": (4,),
    "depthwise_conv1d": (3,), "depthwise_conv2d": (4,),
}  # fmt: skip
# what h5py raises on damaged metadata or data, and zipfile on a damaged archive member
_DAMAGE = (
    OSError, RuntimeError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error, EOFError,
    NotImplementedError,
)  # fmt: skip


def list_keras(file: str) -> list[TensorInfo]:
    """The kernels of a Keras file's layers, in file order; other matrices with their reason."""
    try:
        configs = _layer_configs(file)
        with _weights(file) as weights:
            infos = list(_layer_kernels(weights, "", "", configs))
            for info in infos:
                if info.problem is None:  # opened by its path, as loading does: a damaged name
                    weights[info.key]  # index fails here, once, not in every layer's task
            return infos
    except SourceError:
        raise
    except _DAMAGE as error:
        raise SourceError(
            f"{file}: not a readable Keras weights file (truncated or corrupt?): {one_line(error)}"
        ) from error


def load_keras(file: str, key: str, kind: str) -> np.ndarray:
    """One kernel, as a matrix (or conv kernel) in torch layout."""
    with _weights(file) as weights:
        kernel = weights[key][...]
    if kind == "embedding":
        return kernel
    if kind == "linear":
        return kernel.reshape(_matrix_shape(key, kernel.shape)).T
    if kind.startswith("depthwise_") and _is_depthwise_kernel(key):
        channels_first = np.transpose(kernel, (kernel.ndim - 2, kernel.ndim - 1, *range(kernel.ndim - 2)))
        return channels_first.reshape(_depthwise_shape(kernel.shape))
    torch_layout = np.transpose(kernel, (kernel.ndim - 1, kernel.ndim - 2, *range(kernel.ndim - 2)))
    if kind.startswith(("grouped_", "depthwise_")):  # a Conv1D/2D with groups: its listed shape
        (shape,) = [info.shape for info in list_keras(file) if info.key == key]
        return torch_layout.reshape(shape)
    return torch_layout


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
        # Keras stores the member uncompressed, so h5py's seeks in it are cheap, and what is read
        # is bounded by the file's size: a compressed member could inflate without bound
        check_member_size(archive.getinfo(WEIGHTS_MEMBER), os.path.getsize(file))
        if archive.getinfo(WEIGHTS_MEMBER).compress_type != zipfile.ZIP_STORED:
            raise SourceError(
                f"{file}: its {WEIGHTS_MEMBER} is compressed; Keras stores it uncompressed. Refused: a "
                "compressed member can inflate far beyond the file (save the model again with Keras)."
            )
        with archive.open(WEIGHTS_MEMBER) as stream, h5py.File(stream, "r") as weights:
            yield weights


def _layer_configs(file: str) -> dict[str, dict[str, Any]]:
    """``{layer name path: its config}`` from a ``.keras`` archive's ``config.json``, through nested
    Functional and Sequential models (names joined by ``/`` as the layers are named here); ``{}``
    for a ``.weights.h5`` file or an archive without layer configs (subclassed models)."""
    if file.endswith(".weights.h5"):
        return {}
    with zipfile.ZipFile(file) as archive:
        if "config.json" not in archive.namelist():
            return {}
        if archive.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
            raise SourceError(
                f"{file}: its config.json inflates to {archive.getinfo('config.json').file_size:,} bytes, "
                f"more than any model's configuration ({MAX_CONFIG_BYTES:,}); refused."
            )
        check_member_size(archive.getinfo("config.json"), os.path.getsize(file))
        model = json.loads(archive.read("config.json"))
    if not isinstance(model, dict):
        raise ValueError(f"config.json holds {type(model).__name__}, not a model's configuration")
    configs: dict[str, dict[str, Any]] = {}

    def walk(layers: Any, prefix: str) -> None:
        for layer in layers if isinstance(layers, list) else []:
            config = layer.get("config", {}) if isinstance(layer, dict) else {}
            if not isinstance(config, dict) or "name" not in config:
                continue
            name = f"{prefix}{config['name']}"
            configs[name] = config
            walk(config.get("layers"), f"{name}/")

    walk(model.get("config", {}).get("layers") if isinstance(model.get("config"), dict) else None, "")
    return configs


def _layer_kernels(
    group: h5py.Group, path: str, prefix: str, configs: dict[str, dict[str, Any]]
) -> Iterator[TensorInfo]:
    """Depth first: each layer's kernel (or its other matrices, not analyzed), then its sub-layers."""
    for key, child in group.items():
        if key == "vars" or not isinstance(child, h5py.Group):
            continue
        if not path and key == "optimizer":  # the optimizer's state (Adam's moments), not weights
            continue
        child_path = f"{path}{key}"
        variables = child.get("vars")
        if variables is None:  # a container such as "layers"
            yield from _layer_kernels(child, f"{child_path}/", prefix, configs)
            continue
        name = f"{prefix}{variables.attrs.get('name', key)}"
        kind = _kind(key, path)
        if kind is not None and "0" in variables:
            yield from _kernels(child_path, variables, kind, name, configs.get(name, {}))
        else:
            for index, variable in variables.items():
                if isinstance(variable, h5py.Dataset) and variable.ndim >= 2:
                    yield TensorInfo(
                        f"{child_path}/vars/{index}", variable.shape, str(variable.dtype),
                        f"Keras layer {key!r} {_NOT_ANALYZED}", None, f"{name}/{index}",
                    )  # fmt: skip
        yield from _layer_kernels(child, f"{child_path}/", f"{name}/", configs)


def _kernels(
    path: str, variables: h5py.Group, kind: str, name: str, config: dict[str, Any]
) -> Iterator[TensorInfo]:
    """The matrices of one analyzable layer: its kernel; a separable conv's two kernels."""
    parts = [("0", kind, name)]
    if _class_key(path.rsplit("/", 1)[-1]).startswith("separable_conv"):
        parts = [("0", kind, f"{name}.depthwise"), ("1", f"conv{kind[-2:]}", f"{name}.pointwise")]
    for index, part_kind, part_name in parts:
        kernel = variables.get(index)
        if not isinstance(kernel, h5py.Dataset):
            continue
        _check_stored(f"{path}/vars/{index}", kernel)
        if kernel.ndim not in _KERNEL_NDIMS[part_kind]:
            yield TensorInfo(
                f"{path}/vars/{index}", kernel.shape, str(kernel.dtype),
                f"a kernel of shape {kernel.shape} is not a {part_kind} kernel", None, part_name,
            )  # fmt: skip
            continue
        shape = _torch_shape(path, part_kind, kernel.shape)
        groups = config.get("groups", 1) if part_kind in ("conv1d", "conv2d") else 1
        problem = None if kernel.dtype.kind == "f" else f"dtype {kernel.dtype} is not floating point"
        if isinstance(groups, int) and groups > 1 and shape[0] % groups == 0:
            part_kind = f"{'depthwise' if shape[1] == 1 else 'grouped'}_{part_kind}"
            shape = (groups, shape[0] // groups, *shape[1:])
        yield TensorInfo(f"{path}/vars/{index}", shape, str(kernel.dtype), problem, part_kind, part_name)


def _check_stored(key: str, dataset: h5py.Dataset) -> None:
    """Refuse a dataset that claims more bytes than the file stores for it (a forged shape over
    nothing would be allocated, and filled, when read). Keras writes its variables uncompressed;
    a compressed one may inflate by deflate's largest ratio at most.

    Raises:
        ValueError: the claimed size is impossible.
    """
    claimed = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    ratio = MAX_DEFLATE_RATIO if dataset.id.get_create_plist().get_nfilters() else 1
    if claimed > ratio * stored:
        raise ValueError(
            f"{key!r} claims shape {dataset.shape} of {dataset.dtype} ({claimed:,} bytes) but the file "
            f"stores {stored:,} for it: a damaged or forged file"
        )


def _kind(key: str, parent: str) -> str | None:
    if key in _ATTENTION_PARTS and re.search(r"(^|/)multi_head_attention(_\d+)?/$", parent):
        return "linear"
    return _KINDS.get(_class_key(key))


def _matrix_shape(key: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(in, out)`` of a Dense kernel, or of an attention projection's 3-D kernel."""
    if key.endswith("/output_dense/vars/0"):  # (heads, head_dim, dim)
        return int(np.prod(shape[:-1])), int(shape[-1])
    return int(shape[0]), int(np.prod(shape[1:]))


def _class_key(group_name: str) -> str:
    """The class part of a layer's group name: ``separable_conv2d_1`` -> ``separable_conv2d``."""
    return _CLASS_KEY.fullmatch(group_name).group("key")


def _is_depthwise_kernel(key: str) -> bool:
    """Whether ``key`` (``.../<layer group>/vars/<index>``) is the depthwise kernel of a
    DepthwiseConv1D/2D or SeparableConv1D/2D: stored ``(*kernel, in, multiplier)``."""
    *_, layer, _, index = key.split("/")
    return index == "0" and _class_key(layer).startswith(("depthwise_conv", "separable_conv"))


def _depthwise_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(*kernel, in, multiplier)`` -> ``(in, multiplier, 1, *kernel)``."""
    *kernel, channels, multiplier = shape
    return (channels, multiplier, 1, *kernel)


def _torch_shape(path: str, kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "embedding":
        return tuple(shape)
    if kind.startswith("depthwise_"):
        return _depthwise_shape(tuple(shape))
    if kind == "linear":
        fan_in, fan_out = _matrix_shape(f"{path}/vars/0", shape)
        return (fan_out, fan_in)
    return (shape[-1], shape[-2], *shape[:-2])
