"""Listing and loading the tensors of safetensors, torch and ``.npz`` files, one tensor at a time.

Listing reads only metadata (names, shapes, dtypes); loading reads one tensor. Both run in any
process, so a task can load its tensor where it is analyzed and the parent never holds them all.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAX_DEFLATE_RATIO",
    "SourceError",
    "TensorInfo",
    "check_member_size",
    "list_npz",
    "list_safetensors",
    "list_torch",
    "load_npz",
    "load_safetensors",
    "load_torch",
    "one_line",
]

_SAFETENSORS_FLOATS = ("F16", "BF16", "F32", "F64")
_SAFETENSORS_NUMPY = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}  # little-endian, as the format
# Where a checkpoint keeps its state dict, in the order tried (Lightning first).
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module")
# deflate's largest ratio of inflated to compressed bytes is about 1032: an archive member that
# declares more is lying about its size
MAX_DEFLATE_RATIO = 1032


class SourceError(ValueError):
    """A path that cannot be analyzed: missing, unknown format, corrupt, or refused (pickle)."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor in a file, known from metadata alone.

    Attributes:
        key: its key in the file.
        shape: its shape in torch layout (Keras kernels are transposed when loaded).
        dtype: its dtype as the format names it.
        problem: why it cannot be analyzed (e.g. an integer dtype), or ``None``.
        kind: its matrix kind when the format tells it (Keras layers), else ``None`` (guessed).
        name: its layer name when the format defines one (Keras), else ``None`` (from the key).
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    problem: str | None = None
    kind: str | None = None
    name: str | None = None


def list_safetensors(file: str) -> list[TensorInfo]:
    """The tensors of a ``.safetensors`` file, from its header."""
    safetensor_error, safe_open = _safetensors()
    try:
        with safe_open(file, framework="numpy") as handle:
            infos = []
            for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                tensor = handle.get_slice(key)
                dtype = tensor.get_dtype()
                infos.append(TensorInfo(key, tuple(tensor.get_shape()), dtype, _safetensors_problem(dtype)))
            return infos
    except (safetensor_error, OSError) as error:
        raise SourceError(
            f"{file}: not a readable safetensors file (truncated or corrupt?): {one_line(error)}"
        ) from error


def load_safetensors(file: str, key: str, dtype: str) -> np.ndarray:
    """One tensor of a ``.safetensors`` file: float16/32/64 memory-mapped, read-only, bfloat16
    widened exactly to float32.

    The file was checked by :func:`list_safetensors`. Mapping it instead of copying it out (as
    ``safe_open(...).get_tensor`` does) lets the SVD's own float64 copy read the file's pages: no
    second copy of the layer in memory, and one pass over its data fewer
    (``benchmarks/bench_copy.py`` times both ways).
    """
    offset, shape = _safetensors_entry(file, key)
    count = int(np.prod(shape, dtype=np.int64))
    if dtype == "BF16":
        # its 16 bits are the top half of a float32
        raw = np.fromfile(file, dtype="<u2", count=count, offset=offset)
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if count == 0:
        return np.empty(shape, dtype=_SAFETENSORS_NUMPY[dtype])
    mapped = np.memmap(file, dtype=_SAFETENSORS_NUMPY[dtype], mode="r", offset=offset, shape=shape)
    return mapped.view(np.ndarray)  # a plain array; the mapping lives as long as it does


def list_npz(file: str) -> list[TensorInfo]:
    """The arrays of a ``.npz`` archive, from their ``.npy`` headers."""
    try:
        with zipfile.ZipFile(file) as archive:
            infos = []
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue
                check_member_size(member, os.path.getsize(file))
                with archive.open(member) as stream:
                    infos.append(_npy_info(member, stream))
            return infos
    # zipfile raises NotImplementedError and RuntimeError for flags (encryption, patched data)
    except (
        zipfile.BadZipFile,
        OSError,
        ValueError,
        zlib.error,
        EOFError,
        NotImplementedError,
        RuntimeError,
    ) as error:
        raise SourceError(
            f"{file}: not a readable .npz archive (truncated or corrupt?): {one_line(error)}"
        ) from error


def check_member_size(member: zipfile.ZipInfo, archive_size: int) -> None:
    """Refuse an archive member whose declared sizes are impossible: stored bytes past the end of
    the archive, or inflating to more than what is stored (uncompressed) or than deflate's largest
    ratio allows. Readers allocate what a member declares (``zipfile`` its compressed size,
    numpy its arrays), so this bounds memory by the file's size.

    Raises:
        ValueError: a declared size is impossible.
    """
    if member.header_offset + member.compress_size > archive_size:
        raise ValueError(
            f"member {member.filename!r} declares {member.compress_size:,} stored bytes, past the end "
            f"of the {archive_size:,}-byte archive: a damaged or forged archive"
        )
    ratio = 1 if member.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO
    if member.file_size > ratio * member.compress_size + 64:
        raise ValueError(
            f"member {member.filename!r} declares {member.file_size:,} bytes over {member.compress_size:,} "
            "stored: a damaged or forged archive"
        )


def load_npz(file: str, key: str) -> np.ndarray:
    """One array of a ``.npz`` archive (checked by :func:`list_npz`)."""
    with np.load(file, allow_pickle=False) as archive:
        return archive[key]


def list_torch(file: str, *, allow_pickle: bool) -> list[TensorInfo]:
    """The tensors of a torch state dict or checkpoint (memory-mapped where torch can)."""
    infos = []
    first_keys: dict[tuple, str] = {}  # tied weights: torch.load keeps tensors that share memory shared
    for key, tensor in _torch_state(file, allow_pickle, os.stat(file).st_mtime_ns).items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        problem = None if tensor.dtype.is_floating_point else f"dtype {dtype} is not floating point"
        memory = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() and memory in first_keys:
            problem = f"the same tensor as {first_keys[memory]!r} (tied weights), analyzed under that name"
        elif tensor.numel():
            first_keys[memory] = key
        infos.append(TensorInfo(key, tuple(tensor.shape), dtype, problem))
    return infos


def load_torch(file: str, key: str, *, allow_pickle: bool) -> np.ndarray:
    """One tensor of a torch checkpoint, as float32/float64 numpy (numpy has no bfloat16)."""
    tensor = _torch_state(file, allow_pickle, os.stat(file).st_mtime_ns)[key].detach()
    if tensor.element_size() < 4:
        tensor = tensor.float()
    return tensor.cpu().numpy()


@functools.lru_cache(maxsize=2)
def _torch_state(file: str, allow_pickle: bool, mtime_ns: int) -> dict[str, Any]:
    """The file's state dict, loaded once per process (the modification time invalidates it)."""
    try:
        import torch
    except ImportError as error:
        raise SourceError(
            f"{file}: reading torch checkpoints needs torch: pip install 'spectral-callbacks[torch]'."
        ) from error
    _check_torch_archive(file)
    try:
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=not allow_pickle, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # the legacy (non-zip) format cannot be memory-mapped
            loaded = torch.load(file, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(error)
        if allow_pickle or reason.startswith("Unsupported operand"):  # not a pickle at all
            raise SourceError(
                f"{file}: not a readable torch checkpoint (truncated or corrupt?): {reason}"
            ) from error
        raise SourceError(
            f"{file}: refused to load: it holds pickled Python objects that torch.load(weights_only=True) "
            f"does not allow ({reason}). Unpickling can run code stored in the file; if "
            "you trust it, pass --allow-pickle (allow_pickle=True) to load it with weights_only=False."
        ) from None
    except Exception as error:  # a corrupt file, or the code a pickle runs, may raise anything
        raise SourceError(
            f"{file}: not a readable torch checkpoint: {type(error).__name__}: {_first_line(error)}"
        ) from error
    state = _find_state_dict(loaded)
    tensors = {
        key: value for key, value in state.items() if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise SourceError(
            f"{file}: no tensors found; expected a state dict, or a checkpoint holding one under "
            f"one of the keys {', '.join(_STATE_DICT_KEYS)}."
        )
    return tensors


def _check_torch_archive(file: str) -> None:
    """Check the declared sizes of a zip-format checkpoint's members before torch reads them:
    torch allocates what a member's header declares (gigabytes for a record of a few bytes).

    Raises:
        SourceError: a member with impossible sizes (:func:`check_member_size`).
    """
    if not zipfile.is_zipfile(file):  # the legacy format: a plain pickle stream
        return
    try:
        with zipfile.ZipFile(file) as archive:
            size = os.path.getsize(file)
            for member in archive.infolist():
                check_member_size(member, size)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError) as error:
        raise SourceError(
            f"{file}: not a readable torch checkpoint (truncated or corrupt?): {one_line(error)}"
        ) from error


def _find_state_dict(loaded: Any) -> Mapping[str, Any]:
    if hasattr(loaded, "state_dict") and callable(loaded.state_dict):  # a whole pickled module
        return loaded.state_dict()
    if not isinstance(loaded, Mapping):
        return {}
    for key in _STATE_DICT_KEYS:
        if isinstance(loaded.get(key), Mapping):
            return _find_state_dict(loaded[key])
    return loaded


def _safetensors() -> tuple[type[Exception], Any]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError as error:
        raise SourceError(
            "Reading .safetensors needs the safetensors package: "
            "pip install 'spectral-callbacks[distributed]'."
        ) from error
    return SafetensorError, safe_open


def _safetensors_problem(dtype: str) -> str | None:
    if dtype in _SAFETENSORS_FLOATS:
        return None
    if dtype.startswith("F8"):
        return f"dtype {dtype} (8-bit float) is not supported"
    return f"dtype {dtype} is not floating point"


def _safetensors_entry(file: str, key: str) -> tuple[int, tuple[int, ...]]:
    """Where a tensor's bytes start in a ``.safetensors`` file, and its shape: the file is an
    8-byte little-endian header length, a JSON header, then the tensors' bytes."""
    with open(file, "rb") as stream:
        header_size = int.from_bytes(stream.read(8), "little")
        entry = json.loads(stream.read(header_size))[key]
    return 8 + header_size + int(entry["data_offsets"][0]), tuple(int(size) for size in entry["shape"])


def _npy_info(member: zipfile.ZipInfo, stream: Any) -> TensorInfo:
    """An array's metadata from its ``.npy`` header.

    Raises:
        ValueError: the header is damaged, or claims more bytes than its member holds (numpy
            allocates the claimed array before reading it).
    """
    key = member.filename[: -len(".npy")]
    version = np.lib.format.read_magic(stream)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:  # 3.0 is only written for structured dtypes with unicode field names
        return TensorInfo(key, (), "unknown", f".npy format version {version} is not supported")
    shape, _, dtype = readers[version](stream)
    claimed = math.prod(shape) * dtype.itemsize
    held = member.file_size - stream.tell()
    if min(shape, default=0) < 0 or claimed > held:
        raise ValueError(
            f"array {key!r} claims shape {tuple(shape)} of {dtype} ({claimed:,} bytes) but its member "
            f"holds {held:,}: a damaged or forged archive"
        )
    problem = None if dtype.kind == "f" else f"dtype {dtype} is not floating point"
    return TensorInfo(key, tuple(shape), str(dtype), problem)


def _unpickler_reason(error: BaseException) -> str:
    """What torch's refusal names (``Unsupported global: GLOBAL x.Y ...``), else its first line."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].strip()
        return rest.splitlines()[0].split(". Please", 1)[0].strip() if rest else _first_line(error)
    return _first_line(error)


def one_line(error: BaseException, limit: int = 300) -> str:
    """An error's text on one line, at most ``limit`` characters: it may quote a damaged file's
    bytes (control characters, newlines, a whole header), and an error is one line on stderr."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
