"""The analysis process: snapshots in through a bounded queue; run file and TensorBoard out.

The training process only copies weights and hands them over; a spawned process (safe with CUDA
and DDP) is the run file's single writer. It never raises into training: a failing layer is a
skipped row with its reason, a failing snapshot a "failed" index row, and messages for the user
come back through a second queue, with each analyzed snapshot's scalar metrics for the user's own
loggers. A worker that dies is restarted once, then the callback warns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analysis.alerts import SpectralMonitor
from ..analysis.averages import layout_metrics
from ..analysis.blas_environment import blas_threads_for_children
from ..analysis.operators import OperatorOptions, OperatorSpec
from ..analysis.options import SpectrumOptions
from ..analysis.spawning import main_module_hidden
from ..runfile.store import ParameterSpec, RunWriter
from .analysis_executor import LayerExecutor
from .inbox import Inbox
from .shared_arrays import StoredArray, mapped
from .snapshot_analysis import SnapshotAnalyzer
from .snapshot_files import SnapshotFiles
from .storage_policy import WeightPolicy

__all__ = ["AnalysisWorker", "RunSpec", "Snapshot"]

_PUT_POLL_SECONDS = 0.5
_SHARED_MEMORY_FULL = (
    "/dev/shm has less than twice a snapshot ({megabytes:.3g} MB) free: snapshots that do not fit "
    "go through the analysis process's queue, which costs training about 4x more CPU per snapshot. "
    "Give shared memory more room (in a container: docker run --shm-size=...)."
)
_RESUME_KEEP_ALL = np.iinfo(np.int64).max
# The worker yields the CPU to training: it runs when a core is idle (it catches up between
# epochs and while batches load). SCHED_IDLE where the OS has it, else the lowest nice value.
WORKER_NICENESS = 19


@dataclass(frozen=True)
class Snapshot:
    """Copied weights at one point of training: the arrays, or where they are in shared memory
    (:mod:`.snapshot_files`)."""

    epoch: int
    step: int
    time: float
    arrays: dict[str, np.ndarray | StoredArray] = field(repr=False)


@dataclass(frozen=True)
class RunSpec:
    """Everything the worker needs, as plain data (nothing from the user's ``__main__``)."""

    path: str
    run_id: str
    parameters: tuple[ParameterSpec, ...]
    config_json: str
    framework: str
    tensorboard_dir: str | None
    save_weights: bool
    weights_dtype: str
    spectrum: SpectrumOptions
    histogram_bins: int = 64
    esd_figures: bool = False
    resume_after_step: int | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # parameters not captured, with the reason
    operators: tuple[OperatorSpec, ...] = ()  # conv layers whose operator spectra are estimated
    operator_options: OperatorOptions = field(default_factory=OperatorOptions)
    monitor: SpectralMonitor | None = None  # alert rules applied to each analyzed snapshot
    deltas: str | None = None  # also the spectra of each matrix's change: "init" or "previous"
    weight_policy: WeightPolicy | None = None  # which snapshots keep their weights (None: all)
    blas_threads: int = 1  # the worker's BLAS threads, also those of each layer task it sends out
    analysis_executor: str = "process"  # where the layers are analyzed (.analysis_executor)
    analysis_workers: int | None = None  # processes of that pool or local cluster (None: CPUs)


class AnalysisWorker:
    """The training side's handle on the analysis process."""

    def __init__(self, spec: RunSpec, *, queue_size: int, on_full: str, blas_threads: int):
        self.spec = spec
        self.queue_size = queue_size
        self.on_full = on_full
        self.blas_threads = blas_threads
        self.restarts = 0
        self.failed = False
        self._closed = False
        self.dropped = 0
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._inbox = None
        self._outbox = None
        # dropped snapshots travel with the next message that fits in the queue
        self._pending_dropped: list[tuple[int, int, float, str]] = []
        self._notes: list[tuple[str, str]] = []  # messages of our own, for the next messages()
        # submitted snapshots by step until the worker acknowledges them: a worker that dies with
        # some in its queue or half-written is restarted and given them again (it skips repeats)
        self._unacked: dict[int, Snapshot] = {}
        self._files = SnapshotFiles(None)

    def start(self) -> None:
        """Spawn the process; returns at once (the child imports and opens the file by itself)."""
        if self._files.directory is None:
            self._files = SnapshotFiles.in_shared_memory()
        self._inbox = self._context.Queue(maxsize=self.queue_size)
        self._outbox = self._context.Queue()
        self._process = self._context.Process(
            target=_worker_main,
            args=(self._inbox, self._outbox, self.spec),
            name="spectral-worker",
            daemon=True,
        )
        with blas_threads_for_children(self.blas_threads), main_module_hidden():
            self._process.start()
        self._files.claim(self._process.pid)

    def record_skipped(self, epoch: int, step: int, when: float, reason: str) -> None:
        """Have the run file's index list a snapshot the training side did not take, with why
        (sent with the next message that reaches the worker)."""
        self._pending_dropped.append((epoch, step, when, reason))

    def submit(self, snapshot: Snapshot) -> bool:
        """Queue a snapshot; ``False`` if it was dropped (``on_full="drop"``) or the worker is gone."""
        if self.failed:
            return False
        if self._died():  # restart first, so the snapshot goes to a live worker's queue
            self._notes.extend(self._restart_or_fail())
            if self.failed:
                return False
        self._notes += self._read_outbox()  # acknowledged snapshots' files go before a new one comes
        queued_instead = self._files.queued_instead
        snapshot = dataclasses.replace(snapshot, arrays=self._files.pack(snapshot.step, snapshot.arrays))
        if self._files.queued_instead > queued_instead == 0:
            size = sum(getattr(array, "nbytes", 0) for array in snapshot.arrays.values())
            self._notes.append(("warning", _SHARED_MEMORY_FULL.format(megabytes=size / 1e6)))
        message = (snapshot, tuple(self._pending_dropped))
        if self.on_full == "drop":
            try:
                self._inbox.put_nowait(message)
            except queue.Full:
                self._files.release(snapshot.step)
                self.dropped += 1
                reason = f"worker behind: queue of {self.queue_size} full"
                self._pending_dropped.append((snapshot.epoch, snapshot.step, snapshot.time, reason))
                return False
        elif not self._put(message):
            self._files.release(snapshot.step)
            return False
        self._pending_dropped.clear()
        self._unacked[snapshot.step] = snapshot
        return True

    @property
    def pending(self) -> bool:
        """Whether snapshots were handed over that the worker has not acknowledged yet."""
        return not self.failed and bool(self._unacked)

    def messages(self) -> list[tuple[str, Any]]:
        """``(kind, text)`` messages from the worker since the last call (never blocks).

        Kind ``"metrics"`` carries ``(epoch, step, scalars)`` of an analyzed snapshot instead of a
        text, in the order the worker finished them; kind ``"cost"`` ``(step, seconds)``: the CPU
        seconds the worker spent on that snapshot, with those of its pool's processes.
        """
        found, self._notes = self._notes, []
        found += self._read_outbox()
        if self._process is not None and not self.failed and not self._closed and self._died():
            found.extend(self._restart_or_fail())
        return found

    def close(self, timeout: float) -> list[tuple[str, Any]]:
        """Finish the queue, then stop the process; returns the last messages (as :meth:`messages`)."""
        if self._process is None:
            self._files.close()
            return []
        notes = self.messages()  # a worker that died unnoticed is restarted to finish the queue
        _full_priority(self._process.pid)  # training is over: the worker may use the CPU it needs
        if not self.failed:
            if self._pending_dropped:
                self._put((None, tuple(self._pending_dropped)))
            self._put(None)
            self._closed = True  # from here an exit is the end, not a crash to restart after
            # read the outbox while waiting: a worker blocked writing a large result to a full
            # pipe could never exit otherwise
            deadline = time.monotonic() + timeout
            while self._process.is_alive() and time.monotonic() < deadline:
                self._process.join(0.05)
                notes += self.messages()
        self._closed = True
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
            notes.append(("warning", f"analysis did not finish within close_timeout={timeout}s; stopped it"))
        else:
            notes += self.messages()  # never read after terminate(): a message may be half written
        self._process = None
        self._files.close()
        return notes

    def _read_outbox(self) -> list[tuple[str, Any]]:
        """The worker's messages so far, acknowledgements taken out: their snapshots are done
        with, and so are the snapshots' files."""
        found = []
        while self._outbox is not None:
            try:
                kind, content = self._outbox.get_nowait()
            except (queue.Empty, OSError, EOFError):
                break
            if kind == "ack":
                self._unacked.pop(content, None)
                self._files.release(content)
            else:
                found.append((kind, content))
        return found

    def _put(self, message: object) -> bool:
        while True:
            try:
                self._inbox.put(message, timeout=_PUT_POLL_SECONDS)
                return True
            except queue.Full:
                if self._died():
                    return False
                self._notes += self._read_outbox()  # release acknowledged snapshots' files meanwhile

    def _died(self) -> bool:
        """The process ended before it was told to: killed, crashed, or could not open the run."""
        return not self._process.is_alive()

    def _restart_or_fail(self) -> list[tuple[str, str]]:
        code = self._process.exitcode
        if self.restarts >= 1:
            self.failed = True
            return [
                ("error", f"analysis worker died again (exit code {code}); no further snapshots analyzed")
            ]
        self.restarts += 1
        dropped = [record for _, records in _drain(self._inbox) for record in records]
        self.spec = dataclasses.replace(self.spec, resume_after_step=_RESUME_KEEP_ALL)
        self.start()
        if dropped:
            self._put((None, tuple(dropped)))
        for snapshot in self._unacked.values():  # the new worker skips those already committed
            self._put((snapshot, ()))
        return [("warning", f"analysis worker died (exit code {code}); restarted it once")]


def _drain(inbox: multiprocessing.Queue) -> list[tuple]:
    """The messages still in a dead worker's queue (it may have died holding a half-read one)."""
    waiting = []
    while True:
        try:
            message = inbox.get(timeout=_PUT_POLL_SECONDS)
        except queue.Empty:
            return waiting
        except Exception:  # noqa: BLE001 - a message the dead reader left half-read
            return waiting
        if message is not None:
            waiting.append(message)


def _full_priority(pid: int) -> None:
    """Back to the normal scheduling class (allowed from SCHED_IDLE; best effort elsewhere)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))


def _lower_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError, AttributeError):
            os.nice(WORKER_NICENESS)


def _worker_main(inbox: multiprocessing.Queue, outbox: multiprocessing.Queue, spec: RunSpec) -> None:
    """The child: open the run, catch up on unanalyzed snapshots, then analyze until ``None``."""
    _lower_priority()
    try:
        writer = RunWriter.open(
            spec.path,
            run_id=spec.run_id,
            parameters=spec.parameters,
            config_json=spec.config_json,
            framework=spec.framework,
            weights_dtype=spec.weights_dtype if spec.save_weights else None,
            min_evals=spec.spectrum.min_evals,
            skipped=dict(spec.skipped),
            resume_after_step=spec.resume_after_step,
            operators=spec.operators,
            operator_options=spec.operator_options,
            deltas=spec.deltas,
        )
    except Exception as error:  # reported to the user through the outbox; training never sees it
        outbox.put(("error", f"cannot open run file {spec.path}: {error}"))
        raise SystemExit(1) from error
    sink = None
    if spec.tensorboard_dir is not None:
        from ..sinks.tensorboard import TensorBoardSink

        sink = TensorBoardSink(
            spec.tensorboard_dir, histogram_bins=spec.histogram_bins, esd_figures=spec.esd_figures
        )
        sink.write_layout(writer.layer_names, writer.operator_names, layout_metrics(spec.spectrum))

    def report(kind: str, text: str) -> None:
        outbox.put((kind, text))

    if spec.analysis_executor != "process":
        # the process is started daemonic, so that it ends with training; a daemonic process may
        # not start processes, and this one starts a pool or cluster it stops itself, at its end
        multiprocessing.current_process().daemon = False
    layers = LayerExecutor(
        spec.analysis_executor, spec.analysis_workers, blas_threads=spec.blas_threads, report=report
    )
    layers.start()  # the pool or cluster starts while training runs its first steps
    analyzer = SnapshotAnalyzer(
        writer,
        spec.parameters,
        spec.spectrum,
        sink=sink,
        report=report,
        weights_dtype=spec.weights_dtype if spec.save_weights else None,
        operators=spec.operators,
        operator_options=spec.operator_options,
        results=lambda epoch, step, scalars: outbox.put(("metrics", (epoch, step, scalars))),
        monitor=spec.monitor,
        deltas=spec.deltas,
        weight_policy=spec.weight_policy,
        layer_executor=layers,
    )
    try:
        analyzer.catch_up()
        layers.take_cpu_seconds()  # the catch-up's, which no snapshot's cost includes
        messages = Inbox(inbox)
        while (message := messages.next()) is not None:
            snapshot, dropped = message
            analyzer.record_dropped(dropped)
            if snapshot is not None:
                started = time.process_time()
                try:
                    arrays = mapped(snapshot.arrays)
                except OSError as error:  # its file removed by someone else: nothing to analyze
                    reason = f"weights unreadable in shared memory ({error})"
                    analyzer.record_dropped([(snapshot.epoch, snapshot.step, snapshot.time, reason)])
                    outbox.put(("warning", f"snapshot at step {snapshot.step} lost: {reason}"))
                    outbox.put(("ack", snapshot.step))
                    continue
                layers.adopt(arrays, snapshot.arrays)
                analyzer.add(snapshot.epoch, snapshot.step, snapshot.time, arrays)
                seconds = time.process_time() - started + layers.take_cpu_seconds()
                outbox.put(("cost", (snapshot.step, seconds)))
                outbox.put(("ack", snapshot.step))
    finally:
        layers.close()
        writer.close()
        if sink is not None:
            sink.close()
