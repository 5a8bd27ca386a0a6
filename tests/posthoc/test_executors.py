"""Executors: local, process pool and dask give identical rows, in file order; failures stay local."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from posthoc_models import analyzable

from spectral_callbacks import analyze_model
from spectral_callbacks.analysis import executors
from spectral_callbacks.analysis.blas_environment import BLAS_THREAD_VARIABLES
from spectral_callbacks.analysis.executors import ExecutorSpec, process_context
from spectral_callbacks.posthoc import ExecutorError, analysis, analyze_paths, parse_executor
from spectral_callbacks.spectra import METRIC_NAMES


def metric_table(rows: list) -> tuple[list[str], np.ndarray]:
    """Names and a (rows x metrics) array, NaN where skipped, for exact comparisons."""
    return [row.name for row in rows], np.array([[row.metrics()[m] for m in METRIC_NAMES] for row in rows])


def assert_identical(rows: list, expected: list) -> None:
    names, values = metric_table(rows)
    expected_names, expected_values = metric_table(expected)
    assert names == expected_names
    np.testing.assert_array_equal(values, expected_values)  # bit for bit (NaN equals NaN here)
    for row, other in zip(rows, expected, strict=True):
        assert (row.status, row.reason, row.phase) == (other.status, other.reason, other.phase)
        np.testing.assert_array_equal(row.svals, other.svals)


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """One local cluster for the module: 2 single-threaded worker processes."""
    pytest.importorskip("distributed")
    with executors.local_cluster(2) as cluster:
        yield cluster.scheduler_address


def test_parse_executor() -> None:
    assert parse_executor("local") == ExecutorSpec("local")
    assert parse_executor("processes") == ExecutorSpec("processes")
    assert parse_executor("dask") == ExecutorSpec("dask")
    assert parse_executor("dask://scheduler:8786") == ExecutorSpec("dask", "tcp://scheduler:8786")
    assert parse_executor("dask://tls://10.0.0.1:8786") == ExecutorSpec("dask", "tls://10.0.0.1:8786")
    for bad in ("threads", "dask://", "dask://host", "spark://host:7077"):
        with pytest.raises(ExecutorError, match="expected one of local, processes, dask, dask://HOST:PORT"):
            parse_executor(bad)


def test_local_rows_equal_analyze_model_on_the_same_arrays(model_files, state) -> None:
    (result,) = analyze_paths([model_files["npz"]])
    assert result.error is None and not result.failed
    analyzed = [row for row in result.rows if row.status != "skipped"]
    assert_identical(analyzed, list(analyze_model(analyzable(state))))
    skipped = [row for row in result.rows if row.status == "skipped"]
    assert {row.reason for row in skipped} == {"1-D parameter has no matrix view"}
    assert len(skipped) == sum(array.ndim == 1 for array in state.values())


def test_largest_parameters_run_first_and_rows_stay_in_model_order(model_files, state, monkeypatch) -> None:
    """Largest first lets parallel workers finish together; the output order must not change."""
    started: list[tuple[int, ...]] = []
    original = analysis.analyze_parameter

    def recording(ref, options):
        started.append(ref.shape)
        return original(ref, options)

    monkeypatch.setattr(analysis, "analyze_parameter", recording)
    (result,) = analyze_paths([model_files["npz"]])
    costs = [np.prod(shape) * min(shape[:2]) for shape in started]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    analyzed = [row for row in result.rows if row.status != "skipped"]
    assert_identical(analyzed, list(analyze_model(analyzable(state))))


def test_process_pool_and_dask_give_identical_results(model_files, dask_address: str) -> None:
    paths = [model_files["safetensors"], model_files["sharded"], model_files["npz"]]
    local = analyze_paths(paths, executor="local")
    address = dask_address.removeprefix("tcp://")
    for executor in ("processes", f"dask://{address}"):
        others = analyze_paths(paths, executor=executor, workers=2)
        assert [r.path for r in others] == [Path(p) for p in paths]
        for result, expected in zip(others, local, strict=True):
            assert not result.failed
            assert_identical(result.rows, expected.rows)
    assert_identical(local[0].rows, local[1].rows)  # one file or its shards: the same model


@pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")
def test_workers_are_forked_when_no_other_thread_runs(monkeypatch) -> None:
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert process_context().get_start_method() == "fork"


def test_workers_are_spawned_while_another_thread_runs() -> None:
    """A fork copies locks that another thread may hold; fresh interpreters are safe."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert process_context().get_start_method() == "spawn"
    finally:
        stop.set()
        thread.join()


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A .keras file saved by another process: Keras' threads stay out of this one, which forks."""
    if importlib.util.find_spec("keras") is None:
        return None
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    script = (
        "import sys, keras; keras.Sequential([keras.Input((300,)), keras.layers.Dense(260), "
        "keras.layers.Dense(10)]).save(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, capture_output=True)
    return path


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_forked_and_spawned_workers_give_identical_results(
    model_files, keras_file: Path | None, monkeypatch, method: str
) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    # every format: torch files when torch is installed, a .keras file (read with h5py) with Keras
    paths = [*model_files.values(), *([keras_file] if keras_file else [])]
    local = analyze_paths(paths, executor="local")
    monkeypatch.setattr(executors, "process_context", lambda: multiprocessing.get_context(method))
    pooled = analyze_paths(paths, executor="processes", workers=2)
    for result, expected in zip(pooled, local, strict=True):
        assert not result.failed and result.format == expected.format
        assert_identical(result.rows, expected.rows)


@pytest.fixture
def forked(monkeypatch) -> None:
    """Pools fork, whatever threads this test process runs."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available here")
    monkeypatch.setattr(executors, "process_context", lambda: multiprocessing.get_context("fork"))


def test_forked_workers_run_torch_after_its_threads_ran_here(forked, tmp_path: Path) -> None:
    """GNU OpenMP does not survive a fork once its threads have run; the workers' torch work
    (widening bfloat16) must not enter a parallel region."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        matrix = torch.randn(1500, 1500)
        (matrix @ matrix).sum()  # the intra-op pool has run here
    finally:
        torch.set_num_threads(threads)
    path = tmp_path / "half.pt"
    torch.save({f"layer{i}.weight": torch.randn(700, 600).to(torch.bfloat16) for i in range(3)}, path)
    local = analyze_paths([path])
    pooled = analyze_paths([path], executor="processes", workers=2)
    assert not pooled[0].failed
    assert_identical(pooled[0].rows, local[0].rows)


FORKED_BLAS_PROBE = """
import os, sys
from threadpoolctl import threadpool_info
from spectral_callbacks.analysis import executors
from spectral_callbacks.posthoc import analysis

def threads_after_a_task(path):
    (result,) = analysis.plan_paths([path])
    analysis.analyze_batch(result.tasks, analysis.AnalysisOptions())
    return len(os.listdir("/proc/self/task"))

def openblas_threads():
    return sorted({pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas"})

if __name__ == "__main__":
    before = openblas_threads()
    with executors.open_executor(executors.ExecutorSpec("processes"), workers=1) as runner:
        ((_, threads, error),) = runner.map(threads_after_a_task, [sys.argv[1]])
    print(threads, error, before, openblas_threads(), sep="|")
"""


@pytest.mark.skipif(sys.platform != "linux" or (os.cpu_count() or 1) < 2, reason="forks; needs BLAS threads")
def test_forked_workers_do_not_restart_openblas_threads(model_files) -> None:
    """A fork stops OpenBLAS's thread pool and any thread count set in the child restarts it
    (its new threads spin for work, taking the cores the tasks need): a worker forked from a
    process whose OpenBLAS runs several threads analyzes on its one thread, and the caller's
    count is back when the pool closes."""
    env = {key: value for key, value in os.environ.items() if key not in BLAS_THREAD_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", FORKED_BLAS_PROBE, str(model_files["npz"])],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    threads, error, before, after = done.stdout.strip().split("|")
    assert (threads, error) == ("1", "None")
    assert before == after != "[1]"


def test_dask_local_cluster_by_default(model_files) -> None:
    pytest.importorskip("distributed")
    local = analyze_paths([model_files["safetensors"]])
    (result,) = analyze_paths([model_files["safetensors"]], executor="dask", workers=2)
    assert_identical(result.rows, local[0].rows)


def test_a_scheduler_that_does_not_answer(model_files) -> None:
    pytest.importorskip("distributed")
    start = time.monotonic()
    message = r"Cannot reach the dask scheduler at tcp://127\.0\.0\.1:9 within 1 s"
    with pytest.raises(ExecutorError, match=message):
        analyze_paths([model_files["npz"]], executor="dask://127.0.0.1:9", timeout=1.0)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("executor", ["local", "processes"])
def test_a_file_that_vanishes_fails_alone(model_files, tmp_path: Path, executor: str) -> None:
    from spectral_callbacks.posthoc.analysis import plan_paths, run_plans

    doomed = tmp_path / "doomed.safetensors"
    shutil.copy(model_files["safetensors"], doomed)
    results = plan_paths([doomed, model_files["npz"]])
    doomed.unlink()  # after planning: every task of that file fails when it loads its tensor
    run_plans(results, executor=executor, workers=2)
    gone, fine = results
    assert gone.failed and gone.error is None
    planned = [row for row in gone.rows if "cannot read or analyze it" in (row.reason or "")]
    assert len(planned) == len(gone.parameters) == len(gone.layer_errors) > 0
    assert all("No such file" in error or "FileNotFoundError" in error for error in gone.layer_errors)
    assert not fine.failed
    assert sum(row.status != "skipped" for row in fine.rows) == len(fine.parameters)


def test_options_are_checked_and_no_layer_is_too_large(model_files) -> None:
    from spectral_callbacks.posthoc import AnalysisOptions

    with pytest.raises(ValueError, match="Invalid value for blas_threads=0"):
        AnalysisOptions(blas_threads=0)
    (result,) = analyze_paths([model_files["npz"]], options=AnalysisOptions(min_evals=20000))
    assert {row.status for row in result.rows} == {"skipped"}  # every matrix is too small, none too large


def _mark_done(path: Path) -> None:
    time.sleep(0.02)
    path.touch()


def _fail_on_three(item: int) -> int:
    if item == 3:
        raise ValueError("item three")
    return item


def _die_in_a_worker_on_zero(item: int) -> int:
    if item == 0 and multiprocessing.parent_process() is not None:
        os._exit(1)  # the worker process dies: the pool breaks
    time.sleep(0.01)
    return item


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["local", "processes"])
def test_an_item_that_raises_fails_alone(kind: str) -> None:
    with executors.open_executor(ExecutorSpec(kind), workers=2) as runner:
        outcomes = sorted(runner.map(_fail_on_three, list(range(8))), key=lambda outcome: outcome[0])
    assert [value for _, value, _ in outcomes] == [0, 1, 2, None, 4, 5, 6, 7]
    errors = [error for _, _, error in outcomes]
    assert isinstance(errors[3], ValueError) and str(errors[3]) == "item three"
    assert errors.count(None) == 7


@pytest.mark.timeout(60)
def test_a_worker_that_dies_fails_what_was_left_and_nothing_hangs() -> None:
    with executors.open_executor(ExecutorSpec("processes"), workers=2) as runner:
        outcomes = {i: (value, error) for i, value, error in runner.map(_die_in_a_worker_on_zero, range(30))}
    assert sorted(outcomes) == list(range(30))
    assert isinstance(outcomes[0][1], BrokenProcessPool)
    assert all(value == i or isinstance(error, BrokenProcessPool) for i, (value, error) in outcomes.items())


@pytest.mark.timeout(60)
def test_stopping_early_drops_the_tasks_not_started(tmp_path: Path) -> None:
    items = [tmp_path / f"{i}.done" for i in range(200)]
    with executors.open_executor(ExecutorSpec("processes"), workers=2) as runner:
        outcomes = runner.map(_mark_done, items)
        next(outcomes)
        outcomes.close()
    # leaving the block waits for the tasks running or handed to a worker, not for all 200
    assert len(list(tmp_path.glob("*.done"))) < 20


def test_guided_batches_shrink_toward_the_end_and_cover_every_item_in_order() -> None:
    costs = sorted(np.random.default_rng(0).integers(1, 10**6, size=300).tolist(), reverse=True)
    for workers in (2, 4, 16):
        batches = analysis.guided_batches(costs, workers)
        assert [i for batch in batches for i in batch] == list(range(len(costs)))
        sums = [sum(costs[i] for i in batch) for batch in batches]
        remaining = sum(costs)
        for batch, total in zip(batches[:-1], sums[:-1], strict=True):
            # each takes at least its share of what is left, and no more than one item beyond it
            assert total >= remaining / (2 * workers) > total - costs[batch[-1]]
            remaining -= total
        assert len(batches) < len(costs) and len(batches[-1]) <= len(batches[len(batches) // 2])
    assert analysis.guided_batches(costs, 1) == [[i] for i in range(len(costs))]
    assert analysis.guided_batches([], 2) == []


def _periodic_callbacks(dask_worker: Any) -> dict[str, float]:
    return {name: callback.callback_time for name, callback in dask_worker.periodic_callbacks.items()}


def test_the_local_dask_cluster_keeps_glibc_s_memory_reuse_and_is_quiet() -> None:
    """dask would set MALLOC_TRIM_THRESHOLD_ in its workers (memory back to the system at every
    free), sample their tasks 100 times a second and check their memory 10 times a second; our
    local cluster keeps glibc's default and dask's thread settings, has no profiler, checks
    memory twice a second, and leaves the caller's dask config as it was."""
    pytest.importorskip("distributed")
    import dask.config
    from distributed import Client

    callers = {name: dask.config.get(name) for name in executors.QUIET_WORKERS}
    with executors.local_cluster(1) as cluster, Client(cluster) as client:
        assert list(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == [None]
        assert list(client.run(os.environ.get, "OMP_NUM_THREADS").values()) == ["1"]
        (callbacks,) = client.run(_periodic_callbacks).values()
        assert "profile" not in callbacks and callbacks["memory_monitor"] == 500
    assert {name: dask.config.get(name) for name in executors.QUIET_WORKERS} == callers


def test_a_batch_that_cannot_run_fails_each_of_its_parameters(model_files) -> None:
    """A worker that dies takes its whole batch with it: every parameter in it gets the reason."""

    def broken_map(function, items):
        for index, _ in enumerate(items):
            yield index, None, BrokenProcessPool("a worker died")

    results = analysis.plan_paths([model_files["npz"]])
    planned = len(results[0].tasks)
    analysis.run_on(executors.Runner(broken_map, 2), results)
    (result,) = results
    assert result.failed and len(result.layer_errors) == planned == len(result.parameters)
    reasons = [row.reason for row in result.rows if "cannot read or analyze it" in (row.reason or "")]
    assert reasons == ["cannot read or analyze it: BrokenProcessPool: a worker died"] * planned
