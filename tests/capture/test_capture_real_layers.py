"""Layer discovery on what real models contain: Hugging Face Conv1D, tied weights, grouped convs,
compiled and wrapped modules, and layers no rule covers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from spectral_callbacks import analyze_model
from spectral_callbacks.capture.torch import copy_weights, find_layers
from spectral_callbacks.spectra import analyze_view, matrices_of

transformers = pytest.importorskip("transformers")


def tiny_gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=300, n_positions=40, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def esd(matrix: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False) ** 2)


def test_transformers_conv1d_is_a_linear_read_as_out_by_in() -> None:
    model = tiny_gpt2()
    found = find_layers(model)
    by_name = {weight.name: weight for weight in found.weights}
    blocks = [f"transformer.h.{i}.{part}" for i in range(2) for part in
              ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]  # fmt: skip
    assert [weight.name for weight in found.weights] == ["transformer.wte", "transformer.wpe", *blocks]
    c_attn = model.transformer.h[0].attn.c_attn
    assert by_name["transformer.h.0.attn.c_attn"].kind == "linear"
    arrays = copy_weights(found.weights)
    copied = arrays["transformer.h.0.attn.c_attn"]
    assert copied.shape == (3 * 32, 32) and copied.flags.c_contiguous  # (out, in), as a Linear
    np.testing.assert_array_equal(copied, c_attn.weight.detach().numpy().T)
    # a Linear computing the same function has the same matrix: the layout is the Linear's
    linear = nn.Linear(32, 96)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(copied))
        linear.bias.copy_(c_attn.bias)
    inputs = torch.randn(5, 32)
    torch.testing.assert_close(linear(inputs), c_attn(inputs))


def test_layer_filters_reach_transformers_conv1d() -> None:
    model = tiny_gpt2()
    conv1d = transformers.pytorch_utils.Conv1D
    assert len(find_layers(model, layers=[conv1d]).weights) == 8
    chosen = find_layers(model, layers=r".*c_attn").weights
    assert [weight.name for weight in chosen] == [f"transformer.h.{i}.attn.c_attn" for i in range(2)]


def test_tied_weights_are_one_matrix_with_aliases() -> None:
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    found = find_layers(model)
    names = [weight.name for weight in found.weights]
    assert "lm_head" not in names
    (wte,) = [weight for weight in found.weights if weight.name == "transformer.wte"]
    assert wte.aliases == ("lm_head",)
    assert "lm_head.weight" not in found.skipped

    rows = analyze_model(model)
    assert [row.name for row in rows.analyzed()].count("transformer.wte") == 1
    assert rows.aliases == {"transformer.wte": ("lm_head",)}
    from_state = analyze_model(model.state_dict())  # the state dict holds the tensor under both names
    state_names = [row.name for row in from_state.analyzed()]
    assert "transformer.wte.weight" in state_names and "lm_head.weight" not in state_names
    assert from_state.aliases == {"transformer.wte.weight": ("lm_head.weight",)}


def test_every_parameter_not_analyzed_is_listed_with_its_reason() -> None:
    model = tiny_gpt2()
    found = find_layers(model)
    analyzed = {weight.name for weight in found.weights}
    aliased = {alias for weight in found.weights for alias in weight.aliases}
    all_parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    listed = {f"{name}.weight" for name in analyzed | aliased} | set(found.skipped)
    assert listed == all_parameters
    assert found.skipped["transformer.ln_f.weight"] == "1-D parameter (LayerNorm.weight) has no matrix view"
    bias = found.skipped["transformer.h.0.attn.c_attn.bias"]
    assert bias == "1-D parameter (Conv1D.bias) has no matrix view"


class Unusual(nn.Module):
    """A layer no rule covers, with a 3-D weight and a 2-D extra parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 5, 6))
        self.table = nn.Parameter(torch.randn(20, 10))


def test_unusual_layouts_are_listed_with_their_class_never_a_crash() -> None:
    model = nn.Sequential(nn.Linear(10, 20), Unusual(), nn.ConvTranspose2d(3, 8, 3), nn.Conv3d(2, 4, 3))
    found = find_layers(model)
    assert [weight.name for weight in found.weights] == ["0"]
    no_rule = "no matrix rule for this layer type"
    assert found.skipped["1.weight"] == f"Unusual.weight with shape (4, 5, 6): {no_rule}"
    assert found.skipped["1.table"] == f"Unusual.table with shape (20, 10): {no_rule}"
    assert found.skipped["2.weight"] == "ConvTranspose2d (transposed convolution) is not analyzed"
    assert found.skipped["3.weight"] == "Conv3d is not analyzed"


def test_compiled_and_wrapped_models_keep_plain_names() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 12))
    plain = [weight.name for weight in find_layers(model).weights]
    assert plain == ["0", "2"]
    outer = nn.Sequential(torch.compile(model))  # a compiled submodule: "0._orig_mod.0"
    assert [weight.name for weight in find_layers(outer).weights] == ["0.0", "0.2"]
    assert [weight.name for weight in find_layers(torch.compile(model)).weights] == plain
    assert [weight.name for weight in find_layers(nn.DataParallel(model)).weights] == plain
    wrapped_state = {f"module.{name}": value for name, value in model.state_dict().items()}
    assert [row.name for row in analyze_model(wrapped_state).analyzed()] == ["0.weight", "2.weight"]


@pytest.mark.parametrize(("in_channels", "out_channels", "groups", "kind"), [
    (12, 18, 3, "grouped_conv2d"),
    (8, 16, 8, "depthwise_conv2d"),  # two outputs per input channel
    (8, 8, 8, "depthwise_conv2d"),
])  # fmt: skip
def test_grouped_conv_spectrum_is_its_block_diagonal_tap_matrices(
    in_channels: int, out_channels: int, groups: int, kind: str
) -> None:
    torch.manual_seed(3)
    grouped = nn.Conv2d(in_channels, out_channels, 3, groups=groups, bias=False)
    (weight,) = find_layers(grouped).weights
    assert weight.kind == kind
    # the ungrouped conv applying the same map: zeros outside the groups' blocks
    dense = torch.zeros(out_channels, in_channels, 3, 3)
    out_per, in_per = out_channels // groups, in_channels // groups
    for g in range(groups):
        dense[g * out_per : (g + 1) * out_per, g * in_per : (g + 1) * in_per] = grouped.weight.detach()[
            g * out_per : (g + 1) * out_per
        ]
    images = torch.randn(2, in_channels, 7, 7)
    torch.testing.assert_close(functional.conv2d(images, dense), grouped(images))
    # its pooled ESD (per tap, the whole out x in matrix) is ours plus the zeros of the off-block part
    reference = np.sort(np.concatenate([esd(dense[:, :, i, j].numpy()) for i in range(3) for j in range(3)]))
    (view,) = matrices_of(weight.name, copy_weights([weight])[weight.name], weight.kind)
    spectrum = analyze_view(view, conv2d_norm=False)
    assert spectrum.num_evals == 9 * groups * min(out_per, in_per)
    nonzero = reference[reference > 1e-10 * reference.max()]
    np.testing.assert_allclose(spectrum.evals[spectrum.evals > 1e-10 * reference.max()], nonzero, rtol=1e-5)
    assert len(nonzero) == spectrum.num_evals
