"""LayerExecutor: a snapshot's layers analyzed on a process pool come back as the rows of
``analyze_weights``, in model order; a pool whose workers die costs one warning, no row."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from spectral_callbacks.analysis.blas_environment import blas_threads_limited
from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.analysis.options import SpectrumOptions
from spectral_callbacks.live import shared_arrays as shared_arrays_module
from spectral_callbacks.live.analysis_executor import LayerExecutor, check_executor
from spectral_callbacks.live.config import SpectralConfig
from spectral_callbacks.live.shared_arrays import SharedSnapshots, StoredArray, loaded

OPTIONS = SpectrumOptions(randomize=True)  # per-layer generators: the shuffles too must agree
SHAPES = [(48, 16), (200, 64), (3, 3), (64, 64), (8, 4, 3, 3), (16, 130), (10,)]


def snapshot(seed: int) -> list[tuple[str, np.ndarray, str | None]]:
    rng = np.random.default_rng(seed)
    return [
        (f"layer{i}", rng.standard_t(3, size=shape).astype(np.float32), None)
        for i, shape in enumerate(SHAPES)
    ]


def local_rows(items: list, reference: dict | None = None) -> list:
    """The analysis process's rows, on one BLAS thread as the tasks run."""
    with blas_threads_limited(1):
        return list(analyze_weights(items, **OPTIONS.kwargs(), svd_threads=1, reference=reference))


def assert_same_rows(found: list, expected: list) -> None:
    assert [row.name for row in found] == [row.name for row in expected]
    for mine, theirs in zip(found, expected, strict=True):
        assert mine.status == theirs.status and mine.reason == theirs.reason
        assert mine.metrics().keys() == theirs.metrics().keys()
        np.testing.assert_array_equal(list(mine.metrics().values()), list(theirs.metrics().values()))
        if theirs.svals is not None:
            assert mine.svals.tobytes() == theirs.svals.tobytes()


def assert_gave_up_once(executor: LayerExecutor, messages: list, text: str, found: list) -> None:
    """One warning saying ``text``; snapshots 0 and 1 (``found``) analyzed here, the same rows."""
    assert not executor.parallel
    assert [kind for kind, _ in messages] == ["warning"]
    assert text in messages[0][1]
    for seed, rows in zip((0, 1), found, strict=True):
        assert_same_rows(rows, local_rows(snapshot(seed)))


@pytest.fixture
def messages() -> list:
    return []


def test_a_pool_gives_the_rows_of_one_process_in_model_order(messages: list) -> None:
    before, now = snapshot(0), snapshot(1)
    reference = {name: array for name, array, _ in before}
    executor = LayerExecutor("processes", 2, report=lambda kind, text: messages.append((kind, text)))
    try:
        found = executor.analyze(now, OPTIONS, reference=reference)
    finally:
        executor.close()
    assert executor.parallel and messages == []
    assert executor.take_cpu_seconds() > 0 and executor.take_cpu_seconds() == 0  # the tasks' CPU, once
    expected = local_rows(now, reference)
    assert any(row.status == "skipped" for row in expected)  # the 1-D and 3x3 parameters
    assert np.isfinite(expected[0].delta_W)  # the movement columns are there
    assert_same_rows(found, expected)


def test_a_dead_pool_costs_one_warning_and_no_row(messages: list) -> None:
    executor = LayerExecutor("processes", 2, report=lambda kind, text: messages.append((kind, text)))
    try:
        executor.start()
        pool = multiprocessing.active_children()
        assert pool
        for process in pool:
            os.kill(process.pid, signal.SIGKILL)
        found = [executor.analyze(snapshot(seed), OPTIONS) for seed in (0, 1)]
    finally:
        executor.close()
    assert_gave_up_once(executor, messages, "analysis_executor='processes' failed", found)


@pytest.mark.parametrize(
    "executor", ["process", "processes", "dask", "dask://10.0.0.5:8786", "dask://[::1]:8786"]
)
def test_valid_executors_pass(executor: str) -> None:
    check_executor(executor, None)
    assert SpectralConfig(analysis_executor=executor).analysis_executor == executor


@pytest.mark.parametrize(
    ("executor", "workers", "match"),
    [
        ("local", None, r"analysis_executor='local'"),
        ("Dask", None, r"analysis_executor='Dask'"),
        ("dask://host", None, r"analysis_executor='dask://host'"),
        (None, None, r"analysis_executor=None"),
        ("processes", 0, r"analysis_workers=0: expected an integer >= 1"),
        ("processes", True, r"analysis_workers=True"),
        ("process", 3, r"analysis_workers=3 with analysis_executor='process'"),
    ],
)
def test_invalid_options_raise_naming_the_value(executor: object, workers: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SpectralConfig(analysis_executor=executor, analysis_workers=workers)


def test_shared_arrays_round_trip_through_one_file_removed_after(tmp_path) -> None:
    arrays = [array for _, array, _ in snapshot(2)] + [
        np.zeros((0, 4), np.float32),
        np.arange(6.0).reshape(2, 3).T,
    ]
    with SharedSnapshots(tmp_path).share(arrays, [], keep=False) as (stored, _):
        assert len(list(tmp_path.iterdir())) == 1
        assert sum(isinstance(s, StoredArray) for s in stored) == len(arrays) - 1  # not the empty one
        for array, location in zip(arrays, stored, strict=True):
            back = loaded(location)
            assert back.dtype == array.dtype and back.shape == array.shape
            np.testing.assert_array_equal(back, array)
    assert list(tmp_path.iterdir()) == []
    with SharedSnapshots(None).share(arrays, []) as (stored, _):  # no shared memory: the arrays
        assert all(s is a for s, a in zip(stored, arrays, strict=True))


def test_each_snapshot_is_written_once_and_read_again_as_the_next_one_s_previous(tmp_path) -> None:
    files = SharedSnapshots(tmp_path)
    first, second, third = ([array for _, array, _ in snapshot(seed)] for seed in (3, 4, 5))
    snapshot_bytes = sum(array.nbytes for array in first)
    with files.share(first, []) as (now, before):
        assert before == [] and len(list(tmp_path.iterdir())) == 1
    (kept,) = tmp_path.iterdir()
    with files.share(second, first) as (now, before):
        assert len(list(tmp_path.iterdir())) == 2
        new = next(path for path in tmp_path.iterdir() if path != kept)
        assert snapshot_bytes <= new.stat().st_size < 2 * snapshot_bytes  # the second alone
        assert {location.path for location in before if isinstance(location, StoredArray)} == {str(kept)}
        for arrays, locations in ((second, now), (first, before)):
            for array, location in zip(arrays, locations, strict=True):
                np.testing.assert_array_equal(loaded(location), array)
    assert list(tmp_path.iterdir()) == [new]  # the first snapshot's file went after its use
    changes = [array - 1 for array in second]
    with files.share(changes, [], keep=False) as (now, _):  # no later snapshot refers to these
        assert len(list(tmp_path.iterdir())) == 2
    assert list(tmp_path.iterdir()) == [new]
    copies = [array.copy() for array in second]  # equal arrays, not the same ones: written again
    with files.share(third, copies) as (now, before):
        assert all(location.path != str(new) for location in before if isinstance(location, StoredArray))
        for array, location in zip(copies, before, strict=True):
            np.testing.assert_array_equal(loaded(location), array)
    files.close()
    assert list(tmp_path.iterdir()) == []


def test_a_dead_process_s_scratch_directory_is_removed(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_arrays_module, "SHARED_MEMORY", tmp_path)
    child = multiprocessing.get_context("spawn").Process(target=int)
    child.start()
    child.join()
    stale = tmp_path / f"spectral-snapshot-{child.pid}-abc"  # its owner has ended
    live = tmp_path / f"spectral-snapshot-{os.getpid()}-def"
    for directory in (stale, live):
        directory.mkdir()
        (directory / "x.bin").write_bytes(b"\0" * 8)
    mine = shared_arrays_module.scratch_directory()
    assert sorted(tmp_path.iterdir()) == sorted([live, mine]) and mine.name.startswith(
        f"spectral-snapshot-{os.getpid()}-"
    )


def running_cluster(workers: int, processes: bool):
    """A dask cluster of this machine, reached by its address as a remote one would be."""
    distributed = pytest.importorskip("distributed")
    from spectral_callbacks.analysis.executors import local_cluster

    if processes:
        return local_cluster(workers)
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    )


def test_a_killed_dask_worker_loses_nothing(messages: list) -> None:
    """SIGKILL one of two workers: the scheduler gives its tasks to the other, no row changes."""
    with running_cluster(2, processes=True) as cluster:
        address = f"dask://{cluster.scheduler_address}"
        executor = LayerExecutor(address, report=lambda kind, text: messages.append((kind, text)))
        try:
            first = executor.analyze(snapshot(0), OPTIONS)
            from distributed import Client

            with Client(cluster.scheduler_address) as client:
                pids = client.run(os.getpid)
            os.kill(next(iter(pids.values())), signal.SIGKILL)
            second = executor.analyze(snapshot(1), OPTIONS)
        finally:
            executor.close()
    assert executor.parallel and messages == []
    assert executor.take_cpu_seconds() == 0  # a running scheduler's workers: not this machine's cost
    assert_same_rows(first, local_rows(snapshot(0)))
    assert_same_rows(second, local_rows(snapshot(1)))


def test_a_dask_cluster_left_without_workers_costs_one_warning_and_no_row(messages: list) -> None:
    """Tasks of a cluster with no worker would wait forever: after ``timeout`` seconds without
    one, the layers are analyzed in the analysis process, from then on."""
    with running_cluster(1, processes=False) as cluster:
        address = f"dask://{cluster.scheduler_address}"
        executor = LayerExecutor(
            address, timeout=2.0, report=lambda kind, text: messages.append((kind, text))
        )
        try:
            executor.start()
            assert executor.parallel
            cluster.scale(0)
            deadline = time.monotonic() + 30
            while cluster.scheduler.workers and time.monotonic() < deadline:
                time.sleep(0.1)
            found = [executor.analyze(snapshot(seed), OPTIONS) for seed in (0, 1)]
        finally:
            executor.close()
    assert_gave_up_once(executor, messages, "has had no worker for 2 s", found)
