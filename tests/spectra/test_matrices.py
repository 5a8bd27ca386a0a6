"""Matrix views of parameters (WeightWatcher's conventions), checked against hand-built loops."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_callbacks.spectra import KINDS, MatrixView, SkippedParameter, matrices_of


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (50, 50)])
def test_linear_orientation_and_aspect_ratio(shape: tuple[int, int]) -> None:
    weight = rng().standard_normal(shape)
    views = matrices_of("fc.weight", weight)
    assert isinstance(views, list)
    assert len(views) == 1
    view = views[0]
    assert view.kind == "linear"
    assert view.name == "fc.weight"
    n, m, q = view.N, view.M, view.Q
    assert (n, m) == (max(shape), min(shape))
    assert q == pytest.approx(max(shape) / min(shape), rel=1e-15)
    assert q >= 1
    assert view.num_evals == min(shape)
    np.testing.assert_array_equal(view.slices, weight[None])
    np.testing.assert_array_equal(view.neurons, weight)


def test_conv2d_pools_every_spatial_slice() -> None:
    weight = rng(1).standard_normal((24, 8, 3, 5))  # torch (out, in, kh, kw)
    views = matrices_of("conv.weight", weight)
    assert isinstance(views, list)
    (view,) = views
    assert view.kind == "conv2d"
    expected = [weight[:, :, i, j] for i in range(3) for j in range(5)]
    assert view.slices.shape == (15, 24, 8)
    # the same set of slices (order within the pool does not matter for the ESD)
    as_set = sorted(tuple(s.ravel()) for s in view.slices)
    assert as_set == sorted(tuple(s.ravel()) for s in expected)
    # and in row-major (kh, kw) order
    for got, want in zip(view.slices, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert (view.N, view.M, view.Q) == (24, 8, 3.0)
    assert view.num_evals == 15 * 8
    np.testing.assert_array_equal(view.neurons, weight.reshape(24, -1))


def test_conv2d_with_more_inputs_than_outputs() -> None:
    weight = rng(2).standard_normal((8, 16, 3, 3))
    (view,) = matrices_of("conv.weight", weight)
    assert (view.N, view.M) == (16, 8)
    assert view.num_evals == 9 * 8


def test_conv1d_pools_every_tap() -> None:
    weight = rng(3).standard_normal((20, 6, 4))  # torch (out, in, k)
    (view,) = matrices_of("conv1.weight", weight)
    assert view.kind == "conv1d"
    assert view.slices.shape == (4, 20, 6)
    for k in range(4):
        np.testing.assert_array_equal(view.slices[k], weight[:, :, k])
    assert view.num_evals == 4 * 6


def test_attention_in_proj_splits_into_q_k_v() -> None:
    embed = 16
    weight = rng(4).standard_normal((3 * embed, embed))
    views = matrices_of("attn.in_proj_weight", weight)
    assert isinstance(views, list)
    assert [view.name for view in views] == [
        "attn.in_proj_weight",
        "attn.in_proj_weight[q]",
        "attn.in_proj_weight[k]",
        "attn.in_proj_weight[v]",
    ]
    np.testing.assert_array_equal(views[0].slices[0], weight)
    assert views[0].slices.shape == (1, 3 * embed, embed)
    blocks = (weight[:embed], weight[embed : 2 * embed], weight[2 * embed :])
    for view, block in zip(views[1:], blocks, strict=True):
        assert view.kind == "attention"
        np.testing.assert_array_equal(view.slices[0], block)
        assert view.N == view.M == embed


def test_attention_kind_can_be_given_explicitly() -> None:
    weight = rng(5).standard_normal((30, 10))
    views = matrices_of("qkv", weight, kind="attention")
    assert len(views) == 4
    assert views[2].slices[0].tolist() == weight[10:20].tolist()


def test_embedding_is_the_table() -> None:
    table = rng(6).standard_normal((100, 12))
    (view,) = matrices_of("tok_embeddings.weight", table)
    assert view.kind == "embedding"
    assert (view.N, view.M) == (100, 12)
    np.testing.assert_array_equal(view.slices[0], table)


@pytest.mark.parametrize(
    ("name", "shape", "reason"),
    [
        ("fc.bias", (64,), "1-D parameter has no matrix view"),
        ("norm.weight", (64,), "1-D parameter has no matrix view"),
        ("scalar", (), "0-D parameter has no matrix view"),
        ("odd", (2, 3, 4, 5, 6), "5-D parameter has no matrix view"),
        ("tiny.weight", (10, 5), "5 eigenvalues < min_evals=8"),
        ("tiny_conv.weight", (3, 2, 1, 3), "6 eigenvalues < min_evals=8"),
    ],
)
def test_unanalyzable_parameters_are_skipped_with_a_reason(
    name: str, shape: tuple[int, ...], reason: str
) -> None:
    skipped = matrices_of(name, np.ones(shape))
    assert isinstance(skipped, SkippedParameter)
    assert skipped.name == name
    assert skipped.shape == shape
    assert skipped.reason == reason


def test_min_evals_threshold_is_inclusive_and_configurable() -> None:
    weight = rng(7).standard_normal((20, 8))
    assert isinstance(matrices_of("w", weight), list)  # exactly 8 eigenvalues
    assert isinstance(matrices_of("w", weight, min_evals=9), SkippedParameter)
    assert isinstance(matrices_of("w", weight[:, :7]), SkippedParameter)
    assert isinstance(matrices_of("w", weight[:, :2], min_evals=0), list)


@pytest.mark.parametrize(
    ("kind", "shape", "match"),
    [
        ("conv2d", (10, 10), "needs a 4-D array"),
        ("conv1d", (10, 10, 3, 3), "needs a 3-D array"),
        ("linear", (10, 10, 3), "needs a 2-D array"),
        ("embedding", (10,), "needs a 2-D array"),
        ("attention", (10, 10), "divisible by 3"),
        ("dense", (10, 10), "Unknown kind='dense'"),
    ],
)
def test_shape_contradicting_kind_raises(kind: str, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        matrices_of("p", np.ones(shape), kind=kind)


def test_kinds_are_the_documented_ones() -> None:
    assert set(KINDS) == {
        "linear", "conv1d", "conv2d", "embedding", "attention",
        "grouped_conv1d", "grouped_conv2d", "depthwise_conv1d", "depthwise_conv2d",
    }  # fmt: skip


def test_views_accept_array_likes() -> None:
    (view,) = matrices_of("w", [[1.0, 2.0, 3.0]] * 10, min_evals=1)
    assert isinstance(view, MatrixView)
    assert (view.N, view.M) == (10, 3)
