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

With ``--options`` (the default), the same model with WeightWatcher's options, ours against its:

* ``analyze_model(model, **option)`` against ``WeightWatcher(model=model).analyze(**option)`` for
  no option, ``fix_fingers="clip_xmax"``, ``detX=True`` and ``randomize=True`` (ours seeded with
  ``randomize_seed=0``; WeightWatcher draws from numpy's global generator, so its randomized
  columns are other draws and are not compared);
* per-layer distances between the model and a perturbed copy (every weight plus 1% of its RMS in
  Gaussian noise): ``layer_distance`` of each layer's views (``alignment=True`` for ``cka`` only)
  against ``WeightWatcher().distances(model, copy, method=m)`` for ``raw``, ``euclidean``, ``cka``.

WeightWatcher's ``randomize`` takes tens of seconds on this model (an extra SVD and a histogram
distance per layer, in its own slow loop), so that row has its own, smaller number of repeats.

Targets: ours / floor <= 1.25 (the metrics and the fit cost little next to the SVDs);
WeightWatcher / ours > 1, for every option and distance too; max |delta alpha| between our and
WeightWatcher's per-layer alpha < 1e-4, and the same bound on each deterministic option's columns
(``fix_fingers``: alpha; ``detX``: ``detX_num``, ``detX_val``) and on the distances' relative
differences.
Run: ``.venv/bin/python benchmarks/bench_model.py [--threads N] [--repeats K] [--no-options]
[--randomize-repeats K]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import torch
from common import load_average, svd_floor, weightwatcher_details
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn

from spectral_callbacks import analyze_model
from spectral_callbacks.spectra import matrices_of
from spectral_callbacks.spectra.distances import LayerDistance, layer_distance

TARGET_FLOOR_RATIO = 1.25
TARGET_WW_RATIO = 1.0
TARGET_DELTA_ALPHA = 1e-4
WIDTH, HIDDEN, BLOCKS, SPIKES = 384, 1536, 6, 3
RANDOMIZE_REPEATS = 3
PERTURBATION = 0.01  # Gaussian noise added to each weight, relative to its RMS


@dataclasses.dataclass(frozen=True)
class Option:
    """One of WeightWatcher's analyze() options: its keywords for each side, the columns compared."""

    label: str
    ours: dict[str, Any]
    theirs: dict[str, Any]
    columns: tuple[str, ...]  # deterministic columns, equal up to rounding
    counted: str | None = None  # a column whose layers with a nonzero value are counted on each side


OPTIONS = (
    Option("default", {}, {}, ("alpha",)),
    Option(
        'fix_fingers="clip_xmax"',
        {"fix_fingers": "clip_xmax"},
        {"fix_fingers": "clip_xmax"},
        ("alpha",),
        "num_fingers",
    ),
    Option("detX=True", {"detX": True}, {"detX": True}, ("detX_num", "detX_val")),
    Option("randomize=True", {"randomize": True, "randomize_seed": 0}, {"randomize": True}, ()),
)
# WeightWatcher's distances method -> the LayerDistance field holding the same number
DISTANCE_FIELDS = {"raw": "delta_W", "euclidean": "delta_W_slices", "cka": "cka"}


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


def perturbed_copy(model: nn.Module, seed: int = 1) -> nn.Module:
    """A copy of ``model`` with every weight moved by Gaussian noise of ``PERTURBATION`` times its RMS."""
    moved = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in moved.parameters():
            rms = parameter.square().mean().sqrt()
            parameter.add_(PERTURBATION * rms * torch.randn(parameter.shape, generator=generator))
    return moved


def weight_views(model: nn.Module) -> list[tuple[str, np.ndarray]]:
    """``(name, weight)`` of every Linear and Conv2d layer, in model order, without copying."""
    return [
        (name, module.weight.detach().numpy())
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    ]


def our_distances(first: nn.Module, second: nn.Module, *, alignment: bool) -> list[LayerDistance]:
    """``layer_distance`` of every layer of ``second`` from the same layer of ``first``."""
    distances = []
    for (name, before), (_, after) in zip(weight_views(first), weight_views(second), strict=True):
        (reference,), (current,) = (
            matrices_of(name, before, min_evals=1),
            matrices_of(name, after, min_evals=1),
        )
        distances.append(layer_distance(reference, current, alignment=alignment))
    return distances


@contextlib.contextmanager
def quiet_weightwatcher() -> Any:
    """WeightWatcher's progress output, INFO logs and warnings silenced."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        yield


def weightwatcher_analysis(model: nn.Module, options: dict[str, Any]) -> Any:
    """WeightWatcher's ``analyze(**options)``, its rows sorted by layer_id."""
    import weightwatcher

    with quiet_weightwatcher():
        return weightwatcher.WeightWatcher(model=model).analyze(**options).sort_values("layer_id")


def weightwatcher_distances(first: nn.Module, second: nn.Module, method: str) -> list[float]:
    """WeightWatcher's per-layer ``distances(first, second, method=method)``, in its layer order."""
    import weightwatcher

    with quiet_weightwatcher():
        _, _, details = weightwatcher.WeightWatcher().distances(first, second, method=method)
    return [float(value) for value in details["delta_W"]]


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


def option_functions(model: nn.Module, moved: nn.Module, slow: bool) -> dict[str, Callable[[], Any]]:
    """The timed calls of the options section: ours and WeightWatcher's for each option (the slow
    one, randomize, alone when ``slow``) and, with the fast ones, for each distance."""
    functions: dict[str, Callable[[], Any]] = {}
    for option in OPTIONS:
        if bool(option.theirs.get("randomize")) == slow:
            functions[f"ours {option.label}"] = lambda option=option: analyze_model(model, **option.ours)
            functions[f"ww {option.label}"] = lambda option=option: weightwatcher_analysis(
                model, option.theirs
            )
    if not slow:
        for method in DISTANCE_FIELDS:
            functions[f"ours distances {method}"] = lambda method=method: our_distances(
                model, moved, alignment=method == "cka"
            )
            functions[f"ww distances {method}"] = lambda method=method: weightwatcher_distances(
                model, moved, method
            )
    return functions


def option_differences(ours: Any, theirs: Any, option: Option) -> tuple[str, bool | None]:
    """The largest |ours - WeightWatcher's| of each compared column over the layers (paired in
    model order) as a table cell, and whether the layers pair up and every difference is within
    the target (None when the option has no deterministic column to compare)."""
    rows = ours.analyzed()
    if len(rows) != len(theirs):
        return f"layers differ: ours {len(rows)}, WW {len(theirs)}", False
    if not option.columns:
        return "not compared (other random draws)", None
    worst = {
        column: max(
            abs(getattr(row, column) - float(value)) for row, value in zip(rows, theirs[column], strict=True)
        )
        for column in option.columns
    }
    cell = ", ".join(f"{column} {delta:.1e}" for column, delta in worst.items())
    if option.counted is not None:
        counted = sum(getattr(row, option.counted) > 0 for row in rows)
        cell += (
            f" ({option.counted} > 0: ours {counted}, WW {int((theirs[option.counted] > 0).sum())} layers)"
        )
    return cell, all(delta < TARGET_DELTA_ALPHA for delta in worst.values())


def distance_differences(
    ours: list[LayerDistance], theirs: list[float], method: str
) -> tuple[str, bool | None]:
    """The largest relative difference between our and WeightWatcher's per-layer distances."""
    if len(ours) != len(theirs):
        return f"layers differ: ours {len(ours)}, WW {len(theirs)}", False
    field = DISTANCE_FIELDS[method]
    worst = max(
        abs(getattr(mine, field) - value) / abs(value) for mine, value in zip(ours, theirs, strict=True)
    )
    return f"{field} {worst:.1e} (rel.)", worst < TARGET_DELTA_ALPHA


def options_section(model: nn.Module, repeats: int, randomize_repeats: int) -> list[tuple[bool, str]]:
    """Time and compare WeightWatcher's options and distances; print the table, return the verdicts."""
    moved = perturbed_copy(model)
    weightwatcher_distances(model, moved, "raw")  # warm up WeightWatcher's distances outside the timings
    times, results = interleaved_best_times(option_functions(model, moved, slow=False), repeats)
    slow_times, slow_results = interleaved_best_times(
        option_functions(model, moved, slow=True), randomize_repeats
    )
    times.update(slow_times)
    results.update(slow_results)
    print(load_average())

    print(f"\n{'option':<26}{'ours s':>8}{'WW s':>8}{'WW/ours':>9}{'best of':>9}  max |ours - WW| of layers")
    verdicts = []
    labels = [option.label for option in OPTIONS] + [f"distances {method}" for method in DISTANCE_FIELDS]
    for option, label in zip([*OPTIONS, *DISTANCE_FIELDS], labels, strict=True):
        ours, theirs = results[f"ours {label}"], results[f"ww {label}"]
        if isinstance(option, Option):
            cell, agrees = option_differences(ours, theirs, option)
            rounds = randomize_repeats if option.theirs.get("randomize") else repeats
        else:
            cell, agrees = distance_differences(ours, theirs, option)
            rounds = repeats
        ours_time, ww_time = times[f"ours {label}"], times[f"ww {label}"]
        ratio = ww_time / ours_time
        print(f"{label:<26}{ours_time:>8.3f}{ww_time:>8.3f}{ratio:>9.2f}{rounds:>9}  {cell}")
        verdicts.append((ratio > TARGET_WW_RATIO, f"WW / ours = {ratio:.2f} > 1 for {label}"))
        if agrees is not None:
            verdicts.append((agrees, f"{label}: {cell}; each < 1e-4"))
    if randomize_repeats < repeats:
        print(
            f"randomize=True is best of {randomize_repeats}, not {repeats}: WeightWatcher's randomize "
            "takes tens of seconds on this model."
        )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many interleaved runs")
    parser.add_argument(
        "--options",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time WeightWatcher's options and distances, ours against its (default on)",
    )
    parser.add_argument(
        "--randomize-repeats",
        type=int,
        default=RANDOMIZE_REPEATS,
        help=f"best of this many runs for randomize=True (default {RANDOMIZE_REPEATS}; it is slow in WW)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
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

    if args.options and ww is not None:
        print("\n== WeightWatcher's options (same model; distances to a perturbed copy)")
        with threadpool_limits(limits=args.threads):
            option_verdicts = options_section(model, args.repeats, min(args.randomize_repeats, args.repeats))
        print()
        for passed, text in option_verdicts:
            print(f"{'PASS' if passed else 'FAIL'}  {text}")
    print(f"\nthe script took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
