"""Small valid files of every format ``spectral-callbacks analyze`` reads, for the fuzz tests to damage.

Each maker writes one file (or directory) under ``root`` and returns its path; the tensors are a
few kilobytes, so the analysis of the valid file takes milliseconds and each damaged copy is cheap.
Keras files are built with h5py and zipfile in the layout Keras 3 saves (``layers/<group>/vars/<i>``
with the layer's name as the ``name`` attribute), which keeps Keras out of the test run.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

# layer name -> shape in the file's own layout; two analyzable matrices and one vector
STATE = {"blocks.0.fc.weight": (16, 12), "blocks.1.fc.weight": (12, 10), "blocks.1.fc.bias": (12,)}


def state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {key: rng.standard_normal(shape).astype(np.float32) for key, shape in STATE.items()}


def make_safetensors(root: Path) -> Path:
    from safetensors.numpy import save_file

    path = root / "model.safetensors"
    save_file(state(), str(path))
    return path


def make_sharded(root: Path) -> Path:
    from safetensors.numpy import save_file

    directory = root / "sharded"
    directory.mkdir()
    tensors = state()
    keys = list(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[:1], "model-00002-of-00002.safetensors": keys[1:]}
    for shard, shard_keys in shards.items():
        save_file({key: tensors[key] for key in shard_keys}, str(directory / shard))
    weight_map = {key: shard for shard, shard_keys in shards.items() for key in shard_keys}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return directory


def make_torch(root: Path) -> Path:
    import torch

    path = root / "model.pt"
    torch.save({key: torch.from_numpy(value) for key, value in state().items()}, path)
    return path


def make_npz(root: Path) -> Path:
    path = root / "model.npz"
    np.savez(path, **state())
    return path


def make_npz_compressed(root: Path) -> Path:
    path = root / "compressed.npz"
    np.savez_compressed(path, **state())
    return path


def keras_weights_bytes() -> bytes:
    """A Keras 3 ``model.weights.h5`` of two Dense layers (kernels ``(in, out)``, then biases)."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        for group, name, (fan_in, fan_out) in (
            ("dense", "dense", (12, 16)),
            ("dense_1", "dense_1", (16, 10)),
        ):
            variables = file.create_group(f"layers/{group}/vars")
            variables.attrs["name"] = name
            variables["0"] = rng.standard_normal((fan_in, fan_out)).astype(np.float32)
            variables["1"] = np.zeros(fan_out, dtype=np.float32)
        file.create_group("optimizer/vars")
    return buffer.getvalue()


def keras_config() -> dict:
    layers = [{"class_name": "Dense", "config": {"name": name, "units": units}} for name, units in
              (("dense", 16), ("dense_1", 10))]  # fmt: skip
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def make_weights_h5(root: Path) -> Path:
    path = root / "model.weights.h5"
    path.write_bytes(keras_weights_bytes())
    return path


def make_keras(root: Path) -> Path:
    path = root / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.writestr("config.json", json.dumps(keras_config()), compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("model.weights.h5", keras_weights_bytes(), compress_type=zipfile.ZIP_STORED)
    return path


def make_run(root: Path) -> Path:
    """A run file with one analyzed snapshot and one left ``captured`` (as a dead worker leaves it),
    written by the project's own writer: ``analyze`` reads its saved weights to catch up."""
    from spectral_callbacks.runfile.store import ParameterSpec, RunWriter

    path = root / "run" / "spectra.h5"
    parameters = (ParameterSpec("fc", "linear", (16, 12)), ParameterSpec("conv", "conv2d", (8, 3, 3, 3)))
    rng = np.random.default_rng(2)
    arrays = {spec.name: rng.standard_normal(spec.shape).astype(np.float32) for spec in parameters}
    writer = RunWriter.open(
        path, run_id="run", parameters=parameters, config_json=json.dumps({"min_evals": 8}),
        framework="test", weights_dtype="float32",
    )  # fmt: skip
    writer.append_weights(arrays)
    writer.set_status(writer.append_index(0, 0, "captured"), "analyzed")
    writer.append_weights(arrays)
    writer.append_index(1, 10, "captured")
    writer.close()
    return path


MAKERS: dict[str, Callable[[Path], Path]] = {
    "safetensors": make_safetensors,
    "sharded": make_sharded,
    "torch": make_torch,
    "npz": make_npz,
    "npz_compressed": make_npz_compressed,
    "keras": make_keras,
    "weights_h5": make_weights_h5,
    "run": make_run,
}
