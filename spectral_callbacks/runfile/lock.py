"""The run file's writer lock: one writing process per run file, also in HDF5's SWMR mode."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["RunFileBusyError", "WriterLock"]


class RunFileBusyError(OSError):
    """Another process is writing the run file."""


class WriterLock:
    """An exclusive lock on ``.<run file>.lock`` held by the run file's writer while it lives.

    HDF5 drops its own file lock in SWMR mode, so this is how a new writer tells a live writer
    (wait for it) from a dead one (the kernel released its lock). The writer removes the lock file
    when it is done, so none is left beside the run file (one stays after a killed writer, until
    the next writer is done). Without ``fcntl`` (Windows) there is no lock and one writer per file
    is up to the user.
    """

    def __init__(self, descriptor: int | None, path: Path | None = None):
        self._descriptor = descriptor
        self._path = path

    @classmethod
    def acquire(cls, path: Path, *, timeout: float) -> WriterLock:
        try:
            import fcntl
        except ImportError:
            return cls(None)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(f".{path.name}.lock")
        deadline = time.monotonic() + timeout
        while True:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                if time.monotonic() > deadline:
                    raise RunFileBusyError(
                        f"Run file {path} is still being written by another process after {timeout:.0f} s "
                        "(an earlier analysis worker finishing its queue?); try again when it has finished."
                    ) from None
                time.sleep(0.1)
                continue
            if _same_file(descriptor, lock_path):
                return cls(descriptor, lock_path)
            os.close(descriptor)  # its holder removed it as we opened it: lock the file there now

    def release(self) -> None:
        if self._descriptor is not None:
            if self._path is not None:
                self._path.unlink(missing_ok=True)  # while locked: no other writer holds this file
            os.close(self._descriptor)  # closing the descriptor releases the lock
            self._descriptor = None


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
