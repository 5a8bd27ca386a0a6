"""The worker's end of the snapshot queue: the next message, or ``None`` once training is gone.

A training process killed outright (SIGKILL, out of memory) sends no sentinel, and may die half
way through writing a snapshot into the pipe, where a read would then wait forever. A thread
waits for the parent's death; the worker then finishes the complete messages, and a read stuck
on a half-written one is interrupted by a signal, so the worker always closes its run file.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
import time

__all__ = ["Inbox"]

_POLL_SECONDS = 1.0
_STUCK_SECONDS = 2.0  # a read of a complete message takes milliseconds
_INTERRUPT = getattr(signal, "SIGUSR1", None)


class _TrainingGone(BaseException):
    """Raised in the main thread to end a read that would never finish (a ``BaseException``, so
    the analysis's own error handling never records it as a failed snapshot)."""


class Inbox:
    """Reads the worker's queue until the ``None`` sentinel or the training process's death."""

    def __init__(self, inbox: multiprocessing.Queue):
        self._inbox = inbox
        self._parent = multiprocessing.parent_process()
        self._gone = False
        self._waiting = False
        self._reads = 0
        self._main = threading.main_thread().ident
        self._can_interrupt = (
            _INTERRUPT is not None
            and hasattr(signal, "pthread_kill")
            and threading.current_thread() is threading.main_thread()
        )
        if self._can_interrupt:
            signal.signal(_INTERRUPT, _raise_training_gone)
        if self._parent is not None:
            threading.Thread(target=self._watch_parent, name="spectral-parent-watch", daemon=True).start()

    def next(self) -> object | None:
        """The next message; ``None`` at the sentinel or when training is gone and nothing is left."""
        while True:
            self._waiting = True
            try:
                if self._gone and self._inbox.empty():
                    return None
                message = self._inbox.get(timeout=_POLL_SECONDS)
                self._reads += 1
                return message
            except queue.Empty:
                continue
            except _TrainingGone:
                return None
            finally:
                self._waiting = False

    def _watch_parent(self) -> None:
        self._parent.join()  # returns when the training process has exited, however it ended
        self._gone = True
        while self._can_interrupt:  # until the worker exits (a daemon thread)
            reads, waiting = self._reads, self._waiting
            time.sleep(_STUCK_SECONDS)
            if waiting and self._waiting and reads == self._reads:
                signal.pthread_kill(self._main, _INTERRUPT)


def _raise_training_gone(signum: int, frame: object) -> None:
    raise _TrainingGone
