"""A snapshot's arrays in one file of the machine's shared memory, for another process to map.

Sent through a pipe, a snapshot's arrays are pickled, copied through the kernel in small pieces,
and unpickled into memory the reader has never touched: a 47 MB snapshot cost the sending process
0.18 s of CPU and the reader 0.22 s, and on a MiniLM-sized model it delayed the largest layer's
task by about half a second (docs/performance.md). Written once into a file on ``/dev/shm``
(memory, not disk), they cost one copy, and the reader maps the pages of its own arrays. The
training process hands its snapshots to the analysis process this way (:mod:`.snapshot_files`),
and the analysis process its layers to its workers (:class:`SharedSnapshots`). Only for processes
on this machine: a remote dask cluster gets the arrays themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SHARED_MEMORY",
    "SharedSnapshots",
    "StoredArray",
    "claim",
    "loaded",
    "mapped",
    "remove_file",
    "scratch_directory",
    "write_arrays",
]

SHARED_MEMORY = Path("/dev/shm")
_PREFIX = "spectral-snapshot-"  # then the owning process's id
_CLAIM = "used-by-"  # then the id of another process using the directory
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


def mapped(values: Mapping[str, StoredArray | np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of :class:`StoredArray` locations (or as given), each file mapped once
    (copy-on-write) and its arrays views of that mapping, which stays valid after the file's
    removal.

    Raises:
        OSError: a file is gone or unreadable.
    """
    files: dict[str, np.memmap] = {}
    arrays = {}
    for name, value in values.items():
        if isinstance(value, StoredArray):
            whole = files.get(value.path)
            if whole is None:
                whole = files[value.path] = np.memmap(value.path, dtype=np.uint8, mode="c")
            arrays[name] = np.ndarray(value.shape, dtype=value.dtype, buffer=whole, offset=value.offset)
        else:
            arrays[name] = value
    return arrays


def scratch_directory() -> Path | None:
    """A new directory in shared memory for this process's files, or None where there is none.

    Directories that processes killed before removing theirs left behind are removed first:
    their files hold memory until the machine restarts. A directory is left alone while its
    owner or a process that :func:`claim` names in it lives (an analysis process finishing the
    snapshots of a training process that was killed).
    """
    if not SHARED_MEMORY.is_dir() or not os.access(SHARED_MEMORY, os.W_OK):
        return None
    for directory in SHARED_MEMORY.glob(f"{_PREFIX}*"):
        owner = directory.name.removeprefix(_PREFIX).split("-", 1)[0]
        claims = [path.name.removeprefix(_CLAIM) for path in directory.glob(f"{_CLAIM}*")]
        users = [int(pid) for pid in [owner, *claims] if pid.isdigit()]
        if users and not any(_alive(pid) for pid in users):
            shutil.rmtree(directory, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=SHARED_MEMORY))


def claim(directory: Path, pid: int) -> None:
    """Mark ``directory`` as in use by process ``pid`` too, which outlives its owner at times
    (:func:`scratch_directory` keeps it while either lives)."""
    with contextlib.suppress(OSError):
        (directory / f"{_CLAIM}{pid}").touch()


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
    the copying), and a file is removed once the snapshot after it is analyzed. Arrays the
    training process handed over in a file of its own (:meth:`adopt`) are not written at all:
    that file is linked into :attr:`directory` (a second name for the same memory, which this
    object removes when done, whenever training removes its own).

    Args:
        directory: from :func:`scratch_directory`; None sends the arrays themselves.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._kept_files: list[str] = []
        # the kept files' arrays, by id; the arrays are held so that their ids stay theirs
        self._kept: dict[int, tuple[np.ndarray, StoredArray | np.ndarray]] = {}
        self._adopted: dict[int, tuple[np.ndarray, StoredArray]] = {}

    def adopt(
        self, arrays: Mapping[str, np.ndarray], locations: Mapping[str, StoredArray | np.ndarray]
    ) -> None:
        """Tell the next :meth:`share` where some of its ``current`` arrays are already: ``arrays``
        mapped (:func:`mapped`) from ``locations``, another process's file in shared memory."""
        self._adopted = {
            id(array): (array, where)
            for name, array in arrays.items()
            if isinstance(where := locations.get(name), StoredArray)
        }

    @contextlib.contextmanager
    def share(
        self, current: Sequence[np.ndarray], previous: Sequence[np.ndarray], *, keep: bool = True
    ) -> Iterator[tuple[list[StoredArray | np.ndarray], list[StoredArray | np.ndarray]]]:
        """``current`` and ``previous`` as :class:`StoredArray` locations (see :func:`write_arrays`)
        for the block: adopted arrays of ``current`` from their linked file, the arrays of
        ``previous`` that the kept call's ``current`` held (the same objects) from the kept files,
        the others written into a new one. After the block, with ``keep``, the kept files are
        removed and this call's kept, with ``current``'s locations; without, this call's are
        removed (arrays no later snapshot refers to, such as changes since initialization)."""
        adopted, self._adopted = self._adopted, {}
        files: list[str] = []
        links: dict[str, str] = {}  # an adopted file's path: its link's
        try:
            linked = [self._linked(adopted.get(id(array)), links, files) for array in current]
            reused = [self._kept.get(id(array), (None, None))[1] for array in previous]
            missing = [a for a, where in zip(current, linked, strict=True) if where is None]
            missing += [a for a, old in zip(previous, reused, strict=True) if old is None]
            name, stored = write_arrays(missing, self.directory)
            files += [name] if name is not None else []
            fresh = iter(stored)
            sent_current = [next(fresh) if where is None else where for where in linked]
            sent_previous = [next(fresh) if old is None else old for old in reused]
            yield sent_current, sent_previous
        except BaseException:
            _remove_all(files)
            files = []
            raise
        finally:
            if keep:
                _remove_all(self._kept_files)
                self._kept_files = files
                located = zip(current, sent_current, strict=True) if files else ()
                self._kept = {id(array): (array, where) for array, where in located}
            else:
                _remove_all(files)

    def close(self) -> None:
        """Remove the kept files."""
        _remove_all(self._kept_files)
        self._kept_files, self._kept, self._adopted = [], {}, {}

    def _linked(
        self, adopted: tuple[np.ndarray, StoredArray] | None, links: dict[str, str], files: list[str]
    ) -> StoredArray | None:
        """An adopted array's location in a link of its file in :attr:`directory` (made once per
        file, in ``links``, its name added to ``files``); None when not adopted or the link
        cannot be made."""
        if adopted is None or self.directory is None:
            return None
        where = adopted[1]
        if where.path not in links:
            name = os.path.join(self.directory, f"linked-{len(files)}-{os.path.basename(where.path)}")
            try:
                os.link(where.path, name)
            except OSError:  # training removed it, or another file system: written instead
                return None
            links[where.path] = name
            files.append(name)
        return dataclasses.replace(where, path=links[where.path])


def write_arrays(
    arrays: Sequence[np.ndarray], directory: Path | None
) -> tuple[str | None, list[StoredArray | np.ndarray]]:
    """``arrays`` written into a new file under ``directory`` and their locations there; the
    arrays themselves (and no file) where there is no directory, nothing to write, or not twice
    their size free in it (a full ``/dev/shm`` kills a reader with SIGBUS), and for empty arrays
    (nothing to map)."""
    size = sum(array.nbytes + _ALIGNMENT for array in arrays)
    if (
        directory is None
        or not any(array.size for array in arrays)
        or shutil.disk_usage(directory).free < 2 * size
    ):
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
        remove_file(name)
        raise
    return name, stored


def remove_file(name: str | None) -> None:
    """Remove a file if there is one by that name (None: nothing)."""
    if name is not None:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _remove_all(names: Sequence[str]) -> None:
    for name in names:
        remove_file(name)
