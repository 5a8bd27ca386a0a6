"""One hostile file per reader fix, made by hand: each failed the contract before its fix.

The contract (``fuzz_harness.check_contract``): exit code 0 or 1, one line on stderr naming the
file and the problem, no traceback, memory bounded whatever the file claims.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from fuzz_files import (
    keras_weights_bytes,
    make_keras,
    make_npz,
    make_npz_compressed,
    make_run,
    make_safetensors,
    make_weights_h5,
)
from fuzz_harness import analyze, check_contract
from fuzz_mutations import _npy_edit, _overwrite, _patch_sizes, _safetensors_edit


def failure(path: Path) -> str:
    """The one line a damaged file ends in, after checking the whole contract."""
    outcome = analyze(path)
    check_contract(path, outcome)
    assert outcome.code == 1
    return outcome.err.strip()


def test_an_npy_header_claiming_gigabytes_is_refused_before_numpy_allocates_them(tmp_path: Path) -> None:
    path = make_npz(tmp_path)
    _npy_edit(0, "<f4", False, (8, 2**28), False)(path)  # 8 GiB claimed over no data
    line = failure(path)
    assert "claims shape (8, 268435456) of float32 (8,589,934,592 bytes)" in line


def test_an_error_quoting_a_damaged_header_stays_on_one_line(tmp_path: Path) -> None:
    path = make_safetensors(tmp_path)
    _safetensors_edit("dtype", "\n\x1e", 0, 0)(path)  # the library quotes it in its error
    assert "not a readable safetensors file" in failure(path)


def test_a_damaged_name_index_fails_the_file_once_not_every_layer(tmp_path: Path) -> None:
    path = make_weights_h5(tmp_path)
    _overwrite(721, b"\x80", 0)(path)  # listing still walks the groups; opening by path fails
    assert "not a readable Keras weights file" in failure(path)


def test_a_damaged_deflate_stream_is_one_line(tmp_path: Path) -> None:
    path = make_npz_compressed(tmp_path)
    data = bytearray(path.read_bytes())
    data[72] = 0  # inside the first member's deflate stream
    path.write_bytes(bytes(data))
    assert "not a readable .npz archive" in failure(path)


def test_a_member_declaring_gigabytes_past_the_end_is_refused(tmp_path: Path) -> None:
    path = make_keras(tmp_path)
    names = zipfile.ZipFile(path).namelist()
    # zipfile reads a member's declared compressed size in one allocation
    path.write_bytes(_patch_sizes(path.read_bytes(), names.index("config.json"), 2**31, None, "central"))
    assert "past the end" in failure(path)


def weights_with(tmp_path: Path, edit) -> Path:
    """A ``.weights.h5`` file edited by ``edit(file)``."""
    buffer = io.BytesIO(keras_weights_bytes())
    with h5py.File(buffer, "r+") as file:
        edit(file)
    path = tmp_path / "model.weights.h5"
    path.write_bytes(buffer.getvalue())
    return path


def test_a_keras_kernel_claiming_more_than_the_file_stores_is_refused(tmp_path: Path) -> None:
    def forge(file: h5py.File) -> None:
        del file["layers/dense/vars/0"]
        file["layers/dense/vars"].create_dataset("0", shape=(2**14, 2**14), dtype="f4", chunks=True)

    line = failure(weights_with(tmp_path, forge))  # read whole, 1 GiB of fill values
    assert "'layers/dense/vars/0' claims shape (16384, 16384) of float32" in line


def test_a_keras_kernel_of_the_wrong_rank_is_a_skipped_row(tmp_path: Path) -> None:
    def flatten(file: h5py.File) -> None:
        del file["layers/dense/vars/0"]
        file["layers/dense/vars/0"] = np.ones(7, dtype=np.float32)

    path = weights_with(tmp_path, flatten)
    outcome = analyze(path)
    check_contract(path, outcome)
    assert outcome.code == 0 and "1 matrices analyzed" in outcome.out
    assert "not a linear kernel" in outcome.out


def test_damaged_keras_metadata_is_one_line(tmp_path: Path) -> None:
    path = weights_with(tmp_path, lambda file: None)
    data = path.read_bytes()
    at = data.find(b"TREE")
    path.write_bytes(data[:at] + b"XXXX" + data[at + 4 :])
    assert "not a readable Keras weights file" in failure(path)


@pytest.mark.parametrize("config", [None, [], "model", 3])
def test_a_keras_config_that_is_not_an_object_is_one_line(tmp_path: Path, config: object) -> None:
    path = make_keras(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert "config.json holds" in failure(path)


@pytest.mark.timeout(60)
def test_a_run_file_with_damaged_metadata_fails_at_once(tmp_path: Path) -> None:
    """A SWMR open retries a failed metadata checksum for minutes; the run file is checked with
    a plain open first."""
    path = make_run(tmp_path)
    data = bytearray(path.read_bytes())
    data[data.find(b"OHDR", 100) + 6] ^= 0xFF  # an object header past the root group's
    path.write_bytes(bytes(data))
    started = time.monotonic()
    line = failure(path)
    assert time.monotonic() - started < 10
    assert "not a readable run file" in line


def test_a_run_dataset_claiming_more_than_stored_is_refused_before_the_writer_reads_it(
    tmp_path: Path,
) -> None:
    path = make_run(tmp_path)
    with h5py.File(path, "r+", libver="latest") as file:
        weights = file["parameters"][next(iter(file["parameters"]))]["weights"]
        weights.resize((2**12, *weights.shape[1:]))  # ~7 MB over two stored rows
    assert "a damaged or forged run file" in failure(path)


def test_a_torch_record_declaring_gigabytes_is_refused_before_torch_allocates_them(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from fuzz_files import make_torch

    path = make_torch(tmp_path)
    path.write_bytes(_patch_sizes(path.read_bytes(), 0, 0, 2**32 - 1, "central"))  # 4 GiB, before
    assert "not a readable torch checkpoint" in failure(path)


@pytest.mark.parametrize("flags", [b"\x01\x00", b"\x20\x00", b"\x40\x00"])  # encrypted, patched, strong
def test_an_archive_member_with_unsupported_flags_is_one_line(tmp_path: Path, flags: bytes) -> None:
    path = make_npz(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02") + 8  # the first member's flags in the central directory
    data[at : at + 2] = flags
    path.write_bytes(bytes(data))
    assert "not a readable .npz archive" in failure(path)
