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

__all__ = [
    "SHARED_MEMORY",
    "SharedSnapshots",
    "StoredArray",
    "loaded",
    "scratch_directory",
]

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


class SharedSnapshots:
    """Successive snapshots' arrays in shared memory, each snapshot's file kept for the next one.

    A live analysis task needs each layer's arrays now and at the previous snapshot, and those
    were written into the previous snapshot's file already: only the new arrays are written (half
    the copying), and a file is removed once the snapshot after it is analyzed.

    Args:
        directory: from :func:`scratch_directory`; None sends the arrays themselves.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._kept_file: str | None = None
        # the kept file's arrays, by id; the arrays are held so that their ids stay theirs
        self._kept: dict[int, tuple[np.ndarray, StoredArray | np.ndarray]] = {}

    @contextlib.contextmanager
    def share(
        self, current: Sequence[np.ndarray], previous: Sequence[np.ndarray], *, keep: bool = True
    ) -> Iterator[tuple[list[StoredArray | np.ndarray], list[StoredArray | np.ndarray]]]:
        """``current`` and ``previous`` as :class:`StoredArray` locations (see :func:`_written`)
        for the block: the arrays of ``previous`` that the kept call's ``current`` held (the same
        objects) from its file, the others written into a new one. After the block, with
        ``keep``, the kept file is removed and the new one kept, with ``current``'s locations;
        without, the new one is removed (arrays no later snapshot refers to, such as changes
        since initialization)."""
        reused = [self._kept.get(id(array), (None, None))[1] for array in previous]
        written = list(current) + [a for a, old in zip(previous, reused, strict=True) if old is None]
        name, stored = _written(written, self.directory)
        try:
            fresh = iter(stored[len(current) :])
            sent_previous = [next(fresh) if old is None else old for old in reused]
            yield stored[: len(current)], sent_previous
        except BaseException:
            _remove(name)
            name = None
            raise
        finally:
            if keep:
                _remove(self._kept_file)
                self._kept_file = name
                located = zip(current, stored[: len(current)], strict=True) if name is not None else ()
                self._kept = {id(array): (array, where) for array, where in located}
            else:
                _remove(name)

    def close(self) -> None:
        """Remove the kept file."""
        _remove(self._kept_file)
        self._kept_file, self._kept = None, {}


def _written(
    arrays: Sequence[np.ndarray], directory: Path | None
) -> tuple[str | None, list[StoredArray | np.ndarray]]:
    """``arrays`` written into a new file under ``directory`` and their locations there; the
    arrays themselves (and no file) where there is no directory or not twice their size free in
    it (a full ``/dev/shm`` kills a reader with SIGBUS), and for empty arrays (nothing to map)."""
    size = sum(array.nbytes + _ALIGNMENT for array in arrays)
    if directory is None or shutil.disk_usage(directory).free < 2 * size:
        return None, list(arrays)
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
    except BaseException:
        _remove(name)
        raise
    return name, stored


def _remove(name: str | None) -> None:
    if name is not None:
        with contextlib.suppress(OSError):
            os.unlink(name)
