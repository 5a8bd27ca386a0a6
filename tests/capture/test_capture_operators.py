"""Choosing conv layers for operator spectra in a torch model, and measuring their inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spectral_callbacks.capture.torch import InputSizes, operator_layers, operator_specs


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=1, groups=2), nn.BatchNorm2d(4)),
        nn.Conv2d(4, 4, 1),  # never called below
    )


def test_a_regex_chooses_the_conv_layers_it_matches() -> None:
    chosen = operator_layers(network(), {r"(0|2\.0)": (8, 8)})
    assert [(layer.name, layer.key, layer.input_hw) for layer in chosen] == [
        ("0", r"(0|2\.0)", (8, 8)),
        ("2.0", r"(0|2\.0)", (8, 8)),
    ]


def test_auto_chooses_every_conv2d_and_measures_its_input() -> None:
    model = network()
    chosen = operator_layers(model, "auto")
    assert [layer.name for layer in chosen] == ["0", "2.0", "3"]
    sizes = InputSizes(chosen)
    model[:3](torch.zeros(2, 3, 8, 8))
    sizes.remove()
    model[:3](torch.zeros(2, 3, 6, 6))  # hooks removed: not recorded
    assert sizes.sizes == {"0": (3, 8, 8), "2.0": (4, 8, 8)}
    specs, left_out = operator_specs(chosen, sizes.sizes)
    assert left_out == {"3": "it received no input in the first training batch"}
    strided = specs[1]
    assert (strided.input_hw, strided.stride, strided.groups, strided.padding) == ((8, 8), (2, 2), 2, (1, 1))
    assert strided.in_shape == (4, 8, 8) and strided.out_shape == (4, 4, 4) and strided.dimension == 64


@pytest.mark.parametrize(
    ("operators", "match"),
    [
        ({"9": (8, 8)}, r"operators key '9' matches no layer of the model\. Conv2d layers: 0, 2\.0, 3\."),
        ({"2.1": (8, 8)}, r"chooses layer 2\.1, a BatchNorm2d; operator spectra need torch\.nn\.Conv2d"),
        ({"(": (8, 8)}, r"operators key '\(' is neither a layer name nor a valid regular expression"),
        (
            {"0": (8, 8), "[0]": (4, 4)},
            r"Layer 0 is given two input sizes in operators: \(8, 8\) .* \(4, 4\)",
        ),
    ],
)
def test_bad_choices_are_refused(operators, match) -> None:
    with pytest.raises(ValueError, match=match):
        operator_layers(network(), operators)


def test_auto_without_conv2d_is_refused() -> None:
    with pytest.raises(ValueError, match=r"operators='auto' found no torch\.nn\.Conv2d layer"):
        operator_layers(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(2, 2, 3)), "auto")
