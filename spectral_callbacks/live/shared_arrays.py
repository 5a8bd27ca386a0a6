"""A snapshot's arrays in one file of the machine's shared memory, for the analysis' worker processes.

Sent through a pipe, a snapshot's arrays are pickled, copied through the kernel in small pieces,
and unpickled into memory the worker has never touched; on a MiniLM-sized model that delays the
largest layer's task by about half a second (docs/performance.md, "Live analysis on several
cores"). Written once into a file on ``/dev/shm`` (memory, not disk), they cost one copy, and each
task maps the pages of its own arrays. Only for workers on this machine: a remote dask cluster
gets the arrays themselves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SHARED_MEMORY", "StoredArray", "loaded", "scratch_directory", "shared_arrays"]

SHARED_MEMORY = Path("/dev/shm")
_PREFIX = "spectral-snapshot-"  # then the owning process's id
_ALIGNMENT = 64  # bytes: each array starts on a cache line, as numpy aligns its own


@dataclass(frozen=True)
class StoredArray:
    """Where an array is in a file: its bytes at ``offset``, C order."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    def load(self) -> np.ndarray:
        """The array, mapped from the file (copy-on-write: writing to it leaves the file alone)."""
        return np.asarray(
            np.memmap(self.path, dtype=self.dtype, mode="c", offset=self.offset, shape=self.shape)
        )


def loaded(value: StoredArray | np.ndarray) -> np.ndarray:
    """The array itself, from a :class:`StoredArray` or as given."""
    return value.load() if isinstance(value, StoredArray) else value


def scratch_directory() -> Path | None:
    """A new directory in shared memory for this process's files, or None where there is none.

    Directories that processes killed before removing theirs left behind are removed first:
    their files hold memory until the machine restarts.
    """
    if not SHARED_MEMORY.is_dir() or not os.access(SHARED_MEMORY, os.W_OK):
        return None
    for directory in SHARED_MEMORY.glob(f"{_PREFIX}*"):
        owner = directory.name.removeprefix(_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(directory, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=SHARED_MEMORY))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def shared_arrays(
    arrays: Sequence[np.ndarray], directory: Path | None
) -> Iterator[list[StoredArray | np.ndarray]]:
    """``arrays`` written into one file under ``directory``, as :class:`StoredArray` locations,
    for the block; the file is removed after it. The arrays themselves where there is no
    directory or not twice their size free in it (a full ``/dev/shm`` kills a reader with
    SIGBUS), and for empty arrays (nothing to map)."""
    size = sum(array.nbytes + _ALIGNMENT for array in arrays)
    if directory is None or shutil.disk_usage(directory).free < 2 * size:
        yield list(arrays)
        return
    handle, name = tempfile.mkstemp(suffix=".bin", dir=directory)
    try:
        stored: list[StoredArray | np.ndarray] = []
        with os.fdopen(handle, "wb") as file:
            for array in arrays:
                if array.size == 0:
                    stored.append(array)
                    continue
                file.write(b"\0" * (-file.tell() % _ALIGNMENT))
                contiguous = np.ascontiguousarray(array)
                stored.append(StoredArray(name, file.tell(), contiguous.shape, contiguous.dtype.str))
                file.write(contiguous.data)
        yield stored
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
