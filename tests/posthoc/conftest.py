"""Fixtures: the small transformer-like state dict, saved in every format the analysis reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from posthoc_models import transformer_state


@pytest.fixture(scope="session")
def state() -> dict[str, np.ndarray]:
    return transformer_state()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory, state: dict[str, np.ndarray]) -> dict[str, Path]:
    """The state dict as .safetensors, a sharded directory, .npz, and (with torch) .pt and .ckpt."""
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("models")
    files = {"safetensors": root / "model.safetensors", "npz": root / "model.npz"}
    save_file(state, str(files["safetensors"]))
    np.savez(files["npz"], **state)
    shards = root / "sharded"
    shards.mkdir()
    keys = list(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for shard, shard_keys in halves.items():
        save_file({key: state[key] for key in shard_keys}, str(shards / shard))
    weight_map = {key: shard for shard, shard_keys in halves.items() for key in shard_keys}
    index = {"metadata": {}, "weight_map": weight_map}
    (shards / "model.safetensors.index.json").write_text(json.dumps(index))
    files["sharded"] = shards
    try:
        import torch
    except ImportError:
        return files
    tensors = {key: torch.from_numpy(array) for key, array in state.items()}
    files["pt"] = root / "model.pt"
    torch.save(tensors, files["pt"])
    files["ckpt"] = root / "model.ckpt"  # a Lightning checkpoint: the state dict under "state_dict"
    torch.save({"epoch": 3, "global_step": 120, "state_dict": tensors}, files["ckpt"])
    return files
