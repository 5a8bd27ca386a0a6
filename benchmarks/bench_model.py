"""Whole-model analysis time against its floor (the SVDs) and against WeightWatcher.

The model: 6 transformer-like blocks (Q, K, V, O ``384x384``; MLP ``384x1536`` and ``1536x384``)
after a stem of two Conv2d layers (64->128 and 128->256, 3x3): 36 Linear and 2 Conv2d weights.
Entries are Student-t (df=3, heavy-tailed) plus a few strong rank-one spikes, fixed seed, so the
power-law fits have real tails to find.

What is measured, in one run with the same BLAS/OpenMP thread count for everything:

* floor: ``scipy.linalg.svdvals`` in float64 of exactly the matrices analyzed (each 3x3 slice
  ``W[:, :, i, j]`` of a conv), i.e. the least any spectral analysis must spend;
* ours: ``spectral_callbacks.analyze_model(model)`` (SVD once per matrix, then every metric);
* WeightWatcher 0.7.x, if importable: ``WeightWatcher(model=model).analyze()`` with its defaults.

Targets: ours / floor <= 1.25 (the metrics and the fit cost little next to the SVDs);
WeightWatcher / ours > 1; max |delta alpha| between our and WeightWatcher's per-layer alpha < 1e-4.
Run: ``.venv/bin/python benchmarks/bench_model.py [--threads N] [--repeats K]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import torch
from common import load_average, svd_floor, weightwatcher_details
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn

from spectral_callbacks import analyze_model

TARGET_FLOOR_RATIO = 1.25
TARGET_WW_RATIO = 1.0
TARGET_DELTA_ALPHA = 1e-4
WIDTH, HIDDEN, BLOCKS, SPIKES = 384, 1536, 6, 3


class Block(nn.Module):
    """The weights of one transformer block (no forward pass is needed to analyze them)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.fc1 = nn.Linear(WIDTH, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, WIDTH)


class Model(nn.Module):
    """A conv stem and a stack of transformer blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(64, 128, 3), nn.ReLU(), nn.Conv2d(128, 256, 3))
        self.blocks = nn.ModuleList(Block() for _ in range(BLOCKS))


def heavy_tailed_model(seed: int = 0) -> Model:
    """The model with Student-t weights plus rank-one spikes, deterministic for ``seed``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Model()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                out_features, fan_in = module.weight.shape[0], module.weight[0].numel()
                weight = rng.standard_t(3.0, size=(out_features, fan_in)) / math.sqrt(fan_in)
                for _ in range(SPIKES):
                    u, v = rng.standard_normal(out_features), rng.standard_normal(fan_in)
                    weight += rng.uniform(2.0, 6.0) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
                module.weight.copy_(torch.from_numpy(weight.reshape(module.weight.shape)))
    return model


def analyzed_matrices(model: nn.Module) -> list[np.ndarray]:
    """Every matrix whose singular values the analysis needs: linear weights and conv slices."""
    matrices = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            matrices.append(module.weight.detach().numpy())
        elif isinstance(module, nn.Conv2d):
            weight = module.weight.detach().numpy()
            height, width = weight.shape[2:]
            matrices.extend(weight[:, :, i, j] for i in range(height) for j in range(width))
    return matrices


def weightwatcher_alphas(model: nn.Module) -> list[tuple[str, float]] | None:
    """``(name, alpha)`` per layer from WeightWatcher's default analyze, by layer_id; None if absent."""
    details = weightwatcher_details(model)
    if details is None:
        return None
    details = details.sort_values("layer_id")
    return [(str(name), float(alpha)) for name, alpha in zip(details["name"], details["alpha"], strict=True)]


def interleaved_best_times(
    functions: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Smallest wall time of each function over ``repeats`` rounds, and its last result.

    The functions take turns within each round, so background load on a shared machine hits
    them alike instead of spoiling one of them.
    """
    best = dict.fromkeys(functions, math.inf)
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            results[name] = function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many interleaved runs")
    args = parser.parse_args()
    model = heavy_tailed_model()
    matrices = analyzed_matrices(model)
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        scipy.linalg.svdvals(np.eye(4))  # load scipy's BLAS before reporting the pools
        pools = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
        print(f"threads: {args.threads} (torch {torch.get_num_threads()}; pools: {', '.join(pools)})")
        print(f"model: {len(matrices)} SVD matrices from {sum(1 for _ in model.modules())} modules")
        weightwatcher_alphas(model)  # import WeightWatcher (and warm up) outside the timings
        times, results = interleaved_best_times(
            {
                "floor": lambda: svd_floor(matrices),
                "ours": lambda: analyze_model(model),
                "ww": lambda: weightwatcher_alphas(model),
            },
            args.repeats,
        )
    floor_time, ours_time, ww_time = times["floor"], times["ours"], times["ww"]
    ours, ww = results["ours"], results["ww"]
    print(load_average())

    rows = ours.analyzed()
    print(f"\n{'':<28}{'seconds':>9}")
    print(f"{'floor (scipy svdvals f64)':<28}{floor_time:>9.3f}")
    print(f"{'ours (analyze_model)':<28}{ours_time:>9.3f}")
    print(f"{'WeightWatcher.analyze()':<28}{ww_time if ww is not None else math.nan:>9.3f}")
    ratio = ours_time / floor_time
    verdicts = [(ratio <= TARGET_FLOOR_RATIO, f"ours / floor = {ratio:.3f} <= {TARGET_FLOOR_RATIO}")]
    if ww is None:
        print("\nWeightWatcher is not importable: its comparisons are skipped.")
    else:
        skipped = len(ours) - len(rows)
        print(f"\nlayers: ours analyzed {len(rows)} (skipped {skipped}), WeightWatcher {len(ww)}")
        pairs = list(zip(rows, ww, strict=False))  # model order; WW sorted by its layer_id
        deltas = [abs(row.alpha - alpha) for row, (_, alpha) in pairs]
        print(f"compared by order: the first {len(pairs)} of each (our name / WW's name)")
        for (row, (name, alpha)), delta in zip(pairs, deltas, strict=True):
            print(f"  {row.name:<14} {name:<5} alpha ours {row.alpha:9.5f}  WW {alpha:9.5f}  |d| {delta:.1e}")
        worst = max(deltas) if deltas else math.nan
        verdicts.append((ww_time / ours_time > TARGET_WW_RATIO, f"WW / ours = {ww_time / ours_time:.2f} > 1"))
        verdicts.append(
            (len(rows) == len(ww) and worst < TARGET_DELTA_ALPHA, f"max |delta alpha| = {worst:.2e} < 1e-4")
        )
    print()
    for passed, text in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
