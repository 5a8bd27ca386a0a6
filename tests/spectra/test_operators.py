"""ConvOperator against torch's conv2d and its autograd, explicit dense matrices and the FFT spectrum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from spectral_callbacks.spectra import PADDING_MODES, ConvOperator, exact_circular_conv_svals

# (C_in, C_out, kernel, input_hw, stride, padding, padding_mode, dilation, groups)
TORCH_CASES = [
    (4, 6, (3, 3), (7, 9), 1, 1, "zeros", 1, 1),
    (4, 6, (3, 3), (7, 9), 1, 1, "circular", 1, 1),
    (4, 6, (3, 3), (7, 9), 2, 1, "zeros", 1, 1),
    (4, 6, (3, 3), (8, 9), (2, 3), 2, "circular", 1, 1),
    (4, 6, (2, 3), (7, 9), 1, "same", "zeros", 1, 1),
    (4, 6, (4, 4), (7, 9), 1, "same", "circular", (2, 1), 1),
    (4, 6, (3, 3), (7, 9), 1, "valid", "zeros", 1, 2),
    (4, 6, (5, 4), (9, 9), 2, (2, 1), "reflect", 1, 2),
    (6, 6, (3, 3), (7, 9), 1, 1, "replicate", 2, 6),
    (4, 6, (1, 1), (7, 9), 2, 0, "zeros", 1, 1),
    (4, 6, (3, 3), (7, 9), 3, 2, "reflect", (1, 2), 1),
    (3, 5, (3, 3), (3, 4), 1, 3, "replicate", 1, 1),
]


def case_id(case: tuple) -> str:
    c_in, c_out, kernel, hw, stride, padding, mode, dilation, groups = case
    return f"{c_in}to{c_out}-k{kernel}-{hw}-s{stride}-p{padding}-{mode}-d{dilation}-g{groups}"


def torch_conv(case: tuple, seed: int):
    torch = pytest.importorskip("torch")
    c_in, c_out, kernel, _, stride, padding, mode, dilation, groups = case
    torch.manual_seed(seed)
    options = dict(stride=stride, padding=padding, padding_mode=mode, dilation=dilation, groups=groups)
    return torch, torch.nn.Conv2d(c_in, c_out, kernel, bias=False, **options).double()


def operator_of(case: tuple, weight: np.ndarray, **options) -> ConvOperator:
    _, _, _, hw, stride, padding, mode, dilation, groups = case
    options.update(stride=stride, padding=padding, padding_mode=mode, dilation=dilation, groups=groups)
    return ConvOperator(weight, input_hw=hw, **options)


def dense_conv_matrix(
    weight: np.ndarray,
    hw: tuple[int, int],
    *,
    stride: int = 1,
    padding: int = 0,
    circular: bool = False,
    dilation: int = 1,
    groups: int = 1,
) -> np.ndarray:
    """The map of a cross-correlation with zero or circular padding, entry by entry (no FFT, no torch)."""
    c_out, c_in_group, kh, kw = weight.shape
    height, width = hw
    out_h = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    dense = np.zeros((c_out, out_h, out_w, c_in_group * groups, height, width))
    per_group = c_out // groups
    for o, y, x, i, j in itertools.product(range(c_out), range(out_h), range(out_w), range(kh), range(kw)):
        r, c = stride * y + dilation * i - padding, stride * x + dilation * j - padding
        if circular:
            r, c = r % height, c % width
        elif not (0 <= r < height and 0 <= c < width):
            continue
        g = o // per_group
        dense[o, y, x, g * c_in_group : (g + 1) * c_in_group, r, c] += weight[o, :, i, j]
    return dense.reshape(c_out * out_h * out_w, -1)


# --- against torch ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_matmat_is_torch_conv2d(case: tuple) -> None:
    torch, conv = torch_conv(case, seed=0)
    c_in, hw = case[0], case[3]
    x = torch.randn(3, c_in, *hw, dtype=torch.float64)
    with torch.no_grad():
        expected = conv(x).numpy()
    op = operator_of(case, conv.weight.detach().numpy())
    assert op.out_shape == expected.shape[1:]
    got = op.matmat(x.numpy().reshape(3, -1).T).T.reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_rmatmat_is_torch_conv2d_backward(case: tuple) -> None:
    """``A^T y`` is the gradient of ``<conv(x), y>`` with respect to ``x`` (torch autograd)."""
    torch, conv = torch_conv(case, seed=1)
    c_in, hw = case[0], case[3]
    x = torch.zeros(2, c_in, *hw, dtype=torch.float64, requires_grad=True)
    output_shape = conv(x).shape
    y = torch.randn(output_shape, dtype=torch.float64)
    (expected,) = torch.autograd.grad((conv(x) * y).sum(), x)
    op = operator_of(case, conv.weight.detach().numpy())
    got = op.rmatmat(y.numpy().reshape(2, -1).T).T.reshape(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_from_torch_reads_the_layer_options() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(6, 4, (3, 2), padding="same", padding_mode="reflect", dilation=2, groups=2)
    x = torch.randn(1, 6, 9, 8)
    op = ConvOperator.from_torch(conv, (9, 8))
    with torch.no_grad():
        expected = (conv(x) - conv.bias[:, None, None]).double().numpy()  # the map has no bias
    np.testing.assert_allclose(op.matvec(x.double().numpy().ravel()), expected.ravel(), atol=1e-6)
    assert op.dtype == np.float64 and op.padding_mode == "reflect" and op.groups == 2


@pytest.mark.parametrize(
    ("layer", "arguments", "match"),
    [
        ("ConvTranspose2d", (4, 4, 3), "transposed convolution"),
        ("Conv1d", (4, 4, 3), "3-D kernel"),
        ("Conv3d", (4, 4, 3), "5-D kernel"),
        ("LazyConv2d", (4, 3), "unmaterialized lazy weight"),
        ("Linear", (4, 4), "not a torch convolution"),
    ],
)
def test_from_torch_refuses_other_layers(layer: str, arguments: tuple, match: str) -> None:
    torch = pytest.importorskip("torch")
    module = getattr(torch.nn, layer)(*arguments)
    with pytest.raises(TypeError, match=match):
        ConvOperator.from_torch(module, (8, 8))


# --- against explicit dense matrices ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "circular"),
    [
        (1, 1, 1, 1, False),
        (2, 1, 1, 1, False),
        (1, 0, 2, 1, False),
        (3, 2, 1, 2, False),
        (1, 1, 1, 1, True),
        (2, 1, 1, 2, True),
    ],
)
def test_operator_is_the_explicit_dense_matrix(stride, padding, dilation, groups, circular) -> None:
    weight = np.random.default_rng(3).standard_normal((4, 6 // groups, 3, 3))
    mode = "circular" if circular else "zeros"
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    op = ConvOperator(weight, input_hw=(5, 6), padding_mode=mode, **options)
    dense = dense_conv_matrix(weight, (5, 6), circular=circular, **options)
    assert op.shape == dense.shape
    np.testing.assert_allclose(op.matmat(np.eye(op.shape[1])), dense, atol=1e-13)
    np.testing.assert_allclose(op.rmatmat(np.eye(op.shape[0])), dense.T, atol=1e-13)
    np.testing.assert_allclose(op.gram("in").matmat(np.eye(op.shape[1])), dense.T @ dense, atol=1e-12)
    np.testing.assert_allclose(op.gram("out").matmat(np.eye(op.shape[0])), dense @ dense.T, atol=1e-12)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("stride", [1, 2])
def test_adjointness(mode: str, stride: int) -> None:
    """``<A x, y> = <x, A^T y>`` for random blocks of vectors."""
    rng = np.random.default_rng(4)
    op = ConvOperator(
        rng.standard_normal((5, 3, 3, 4)), input_hw=(6, 7), stride=stride, padding=(2, 1), padding_mode=mode
    )
    x, y = rng.standard_normal((op.shape[1], 3)), rng.standard_normal((op.shape[0], 3))
    left = np.einsum("ij,ij->j", op.matmat(x), y)
    right = np.einsum("ij,ij->j", x, op.rmatmat(y))
    np.testing.assert_allclose(left, right, rtol=1e-12)


def test_vectors_columns_and_blocks_agree() -> None:
    rng = np.random.default_rng(5)
    op = ConvOperator(rng.standard_normal((3, 2, 3, 3)), input_hw=(4, 5), padding=1)
    block = rng.standard_normal((op.shape[1], 4))
    product = op.matmat(block)
    assert op.matvec(block[:, 0]).shape == (op.shape[0],)
    assert op.matvec(block[:, :1]).shape == (op.shape[0], 1)
    np.testing.assert_allclose(op.matvec(block[:, 2]), product[:, 2], rtol=1e-14)
    np.testing.assert_allclose((op @ block), product, rtol=1e-14)
    np.testing.assert_allclose(op.H.matvec(product[:, 1]), op.rmatvec(product[:, 1]), rtol=1e-14)


def test_float32_agrees_with_float64() -> None:
    rng = np.random.default_rng(6)
    weight = rng.standard_normal((8, 8, 3, 3))
    x = rng.standard_normal((8 * 12 * 12, 2))
    single = ConvOperator(weight, input_hw=(12, 12), padding=1, dtype=np.float32)
    double = ConvOperator(weight, input_hw=(12, 12), padding=1)
    assert single.matmat(x).dtype == np.float32
    np.testing.assert_allclose(single.gram().matmat(x), double.gram().matmat(x), rtol=1e-4, atol=1e-3)


def test_gram_auto_takes_the_smaller_side() -> None:
    weight = np.random.default_rng(7).standard_normal((4, 4, 3, 3))
    strided = ConvOperator(weight, input_hw=(8, 8), stride=2, padding=1)  # 256 -> 64
    assert strided.gram().shape == (64, 64)
    widening = ConvOperator(np.ones((8, 2, 3, 3)), input_hw=(4, 4), padding=1)  # 32 -> 128
    assert widening.gram().shape == (32, 32)
    with pytest.raises(ValueError, match="side"):
        strided.gram("left")


# --- the exact spectrum ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "hw", "dilation", "groups"),
    [
        ((6, 4, 3, 3), (7, 8), 1, 1),
        ((4, 6, 3, 3), (6, 6), 1, 1),
        ((5, 5, 3, 3), (5, 9), 2, 1),
        ((6, 2, 3, 3), (6, 7), 1, 2),
        ((3, 3, 5, 5), (4, 4), 1, 1),  # the kernel wraps around the torus
        ((4, 4, 1, 1), (3, 5), 1, 1),
    ],
)
def test_exact_circular_svals_are_the_dense_singular_values(shape, hw, dilation, groups) -> None:
    weight = np.random.default_rng(8).standard_normal(shape)
    padding = dilation * (shape[2] - 1) // 2  # output on the whole torus
    dense = dense_conv_matrix(weight, hw, padding=padding, circular=True, dilation=dilation, groups=groups)
    expected = np.linalg.svd(dense, compute_uv=False)
    got = exact_circular_conv_svals(weight, hw, dilation=dilation, groups=groups)
    assert got.shape == (hw[0] * hw[1] * min(shape[0], shape[1] * groups),)
    assert np.all(np.diff(got) <= 0)
    np.testing.assert_allclose(got, expected[: got.size], rtol=1e-10, atol=1e-10 * expected[0])


def test_exact_circular_svals_do_not_depend_on_correlation_or_convolution() -> None:
    """Flipping the kernel (convolution instead of torch's cross-correlation) changes the dense
    matrix but not its singular values."""
    weight = np.random.default_rng(9).standard_normal((3, 4, 3, 3))
    flipped = weight[:, :, ::-1, ::-1]
    correlation = dense_conv_matrix(weight, (5, 6), padding=1, circular=True)
    convolution = dense_conv_matrix(flipped, (5, 6), padding=1, circular=True)
    assert not np.allclose(correlation, convolution)
    np.testing.assert_allclose(
        np.linalg.svd(correlation, compute_uv=False), np.linalg.svd(convolution, compute_uv=False), rtol=1e-10
    )
    np.testing.assert_allclose(
        exact_circular_conv_svals(weight, (5, 6)), exact_circular_conv_svals(flipped, (5, 6)), rtol=1e-12
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(padding=1, padding_mode="circular"),
        dict(padding=1, padding_mode="zeros"),
        dict(padding=2, padding_mode="circular", stride=2),
        dict(padding=1, padding_mode="reflect"),
        dict(padding=(2, 1), padding_mode="replicate", dilation=2),
        dict(padding=0, padding_mode="zeros", stride=3),
    ],
    ids=lambda options: "-".join(f"{k}={v}" for k, v in options.items()),
)
def test_norm_bound_bounds_the_largest_singular_value(options: dict) -> None:
    weight = np.random.default_rng(10).standard_normal((5, 4, 3, 3))
    op = ConvOperator(weight, input_hw=(7, 8), **options)
    largest = np.linalg.svd(op.matmat(np.eye(op.shape[1])), compute_uv=False)[0]
    assert op.norm_bound() >= largest * (1 - 1e-12)
    if options == dict(padding=1, padding_mode="circular"):
        assert op.norm_bound() == pytest.approx(largest, rel=1e-12)


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "options", "error", "match"),
    [
        (np.ones((4, 4, 3)), {}, TypeError, r"2-D conv kernel.*\(4, 4, 3\)"),
        (np.ones((4, 4, 3, 3), dtype=np.int64), {}, TypeError, "dtype int64"),
        (np.full((4, 4, 3, 3), np.nan), {}, ValueError, "NaN or Inf"),
        (np.ones((4, 4, 3, 3)), {"padding_mode": "mirror"}, ValueError, "padding_mode='mirror'"),
        (np.ones((4, 4, 3, 3)), {"padding": "full"}, ValueError, "padding='full'"),
        (np.ones((4, 4, 3, 3)), {"padding": -1}, ValueError, "padding=-1"),
        (np.ones((4, 4, 3, 3)), {"padding": "same", "stride": 2}, ValueError, "needs stride 1"),
        (np.ones((4, 4, 3, 3)), {"stride": 0}, ValueError, "stride=0"),
        (np.ones((4, 4, 3, 3)), {"dilation": (1, 2, 3)}, ValueError, "dilation"),
        (np.ones((4, 4, 3, 3)), {"groups": 3}, ValueError, "groups=3"),
        (np.ones((4, 4, 3, 3)), {"padding": 9, "padding_mode": "circular"}, ValueError, "padding <= 8"),
        (np.ones((4, 4, 3, 3)), {"padding": 8, "padding_mode": "reflect"}, ValueError, "padding <= 7"),
        (np.ones((4, 4, 9, 3)), {}, ValueError, r"input_hw=\(8, 8\) is too small"),
        (np.ones((4, 4, 3, 3)), {"dtype": np.int32}, ValueError, "dtype=int32"),
    ],
)
def test_invalid_layers_are_refused(weight, options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ConvOperator(weight, input_hw=(8, 8), **options)


def test_vectors_of_the_wrong_size_are_refused_with_the_expected_shape() -> None:
    op = ConvOperator(np.ones((6, 8, 3, 3)), input_hw=(12, 12), stride=2, padding=1)
    with pytest.raises(ValueError, match=r"\(8, 12, 12\) flattened to 1152 rows.*received shape \(1000,\)"):
        op.matvec(np.ones(1000))
    with pytest.raises(ValueError, match=r"\(6, 6, 6\) flattened to 216 rows"):
        op.rmatmat(np.ones((1152, 2)))
    with pytest.raises(TypeError, match="real vectors"):
        op.matvec(np.ones(1152, dtype=complex))
