"""Hypothesis strategies of damage done to a valid file: each draws a mutation, a callable that
edits the copy of a valid file (or directory) at a path in place.

Byte damage (truncation, overwritten or flipped bytes) applies to every format; the structural
mutations keep a file well formed where a reader checks first (a parseable JSON header, a zip with
correct checksums, a valid HDF5 file) and lie inside it: shapes of terabytes, wrong dtypes,
offsets past the end, declared sizes that are not the stored ones, paths leading out of a
directory. Choices among a file's parts are drawn as integers and taken modulo the number of
parts when the mutation is applied, so one strategy serves every file of a format.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hypothesis import strategies as st

Mutation = Callable[[Path], None]

# sizes that overflow 32 or 64 bits, or claim terabytes, beside ordinary ones
HUGE = st.sampled_from([2**16, 2**20, 2**28, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64])
SIZES = st.one_of(st.integers(-3, 40), HUGE)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)


@dataclass(frozen=True)
class Described:
    """A mutation with a readable repr, so that a failing example says what was done."""

    text: str
    apply: Callable[[Path], None]

    def __call__(self, path: Path) -> None:
        self.apply(path)

    def __repr__(self) -> str:
        return self.text


def _target(path: Path, pick: int, suffixes: tuple[str, ...] = ("",)) -> Path:
    """The file to damage: ``path`` itself, or one of a directory's files ending with ``suffixes``."""
    if path.is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
    return files[pick % len(files)]


# --- bytes -------------------------------------------------------------------------------------


def _truncate(at: int, pick: int) -> Described:
    def apply(path: Path) -> None:
        file = _target(path, pick)
        data = file.read_bytes()
        file.write_bytes(data[: at % max(len(data), 1)])

    return Described(f"truncate(at={at}, file={pick})", apply)


def _overwrite(offset: int, data: bytes, pick: int) -> Described:
    def apply(path: Path) -> None:
        file = _target(path, pick)
        content = bytearray(file.read_bytes())
        start = offset % max(len(content), 1)
        content[start : start + len(data)] = data[: len(content) - start]
        file.write_bytes(bytes(content))

    return Described(f"overwrite(offset={offset}, data={data!r}, file={pick})", apply)


def _flip(offsets: list[int], pick: int) -> Described:
    def apply(path: Path) -> None:
        file = _target(path, pick)
        content = bytearray(file.read_bytes())
        for offset in offsets:
            content[(offset // 8) % len(content)] ^= 1 << (offset % 8)
        file.write_bytes(bytes(content))

    return Described(f"flip(bits={offsets}, file={pick})", apply)


# offsets near the start (headers) are drawn as often as anywhere else
OFFSETS = st.one_of(st.integers(0, 256), st.integers(0, 1 << 20))
PICK = st.integers(0, 7)


def byte_damage() -> st.SearchStrategy[Described]:
    """Truncation at any offset, a few bytes overwritten, or bits flipped (mostly in headers)."""
    return st.one_of(
        st.builds(_truncate, OFFSETS, PICK),
        st.builds(_overwrite, OFFSETS, st.binary(min_size=1, max_size=16), PICK),
        st.builds(
            _flip,
            st.lists(st.one_of(st.integers(0, 2048 * 8), st.integers(0, 1 << 23)), min_size=1, max_size=8),
            PICK,
        ),
    )


# --- safetensors -------------------------------------------------------------------------------


def _safetensors_edit(field: str, value: Any, key_pick: int, pick: int) -> Described:
    def apply(path: Path) -> None:
        file = _target(path, pick, (".safetensors",))
        data = file.read_bytes()
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        body = data[8 + size :]
        keys = sorted(key for key in header if key != "__metadata__")
        key = keys[key_pick % len(keys)]
        if field == "header_length":
            file.write_bytes(int(value % 2**64).to_bytes(8, "little") + data[8:])
            return
        if field == "entry":
            header[key] = value
        elif field == "metadata":
            header["__metadata__"] = value
        elif field == "extra_key":
            header[f"{key}.extra"] = value
        else:
            header[key][field] = value
        text = json.dumps(header).encode()
        file.write_bytes(len(text).to_bytes(8, "little") + text + body)

    return Described(f"safetensors({field}={value!r}, tensor={key_pick}, file={pick})", apply)


def safetensors_lies() -> st.SearchStrategy[Described]:
    """A well-formed JSON header that lies: shapes, dtypes, offsets, its own length, extra entries."""
    shapes = st.one_of(st.lists(SIZES, max_size=4), JSON)
    dtypes = st.one_of(
        st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "X", ""]), JSON
    )
    offsets = st.one_of(st.lists(st.one_of(st.integers(-8, 2000), HUGE), max_size=3), JSON)
    entries = st.fixed_dictionaries({"dtype": dtypes, "shape": shapes, "data_offsets": offsets})
    keys, files = st.integers(0, 7), PICK
    return st.one_of(
        st.builds(_safetensors_edit, st.just("shape"), shapes, keys, files),
        st.builds(_safetensors_edit, st.just("dtype"), dtypes, keys, files),
        st.builds(_safetensors_edit, st.just("data_offsets"), offsets, keys, files),
        st.builds(_safetensors_edit, st.just("entry"), st.one_of(entries, JSON), keys, files),
        st.builds(_safetensors_edit, st.just("extra_key"), entries, keys, files),
        st.builds(_safetensors_edit, st.just("metadata"), JSON, keys, files),
        st.builds(
            _safetensors_edit, st.just("header_length"), st.one_of(st.integers(0, 4096), HUGE), keys, files
        ),
    )


# --- a sharded directory's index ---------------------------------------------------------------

SHARD_NAMES = st.one_of(
    st.sampled_from([
        "../outside.safetensors", "/etc/passwd", "sub/model.safetensors", "", ".", "..", "link.safetensors",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "missing.safetensors",
        "model.safetensors.index.json", "dirshard.safetensors",
    ]),
    JSON,
)  # fmt: skip


def _index_edit(weight_map: Any, whole: Any, replace_whole: bool) -> Described:
    def apply(path: Path) -> None:
        outside = path.parent / "outside.safetensors"
        first = path / "model-00001-of-00002.safetensors"
        outside.write_bytes(first.read_bytes())
        (path / "link.safetensors").symlink_to(outside)
        (path / "dirshard.safetensors").mkdir()
        index = path / "model.safetensors.index.json"
        if replace_whole:
            index.write_text(json.dumps(whole))
            return
        content = json.loads(index.read_text())
        content["weight_map"] = weight_map
        index.write_text(json.dumps(content))

    what = f"index(whole={whole!r})" if replace_whole else f"index(weight_map={weight_map!r})"
    return Described(what, apply)


def index_lies() -> st.SearchStrategy[Described]:
    """``model.safetensors.index.json`` naming shards outside the directory, links out, missing
    files, directories, non-strings; or not an index at all."""
    keys = st.sampled_from(["blocks.0.fc.weight", "blocks.1.fc.weight", "blocks.1.fc.bias", "other"])
    weight_maps = st.one_of(st.dictionaries(keys, SHARD_NAMES, max_size=4), JSON)
    return st.builds(_index_edit, weight_maps, JSON, st.booleans())


# --- zip archives (.npz, torch, .keras) --------------------------------------------------------

_LOCAL, _CENTRAL = b"PK\x03\x04", b"PK\x01\x02"


def _patch_sizes(
    data: bytes, member: int, compressed: int | None, uncompressed: int | None, where: str
) -> bytes:
    """``data`` with one member's declared sizes changed in its local and/or central header."""
    content = bytearray(data)
    for label, signature, offset in (("local", _LOCAL, 18), ("central", _CENTRAL, 20)):
        if where not in (label, "both"):
            continue
        positions = []
        start = content.find(signature)
        while start >= 0:
            positions.append(start)
            start = content.find(signature, start + 4)
        if not positions:
            continue
        at = positions[member % len(positions)] + offset
        if compressed is not None:
            content[at : at + 4] = struct.pack("<I", compressed % 2**32)
        if uncompressed is not None:
            content[at + 4 : at + 8] = struct.pack("<I", uncompressed % 2**32)
    return bytes(content)


def _zip_sizes(member: int, compressed: int | None, uncompressed: int | None, where: str) -> Described:
    def apply(path: Path) -> None:
        path.write_bytes(_patch_sizes(path.read_bytes(), member, compressed, uncompressed, where))

    return Described(
        f"zip_sizes(member={member}, compressed={compressed}, uncompressed={uncompressed}, {where})", apply
    )


def _rewrite_members(
    path: Path, edit: Callable[[str, bytes, zipfile.ZipInfo], tuple[bytes, int] | None]
) -> None:
    """Rewrite an archive member by member with correct checksums: ``edit(name, data, info)``
    returns new ``(data, compress_type)``, or None to leave the member out."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            edited = edit(info.filename, data, info)
            if edited is not None:
                archive.writestr(info.filename, edited[0], compress_type=edited[1])


def zip_size_lies() -> st.SearchStrategy[Described]:
    """A member's declared compressed or uncompressed size, in its local or central header, not
    the stored one (small, zero, or up to 4 GB)."""
    sizes = st.one_of(st.none(), st.integers(0, 5000), st.sampled_from([2**31, 2**32 - 1]))
    return st.builds(
        _zip_sizes, st.integers(0, 7), sizes, sizes, st.sampled_from(["local", "central", "both"])
    )


def _npy_header(descr: Any, fortran: Any, shape: Any) -> bytes:
    text = "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (descr, fortran, shape)  # noqa: UP031
    padded = text + " " * ((64 - (10 + len(text) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded.encode("latin-1")


def _npy_edit(member: int, descr: Any, fortran: Any, shape: Any, keep_data: bool) -> Described:
    def apply(path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith(".npy")]
        chosen = names[member % len(names)]

        def edit(name: str, data: bytes, info: zipfile.ZipInfo) -> tuple[bytes, int]:
            if name != chosen:
                return data, info.compress_type
            stream = io.BytesIO(data)
            np.lib.format.read_magic(stream)
            np.lib.format.read_array_header_1_0(stream)
            body = data[stream.tell() :] if keep_data else b""
            return _npy_header(descr, fortran, shape) + body, info.compress_type

        _rewrite_members(path, edit)

    return Described(
        f"npy(member={member}, descr={descr!r}, fortran={fortran!r}, shape={shape!r}, data={keep_data})",
        apply,
    )


def npy_lies() -> st.SearchStrategy[Described]:
    """A ``.npy`` member whose header lies (shapes of terabytes, other dtypes, Fortran order, not a
    tuple), in an archive with correct checksums."""
    descrs = st.one_of(
        st.sampled_from(
            ["<f4", "<f8", ">f4", "<f2", "|u1", "<i8", "|b1", "<c8", "O", "|V16", "<U5", "|S3", "garbage"]
        ),
        JSON,
    )
    shapes = st.one_of(
        st.tuples(SIZES, SIZES).map(lambda t: tuple(abs(n) for n in t)),
        st.lists(SIZES, max_size=4).map(tuple),
        JSON,
    )
    return st.builds(
        _npy_edit, st.integers(0, 7), descrs, st.one_of(st.booleans(), JSON), shapes, st.booleans()
    )


def _compress_member(member: str, method: int) -> Described:
    def apply(path: Path) -> None:
        _rewrite_members(
            path, lambda name, data, info: (data, method if name == member else info.compress_type)
        )

    return Described(f"compress({member}, method={method})", apply)


# --- HDF5 (Keras weights, run files) -----------------------------------------------------------

DTYPES = st.sampled_from(["f4", "f8", "f2", "i1", "i8", "u8", "S4", "?", "c8", "compound", "vlen_str"])
H5_SHAPES = st.lists(
    st.one_of(st.integers(0, 6), st.sampled_from([2**14, 2**20, 2**28, 2**31, 2**40])), max_size=4
)


def _datasets(file: h5py.File) -> list[str]:
    names: list[str] = []
    file.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return sorted(names)


def _objects(file: h5py.File) -> list[str]:
    names = ["/"]
    file.visit(names.append)
    return sorted(names)


def _new_dataset(parent: h5py.Group, name: str, dtype: str, shape: list[int], written: bool) -> None:
    """A dataset of any dtype and shape; large ones chunked and never written (nothing stored)."""
    numpy_dtype: Any = {
        "compound": np.dtype([("a", "f4"), ("b", "i2")]),
        "vlen_str": h5py.string_dtype(),
    }.get(dtype, dtype)
    size = int(np.prod(shape, dtype=object)) if shape else 1
    if written and size <= 4096:
        data = (
            np.zeros(shape, dtype=numpy_dtype) if dtype != "vlen_str" else np.full(shape, "x", dtype=object)
        )
        parent.create_dataset(name, data=data, dtype=numpy_dtype)
    else:
        chunked = bool(shape) and size > 0
        maxshape = tuple(None for _ in shape) if chunked else None
        parent.create_dataset(
            name, shape=tuple(shape), dtype=numpy_dtype, chunks=chunked or None, maxshape=maxshape
        )


def _h5_edit(
    op: str, pick: int, dtype: str, shape: list[int], written: bool, value: Any, attr: str
) -> Callable[[h5py.File], None]:
    def apply(file: h5py.File) -> None:
        datasets, objects = _datasets(file), _objects(file)
        if op == "replace":
            name = datasets[pick % len(datasets)]
            parent, _, leaf = name.rpartition("/")
            group = file[parent or "/"]
            del group[leaf]
            _new_dataset(group, leaf, dtype, shape, written)
        elif op == "resize":
            dataset = file[datasets[pick % len(datasets)]]
            dataset.resize(tuple(shape[: dataset.ndim]) + (1,) * max(0, dataset.ndim - len(shape)))
        elif op == "delete":
            name = objects[pick % len(objects)]
            if name != "/":
                del file[name]
        elif op == "group":
            name = datasets[pick % len(datasets)]
            del file[name]
            file.create_group(name)
        else:  # an attribute of any object: one that exists, or a new one
            target = file[objects[pick % len(objects)]]
            names = [*sorted(target.attrs), attr]
            target.attrs[names[(pick // 7) % len(names)]] = value

    return apply


ATTRIBUTE_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    TEXT,
    st.binary(max_size=8),
    st.sampled_from(
        ["{not json", "[]", "null", '{"min_evals": "x"}', '{"min_evals": -1}', '{"normalize": 5}']
    ),
    JSON.map(json.dumps),
    st.lists(st.integers(-5, 2**40), max_size=4).map(lambda values: np.array(values, dtype=np.int64)),
)


def h5_edits() -> st.SearchStrategy[Callable[[h5py.File], None]]:
    """One edit of a valid HDF5 file that keeps it valid HDF5: a dataset replaced by one of another
    dtype or shape (terabytes claimed over nothing stored), resized, deleted, turned into a group;
    an attribute overwritten with any value."""
    return st.builds(
        _h5_edit,
        st.sampled_from(["replace", "replace", "resize", "delete", "group", "attribute", "attribute"]),
        st.integers(0, 63), DTYPES, H5_SHAPES, st.booleans(), ATTRIBUTE_VALUES,
        st.sampled_from(["name", "shape", "x"]),
    )  # fmt: skip


def _on_h5(edits: list[Callable[[h5py.File], None]], text: str) -> Described:
    def apply(path: Path) -> None:
        for edit in edits:
            with h5py.File(path, "r+", libver="latest") as file:
                edit(file)

    return Described(text, apply)


def _on_keras_h5(edits: list[Callable[[h5py.File], None]], text: str) -> Described:
    def apply(path: Path) -> None:
        def edit(name: str, data: bytes, info: zipfile.ZipInfo) -> tuple[bytes, int]:
            if name != "model.weights.h5":
                return data, info.compress_type
            buffer = io.BytesIO(data)
            for one in edits:
                with h5py.File(buffer, "r+") as file:
                    one(file)
            return buffer.getvalue(), info.compress_type

        _rewrite_members(path, edit)

    return Described(text, apply)


def _describe(edits: list[Callable[[h5py.File], None]]) -> str:
    parts = []
    for edit in edits:
        cells = edit.__closure__ or ()
        names = edit.__code__.co_freevars
        parts.append(
            ", ".join(
                f"{n}={c.cell_contents!r}" for n, c in zip(names, cells, strict=True) if n not in ("file",)
            )
        )
    return "h5[" + "; ".join(parts) + "]"


def h5_lies(inside_zip: bool) -> st.SearchStrategy[Described]:
    """One to three HDF5 edits, of the file itself or of a ``.keras`` archive's ``model.weights.h5``."""
    make = _on_keras_h5 if inside_zip else _on_h5
    return st.builds(
        lambda edits: make(edits, _describe(edits)), st.lists(h5_edits(), min_size=1, max_size=3)
    )


def _keras_config(config: Any) -> Described:
    def apply(path: Path) -> None:
        text = json.dumps(config).encode()
        _rewrite_members(
            path, lambda name, data, info: (text if name == "config.json" else data, info.compress_type)
        )

    return Described(f"config({config!r})", apply)


def keras_config_lies() -> st.SearchStrategy[Described]:
    """``config.json`` as any JSON, or a model whose layer configs lie (groups, names, nesting)."""
    configs = st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["dense", "dense_1"]), JSON), "groups": JSON}
    )
    layers = st.lists(
        st.fixed_dictionaries({"class_name": st.just("Conv2D"), "config": st.one_of(configs, JSON)}),
        max_size=3,
    )
    models = st.fixed_dictionaries(
        {
            "class_name": st.just("Sequential"),
            "config": st.one_of(st.fixed_dictionaries({"layers": st.one_of(layers, JSON)}), JSON),
        }
    )
    return st.builds(_keras_config, st.one_of(models, JSON))


# --- per format --------------------------------------------------------------------------------


def _storage_lie(member: int, keep: int) -> Described:
    def apply(path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            storages = [name for name in archive.namelist() if "/data/" in name and not name.endswith(".pkl")]
        chosen = storages[member % len(storages)] if storages else None
        _rewrite_members(
            path, lambda name, data, info: (data[:keep] if name == chosen else data, info.compress_type)
        )

    return Described(f"torch_storage(member={member}, keep={keep})", apply)


def mutations(fmt: str) -> st.SearchStrategy[Described]:
    """Every mutation that applies to files of ``fmt`` (a key of ``fuzz_files.MAKERS``)."""
    common = [byte_damage()]
    specific: dict[str, list[st.SearchStrategy[Described]]] = {
        "safetensors": [safetensors_lies()],
        "sharded": [safetensors_lies(), index_lies()],
        "torch": [zip_size_lies(), st.builds(_storage_lie, st.integers(0, 7), st.integers(0, 64))],
        "npz": [npy_lies(), zip_size_lies()],
        "npz_compressed": [npy_lies(), zip_size_lies()],
        "keras": [h5_lies(inside_zip=True), keras_config_lies(), zip_size_lies(),
                  st.sampled_from([_compress_member("model.weights.h5", zipfile.ZIP_DEFLATED)])],
        "weights_h5": [h5_lies(inside_zip=False)],
        "run": [h5_lies(inside_zip=False)],
    }  # fmt: skip
    return st.one_of(*common, *specific[fmt])
