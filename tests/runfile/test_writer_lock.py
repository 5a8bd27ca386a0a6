"""The writer lock: one holder at a time, a waiter gets it when the holder is done, no file left."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from spectral_callbacks.runfile.lock import RunFileBusyError, WriterLock, _same_file

pytest.importorskip("fcntl")


def lock_file(run_path: Path) -> Path:
    return run_path.with_name(f".{run_path.name}.lock")


def test_the_lock_file_is_removed_when_the_writer_is_done(tmp_path: Path) -> None:
    run_path = tmp_path / "run" / "spectra.h5"
    lock = WriterLock.acquire(run_path, timeout=0.3)
    assert lock_file(run_path).exists()
    lock.release()
    assert list(run_path.parent.iterdir()) == []
    lock.release()  # twice is harmless


def test_a_waiter_gets_the_lock_when_its_holder_is_done(tmp_path: Path) -> None:
    run_path = tmp_path / "spectra.h5"
    first = WriterLock.acquire(run_path, timeout=0.3)
    acquired: list[WriterLock] = []
    waiter = threading.Thread(target=lambda: acquired.append(WriterLock.acquire(run_path, timeout=10)))
    waiter.start()
    time.sleep(0.3)
    assert not acquired  # still waiting
    first.release()
    waiter.join(timeout=10)
    (second,) = acquired
    # the waiter holds the file that is at the path now, so a third writer must wait for it
    with pytest.raises(RunFileBusyError, match="still being written by another process"):
        WriterLock.acquire(run_path, timeout=0.3)
    second.release()
    assert not lock_file(run_path).exists()


def test_a_lock_file_removed_or_replaced_is_not_the_one_at_the_path(tmp_path: Path) -> None:
    """A waiter that opened the file just before its holder removed it must not count its lock."""
    path = tmp_path / ".spectra.h5.lock"
    path.touch()
    descriptor = os.open(path, os.O_RDWR)
    try:
        assert _same_file(descriptor, path)
        path.unlink()
        assert not _same_file(descriptor, path)
        path.touch()  # a new writer's file under the same name
        assert not _same_file(descriptor, path)
    finally:
        os.close(descriptor)
