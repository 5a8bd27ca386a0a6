"""How well the up-front estimate of operator-spectrum cost predicts the real cost, on a real CNN.

``SpectralCallback(operators=...)`` estimates, before the first snapshot, how long each conv
layer's operator spectrum will take per snapshot (``estimate_operator_seconds``: one timed product
of the Gram operator with a probe block and one with a vector, scaled by the products the analysis
makes), and warns when the total exceeds the training time between two operator snapshots. This
script checks that estimate against ``analyze_operator`` itself on every Conv2d of Hugging Face's
ResNet-18 (random init, ImageNet stem) at a given input size, with the default options.

Prints per layer the estimate, the measured time and their ratio, then the totals.
Run: ``.venv/bin/python benchmarks/bench_operator_estimate.py [--size 32] [--layers 6]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from threadpoolctl import threadpool_limits
from transformers import ResNetConfig, ResNetModel

from spectral_callbacks.analysis.operators import OperatorOptions, analyze_operator, estimate_operator_seconds
from spectral_callbacks.capture.torch import InputSizes, operator_layers, operator_specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--layers", type=int, default=0, help="only the first N convs (0: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512])
    model = ResNetModel(config).eval()
    layers = operator_layers(model, "auto")
    if args.layers:
        layers = layers[: args.layers]
    sizes = InputSizes(layers)
    with torch.no_grad():
        model(torch.randn(1, 3, args.size, args.size))
    sizes.remove()
    specs, _ = operator_specs(layers, sizes.sizes)
    options = OperatorOptions()
    modules = {layer.name: layer.module for layer in layers}
    total_estimate = total_measured = 0.0
    print(f"ResNet-18 convs on {args.size}x{args.size}, one BLAS thread, default options {options}")
    print(f"{'layer':48s} {'dimension':>9s} {'estimate s':>10s} {'measured s':>10s} {'ratio':>6s}")
    with threadpool_limits(1):
        for spec in specs:
            weight = modules[spec.name].weight.detach().numpy()
            estimate = estimate_operator_seconds(spec, weight, options)
            started = time.perf_counter()
            analyze_operator(spec, weight, options)
            measured = time.perf_counter() - started
            total_estimate += estimate
            total_measured += measured
            ratio = estimate / measured
            print(f"{spec.name:48s} {spec.dimension:9d} {estimate:10.3f} {measured:10.3f} {ratio:6.2f}")
    print(f"total: estimate {total_estimate:.2f} s, measured {total_measured:.2f} s, "
          f"ratio {total_estimate / total_measured:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
