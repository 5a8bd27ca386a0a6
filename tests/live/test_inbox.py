"""The worker's inbox ends when training dies, even in the middle of a half-written message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

_CHILD = textwrap.dedent(
    """
    def run(queue, out):
        from spectral_callbacks.live.inbox import Inbox

        inbox, received = Inbox(queue), []
        while (message := inbox.next()) is not None:
            received.append(message)
        with open(out, "w") as file:
            file.write(repr(received))
    """
)

# The "training process": starts the reader, sends two messages and half of a third, then dies
# without any clean-up (os._exit, like a SIGKILL).
_PARENT = textwrap.dedent(
    """
    import multiprocessing, os, struct, sys, time
    import inbox_child

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    reader = context.Process(target=inbox_child.run, args=(queue, sys.argv[1]), daemon=True)
    reader.start()
    queue.put("one")
    queue.put("two")
    time.sleep(1.0)  # the queue's feeder thread has written both into the pipe
    if sys.argv[2] == "half":
        os.write(queue._writer.fileno(), struct.pack("!i", 1_000_000) + b"only the start")
    os._exit(0)
    """
)


def run_parent(tmp_path: Path, mode: str) -> Path:
    (tmp_path / "inbox_child.py").write_text(_CHILD)
    out = tmp_path / f"received-{mode}.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", _PARENT, str(out), mode], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def wait_for(path: Path, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"the reader never finished: no {path}"
        time.sleep(0.1)
    time.sleep(0.1)
    return path.read_text()


def test_reader_finishes_queued_messages_when_training_dies(tmp_path: Path) -> None:
    out = run_parent(tmp_path, "whole")
    assert wait_for(out, 20) == "['one', 'two']"


def test_reader_stuck_in_a_half_written_message_is_freed(tmp_path: Path) -> None:
    out = run_parent(tmp_path, "half")
    assert wait_for(out, 20) == "['one', 'two']"
