"""Snapshots handed from training to the analysis process through shared memory: written once,
mapped equal, linked (not copied) for the analysis' own workers, and removed when acknowledged."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from spectral_callbacks.live import shared_arrays
from spectral_callbacks.live.shared_arrays import SharedSnapshots, StoredArray, loaded, mapped
from spectral_callbacks.live.snapshot_files import SnapshotFiles


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
        "dense": rng.standard_normal((33, 17)),  # float64, odd sizes: alignment of what follows
        "empty": np.zeros((0, 4), np.float32),
        "head": rng.standard_normal((5, 33)).astype(np.float32),
    }


def test_a_snapshot_is_mapped_back_equal_and_its_file_removed_when_released(tmp_path) -> None:
    files = SnapshotFiles(tmp_path / "training")
    files.directory.mkdir()
    arrays = weights(0)
    packed = files.pack(7, arrays)
    assert [isinstance(value, StoredArray) for value in packed.values()] == [True, True, False, True]
    (path,) = files.files
    assert os.path.dirname(path) == str(files.directory)
    back = mapped(packed)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
    files.release(7)
    assert files.files == [] and list(files.directory.iterdir()) == []
    np.testing.assert_array_equal(back["conv"], arrays["conv"])  # the mapping outlives the name
    files.release(7)  # twice: nothing left to remove
    files.close()
    assert not (tmp_path / "training").exists()


def test_without_shared_memory_the_arrays_travel_as_they_are() -> None:
    files = SnapshotFiles(None)
    arrays = weights(1)
    packed = files.pack(0, arrays)
    assert all(packed[name] is array for name, array in arrays.items()) and files.files == []
    assert all(mapped(packed)[name] is array for name, array in arrays.items())
    files.close()


def test_the_analysis_workers_map_an_adopted_snapshot_from_a_link_not_a_copy(tmp_path) -> None:
    """The analysis process links training's file into its own directory: nothing is written
    again, the link stays readable after training removes its file, and the next snapshot's
    previous arrays are found in it."""
    training, analysis = tmp_path / "training", tmp_path / "analysis"
    training.mkdir(), analysis.mkdir()
    files, shared = SnapshotFiles(training), SharedSnapshots(analysis)
    first, second = weights(2), weights(3)
    located = files.pack(0, first)
    arrays = mapped(located)
    shared.adopt(arrays, located)
    with shared.share(list(arrays.values()), []) as (now, _):
        (link,) = analysis.iterdir()
        assert link.stat().st_nlink == 2  # the same memory under a second name
        assert {where.path for where in now if isinstance(where, StoredArray)} == {str(link)}
    files.release(0)  # acknowledged: training's name goes, the analysis' link stays
    located_next = files.pack(1, second)
    arrays_next = mapped(located_next)
    shared.adopt(arrays_next, located_next)
    with shared.share(list(arrays_next.values()), list(arrays.values())) as (now, before):
        assert len(list(analysis.iterdir())) == 2  # two links, no file written
        assert all(where.path == str(link) for where in before if isinstance(where, StoredArray))
        for array, where in zip(first.values(), before, strict=True):
            np.testing.assert_array_equal(loaded(where), array)
        for array, where in zip(second.values(), now, strict=True):
            np.testing.assert_array_equal(loaded(where), array)
    assert not link.exists() and len(list(analysis.iterdir())) == 1  # the first's link went after use
    shared.close()
    files.close()
    assert list(analysis.iterdir()) == []


def test_an_adopted_file_already_gone_is_written_instead(tmp_path) -> None:
    training, analysis = tmp_path / "training", tmp_path / "analysis"
    training.mkdir(), analysis.mkdir()
    files, shared = SnapshotFiles(training), SharedSnapshots(analysis)
    located = files.pack(0, weights(4))
    arrays = mapped(located)
    files.release(0)
    shared.adopt(arrays, located)
    with shared.share(list(arrays.values()), [], keep=False) as (now, _):
        (written,) = analysis.iterdir()
        assert not written.name.startswith("linked-")
        for array, where in zip(arrays.values(), now, strict=True):
            np.testing.assert_array_equal(loaded(where), array)


def test_a_killed_training_process_s_snapshots_stay_while_its_analysis_process_lives(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The analysis process of a killed training process still maps the queued snapshots: a new
    run's clean-up leaves their directory alone until that process has ended too."""
    monkeypatch.setattr(shared_arrays, "SHARED_MEMORY", tmp_path)
    context = multiprocessing.get_context("spawn")
    dead_training, dead_analysis = (context.Process(target=int) for _ in range(2))
    for process in (dead_training, dead_analysis):
        process.start()
        process.join()
    kept = tmp_path / f"spectral-snapshot-{dead_training.pid}-kept"
    removed = tmp_path / f"spectral-snapshot-{dead_training.pid}-removed"
    for directory, user in ((kept, os.getpid()), (removed, dead_analysis.pid)):
        directory.mkdir()
        (directory / "snapshot.bin").write_bytes(b"\0" * 8)
        SnapshotFiles(directory).claim(user)
    mine = shared_arrays.scratch_directory()
    assert sorted(tmp_path.iterdir()) == sorted([kept, mine])
