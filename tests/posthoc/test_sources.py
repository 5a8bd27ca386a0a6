"""open_source: every format lists the same layers from metadata and loads each tensor alone."""

from __future__ import annotations

import argparse
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from posthoc_models import layer_name, natural_order

from spectral_callbacks.posthoc import SourceError, open_source

STATE_DICT_FORMATS = ["safetensors", "sharded", "npz", "pt", "ckpt"]


def files_or_skip(model_files: dict[str, Path], fmt: str) -> Path:
    if fmt not in model_files:
        pytest.skip(f"{fmt} needs torch")
    return model_files[fmt]


@pytest.mark.parametrize("fmt", STATE_DICT_FORMATS)
def test_state_dict_formats_list_and_load_every_parameter(model_files, state, fmt: str) -> None:
    source = open_source(files_or_skip(model_files, fmt))
    by_name = {ref.name: ref for ref in source.parameters}
    assert set(by_name) == {layer_name(key) for key in state}
    for key, array in state.items():
        ref = by_name[layer_name(key)]
        assert ref.key == key
        assert ref.shape == array.shape
        np.testing.assert_array_equal(ref.load(), array)
    # weights are layers; 1-D parameters are listed too (skipped later as having no matrix view)
    assert all(ref.problem is None for ref in source.parameters)
    expected = ["safetensors"] * 2 + ["npz"] + ["torch"] * 2
    assert source.format == dict(zip(STATE_DICT_FORMATS, expected, strict=True))[fmt]


def test_layer_order(model_files, state) -> None:
    names = [layer_name(key) for key in state]
    # torch and npz keep the state dict's order; safetensors (stored sorted) is in natural order
    assert [ref.name for ref in open_source(model_files["npz"]).parameters] == names
    in_natural_order = [layer_name(key) for key in natural_order(list(state))]
    assert [ref.name for ref in open_source(model_files["sharded"]).parameters] == in_natural_order
    assert in_natural_order[:2] == ["blocks.0.attn.k.bias", "blocks.0.attn.k"]
    assert len(open_source(model_files["sharded"]).files) == 2


def test_only_weights_are_layers_when_a_file_names_them(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file(
        {
            "fc.weight": rng.standard_normal((20, 10)),
            "pos_embed": rng.standard_normal((16, 10)),  # a matrix that is not a layer's weight
            "attn.in_proj_weight": rng.standard_normal((30, 10)),
            "position_ids": np.arange(16).reshape(1, 16),
        },
        str(tmp_path / "model.safetensors"),
    )
    refs = {ref.name: ref for ref in open_source(tmp_path / "model.safetensors").parameters}
    assert refs["fc"].problem is None
    assert refs["attn.in_proj_weight"].problem is None
    assert "not a layer weight" in refs["pos_embed"].problem
    assert "not floating point" in refs["position_ids"].problem
    # without any '*weight' name, every floating-point matrix is a layer
    save_file({"W1": rng.standard_normal((20, 10))}, str(tmp_path / "plain.safetensors"))
    assert open_source(tmp_path / "plain.safetensors").parameters[0].problem is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_safetensors_tensors_are_mapped_not_copied(tmp_path: Path, dtype) -> None:
    """The same values as safetensors' own reader, read-only, in the file's pages."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    arrays = {"a.weight": rng.standard_normal((33, 17)).astype(dtype), "b.weight": np.ones((5, 0), dtype)}
    arrays["c.weight"] = rng.standard_normal((3, 4, 2, 2)).astype(dtype)
    path = tmp_path / "model.safetensors"
    save_file(arrays, str(path))
    refs = {ref.key: ref for ref in open_source(path).parameters}
    with safe_open(str(path), framework="numpy") as handle:
        for key in arrays:
            loaded = refs[key].load()
            expected = handle.get_tensor(key)
            assert loaded.dtype == expected.dtype and type(loaded) is np.ndarray
            np.testing.assert_array_equal(loaded, expected)
            assert not loaded.flags.writeable or loaded.size == 0
    assert isinstance(refs["a.weight"].load().base, np.memmap)


def test_bfloat16_safetensors_widen_exactly(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    tensor = torch.randn(24, 12).to(torch.bfloat16)
    save_file({"fc.weight": tensor}, str(tmp_path / "half.safetensors"))
    (ref,) = open_source(tmp_path / "half.safetensors").parameters
    assert ref.dtype == "BF16"
    np.testing.assert_array_equal(ref.load(), tensor.float().numpy())


def test_keras_file_kernels_in_torch_layout(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(12, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, name="fc")(x)
    outputs = keras.Sequential([keras.layers.Dense(12, name="inner")], name="head")(x)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")
    for path in (tmp_path / "model.keras", tmp_path / "model.weights.h5"):
        refs = {ref.name: ref for ref in open_source(path).parameters}
        assert {name: ref.kind for name, ref in refs.items()} == {
            "conv": "conv2d",
            "fc": "linear",
            "head/inner": "linear",
        }
        np.testing.assert_array_equal(refs["fc"].load(), model.get_layer("fc").get_weights()[0].T)
        conv = model.get_layer("conv").get_weights()[0]  # (kh, kw, in, out)
        np.testing.assert_array_equal(refs["conv"].load(), conv.transpose(3, 2, 0, 1))
        assert refs["conv"].shape == (12, 3, 3, 3)


def test_keras_attention_projections_are_matrices(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    inputs = keras.Input((5, 16))
    outputs = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(inputs, inputs)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "mha.keras")
    refs = {ref.name: ref for ref in open_source(tmp_path / "mha.keras").parameters}
    assert set(refs) == {"mha/query", "mha/key", "mha/value", "mha/attention_output"}
    kernels = {w.path: np.asarray(w.numpy()) for w in model.weights if w.ndim == 3}
    np.testing.assert_array_equal(refs["mha/query"].load(), kernels["mha/query/kernel"].reshape(16, 16).T)
    np.testing.assert_array_equal(
        refs["mha/attention_output"].load(), kernels["mha/attention_output/kernel"].reshape(16, 16).T
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.safetensors", None, "truncated or corrupt"),
        ("model.npz", b"PK\x03\x04 not really a zip", "truncated or corrupt"),
        ("model.onnx", b"\x08\x07", "unknown format '.onnx'"),
        ("model.h5", b"not hdf5", "legacy Keras .h5 models are not supported"),
        ("model.keras", b"not a zip", "not a readable Keras weights file"),
    ],
)
def test_bad_files_are_refused_with_the_reason(model_files, tmp_path, name, content, message) -> None:
    path = tmp_path / name
    if content is None:  # the good file cut in half
        data = model_files["safetensors"].read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        open_source(path)


def test_missing_paths_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        open_source(tmp_path / "absent.safetensors")
    with pytest.raises(SourceError, match=r"without \.safetensors or \.bin"):
        open_source(tmp_path)


def test_sharded_index_naming_a_missing_shard(model_files, tmp_path: Path) -> None:
    shards = tmp_path / "sharded"
    shutil.copytree(model_files["sharded"], shards)
    (shards / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(SourceError, match=r"missing: model-00002-of-00002\.safetensors"):
        open_source(shards)
    index = json.loads((shards / "model.safetensors.index.json").read_text())
    (shards / "model.safetensors.index.json").unlink()  # without the index, the shards present
    assert len(open_source(shards).parameters) == sum(
        shard == "model-00001-of-00002.safetensors" for shard in index["weight_map"].values()
    )


@pytest.mark.parametrize(
    "shard", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.safetensors", "..", 7]
)
def test_a_sharded_index_naming_files_outside_its_directory_is_refused(
    model_files, tmp_path: Path, shard: object
) -> None:
    shards = tmp_path / "sharded"
    shutil.copytree(model_files["sharded"], shards)
    index_path = shards / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(SourceError, match="names shards outside"):
        open_source(shards)


def test_a_sharded_index_naming_a_link_that_leads_out_is_refused(model_files, tmp_path: Path) -> None:
    shards = tmp_path / "sharded"
    shutil.copytree(model_files["sharded"], shards)
    outside = tmp_path / "outside.safetensors"
    shutil.move(shards / "model-00002-of-00002.safetensors", outside)
    (shards / "model-00002-of-00002.safetensors").symlink_to(outside)
    with pytest.raises(SourceError, match="names shards outside"):
        open_source(shards)


def test_a_keras_file_whose_weights_would_inflate_is_refused_without_reading_them(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("metadata.json", "{}")
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(256):  # 256 MiB of zeros, a few hundred kB on disk
                member.write(block)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(SourceError, match="compressed; Keras stores it uncompressed"):
        open_source(bomb).parameters[0].load()


def test_a_keras_file_whose_config_would_inflate_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "config_bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * (65 << 20))
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(SourceError, match=r"config\.json inflates"):
        assert open_source(bomb).parameters


def test_pickled_checkpoint_is_refused_unless_allowed(model_files, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tensors = torch.load(files_or_skip(model_files, "pt"))
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": tensors, "hyper_parameters": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(SourceError, match=r"refused to load.*Namespace.*--allow-pickle") as error:
        open_source(path)
    assert "weights_only=False" in str(error.value)
    source = open_source(path, allow_pickle=True)
    assert {ref.name for ref in source.parameters} == {layer_name(key) for key in tensors}
    assert all(ref.allow_pickle for ref in source.parameters)
    fc1 = next(ref for ref in source.parameters if ref.name == "blocks.0.mlp.fc1")
    np.testing.assert_array_equal(fc1.load(), tensors["blocks.0.mlp.fc1.weight"].numpy())


def test_truncated_torch_checkpoint(model_files, tmp_path: Path) -> None:
    data = files_or_skip(model_files, "pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceError, match="not a readable torch checkpoint"):
        open_source(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint at all")  # not even a pickle: not "refused"
    with pytest.raises(SourceError, match=r"not a readable torch checkpoint \(truncated or corrupt\?\)"):
        open_source(tmp_path / "text.pt")


def test_torch_state_dict_tied_weights_listed_once_and_wrapper_prefix_dropped(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    embedding = torch.nn.Embedding(40, 16)
    head = torch.nn.Linear(16, 40, bias=False)
    head.weight = embedding.weight  # tied, as a language model's output layer and token embedding
    model = torch.nn.ModuleDict({"embed": embedding, "head": head})
    wrapped = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save(wrapped, tmp_path / "tied.pt")

    source = open_source(tmp_path / "tied.pt")
    refs = {ref.name: ref for ref in source.parameters}
    assert list(refs) == ["embed", "head"]  # the DataParallel wrapper's "module." is gone
    assert refs["embed"].problem is None
    assert refs["head"].problem == (
        "the same tensor as 'module.embed.weight' (tied weights), analyzed under that name"
    )
