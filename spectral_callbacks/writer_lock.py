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
    (wait for it) from a dead one (the kernel released its lock). Without ``fcntl`` (Windows)
    there is no lock and one writer per file is up to the user.
    """

    def __init__(self, descriptor: int | None):
        self._descriptor = descriptor

    @classmethod
    def acquire(cls, path: Path, *, timeout: float) -> WriterLock:
        try:
            import fcntl
        except ImportError:
            return cls(None)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(descriptor)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(descriptor)
                    raise RunFileBusyError(
                        f"Run file {path} is still being written by another process after {timeout:.0f} s "
                        "(an earlier analysis worker finishing its queue?); try again when it has finished."
                    ) from None
                time.sleep(0.1)

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor releases the lock
            self._descriptor = None
