"""A path to analyze as a lazy list of its parameters: what each one is, and how to load it alone.

Formats: a ``.safetensors`` file or a directory of them (a sharded checkpoint), a torch state dict
or checkpoint (``.pt``, ``.pth``, ``.bin``, Lightning ``.ckpt``; loaded with
``weights_only=True`` unless pickles are explicitly allowed), a directory of ``.bin``/``.pt``
shards, a ``.npz`` archive, a Keras ``.keras`` file or ``.weights.h5``.

Layer names follow WeightWatcher's analysis of a state dict: a parameter ``blocks.0.q.weight`` is
the layer ``blocks.0.q`` (the module's name, as WeightWatcher names the layers of a torch model,
without ``torch.compile``'s ``_orig_mod.`` and, when every key has it, a wrapper's ``module.``),
and when a file has parameters named ``*weight`` only those are layers (biases, norms' scales
and buffers are not). Safetensors keys are stored sorted, not in model order, so they are listed
in natural order (``layers.2`` before ``layers.10``); torch state dicts keep their own order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.deltas import weight_change
from ..capture.names import clean_name
from .formats import (
    SourceError,
    TensorInfo,
    list_npz,
    list_safetensors,
    list_torch,
    load_npz,
    load_safetensors,
    load_torch,
)
from .keras_weights import list_keras, load_keras

__all__ = ["ParameterRef", "Source", "SourceError", "load_tensor", "open_source"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_INDEX = "model.safetensors.index.json"
_NOT_A_WEIGHT = "not a layer weight: when a file has parameters named '*weight', only those are analyzed"


@dataclass(frozen=True)
class ParameterRef:
    """One parameter of a file: its metadata, and what a task needs to load it (no array).

    Attributes:
        name: the layer name (``blocks.0.q`` for ``blocks.0.q.weight``).
        file: the file that holds it (a shard, for a directory).
        format: ``"safetensors"``, ``"torch"``, ``"npz"`` or ``"keras"``.
        key: its key in the file.
        shape: its shape in torch layout.
        dtype: its dtype as the format names it.
        kind: its matrix kind when the format tells it, else ``None`` (guessed from name and shape).
        problem: why it is not analyzed (dtype, not a weight), or ``None``.
        allow_pickle: load torch files with ``weights_only=False``.
        base: the same parameter in a base model (``analyze --base-model``): then :meth:`load`
            gives the change ``W - W_base``.
    """

    name: str
    file: str
    format: str
    key: str
    shape: tuple[int, ...]
    dtype: str
    kind: str | None = None
    problem: str | None = None
    allow_pickle: bool = False
    base: ParameterRef | None = None

    @property
    def layer_class(self) -> type:
        """What ``selection.select_layers`` matches class filters against: files have no classes."""
        return np.ndarray

    def load(self) -> np.ndarray:
        """The parameter's values in torch layout (read from the file now), or their change from
        the base model's."""
        values = load_tensor(self)
        if self.base is None:
            return values
        return weight_change(values, load_tensor(self.base))


@dataclass(frozen=True)
class Source:
    """An opened path: its format, the files it spans, and its parameters in model order."""

    path: Path
    format: str
    files: tuple[Path, ...]
    parameters: tuple[ParameterRef, ...]


def open_source(path: str | Path, *, allow_pickle: bool = False) -> Source:
    """List the parameters of a checkpoint file or directory, reading metadata only.

    Raises:
        SourceError: the path is missing, of an unknown format, unreadable (truncated or corrupt),
            holds no tensors, or is a pickled checkpoint and ``allow_pickle`` is False.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory.")
    if path.is_dir():
        fmt, files = _directory_files(path)
    else:
        fmt, files = _file_format(path), [path]
    infos = [(str(file), info) for file in files for info in _list(fmt, str(file), allow_pickle)]
    if fmt == "safetensors":
        infos.sort(key=lambda item: _natural(item[1].key))
    _check_unique(path, infos)
    weights_only = fmt != "keras" and any(_is_weight(info.key) for _, info in infos)
    unwrap = bool(infos) and all(info.key.startswith("module.") for _, info in infos)
    parameters = tuple(
        ParameterRef(
            name=info.name or clean_name(_layer_name(info.key), unwrap) or info.key,
            file=file,
            format=fmt,
            key=info.key,
            shape=info.shape,
            dtype=info.dtype,
            kind=info.kind,
            problem=info.problem or (_NOT_A_WEIGHT if weights_only and _other_matrix(info) else None),
            allow_pickle=allow_pickle,
        )
        for file, info in infos
    )
    return Source(path, fmt, tuple(files), parameters)


def load_tensor(ref: ParameterRef) -> np.ndarray:
    """Read one parameter from its file (in the calling process)."""
    if ref.format == "safetensors":
        return load_safetensors(ref.file, ref.key, ref.dtype)
    if ref.format == "torch":
        return load_torch(ref.file, ref.key, allow_pickle=ref.allow_pickle)
    if ref.format == "npz":
        return load_npz(ref.file, ref.key)
    if ref.format == "keras":
        return load_keras(ref.file, ref.key, ref.kind or "")
    raise ValueError(f"Unknown format {ref.format!r} for {ref.name!r}.")


def _list(fmt: str, file: str, allow_pickle: bool) -> list[TensorInfo]:
    listers: dict[str, Callable[[str], list[TensorInfo]]] = {
        "safetensors": list_safetensors,
        "torch": lambda name: list_torch(name, allow_pickle=allow_pickle),
        "npz": list_npz,
        "keras": list_keras,
    }
    return listers[fmt](file)


def _file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".keras", ".weights.h5")):
        return "keras"
    if name.endswith((".h5", ".hdf5")):
        raise SourceError(
            f"{path}: an HDF5 file that is neither a spectral-callbacks run file nor Keras 3 weights "
            "(*.weights.h5); legacy Keras .h5 models are not supported: save them as .keras."
        )
    raise SourceError(
        f"{path}: unknown format {path.suffix or '(no suffix)'!r}; expected .safetensors (or a "
        "directory of them), .pt/.pth/.bin/.ckpt, .npz, .keras, .weights.h5, or a run file (.h5)."
    )


def _directory_files(path: Path) -> tuple[str, list[Path]]:
    """The shards of a checkpoint directory: its safetensors files, else its torch files."""
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()), key=_natural)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise SourceError(f"{index}: not a readable safetensors index: {error}") from error
        outside = [shard for shard in shards if not _inside(path, shard)]
        if outside:
            raise SourceError(
                f"{index}: names shards outside {path} ({', '.join(map(repr, outside[:3]))}); a "
                "sharded checkpoint's index names files in its own directory. Refused."
            )
        missing = [shard for shard in shards if not (path / shard).is_file()]
        if missing:
            raise SourceError(
                f"{path}: shards listed in {SAFETENSORS_INDEX} are missing: {', '.join(missing)}."
            )
        return "safetensors", [path / shard for shard in shards]
    for fmt, suffixes in (("safetensors", (".safetensors",)), ("torch", TORCH_SUFFIXES)):
        files = sorted((p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes)), key=_natural)
        if files:
            return fmt, files
    raise SourceError(f"{path}: a directory without .safetensors or .bin/.pt/.pth/.ckpt files.")


def _inside(directory: Path, shard: object) -> bool:
    """Whether ``shard`` is a file name in ``directory`` itself (no path, no link leading out)."""
    if not isinstance(shard, str) or not shard or Path(shard).name != shard or shard in (".", ".."):
        return False
    return (directory / shard).resolve().parent == directory.resolve()


def _check_unique(path: Path, infos: list[tuple[str, TensorInfo]]) -> None:
    seen: dict[str, str] = {}
    for file, info in infos:
        if info.key in seen and seen[info.key] != file:
            raise SourceError(
                f"{path}: parameter {info.key!r} is in two shards: {seen[info.key]} and {file}."
            )
        seen[info.key] = file


def _is_weight(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last == "weight" or last.endswith("_weight")


def _other_matrix(info: TensorInfo) -> bool:
    """A matrix (or higher) not named as a layer's weight; 1-D ones are skipped as such anyway."""
    return len(info.shape) >= 2 and not _is_weight(info.key)


def _layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _natural(text: str | Path) -> list[str | int]:
    """Sort key comparing runs of digits as numbers: ``layers.2`` before ``layers.10``."""
    parts = re.split(r"(\d+)", str(text))
    return [int(part) if i % 2 else part for i, part in enumerate(parts)]
