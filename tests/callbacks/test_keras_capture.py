"""capture/keras.py: which Keras layers are analyzed, under which names, in which layout.

The layout is checked by what the matrices do, not by how they were made: a copied Dense or
attention matrix ``W`` must give the layer's output as ``x @ W.T + b``, and a copied conv kernel
must give the layer's output through torch's ``conv1d`` / ``conv2d``.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras_tiny import D_MODEL, HEAD_DIM, HEADS, SEQ, VOCAB, transformer_model  # noqa: E402

from spectral_callbacks.capture.keras import analyzable_layers, copy_weights, layer_names  # noqa: E402

EXPECTED = {  # name: (kind, torch-layout shape, layer class)
    "emb": ("embedding", (VOCAB, D_MODEL), "Embedding"),
    "mha.query": ("linear", (HEADS * HEAD_DIM, D_MODEL), "MultiHeadAttention"),
    "mha.key": ("linear", (HEADS * HEAD_DIM, D_MODEL), "MultiHeadAttention"),
    "mha.value": ("linear", (HEADS * HEAD_DIM, D_MODEL), "MultiHeadAttention"),
    "mha.output": ("linear", (D_MODEL, HEADS * HEAD_DIM), "MultiHeadAttention"),
    "block/proj": ("linear", (D_MODEL, D_MODEL), "Dense"),
    "conv1d": ("conv1d", (12, D_MODEL, 3), "Conv1D"),
    "shared": ("linear", (12, 12), "Dense"),
    "head/fc": ("linear", (10, (SEQ - 2) * 12), "Dense"),
    "head/out": ("linear", (4, 10), "Dense"),
}


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return transformer_model()


def test_names_kinds_and_shapes_in_model_order(model: keras.Model) -> None:
    weights = analyzable_layers(model)
    assert [w.name for w in weights] == list(EXPECTED)
    for weight in weights:
        kind, shape, layer_class = EXPECTED[weight.name]
        assert (weight.kind, weight.shape, weight.layer_class.__name__) == (kind, shape, layer_class)
    copies = copy_weights(weights)
    assert {name: array.shape for name, array in copies.items()} == {n: e[1] for n, e in EXPECTED.items()}
    assert all(array.dtype == np.float32 and array.flags.c_contiguous for array in copies.values())


def test_filters_by_name_regex_and_class(model: keras.Model) -> None:
    chosen = analyzable_layers(model, layers=[r"mha\..*", keras.layers.Conv1D], exclude="mha.output")
    assert [w.name for w in chosen] == ["mha.query", "mha.key", "mha.value", "conv1d"]
    chosen = analyzable_layers(model, layers=keras.layers.MultiHeadAttention)
    assert len(chosen) == 4
    assert [w.name for w in analyzable_layers(model, exclude=r"head/.*|mha.*")] == [
        "emb", "block/proj", "conv1d", "shared",
    ]  # fmt: skip


def test_dense_and_attention_matrices_act_as_x_times_w_transposed(model: keras.Model) -> None:
    copies = copy_weights(analyzable_layers(model))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, SEQ, D_MODEL)).astype("float32")
    mha = model.get_layer("mha")
    for part in ("query", "key", "value"):
        dense = getattr(mha, f"{part}_dense")
        output = keras.ops.convert_to_numpy(dense(x)).reshape(2, SEQ, HEADS * HEAD_DIM)
        bias = dense.get_weights()[1].reshape(-1)
        np.testing.assert_allclose(output, x @ copies[f"mha.{part}"].T + bias, rtol=1e-5, atol=1e-5)
    heads = rng.normal(size=(2, SEQ, HEADS, HEAD_DIM)).astype("float32")
    output = keras.ops.convert_to_numpy(mha.output_dense(heads))
    expected = heads.reshape(2, SEQ, -1) @ copies["mha.output"].T + mha.output_dense.get_weights()[1]
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    proj = model.get_layer("block").proj
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(proj(x)),
        x @ copies["block/proj"].T + proj.get_weights()[1],
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_array_equal(copies["emb"], model.get_layer("emb").get_weights()[0])


def test_conv_kernels_are_torchs_layout() -> None:
    torch = pytest.importorskip("torch")
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    conv2d = keras.layers.Conv2D(5, (3, 2), name="c2")
    conv1d = keras.layers.Conv1D(4, 3, name="c1")
    images = rng.normal(size=(2, 7, 6, 3)).astype("float32")  # NHWC
    series = rng.normal(size=(2, 9, 3)).astype("float32")  # NWC
    out2d = keras.ops.convert_to_numpy(conv2d(images))
    out1d = keras.ops.convert_to_numpy(conv1d(series))
    holder = keras.Sequential([keras.Input((7, 6, 3)), conv2d])
    (w2d,) = copy_weights(analyzable_layers(holder)).values()
    holder = keras.Sequential([keras.Input((9, 3)), conv1d])
    (w1d,) = copy_weights(analyzable_layers(holder)).values()
    assert w2d.shape == (5, 3, 3, 2) and w1d.shape == (4, 3, 3)
    functional = torch.nn.functional
    expected2d = functional.conv2d(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(w2d))
    expected1d = functional.conv1d(torch.from_numpy(series).permute(0, 2, 1), torch.from_numpy(w1d))
    bias2d, bias1d = conv2d.get_weights()[1], conv1d.get_weights()[1]
    np.testing.assert_allclose(out2d, expected2d.permute(0, 2, 3, 1).numpy() + bias2d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out1d, expected1d.permute(0, 2, 1).numpy() + bias1d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("layer", "attribute"),
    [(keras.layers.Dense(8, name="w"), "kernel"), (keras.layers.Embedding(9, 4, name="w"), "embeddings")],
)
def test_copies_are_detached_from_the_variables(layer: keras.layers.Layer, attribute: str) -> None:
    model = keras.Sequential(
        [keras.Input((4,), dtype="float32" if attribute == "kernel" else "int32"), layer]
    )
    (copy,) = copy_weights(analyzable_layers(model)).values()
    before = copy.copy()
    variable = getattr(layer, attribute)
    variable.assign(variable + 1.0)
    np.testing.assert_array_equal(copy, before)


def test_unbuilt_layers_are_left_out_and_listed() -> None:
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(4, name="fc")

        def call(self, x):
            return self.fc(x)

    net = Net()
    assert analyzable_layers(net) == []
    assert layer_names(net) == ["fc (Dense)"]
    net(np.ones((1, 3), "float32"))
    assert [w.name for w in analyzable_layers(net)] == ["fc"]


def test_duplicate_names_are_an_error() -> None:
    class Twin(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.a = keras.layers.Dense(4, name="proj")
            self.b = keras.layers.Dense(4, name="proj")

        def call(self, x):
            return self.b(self.a(x))

    model = keras.Sequential([keras.Input((4,)), Twin(name="twin")])
    with pytest.raises(ValueError, match=r"unique names.*Received: duplicate layer names \['twin/proj'\]"):
        analyzable_layers(model)
