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

from spectral_callbacks.capture.keras import (  # noqa: E402
    analyzable_layers,
    copy_weights,
    einsum_matrix_axes,
    layer_names,
    skipped_weights,
)

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


GROUPED_LAYERS = [  # (layer, input shape without batch, expected names and kinds)
    (lambda: keras.layers.Conv2D(6, (3, 2), groups=3, name="g"), (7, 6, 9), {"g": "grouped_conv2d"}),
    (lambda: keras.layers.Conv1D(4, 3, groups=4, name="g"), (9, 4), {"g": "depthwise_conv1d"}),
    (lambda: keras.layers.Conv1D(6, 3, groups=2, name="g"), (9, 4), {"g": "grouped_conv1d"}),
    (lambda: keras.layers.DepthwiseConv2D((3, 2), depth_multiplier=2, name="d"), (7, 6, 3),
     {"d": "depthwise_conv2d"}),
    (lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=3, name="d"), (9, 4),
     {"d": "depthwise_conv1d"}),
    (lambda: keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, name="s"), (7, 6, 3),
     {"s.depthwise": "depthwise_conv2d", "s.pointwise": "conv2d"}),
    (lambda: keras.layers.SeparableConv1D(5, 3, depth_multiplier=2, name="s"), (9, 4),
     {"s.depthwise": "depthwise_conv1d", "s.pointwise": "conv1d"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make_layer", "input_shape", "kinds"),
    GROUPED_LAYERS,
    ids=["conv2d-groups", "conv1d-depthwise", "conv1d-groups", "depthwise2d", "depthwise1d", "separable2d",
         "separable1d"],
)  # fmt: skip
def test_grouped_kernels_act_as_torchs_grouped_convs(make_layer, input_shape, kinds) -> None:
    """A ``(groups, out / groups, in / groups, *kernel)`` copy, reshaped to torch's
    ``(out, in / groups, *kernel)`` and run through torch's conv with ``groups``, gives the Keras
    layer's output: the groups and their output channels are torch's."""
    torch = pytest.importorskip("torch")
    keras.utils.set_random_seed(2)
    layer = make_layer()
    model = keras.Sequential([keras.Input(input_shape), layer])
    x = np.random.default_rng(2).normal(size=(2, *input_shape)).astype("float32")
    weights = analyzable_layers(model)
    assert {w.name: w.kind for w in weights} == kinds
    copies = copy_weights(weights)
    bias = layer.bias.numpy() if hasattr(layer.bias, "numpy") else keras.ops.convert_to_numpy(layer.bias)
    conv = torch.nn.functional.conv2d if len(input_shape) == 3 else torch.nn.functional.conv1d
    channels_first = torch.from_numpy(np.moveaxis(x, -1, 1))
    for name, kind in kinds.items():
        weight = copies[name]
        assert weight.shape == next(w.shape for w in weights if w.name == name)
        if kind.startswith(("grouped_", "depthwise_")):
            groups, out_per_group = weight.shape[:2]
            kernel = torch.from_numpy(weight.reshape(groups * out_per_group, *weight.shape[2:]))
            channels_first = conv(channels_first, kernel, groups=groups)
        else:
            channels_first = conv(channels_first, torch.from_numpy(weight))
    expected = np.moveaxis(channels_first.numpy(), 1, -1) + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-5, atol=1e-5)


EINSUM_EQUATIONS = [  # (equation, output shape, input shape without batch)
    ("ab,bc->ac", (6,), (5,)),
    ("abc,cd->abd", (3, 6), (3, 5)),
    ("abc,cde->abde", (3, 2, 4), (3, 5)),
    ("abcd,cde->abe", (3, 6), (3, 2, 4)),
    ("abcd,dce->abe", (3, 6), (3, 2, 4)),  # contracted in another order than the input's
    ("abc,dc->abd", (3, 6), (3, 5)),  # kernel stored (out, in)
    ("abc,ced->abde", (3, 2, 4), (3, 5)),
]


def _feature_map(layer: keras.layers.Layer, input_shape: tuple[int, ...]) -> np.ndarray:
    """The layer's linear map from its per-position input features to its output, probed with
    basis vectors: ``(outputs, inputs)`` of the features it mixes (a bias-free layer)."""
    sequence, *features = input_shape if len(input_shape) > 1 else (1, *input_shape)
    size = int(np.prod(features))
    basis = np.eye(size, dtype="float32").reshape(size, *features)
    if len(input_shape) > 1:  # the same basis vector at every position; read position 0
        probe = np.repeat(basis[:, None], sequence, axis=1)
        outputs = keras.ops.convert_to_numpy(layer(probe))[:, 0]
    else:
        outputs = keras.ops.convert_to_numpy(layer(basis))
    return outputs.reshape(size, -1).T


@pytest.mark.parametrize(("equation", "output_shape", "input_shape"), EINSUM_EQUATIONS)
def test_einsum_dense_is_the_linear_map_it_applies(equation, output_shape, input_shape) -> None:
    """The ``(out, in)`` matrix has the singular values of the map the layer applies (measured
    with basis vectors), and is that map when the kernel's axes are in the input's order."""
    keras.utils.set_random_seed(3)
    layer = keras.layers.EinsumDense(equation, output_shape, name="e")
    model = keras.Sequential([keras.Input(input_shape), layer])
    (weight,) = analyzable_layers(model)
    assert (weight.name, weight.kind) == ("e", "linear")
    matrix = copy_weights([weight])["e"]
    applied = _feature_map(layer, input_shape)
    assert matrix.shape == applied.shape
    np.testing.assert_allclose(
        np.linalg.svd(matrix, compute_uv=False), np.linalg.svd(applied, compute_uv=False), rtol=1e-5
    )
    if equation not in ("abcd,dce->abe", "abc,ced->abde"):  # rows or columns in the kernel's order
        np.testing.assert_allclose(matrix, applied, rtol=1e-6, atol=1e-7)


def test_einsum_matrix_axes_and_what_has_no_matrix() -> None:
    assert einsum_matrix_axes("abc,cde->abde", 3) == ((1, 2), (0,))
    assert einsum_matrix_axes("...b, bc -> ...c", 2) == ((1,), (0,))
    with pytest.raises(ValueError, match=r"kernel axes 'b' are in both input and output"):
        einsum_matrix_axes("abc,bcd->abd", 3)
    with pytest.raises(ValueError, match=r"kernel term 'cd' does not name the 3 axes"):
        einsum_matrix_axes("abc,cd->abd", 3)
    with pytest.raises(ValueError, match=r"Invalid EinsumDense equation='ab->b'"):
        einsum_matrix_axes("ab->b", 2)


class _Odd(keras.layers.Dense):
    """A Dense subclass whose kernel is 3-D: a layout no rule knows."""

    def build(self, input_shape):
        self._kernel = self.add_weight(shape=(input_shape[-1], self.units, 2), name="kernel")
        self.bias = None
        self.built = True

    def call(self, x):
        return keras.ops.einsum("bi,iok->bo", x, self.kernel)


class _Holder(keras.layers.Layer):
    """A custom layer owning a matrix of its own and a LayerNormalization."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization(name="norm")

    def build(self, input_shape):
        self.table = self.add_weight(shape=(input_shape[-1], 3), name="table")

    def call(self, x):
        return self.norm(x) @ self.table


def _everything_model() -> keras.Model:
    keras.utils.set_random_seed(4)
    layers = keras.layers
    images = keras.Input((6, 6, 3), name="images")
    x = layers.Conv2D(4, 3, name="conv")(images)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2DTranspose(4, 3, name="deconv")(x)
    x = layers.Reshape((6, 6, 4, 1))(x)
    x = layers.Conv3D(2, 3, name="conv3d")(x)
    x = layers.Reshape((16, 4))(x)
    x = layers.EinsumDense("abc,bcd->abd", (16, 8), name="per_position")(x)
    x = layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = layers.LSTM(5, name="lstm")(x)
    lora = layers.Dense(6, name="lora")
    quantized = layers.Dense(6, name="quantized")
    x = _Odd(6, name="odd")(quantized(lora(x)))
    out = _Holder(name="holder")(layers.Dense(6, name="excluded")(x))
    model = keras.Model(images, out)
    lora.enable_lora(2)
    quantized.quantize("int8")
    return model


def test_skipped_weights_lists_every_weight_not_analyzed_with_its_reason() -> None:
    model = _everything_model()
    weights = analyzable_layers(model)
    assert [w.name for w in weights] == [
        "conv", "mha.query", "mha.key", "mha.value", "mha.output", "lora", "excluded",
    ]  # fmt: skip
    skipped = skipped_weights(model)
    read = {id(v) for w in weights for v in w.owner.weights if v.name in (w.attribute, *_LORA)}
    assert len(read) == 7 + 2  # the kernels and the two LoRA factors
    assert len(skipped) + len(read) == len(model.weights)  # every weight once
    assert skipped["conv.bias"] == "1-D weight (Conv2D.bias) has no matrix view"
    assert (
        skipped["bn.moving_variance"] == "1-D weight (BatchNormalization.moving_variance) has no matrix view"
    )
    assert skipped["deconv.kernel"] == "Conv2DTranspose (transposed convolution) is not analyzed"
    assert skipped["conv3d.kernel"] == "Conv3D is not analyzed"
    assert skipped["per_position.kernel"].startswith(
        "EinsumDense equation='abc,bcd->abd': kernel axes 'b' are in both input and output"
    )
    assert skipped["mha.query.bias"] == "bias (EinsumDense.bias, shape (2, 4)) has no matrix view"
    assert skipped["mha.output.bias"] == "1-D weight (EinsumDense.bias) has no matrix view"
    assert skipped["lstm/lstm_cell.recurrent_kernel"] == (
        "LSTMCell.recurrent_kernel with shape (5, 20) has no known matrix layout"
    )
    assert skipped["quantized.kernel"] == "Dense is quantized (int8); not analyzed"
    assert skipped["quantized.kernel_scale"] == "1-D weight (Dense.kernel_scale) has no matrix view"
    assert skipped["odd.kernel"] == "_Odd.kernel with shape (6, 6, 2) has no known matrix layout"
    assert skipped["holder.table"] == "_Holder.table with shape (6, 3) has no known matrix layout"
    assert skipped["holder/norm.gamma"] == "1-D weight (LayerNormalization.gamma) has no matrix view"
    assert not any(key.startswith(("lora.lora", "excluded.kernel", "conv.kernel")) for key in skipped)
    # a layer left out by a filter still has its matrix: not listed as skipped
    assert [w.name for w in analyzable_layers(model, exclude="excluded")][-1] == "lora"


_LORA = ("lora_kernel_a", "lora_kernel_b")


def test_a_lora_dense_is_analyzed_as_the_kernel_it_applies() -> None:
    keras.utils.set_random_seed(5)
    layer = keras.layers.Dense(6, use_bias=False, name="fc")
    model = keras.Sequential([keras.Input((5,)), layer])
    layer.enable_lora(2)
    layer.lora_kernel_b.assign(np.ones((2, 6), "float32"))  # zeros at first: make the update count
    (matrix,) = copy_weights(analyzable_layers(model)).values()
    x = np.random.default_rng(5).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), x @ matrix.T, rtol=1e-5, atol=1e-6)
    assert skipped_weights(model) == {}
