"""The training process's side of handing snapshots to the analysis process through shared memory.

Put on the analysis process's queue as they are, a snapshot's arrays are pickled by the queue's
feeder thread, a thread of the training process: on a ResNet-18 (45 MB per snapshot) that costs
training about 0.18 s of CPU per snapshot and the analysis process 0.22 s to read it
(docs/performance.md, "Training overhead"). Instead each snapshot's arrays are written once into
a file of the training process's own directory in ``/dev/shm`` (:mod:`.shared_arrays`), and the
queue carries their locations; the analysis process maps them.

A file is removed when the analysis process acknowledges its snapshot: it has mapped the arrays by
then (a mapping outlives the file's name) and linked the file where its own workers still need
it. A snapshot that is dropped has its file removed at once, and the directory goes with the run
(or, when training is killed, with the next run on the machine once the analysis process has
ended too). Without ``/dev/shm``, or with less than twice a snapshot free in it, the arrays
travel in the queue.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .shared_arrays import StoredArray, claim, remove_file, scratch_directory, write_arrays

__all__ = ["SnapshotFiles"]


class SnapshotFiles:
    """Snapshot files of one run, by step.

    Args:
        directory: from :func:`.shared_arrays.scratch_directory`; None sends arrays as they are.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._files: dict[int, str] = {}
        # snapshots that had to go in the queue although there is a directory (too little room)
        self.queued_instead = 0

    @classmethod
    def in_shared_memory(cls) -> SnapshotFiles:
        """Files in a new directory of this process's in ``/dev/shm`` (none where there is none)."""
        return cls(scratch_directory())

    def pack(self, step: int, arrays: Mapping[str, np.ndarray]) -> dict[str, StoredArray | np.ndarray]:
        """The snapshot at ``step``'s arrays written into its file, as their locations there (or
        the arrays themselves, where they cannot be written)."""
        names = list(arrays)
        try:
            path, stored = write_arrays([arrays[name] for name in names], self.directory)
        except OSError:  # shared memory filled up meanwhile: the queue takes the arrays
            path, stored = None, [arrays[name] for name in names]
        if path is not None:
            self._files[step] = path
        elif self.directory is not None and any(array.size for array in stored):
            self.queued_instead += 1
        return dict(zip(names, stored, strict=True))

    def claim(self, pid: int) -> None:
        """Keep the directory while process ``pid`` lives, even after this one (the analysis
        process still maps the snapshots queued when training was killed)."""
        if self.directory is not None:
            claim(self.directory, pid)

    def release(self, step: int) -> None:
        """Remove the file of the snapshot at ``step`` (acknowledged or dropped), if it has one."""
        remove_file(self._files.pop(step, None))

    @property
    def files(self) -> list[str]:
        """The snapshot files not removed yet."""
        return list(self._files.values())

    def close(self) -> None:
        """Remove every file and the directory."""
        self._files.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
