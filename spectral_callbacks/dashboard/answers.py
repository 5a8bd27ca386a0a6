"""A bounded memory of the dashboard's answers, valid while their run file is unchanged.

A heatmap of 100 layers x 200 snapshots takes a tenth of a second to read and a third of a
megabyte of JSON; looking at it again, switching views or reloading should not read it again.
An answer is keyed by what it was asked and by the run file's size and modification time, so a
live run that wrote a snapshot since is read anew; the least recently used answers are dropped
beyond ``max_bytes``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

__all__ = ["AnswerCache", "file_signature"]


def file_signature(path: Path) -> tuple[int, int]:
    """``(modification time in ns, size)`` of a file: changes whenever a writer appends to it.

    Raises:
        OSError: the file is gone.
    """
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


class AnswerCache:
    """Serialized answers (bytes) by key, at most ``max_bytes`` of them, thread-safe."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = max_bytes
        self._answers: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        """The answer stored under ``key``, or ``compute()``'s, stored (unless larger than the bound)."""
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
        answer = compute()
        with self._lock:
            if len(answer) <= self.max_bytes and key not in self._answers:
                self._answers[key] = answer
                self._size += len(answer)
                while self._size > self.max_bytes:
                    _, dropped = self._answers.popitem(last=False)
                    self._size -= len(dropped)
        return answer

    def __len__(self) -> int:
        return len(self._answers)
