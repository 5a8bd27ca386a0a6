"""Snapshots go from training to the analysis process through files in shared memory: every one
of a run does, none is left once it is analyzed, and a file lost before the worker maps it costs
that snapshot only, listed as dropped with the reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run
from spectral_callbacks.live import shared_arrays
from spectral_callbacks.live.shared_arrays import StoredArray
from spectral_callbacks.live.snapshot_files import SnapshotFiles

pytestmark = pytest.mark.skipif(
    not shared_arrays.SHARED_MEMORY.is_dir(), reason="no /dev/shm: snapshots travel in the queue"
)
EPOCHS = 4
QUEUE_SIZE = 1


def my_directories() -> set[Path]:
    return set(shared_arrays.SHARED_MEMORY.glob(f"spectral-snapshot-{os.getpid()}-*"))


def snapshot_files() -> int:
    return sum(len(list(directory.glob("*.bin"))) for directory in my_directories())


def test_every_snapshot_travels_in_shared_memory_and_no_file_outlives_the_run(
    tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pl = tiny.lightning_package()
    packed: list[bool] = []
    pack = SnapshotFiles.pack

    def recording_pack(self: SnapshotFiles, step: int, arrays: Any) -> Any:
        located = pack(self, step, arrays)
        packed.append(all(isinstance(where, StoredArray) for where in located.values()))
        return located

    monkeypatch.setattr(SnapshotFiles, "pack", recording_pack)
    files_at_epoch_end: list[int] = []

    class CountFiles(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            files_at_epoch_end.append(snapshot_files())

    before = my_directories()
    spectral = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False, queue_size=QUEUE_SIZE)
    trainer = tiny.make_trainer(tmp_path, [spectral, CountFiles()], max_epochs=EPOCHS)
    trainer.fit(tiny.make_model(), tiny.make_loader())

    assert packed == [True] * (EPOCHS + 1)  # the initial weights and one snapshot per epoch
    # counted after a snapshot: the queued ones, the one being analyzed, and the one before,
    # whose acknowledgement may be on its way still
    assert max(files_at_epoch_end) <= QUEUE_SIZE + 2, files_at_epoch_end
    assert my_directories() == before  # nothing left in shared memory
    with open_run(spectral.run_path) as run:
        assert run.snapshots(status="analyzed")["epoch"].tolist() == list(range(EPOCHS + 1))


def test_a_snapshot_whose_file_is_lost_is_dropped_with_the_reason_and_the_run_goes_on(
    tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = SnapshotFiles.pack
    lost_step: list[int] = []

    def losing_pack(self: SnapshotFiles, step: int, arrays: Any) -> Any:
        located = pack(self, step, arrays)
        if len(lost_step) == 0 and step > 0:  # the first epoch's snapshot: removed under the worker
            lost_step.append(step)
            os.unlink(next(iter(located.values())).path)
        return located

    monkeypatch.setattr(SnapshotFiles, "pack", losing_pack)
    spectral = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    trainer = tiny.make_trainer(tmp_path, [spectral], max_epochs=3)
    with pytest.warns(SpectralWarning, match="lost: weights unreadable in shared memory"):
        trainer.fit(tiny.make_model(), tiny.make_loader())

    with open_run(spectral.run_path) as run:
        (_, step, reason), *others = run.dropped
        assert step == lost_step[0] and "shared memory" in reason and others == []
        assert run.snapshots(status="analyzed")["epoch"].tolist() == [0, 2, 3]


def test_without_room_in_shared_memory_snapshots_go_through_the_queue_with_one_warning(
    tmp_path: Path, tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_usage = shared_arrays.shutil.disk_usage
    monkeypatch.setattr(shared_arrays.shutil, "disk_usage", lambda path: real_usage(path)._replace(free=0))
    packed: list[bool] = []
    pack = SnapshotFiles.pack

    def recording_pack(self: SnapshotFiles, step: int, arrays: Any) -> Any:
        located = pack(self, step, arrays)
        packed.append(any(isinstance(where, StoredArray) for where in located.values()))
        return located

    monkeypatch.setattr(SnapshotFiles, "pack", recording_pack)
    spectral = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    trainer = tiny.make_trainer(tmp_path, [spectral], max_epochs=2)
    with pytest.warns(SpectralWarning, match="less than twice a snapshot") as caught:
        trainer.fit(tiny.make_model(), tiny.make_loader())

    assert packed == [False] * 3
    assert sum("less than twice a snapshot" in str(warning.message) for warning in caught) == 1
    with open_run(spectral.run_path) as run:
        assert run.snapshots(status="analyzed")["epoch"].tolist() == [0, 1, 2]
