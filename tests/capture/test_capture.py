"""Capture: which weights of a torch model are analyzed, under which names, and their copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.capture.torch import analyzable_layers, copy_weights
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter
from spectral_callbacks.spectra import matrices_of


class Zoo(nn.Module):
    """One of every layer kind the capture knows about, and some it must leave out."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 12)
        self.conv1 = nn.Conv1d(4, 8, 3)
        self.conv2 = nn.Conv2d(3, 8, 3)
        self.deconv = nn.ConvTranspose2d(8, 3, 3)  # not analyzable
        self.bn = nn.BatchNorm2d(8)  # not analyzable
        self.ln = nn.LayerNorm(12)  # not analyzable
        self.attn = nn.MultiheadAttention(12, 3)
        self.block = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 9, bias=False))


ZOO_LAYERS = {
    "embed": ("embedding", nn.Embedding, (20, 12)),
    "conv1": ("conv1d", nn.Conv1d, (8, 4, 3)),
    "conv2": ("conv2d", nn.Conv2d, (8, 3, 3, 3)),
    "attn.in_proj": ("attention", nn.MultiheadAttention, (36, 12)),
    "attn.out_proj": ("linear", nn.modules.linear.NonDynamicallyQuantizableLinear, (12, 12)),
    "block.0": ("linear", nn.Linear, (10, 12)),
    "block.2": ("linear", nn.Linear, (9, 10)),
}


def names(found: list) -> list[str]:
    return [weight.name for weight in found]


def test_analyzable_layers_names_kinds_and_shapes() -> None:
    found = analyzable_layers(Zoo())
    assert names(found) == list(ZOO_LAYERS)
    for weight in found:
        kind, layer_class, shape = ZOO_LAYERS[weight.name]
        assert weight.kind == kind
        assert weight.layer_class is layer_class
        assert tuple(weight.parameter.shape) == shape


def test_transposed_conv_and_norm_layers_are_not_captured() -> None:
    found = analyzable_layers(Zoo())
    classes = {weight.layer_class for weight in found}
    assert not classes & {nn.ConvTranspose2d, nn.BatchNorm2d, nn.LayerNorm}
    assert not any(name.startswith(("deconv", "bn", "ln")) for name in names(found))
    only_excluded = nn.Sequential(nn.ConvTranspose2d(4, 4, 3), nn.BatchNorm1d(4), nn.ConvTranspose1d(4, 4, 3))
    assert analyzable_layers(only_excluded) == []


def test_the_root_module_is_named_by_its_class() -> None:
    found = analyzable_layers(nn.Linear(12, 10))
    assert names(found) == ["Linear"]


def test_lazy_linear_is_captured_once_materialized() -> None:
    model = nn.Sequential(nn.Linear(6, 12), nn.LazyLinear(10))
    assert names(analyzable_layers(model)) == ["0"]  # uninitialized: nothing to copy yet
    model(torch.randn(2, 6))
    found = analyzable_layers(model)
    assert names(found) == ["0", "1"]
    assert found[1].kind == "linear"
    assert tuple(found[1].parameter.shape) == (10, 12)
    np.testing.assert_array_equal(copy_weights(found)["1"], model[1].weight.detach().numpy())


def test_packed_attention_splits_into_q_k_v_layers(tmp_path) -> None:
    model = nn.Sequential(nn.MultiheadAttention(12, 3))
    found = analyzable_layers(model)
    assert names(found) == ["0.in_proj", "0.out_proj"]
    arrays = copy_weights(found)

    views = matrices_of("0.in_proj", arrays["0.in_proj"], "attention")
    assert [view.name for view in views] == ["0.in_proj", "0.in_proj[q]", "0.in_proj[k]", "0.in_proj[v]"]
    packed = model[0].in_proj_weight.detach().numpy()
    np.testing.assert_array_equal(views[0].slices[0], packed)  # the whole, as WeightWatcher would see it
    for part, view in enumerate(views[1:]):
        assert (view.N, view.M) == (12, 12)
        np.testing.assert_array_equal(view.slices[0], packed[12 * part : 12 * (part + 1)])

    rows = analyze_weights([(weight.name, arrays[weight.name], weight.kind) for weight in found])
    assert [row.name for row in rows] == [
        "0.in_proj", "0.in_proj[q]", "0.in_proj[k]", "0.in_proj[v]", "0.out_proj"
    ]  # fmt: skip

    specs = [ParameterSpec(weight.name, weight.kind, tuple(weight.parameter.shape)) for weight in found]
    writer = RunWriter.open(
        tmp_path / "spectra.h5", run_id="attention", parameters=specs, config_json="{}",
        framework="test", weights_dtype="float32",
    )  # fmt: skip
    try:
        assert sorted(writer.layer_names) == sorted(row.name for row in rows)
    finally:
        writer.close()


def test_attention_with_separate_projections_is_three_linear_layers() -> None:
    model = nn.Sequential(nn.MultiheadAttention(12, 3, kdim=8, vdim=10))
    found = analyzable_layers(model)
    assert names(found) == ["0.q_proj", "0.k_proj", "0.v_proj", "0.out_proj"]
    assert [tuple(weight.parameter.shape) for weight in found[:3]] == [(12, 12), (12, 8), (12, 10)]
    assert {weight.kind for weight in found} == {"linear"}


# -- filters --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layers", "exclude", "expected"),
    [
        ("conv2", None, ["conv2"]),
        (["embed", "block.2"], None, ["embed", "block.2"]),
        (r"block\.\d", None, ["block.0", "block.2"]),
        (r"conv\d", None, ["conv1", "conv2"]),
        (nn.Linear, None, ["attn.out_proj", "block.0", "block.2"]),  # subclasses too
        ([nn.Conv1d, nn.Conv2d], None, ["conv1", "conv2"]),
        ([nn.MultiheadAttention, "embed"], None, ["embed", "attn.in_proj"]),
        (None, "embed", ["conv1", "conv2", "attn.in_proj", "attn.out_proj", "block.0", "block.2"]),
        (None, [r"attn\..*", nn.Conv1d], ["embed", "conv2", "block.0", "block.2"]),
        (nn.Linear, "attn.out_proj", ["block.0", "block.2"]),
        (r"block\..*", r".*\.2", ["block.0"]),
    ],
)
def test_layer_filters(layers, exclude, expected: list[str]) -> None:
    assert names(analyzable_layers(Zoo(), layers, exclude)) == expected


def test_a_name_is_matched_exactly_not_as_a_prefix() -> None:
    # "block.0" is a regular expression too; it must not match "block.0x" or "block.0.sub"
    model = nn.ModuleDict({"block": nn.ModuleList([nn.Linear(12, 10), nn.Linear(10, 9)])})
    assert names(analyzable_layers(model, "block.0")) == ["block.0"]
    with pytest.raises(ValueError, match="'block' matches no analyzable layer"):
        analyzable_layers(model, "block")  # a container is not a layer
    with pytest.raises(ValueError, match="matches no analyzable layer"):
        analyzable_layers(model, "block.")


@pytest.mark.parametrize(
    ("layers", "exclude", "culprit"),
    [
        ("conv3", None, "'conv3'"),
        (["conv1", r"fc\d+"], None, repr(r"fc\d+")),
        (nn.LSTM, None, "LSTM"),
        (None, "missing", "'missing'"),
    ],
)
def test_filter_matching_nothing_lists_available_layers(layers, exclude, culprit: str) -> None:
    with pytest.raises(ValueError, match="matches no analyzable layer") as error:
        analyzable_layers(Zoo(), layers, exclude)
    message = str(error.value)
    assert culprit in message
    assert all(name in message for name in ZOO_LAYERS)


def test_invalid_regular_expression_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="neither a layer name nor a valid regular expression"):
        analyzable_layers(Zoo(), "conv[")


# -- copies ---------------------------------------------------------------------------------------
def test_copy_weights_are_detached_numpy_copies() -> None:
    model = Zoo()
    found = analyzable_layers(model)
    copies = copy_weights(found)
    assert list(copies) == list(ZOO_LAYERS)
    before = copies["block.0"].copy()
    with torch.no_grad():
        model.block[0].weight.add_(1.0)
    np.testing.assert_array_equal(copies["block.0"], before)
    for weight in found:
        assert isinstance(copies[weight.name], np.ndarray)
        assert copies[weight.name].dtype == np.float32
        assert copies[weight.name].shape == tuple(weight.parameter.shape)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(torch.float16, np.float32), (torch.bfloat16, np.float32), (torch.float64, np.float64)],
)
def test_copy_weights_dtypes(dtype: torch.dtype, expected: type) -> None:
    model = nn.Linear(12, 10).to(dtype)
    copies = copy_weights(analyzable_layers(model))
    assert copies["Linear"].dtype == expected
    np.testing.assert_array_equal(copies["Linear"], model.weight.detach().to(torch.float64).numpy())


def test_copy_weights_of_a_parameter_that_requires_grad_inside_autograd() -> None:
    model = nn.Linear(12, 10)
    loss = model(torch.randn(3, 12)).sum()
    copies = copy_weights(analyzable_layers(model))  # no error although the graph is alive
    loss.backward()
    assert copies["Linear"].flags.writeable
