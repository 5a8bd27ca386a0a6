"""Post-hoc analysis of checkpoints: one process and two workers, against the SVD floor and WeightWatcher.

Models, generated and saved as float32 ``model.safetensors`` in a temporary directory (entries
Student-t, df=3, plus a few strong rank-one spikes; fixed seeds, so every run sees the same files):

* ``small``: a small sentence-transformer (MiniLM-sized): a 30522x384 token embedding and 6 blocks
  of 384x384 Q/K/V/O and 1536x384 / 384x1536 MLP matrices (37 matrices);
* ``large``: one LLaMA-7B-sized block: two 4096x4096 (Q, O) and 11008x4096 / 4096x11008 (MLP).

Measured in one run, every BLAS on one thread per process:

* floor: ``scipy.linalg.svdvals`` in float64 of the same matrices, already in memory, and the
  same SVDs made as the analysis makes them (tall orientation, tiled float64 copy, and MKL's
  LAPACK for a smaller side >= 2560 when torch carries it: ``spectral_callbacks.analysis.mkl_svd``; the
  streamed R factor is not in it); ours is compared with the faster;
* floor on 2 processes: the latter shared by two forked processes, largest first (the pool
  started beforehand): the speed-up this machine gives two workers on them, whatever runs them;
* ours, one process: ``analyze_paths([dir])`` (reads the file, every metric), in this process
  (warm) and in a new interpreter that has imported everything (small size only: as a command
  line runs after its imports, a small process whose memory is not touched yet, which is slow
  on this VM);
* ours, 2 workers: the same with ``executor="processes"`` (this process and one worker it
  starts: the start is timed, as the command line pays it; on Linux the worker is forked), the
  same in a new interpreter (small size only: to compare with one process run the same way),
  the same on a process pool already started (warm: small size only; on the large one the
  start is negligible), and on a dask ``LocalCluster`` of 2 workers started beforehand (as a
  running cluster; it lives only while dask is timed, as its threads in this process would make
  the process pool spawn instead of fork);
* WeightWatcher 0.7.x, if importable: ``WeightWatcher(model=dir).analyze()`` with its defaults.

Targets: one process <= 1.25x the floor; 2 workers >= 1.8x faster than one process; no layer
skipped for its size (WeightWatcher skips layers beyond its max_evals=15000 / max_N=50000);
results identical (bit for bit) whatever the executor and from run to run.
Run: ``.venv/bin/python benchmarks/bench_posthoc.py [--size small|large|all] [--repeats K]``
(the default, ``small``, takes about a minute; ``large`` about 10 minutes on 2 cores, most of it
scipy's floor and WeightWatcher, which take 90 s each).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import best_time, load_average, own_svd_floor, svd_floor, weightwatcher_details
from threadpoolctl import threadpool_limits

from spectral_callbacks.analysis.executors import ExecutorSpec, local_cluster, open_executor, process_context
from spectral_callbacks.posthoc import AnalysisOptions, analyze_paths
from spectral_callbacks.posthoc.analysis import largest_first, plan_paths, run_on
from spectral_callbacks.spectra import METRIC_NAMES

TARGET_FLOOR_RATIO = 1.25
TARGET_SPEEDUP = 1.8
WORKERS = 2
SPIKES = 3


def small_model() -> dict[str, tuple[int, int]]:
    """Shapes (torch layout: out x in) of a MiniLM-sized sentence transformer."""
    shapes = {"embeddings.word_embeddings.weight": (30522, 384)}
    for block in range(6):
        prefix = f"encoder.layer.{block}"
        for part in ("query", "key", "value"):
            shapes[f"{prefix}.attention.self.{part}.weight"] = (384, 384)
        shapes[f"{prefix}.attention.output.dense.weight"] = (384, 384)
        shapes[f"{prefix}.intermediate.dense.weight"] = (1536, 384)
        shapes[f"{prefix}.output.dense.weight"] = (384, 1536)
    return shapes


def large_model() -> dict[str, tuple[int, int]]:
    """Shapes of one LLaMA-7B-sized block's largest matrices."""
    prefix = "model.layers.0"
    return {
        f"{prefix}.self_attn.q_proj.weight": (4096, 4096),
        f"{prefix}.self_attn.o_proj.weight": (4096, 4096),
        f"{prefix}.mlp.up_proj.weight": (11008, 4096),
        f"{prefix}.mlp.down_proj.weight": (4096, 11008),
    }


def heavy_tailed(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Student-t entries scaled by the fan-in, plus rank-one spikes; float32, deterministic."""
    rng = np.random.default_rng(seed)
    rows, columns = shape
    weight = rng.standard_t(3.0, size=shape).astype(np.float32) / np.float32(math.sqrt(columns))
    for _ in range(SPIKES):
        u, v = rng.standard_normal(rows), rng.standard_normal(columns)
        strength = rng.uniform(2.0, 6.0)
        weight += (strength * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))).astype(np.float32)
    return weight


def write_model(directory: Path, shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    from safetensors.numpy import save_file

    arrays = {name: heavy_tailed(shape, seed) for seed, (name, shape) in enumerate(shapes.items())}
    save_file(arrays, str(directory / "model.safetensors"))
    return arrays


def ours(directory: Path, executor: str) -> list[Any]:
    (result,) = analyze_paths([directory], executor=executor, workers=WORKERS, options=AnalysisOptions())
    if result.failed:
        raise RuntimeError(result.error or result.layer_errors)
    return list(result.rows)


def weightwatcher(directory: Path) -> dict[str, float] | None:
    """WeightWatcher's alpha per layer (its ``longname``), or None when it is not installed."""
    details = weightwatcher_details(str(directory))
    if details is None:
        return None
    return {
        str(name): float(alpha) for name, alpha in zip(details["longname"], details["alpha"], strict=True)
    }


@dataclass(frozen=True)
class Floors:
    """Seconds of the bare SVDs: scipy's ``svdvals`` of each matrix; the same SVDs made as ours
    makes them (tall orientation, tiled float64 copy, MKL's LAPACK for large matrices when torch
    carries it); the latter shared by 2 processes."""

    scipy: float
    own: float
    own_on_processes: float


def write_and_time_floors(size: str, directory: Path, repeats: int) -> Floors:
    """Write the model file and time the floors on its matrices (freed before ours run)."""
    arrays = write_model(directory, small_model() if size == "small" else large_model())
    megabytes = sum(a.nbytes for a in arrays.values()) / 2**20
    print(f"\n== {size}: {len(arrays)} matrices, {megabytes:.0f} MiB of float32")
    scipy_time, _ = best_time(lambda: svd_floor(arrays.values()), repeats)
    own_time, _ = best_time(lambda: own_svd_floor(arrays.values()), repeats)
    return Floors(scipy_time, own_time, floor_on_processes(list(arrays.values()), repeats))


_FLOOR_MATRICES: list[np.ndarray] = []  # what forked floor workers inherit


def _floor_task(index: int) -> None:
    own_svd_floor([_FLOOR_MATRICES[index]])


def floor_on_processes(matrices: list[np.ndarray], repeats: int) -> float:
    """The bare SVDs (as ours calls them) shared by ``WORKERS`` forked processes, largest first,
    on a started pool."""
    _FLOOR_MATRICES[:] = matrices
    order = largest_first([types.SimpleNamespace(shape=m.shape) for m in matrices])
    context = multiprocessing.get_context("fork")
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
            list(pool.map(time.sleep, [0.2] * WORKERS))  # every worker started
            seconds, _ = best_time(lambda: list(pool.map(_floor_task, order)), repeats)
    finally:
        _FLOOR_MATRICES.clear()
    return seconds


@contextlib.contextmanager
def dask_cluster() -> Iterator[str]:
    """A local dask cluster of ``WORKERS`` single-threaded processes; yields its address."""
    with local_cluster(WORKERS) as cluster:
        yield cluster.scheduler_address.removeprefix("tcp://")


def timed_ours(directory: Path, executor: str) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    rows = ours(directory, executor)
    return time.perf_counter() - start, rows


def new_interpreter(directory: Path, executor: str) -> tuple[float, list[Any]]:
    """``ours(directory, executor)`` timed in a new interpreter that has imported everything, as a
    command line runs after its imports: a small process, its memory not touched yet."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(plan_paths, [directory]).result()  # imports and a first look at the file
        return pool.submit(timed_ours, directory, executor).result()


def best_new_interpreter(directory: Path, executor: str, repeats: int) -> tuple[float, list[Any]]:
    runs = [new_interpreter(directory, executor) for _ in range(repeats)]
    return min(runs, key=lambda run: run[0])


def warm_pool(directory: Path, repeats: int) -> tuple[float, list[Any]]:
    """One run's planning and tasks on a process pool whose worker has started and imported everything."""
    with open_executor(ExecutorSpec("processes"), workers=WORKERS) as runner:
        run_on(runner, plan_paths([directory]))  # start the worker: imports and first tasks

        def analyze() -> list[Any]:
            (result,) = plan_paths([directory])
            run_on(runner, [result])
            return list(result.rows)

        return best_time(analyze, repeats)


def speedup_cell(before: float, after: float) -> str:
    return f"{before / after:>9.2f}x  (speed-up)"


def metric_array(rows: list[Any]) -> np.ndarray:
    return np.array([[row.metrics()[name] for name in METRIC_NAMES] for row in rows])


def bench(size: str, repeats: int, with_dask: bool) -> list[tuple[bool, str]]:
    shapes = small_model() if size == "small" else large_model()
    with tempfile.TemporaryDirectory(prefix=f"bench_posthoc_{size}_") as temporary:
        directory = Path(temporary)
        floors = write_and_time_floors(size, directory, repeats)
        one_time, one = best_time(lambda: ours(directory, "local"), repeats)
        start_method = process_context().get_start_method()  # what the pools below use
        pool_time, pool = best_time(lambda: ours(directory, "processes"), repeats)
        fresh_time, fresh, fresh_pool_time, fresh_pool = (math.nan, None) * 2
        if size == "small":  # large: a process's start is negligible against 40 s
            fresh_time, fresh = best_new_interpreter(directory, "local", repeats)
            fresh_pool_time, fresh_pool = best_new_interpreter(directory, "processes", repeats)
        warm_time, warm = warm_pool(directory, repeats) if size == "small" else (math.nan, None)
        dask_time, dask_rows = math.nan, None
        if with_dask:
            with dask_cluster() as address:
                dask_time, dask_rows = best_time(lambda: ours(directory, f"dask://{address}"), repeats)
        again = ours(directory, "local") if size == "small" else None  # large: the executors differ
        ww_time, ww = best_time(lambda: weightwatcher(directory), 1)
    print(f"{'':<38}{'seconds':>9}{'ratio':>9}")
    print(f"{'floor (scipy svdvals f64)':<38}{floors.scipy:>9.2f}")
    floor = min(floors.scipy, floors.own)
    for label, seconds, ratio in (
        (
            "floor (SVDs as ours calls them)",
            floors.own,
            f"{floors.own / floors.scipy:>9.3f}  (/ scipy's)",
        ),
        (
            f"floor on {WORKERS} processes (machine's cap)",
            floors.own_on_processes,
            speedup_cell(floors.own, floors.own_on_processes),
        ),
        ("ours, one process", one_time, f"{one_time / floor:>9.3f}  (/ floor)"),
        ("ours, one process (new interpreter)", fresh_time, f"{fresh_time / floor:>9.3f}  (/ floor)"),
        (
            f"ours, {WORKERS} processes ({start_method}, start timed)",
            pool_time,
            speedup_cell(one_time, pool_time),
        ),
        (
            f"ours, {WORKERS} processes (new interpreter)",
            fresh_pool_time,
            speedup_cell(fresh_time, fresh_pool_time),
        ),
        (f"ours, {WORKERS} processes (warm pool)", warm_time, speedup_cell(one_time, warm_time)),
        (f"ours, dask {WORKERS} workers (running)", dask_time, speedup_cell(one_time, dask_time)),
    ):
        if not math.isnan(seconds):  # NaN: not measured at this size
            print(f"{label:<38}{seconds:>9.2f}{ratio}")
    print(f"{'WeightWatcher.analyze()':<38}{ww_time if ww is not None else math.nan:>9.2f}", end="")
    print(f"{ww_time / one_time:>9.2f}  (/ ours)" if ww is not None else "  (not installed)")

    analyzed = [row for row in one if row.status != "skipped"]
    runs = [rows for rows in (fresh, pool, fresh_pool, again, warm, dask_rows) if rows is not None]
    identical = all(np.array_equal(metric_array(one), metric_array(r), equal_nan=True) for r in runs)
    floor_ratio = one_time / floor
    verdicts = [(floor_ratio <= TARGET_FLOOR_RATIO, f"{size}: one process / floor = {floor_ratio:.3f}")]
    for label, rows, seconds, reference in (
        (f"processes ({start_method}, start timed)", pool, pool_time, one_time),
        ("processes vs one, each in a new interpreter", fresh_pool, fresh_pool_time, fresh_time),
        ("processes (warm pool)", warm, warm_time, one_time),
        ("dask workers (running)", dask_rows, dask_time, one_time),
    ):
        if rows is not None:
            speedup = reference / seconds
            verdicts.append(
                (speedup >= TARGET_SPEEDUP, f"{size}: {WORKERS} {label}: speed-up {speedup:.2f}x")
            )
    verdicts.append((len(analyzed) == len(shapes), f"{size}: ours analyzed {len(analyzed)} of {len(shapes)}"))
    verdicts.append((identical, f"{size}: metrics identical across executors and runs: {identical}"))
    if ww is not None:
        deltas = [abs(row.alpha - ww[row.name]) for row in analyzed if row.name in ww]
        worst = max(deltas) if deltas else math.nan
        print(f"WeightWatcher analyzed {len(ww)} of {len(shapes)} matrices; max |delta alpha| = {worst:.2e}")
        verdicts.append((worst < 1e-6, f"{size}: max |delta alpha| vs WeightWatcher = {worst:.2e} < 1e-6"))
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "large", "all"), default="small")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs (large: 1)")
    parser.add_argument("--no-dask", action="store_true", help="skip the dask cluster")
    args = parser.parse_args()
    os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    with contextlib.suppress(ImportError):  # WeightWatcher imports torch: one intra-op thread too
        import torch

        torch.set_num_threads(1)
    sizes = ("small", "large") if args.size == "all" else (args.size,)
    verdicts = []
    with threadpool_limits(limits=1):
        for size in sizes:
            verdicts += bench(size, 1 if size == "large" else args.repeats, not args.no_dask)
    print(f"\n{load_average()}\n")
    for passed, text in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
