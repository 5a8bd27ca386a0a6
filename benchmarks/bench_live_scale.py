"""The live analysis of one snapshot on one core and on two: ``analysis_executor``'s speed-up.

What is timed is what the analysis process does with a snapshot once training has handed it over
(written into shared memory, as the callback does, untimed): mapping the arrays, then
``SnapshotAnalyzer.add`` (index row, every layer's analysis with the movement columns against the
previous snapshot, rows recorded in the run file), the weights not saved (``save_weights=False``:
committing them takes the same time whatever the executor). Each executor analyzes one run of
``1 + repeats`` snapshots that alternate between two sets of weights a small step apart, the pool
or cluster started with it; the best time of the snapshots after the first is reported (these
have the movement columns, as every snapshot but the first of a run, and find the workers warm,
as in a run's steady state).

Models (random weights, Student-t df=3 plus rank-one spikes, fixed seeds, as
``bench_posthoc.py``):

* ``small``: MiniLM-sized: a 30522x384 token embedding and 6 blocks of 384x384 Q/K/V/O and
  1536x384 / 384x1536 MLP matrices (37 matrices);
* ``large`` (``--large``, about 15 minutes): one LLaMA-7B-sized block: 4096x4096 Q, K, V, O,
  11008x4096 gate and up, 4096x11008 down (7 matrices).

Executors, each with the BLAS (and torch) on one thread per process, as the analysis process
runs by default (``blas_threads=1``):

* ``process``: the analysis process alone (the default, one core);
* ``processes``: a pool of 2 processes it started beforehand (started with the run);
* ``dask``: a local dask cluster of 2 single-threaded worker processes, started beforehand.

Also timed: sending the timed snapshot's arrays (and the previous ones) to the pool and back a
token, with no analysis: what the tasks would save by reading the run file instead, and reading
the same arrays from an HDF5 file, what they would pay for it.

Targets: 2 workers >= 1.8x faster than one process on both models; the rows identical (bit for
bit: every metric and singular value) whatever the executor.
Run: ``.venv/bin/python benchmarks/bench_live_scale.py [--large] [--repeats K] [--no-dask]``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from bench_posthoc import heavy_tailed, small_model
from common import load_average
from threadpoolctl import threadpool_limits

from spectral_callbacks import open_run
from spectral_callbacks.analysis.executors import ExecutorSpec, open_executor
from spectral_callbacks.analysis.options import SpectrumOptions
from spectral_callbacks.live.analysis_executor import LayerExecutor
from spectral_callbacks.live.shared_arrays import mapped
from spectral_callbacks.live.snapshot_analysis import SnapshotAnalyzer
from spectral_callbacks.live.snapshot_files import SnapshotFiles
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter
from spectral_callbacks.spectra import METRIC_NAMES

TARGET_SPEEDUP = 1.8
WORKERS = 2
STEP_SIZE = 1e-3  # the second snapshot: W + STEP_SIZE * noise, as a training step


def large_block() -> dict[str, tuple[int, int]]:
    """Shapes (out x in) of one LLaMA-7B-sized block's matrices."""
    prefix = "model.layers.0"
    shapes = {f"{prefix}.self_attn.{part}_proj.weight": (4096, 4096) for part in "qkvo"}
    shapes[f"{prefix}.mlp.gate_proj.weight"] = (11008, 4096)
    shapes[f"{prefix}.mlp.up_proj.weight"] = (11008, 4096)
    shapes[f"{prefix}.mlp.down_proj.weight"] = (4096, 11008)
    return shapes


def snapshots(shapes: dict[str, tuple[int, int]]) -> list[dict[str, np.ndarray]]:
    """Two snapshots: the weights, and the weights a small step later."""
    first = {name: heavy_tailed(shape, seed) for seed, (name, shape) in enumerate(shapes.items())}
    rng = np.random.default_rng(1000)
    second = {
        name: array + np.float32(STEP_SIZE) * rng.standard_normal(array.shape, dtype=np.float32)
        for name, array in first.items()
    }
    return [first, second]


def kind_of(name: str) -> str:
    return "embedding" if "embeddings" in name else "linear"


def run(
    directory: Path, label: str, executor: str, arrays: list[dict[str, np.ndarray]], repeats: int
) -> tuple[float, Path]:
    """A run of ``1 + repeats`` snapshots on ``executor``: the best seconds after the first, the run file."""
    path = directory / f"{label}.h5"
    parameters = [ParameterSpec(name, kind_of(name), array.shape) for name, array in arrays[0].items()]
    spectrum = SpectrumOptions()
    config = {"every_n_epochs": 1, **dataclasses.asdict(spectrum)}
    writer = RunWriter.open(
        path,
        run_id=label,
        parameters=parameters,
        config_json=json.dumps(config),
        framework="benchmark",
        weights_dtype=None,
    )
    messages: list[tuple[str, str]] = []

    def report(kind: str, text: str) -> None:
        messages.append((kind, text))

    layers = LayerExecutor(executor, None if executor == "process" else WORKERS, report=report)
    layers.start()
    analyzer = SnapshotAnalyzer(
        writer, parameters, spectrum, report=report, weights_dtype=None, layer_executor=layers
    )
    files = SnapshotFiles.in_shared_memory()  # training's side of the hand-over
    seconds = float("inf")
    try:
        for step in range(repeats + 1):
            located = files.pack(step, arrays[step % 2])
            start = time.perf_counter()
            received = mapped(located)
            layers.adopt(received, located)
            analyzer.add(step, step, float(step), received)
            if step > 0:
                seconds = min(seconds, time.perf_counter() - start)
            files.release(step)  # acknowledged
    finally:
        files.close()
        layers.close()
        writer.close()
    if messages:
        raise RuntimeError(f"{label}: {messages}")
    return seconds, path


def contents(path: Path) -> list[bytes]:
    """Every metric and singular value of the run file, as bytes (NaN compares equal as bytes)."""
    found = []
    with open_run(path) as reader:
        for layer in sorted(reader.layers):
            found += [np.asarray(reader.metric(name, layer)).tobytes() for name in METRIC_NAMES]
            found += [reader.svals(layer, step=step).tobytes() for step in reader.snapshots()["step"]]
    return found


def transfer_seconds(arrays: list[dict[str, np.ndarray]], repeats: int) -> float:
    """Sending the second snapshot's arrays with the first's to 2 pool workers, one task per
    matrix, and a token back (the pool started beforehand)."""
    tasks = [[((name, array, "linear"), arrays[0][name])] for name, array in arrays[1].items()]
    best = float("inf")
    with open_executor(ExecutorSpec("processes"), workers=WORKERS) as runner:
        list(runner.map(abs, range(WORKERS)))
        for _ in range(repeats):
            start = time.perf_counter()
            for _, _, error in runner.map(len, tasks):
                if error is not None:
                    raise error
            best = min(best, time.perf_counter() - start)
    return best


def reading_seconds(directory: Path, arrays: list[dict[str, np.ndarray]]) -> float:
    """Reading both snapshots' arrays from an HDF5 file (written uncompressed beforehand; the
    page cache likely holds it, as it holds a run file just written)."""
    path = directory / "weights.h5"
    with h5py.File(path, "w") as file:
        for index, snapshot in enumerate(arrays):
            for name, array in snapshot.items():
                file.create_dataset(f"{index}/{name}", data=array)
    start = time.perf_counter()
    with h5py.File(path, "r") as file:
        for index, snapshot in enumerate(arrays):
            for name in snapshot:
                file[f"{index}/{name}"][...]
    return time.perf_counter() - start


def bench(size: str, repeats: int, with_dask: bool) -> list[tuple[bool, str]]:
    shapes = small_model() if size == "small" else large_block()
    arrays = snapshots(shapes)
    megabytes = sum(array.nbytes for array in arrays[1].values()) / 1e6
    print(f"\n{size}: {len(shapes)} matrices, {megabytes:.0f} MB per snapshot (float32)")
    executors = ["process", "processes", *(["dask"] if with_dask else [])]
    times: dict[str, float] = {}
    results: dict[str, list[bytes]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for executor in executors:
            times[executor], path = run(Path(directory), executor, executor, arrays, repeats)
            results[executor] = contents(path)
        sending = transfer_seconds(arrays, repeats)
        reading = reading_seconds(Path(directory), arrays)
    one = times["process"]
    print(f"  {'executor':<12}{'workers':>8}{'seconds':>10}{'speed-up':>10}")
    for executor in executors:
        workers = 1 if executor == "process" else WORKERS
        print(f"  {executor:<12}{workers:>8}{times[executor]:>10.3f}{one / times[executor]:>9.2f}x")
    print(
        f"  sending both snapshots' arrays to the pool and a token back: {sending:.3f} s "
        f"({sending / times['processes']:.1%} of the 2-worker time); reading them from HDF5: {reading:.3f} s"
    )
    identical = all(found == results["process"] for found in results.values())
    speedup = one / times["processes"]
    verdicts = [
        (identical, f"{size}: metrics and singular values identical across executors: {identical}"),
        (
            speedup >= TARGET_SPEEDUP,
            f"{size}: 2 processes {speedup:.2f}x faster than one (target >= {TARGET_SPEEDUP}x)",
        ),
    ]
    if with_dask:
        ratio = one / times["dask"]
        verdicts.append(
            (
                ratio >= TARGET_SPEEDUP,
                f"{size}: dask, 2 workers {ratio:.2f}x faster than one (target >= {TARGET_SPEEDUP}x)",
            )
        )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also the LLaMA-sized block (about 15 minutes)")
    parser.add_argument("--repeats", type=int, default=4, help="timed snapshots per executor (large: 1)")
    parser.add_argument("--no-dask", action="store_true", help="skip the dask cluster")
    args = parser.parse_args()
    # the analysis process's BLAS and torch threads (blas_threads=1), which its pool inherits
    os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        verdicts = bench("small", args.repeats, not args.no_dask)
        if args.large:
            verdicts += bench("large", 1, not args.no_dask)
    print(f"\n{load_average()}\n")
    for passed, text in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
