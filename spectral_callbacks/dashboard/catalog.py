"""The run files under a log directory, named by their place in it.

The dashboard reads only files this catalog found: a request names a run, and the name is looked
up here, never turned into a path, so no request can reach a file outside the log directory.
Every ``.h5``/``.hdf5`` file under it is a candidate; one that is not a readable run file (a Keras
checkpoint, a truncated file, random bytes) is listed as unreadable with the reason.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..reporting.compare import LIGHTNING_COMPONENT, run_location
from ..runfile.reader import RunReader, open_run

__all__ = ["CANDIDATE_SUFFIXES", "Catalog", "RunEntry", "UnknownRunError"]

CANDIDATE_SUFFIXES = (".h5", ".hdf5")
_RESCAN_SECONDS = 5.0


class UnknownRunError(KeyError):
    """A requested run name that the catalog did not find under the log directory."""


@dataclass(frozen=True)
class RunEntry:
    """A run file found under the log directory: its name in the dashboard and its path."""

    name: str
    path: Path


@dataclass
class _Scan:
    runs: dict[str, RunEntry] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    # (mtime_ns, size) of every candidate when it was checked, so unchanged files are not reopened
    signatures: dict[Path, tuple[int, int]] = field(default_factory=dict)
    readable: dict[Path, str | None] = field(default_factory=dict)  # path -> None or the reason
    time: float = float("-inf")


class Catalog:
    """Finds run files under ``logdir`` and resolves run names to them (thread-safe).

    The directory is walked again at most every few seconds, so a run that starts while
    TensorBoard is open appears on the next reload; a file is reopened to check it only when its
    size or modification time changed.
    """

    def __init__(self, logdir: str | Path, *, rescan_seconds: float = _RESCAN_SECONDS):
        self.logdir = Path(logdir).resolve()
        self._rescan_seconds = rescan_seconds
        self._lock = threading.Lock()
        self._scan = _Scan()

    def runs(self) -> list[RunEntry]:
        """The readable run files, sorted by name."""
        scan = self._current()
        return [scan.runs[name] for name in sorted(scan.runs)]

    def unreadable(self) -> dict[str, str]:
        """``{name: reason}`` for candidate files that are not readable run files."""
        return dict(sorted(self._current().unreadable.items()))

    def has_runs(self) -> bool:
        return bool(self._current().runs)

    def entry(self, name: str) -> RunEntry:
        """The run called ``name``.

        Raises:
            UnknownRunError: no readable run of that name under the log directory.
        """
        scan = self._current()
        if name not in scan.runs:
            scan = self._current(force=True)
        try:
            return scan.runs[name]
        except KeyError:
            raise UnknownRunError(name) from None

    def open(self, name: str) -> RunReader:
        """A reader of the run called ``name`` (the caller closes it).

        Raises:
            UnknownRunError: no such run.
            ValueError, OSError: its file cannot be read now.
        """
        return open_run(self.entry(name).path)

    def _current(self, *, force: bool = False) -> _Scan:
        with self._lock:
            if force or time.monotonic() - self._scan.time > self._rescan_seconds:
                self._scan = self._rescanned(self._scan)
            return self._scan

    def _rescanned(self, previous: _Scan) -> _Scan:
        scan = _Scan(time=time.monotonic())
        candidates = list(_candidates(self.logdir))
        for path in candidates:
            signature = _signature(path)
            if signature is None:
                continue
            scan.signatures[path] = signature
            if previous.signatures.get(path) == signature and path in previous.readable:
                scan.readable[path] = previous.readable[path]
            else:
                scan.readable[path] = _unreadable_reason(path)
        found = [path for path in candidates if path in scan.readable]
        for path, name in zip(found, _names(self.logdir, found), strict=True):
            reason = scan.readable[path]
            if reason is None:
                scan.runs[name] = RunEntry(name, path)
            else:
                scan.unreadable[name] = reason
        return scan


def _candidates(logdir: Path) -> list[Path]:
    """HDF5 files under ``logdir`` that resolve to a place inside it (symlinks pointing out are ignored)."""
    found = []
    for directory, subdirectories, files in os.walk(logdir):
        subdirectories.sort()
        for file_name in sorted(files):
            if not file_name.lower().endswith(CANDIDATE_SUFFIXES):
                continue
            path = Path(directory) / file_name
            try:
                resolved = path.resolve(strict=True)
            except OSError:
                continue
            if resolved.is_file() and resolved.is_relative_to(logdir):
                found.append(path)
    return found


def _names(logdir: Path, paths: list[Path]) -> list[str]:
    """Run names as TensorBoard names runs: the path under ``logdir`` of the run's directory
    (of the file itself, without its suffix, unless it is a ``spectra.h5``), without Lightning's
    ``lightning_logs`` and ``version_N`` components where the names stay distinct without them."""
    full = [run_location(path.relative_to(logdir)).parts or (logdir.name,) for path in paths]
    short = [
        tuple(part for part in parts if not LIGHTNING_COMPONENT.fullmatch(part)) or parts for parts in full
    ]
    chosen = short if len(set(short)) == len(short) else full
    return ["/".join(parts) for parts in chosen]


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _unreadable_reason(path: Path) -> str | None:
    """None if ``path`` opens as a run file, else one line saying why not."""
    try:
        open_run(path).close()
    except Exception as error:  # noqa: BLE001 - whatever a foreign file raises, it is listed, not fatal
        return f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return None
