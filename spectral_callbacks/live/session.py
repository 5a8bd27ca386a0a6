"""One run of snapshots, independent of the training framework: run file, worker, warnings.

The Lightning and Keras callbacks are thin adapters: they decide *when* to snapshot and how to
read a model's weights; a :class:`SpectralSession` does the rest the same way for both, so their
run files and TensorBoard output are interchangeable.
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..analysis.averages import metric_names
from ..analysis.operators import OperatorSpec
from ..runfile.reader import RUN_FILE_NAME
from ..runfile.store import ParameterSpec, new_run_id
from ..spectra import SkippedParameter, matrices_of
from .config import SpectralConfig
from .overhead_budget import OverheadBudget, SnapshotCosts
from .queue_memory import available_memory, fitting_queue_size
from .storage_policy import plan_weights, snapshot_bytes, spectra_bytes
from .thread_lending import ThreadLender, ThreadPool
from .worker import AnalysisWorker, RunSpec, Snapshot

__all__ = [
    "SnapshotCosts",
    "SnapshotResult",
    "SpectralSession",
    "SpectralWarning",
    "check_writable",
    "new_version_dir",
]

# Worker messages are polled at most this often from per-batch hooks: a queue poll and a
# liveness check per batch would cost training time for nothing. While training lends a thread
# to the analysis, more often: the thread goes back as soon as the worker has caught up.
_RELAY_INTERVAL_SECONDS = 1.0
_LENT_RELAY_INTERVAL_SECONDS = 0.01


class SpectralWarning(UserWarning):
    """Something about the spectral analysis the user should know; training goes on."""


class SnapshotResult(NamedTuple):
    """The scalar metrics of one analyzed snapshot, named as the worker's TensorBoard tags."""

    epoch: int
    step: int
    metrics: dict[str, float]


class SpectralSession:
    """The run file and analysis worker of one training run, with its resume state.

    Args:
        config: the validated callback settings.
        framework: recorded in the run file (``"lightning"``, ``"keras"``).
        caller: the name warnings start with (the callback's class name).
        resume_hint: how a user of this framework resumes a run, for error messages.
        thread_pool: training's intra-op pool size accessors ``(get, set)``, lent from while
            the worker has snapshots to analyze when ``config.lend_threads`` (see
            :mod:`spectral_callbacks.live.thread_lending`); ``None`` if the framework has none to lend.
    """

    def __init__(
        self,
        config: SpectralConfig,
        *,
        framework: str,
        caller: str,
        resume_hint: str,
        thread_pool: ThreadPool | None = None,
    ):
        self.config = config
        self.framework = framework
        self.caller = caller
        self.resume_hint = resume_hint
        self.run_dir: Path | None = None
        self.run_path: Path | None = None
        self.run_id: str | None = None
        self.last_step = -1
        self.last_epoch = -1
        self.resuming = False
        self._worker: AnalysisWorker | None = None
        self._layer_names: list[str] = []
        self._results: list[SnapshotResult] = []
        # an alert arrived and the monitor says to stop: the callback stops training
        self.stop_requested = False
        self.storage_estimate = ""  # what the run will write, known once started
        self._warned: set[str] = set()
        self._last_relay = 0.0
        self._budget: OverheadBudget | None = None
        self._costs = SnapshotCosts()
        self._lender = (
            ThreadLender(*thread_pool, count=config.blas_threads)
            if thread_pool is not None and config.lend_threads
            else None
        )

    @property
    def lends_threads(self) -> bool:
        """Whether training's thread pool is lent to the worker while it has snapshots to analyze."""
        return self._lender is not None

    @property
    def costs(self) -> SnapshotCosts:
        """What this fit's snapshots cost so far, part by part."""
        lent = 0.0 if self._lender is None else self._lender.lent_seconds
        return dataclasses.replace(self._costs, lent_seconds=lent)

    @property
    def started(self) -> bool:
        """Whether the worker runs (snapshots can be taken)."""
        return self._worker is not None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed fit appends to the same run file."""
        return {
            "run_path": None if self.run_path is None else str(self.run_path),
            "run_id": self.run_id,
            "last_step": self.last_step,
            "last_epoch": self.last_epoch,
        }

    def open(self, run_dir: Path, saved: Mapping[str, Any] | None = None, *, versioned: bool = False) -> None:
        """Choose the run file: the checkpoint's (``saved`` from :meth:`state_dict`) or a new one.

        A resumed run stays in its run file's directory, TensorBoard events included, so one
        training run is one TensorBoard run. A new run goes to ``run_dir``, or with ``versioned``
        to a new ``run_dir/version_N`` (see :func:`new_version_dir`), so running the same script
        again starts a new run instead of meeting the previous one's file.

        Raises:
            ValueError: a new run would overwrite a run file that belongs to another run, or its
                versioned directory cannot be created.
        """
        self.run_dir = Path(run_dir)
        saved = saved or {}
        saved_path = saved.get("run_path")
        if saved_path and Path(saved_path).exists():
            self.run_path, self.run_id = Path(saved_path), saved.get("run_id")
            self.run_dir = self.run_path.parent
            self.last_step = int(saved.get("last_step", -1))
            self.last_epoch = int(saved.get("last_epoch", -1))
            self.resuming = True
            return
        if saved_path:
            self.warn(f"run file {saved_path} from the checkpoint is gone; starting a new run file")
        if versioned:
            try:
                self.run_dir = new_version_dir(self.run_dir)
            except OSError as error:
                raise ValueError(
                    f"{self.caller} cannot create a run directory in {self.run_dir}: {error}. "
                    "Pass a writable log_dir."
                ) from error
        self.run_path = self.run_dir / RUN_FILE_NAME
        if self.run_path.exists():
            raise ValueError(
                f"Run file {self.run_path} already exists and belongs to another run. To continue that "
                f"run, {self.resume_hint}; otherwise pass another log_dir to {self.caller}."
            )
        self.run_id = new_run_id()

    def start(
        self,
        parameters: Sequence[ParameterSpec],
        operators: Sequence[OperatorSpec] = (),
        skipped: Mapping[str, str] | None = None,
        *,
        analysis_costs_training: bool = True,
        expected_snapshots: int | None = None,
    ) -> set[str]:
        """Spawn the worker for these parameters; returns at once, with the names to capture.

        ``skipped`` are the model's parameters the capture found no matrix in, with the reason,
        for the run file's record. Parameters over ``max_evals`` are left out too (recorded in the
        run file, warned about once).
        ``operators`` are the conv layers whose operator spectra are estimated too; their
        kernels must be in every snapshot, captured or not. ``analysis_costs_training``: whether
        the analysis runs on the cores training uses (CPU training), for ``max_overhead``.
        ``expected_snapshots`` (None: unknown) spreads the weights ``max_run_file_bytes`` allows
        over the run; :attr:`storage_estimate` then says what the run will write, and a warning
        when weights are thinned.
        """
        config = self.config
        too_large = _too_large(parameters, config.max_evals)
        for name, reason in too_large.items():
            self.warn(f"layer {name} is not captured: {reason}")
        kept = tuple(p for p in parameters if p.name not in too_large)
        self._layer_names = _layer_names(kept, config.min_evals)
        shapes = [p.shape for p in kept]
        size = snapshot_bytes(shapes, config.weights_dtype if config.save_weights else None)
        other = spectra_bytes(shapes, expected_snapshots)
        policy = plan_weights(size, expected_snapshots, config.max_run_file_bytes, other)
        self.storage_estimate = policy.estimate(expected_snapshots, may_skip=config.max_overhead is not None)
        if policy.stride > 1 or (
            expected_snapshots
            and policy.max_bytes is not None
            and expected_snapshots * size > policy.max_bytes
        ):
            self.warn(self.storage_estimate)
        spec = RunSpec(
            path=str(self.run_path),
            run_id=self.run_id,
            parameters=kept,
            skipped=tuple({**(skipped or {}), **too_large}.items()),
            config_json=config.to_json(),
            framework=self.framework,
            tensorboard_dir=str(self.run_dir) if config.tensorboard else None,
            save_weights=config.save_weights,
            weights_dtype=config.weights_dtype,
            spectrum=config.spectrum_options(),
            histogram_bins=config.histogram_bins,
            esd_figures=config.esd_figures,
            resume_after_step=self.last_step if self.resuming else None,
            operators=tuple(operators),
            operator_options=config.operator_options(),
            monitor=config.monitor,
            deltas=config.deltas,
            weight_policy=policy,
            blas_threads=config.blas_threads,
            analysis_executor=config.analysis_executor,
            analysis_workers=config.analysis_workers,
        )
        copies = snapshot_bytes(shapes, "float32")
        try:
            queue_size = fitting_queue_size(copies, config.queue_size, available_memory())
        except MemoryError as error:
            raise ValueError(f"{self.caller} cannot start: {error}") from error
        if queue_size < config.queue_size:
            self.warn(
                f"queue_size={config.queue_size} snapshots of {copies / 1e9:.3g} GB would take more than "
                f"half the available memory: the queue holds {queue_size} (pass a smaller queue_size to "
                "silence this)"
            )
        self._worker = AnalysisWorker(
            spec, queue_size=queue_size, on_full=config.on_full, blas_threads=config.blas_threads
        )
        self._worker.start()
        if config.max_overhead is not None:
            self._budget = OverheadBudget(
                config.max_overhead, time.monotonic(), analysis_counts=analysis_costs_training
            )
        return {p.name for p in kept}

    def metric_names(self) -> list[str]:
        """Every per-layer and model-average metric name the worker can report for this run's
        layers (known once :meth:`start` has run), as
        :func:`~spectral_callbacks.analysis.averages.metric_names`."""
        return metric_names(self._layer_names)

    def take_results(self) -> list[SnapshotResult]:
        """The results the worker reported since the last call, oldest first.

        Collected by :meth:`relay` and :meth:`close`; reading them costs nothing when there are none.
        """
        found, self._results = self._results, []
        return found

    def first_snapshot_epoch(self, step: int) -> int | None:
        """The epoch to snapshot as training starts at ``step``, or ``None``.

        A new run snapshots the initialization as epoch 0. A resumed run starting exactly at its
        last snapshot's step holds that snapshot's weights: it is handed over again, in case the
        worker never wrote it before the crash (the worker skips it when the file has it).
        """
        if not self.resuming:
            return 0
        return self.last_epoch if step == self.last_step else None

    def due_epoch(self, epoch: int) -> bool:
        """Whether a snapshot is due after ``epoch`` completed epochs (epoch-based schedule)."""
        every = self.config.every_n_epochs
        return self.config.every_n_steps is None and epoch % every == 0 and epoch > self.last_epoch

    def due_step(self, step: int) -> bool:
        """Whether a snapshot is due at optimizer step ``step`` (step-based schedule)."""
        every = self.config.every_n_steps
        return every is not None and step > self.last_step and step % every == 0

    def capture(self, epoch: int, step: int, copy_weights: Callable[[], dict[str, np.ndarray]]) -> bool:
        """Copy the weights and hand them to the worker (waits only under ``on_full="block"``);
        ``False`` if ``max_overhead`` skipped the snapshot (recorded in the run file's index).

        The first snapshot of a run is always taken: the budget needs its cost, and a run needs
        the weights it started from.
        """
        self.last_step, self.last_epoch = step, epoch
        now = time.monotonic()
        budget = self._budget
        costs = self._costs
        if budget is not None and costs.taken and not budget.admits(costs, now):
            measured = budget.measured(costs)
            reason = f"skipped by max_overhead={budget.fraction:g}: " + (
                f"about {budget.estimate(costs):.3g} s per snapshot"
                if measured
                else "the first snapshot's cost not measured yet"
            )
            self._worker.record_skipped(epoch, step, time.time(), reason)
            if measured:  # said once, when there is a cost to explain it with (else at close)
                self.warn(budget.explain(costs, now), once_per="max_overhead")
            self.relay()
            return False
        started = time.perf_counter()
        arrays = copy_weights()
        copied = time.perf_counter() - started
        self._worker.submit(Snapshot(epoch=epoch, step=step, time=time.time(), arrays=arrays))
        costs.taken += 1
        costs.copy_seconds += copied
        costs.handover_seconds += time.perf_counter() - started - copied
        self.relay(force=True)
        return True

    def relay(self, *, force: bool = False) -> None:
        """Turn the worker's messages into warnings and collect its results for
        :meth:`take_results` (throttled unless ``force``); lend a thread to the worker while it
        has snapshots to analyze, give it back once it has none."""
        now = time.monotonic()
        lent = self._lender is not None and self._lender.lent
        interval = _LENT_RELAY_INTERVAL_SECONDS if lent else _RELAY_INTERVAL_SECONDS
        if self._worker is None or (not force and now - self._last_relay < interval):
            return
        self._last_relay = now
        self._receive(self._worker.messages())
        if self._lender is not None:
            if self._worker.pending:
                self._lender.lend()
            else:
                self._lender.give_back()

    def close(self) -> None:
        """Let the worker finish its queue (up to ``close_timeout``), then stop it. Idempotent."""
        if self._lender is not None:
            self._lender.give_back()
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        self._receive(worker.close(self.config.close_timeout))
        if self._budget is not None and self._costs.skipped:
            self.warn(self._budget.explain(self._costs, time.monotonic()), once_per="max_overhead")
        if worker.dropped:
            self.warn(f"{worker.dropped} snapshot(s) dropped because the analysis fell behind "
                      f"(on_full='drop'); they are listed in {self.run_path}")  # fmt: skip

    def warn(self, text: str, once_per: str | None = None) -> None:
        """Warn once per text (or once per ``once_per`` kind of message)."""
        key = once_per or text
        if key in self._warned:
            return
        self._warned.add(key)
        suffix = (
            " (further such messages are recorded in the run file only)"
            if once_per and once_per != text
            else ""
        )
        warnings.warn(f"{self.caller}: {text}{suffix}", SpectralWarning, stacklevel=3)

    def _receive(self, messages: Sequence[tuple[str, Any]]) -> None:
        """Results for :meth:`take_results`; anything else becomes a warning."""
        for kind, content in messages:
            if kind == "metrics":
                self._results.append(SnapshotResult(*content))
                continue
            if kind == "alert":
                self.warn(content)
                if self.config.monitor is not None and self.config.monitor.stop:
                    self.stop_requested = True
                continue
            if kind == "cost":
                self._costs.analyzed += 1
                self._costs.analysis_seconds += content[1]
                continue
            once = kind.startswith(("skipped:", "operator:")) or kind == "write-error"
            self.warn(content, once_per=kind if once else content)


def _too_large(parameters: Sequence[ParameterSpec], max_evals: int | None) -> dict[str, str]:
    """Parameters whose matrices have more than ``max_evals`` eigenvalues, with the reason."""
    if max_evals is None:
        return {}
    found = {}
    for parameter in parameters:
        # np.empty reserves no memory for the pages it never touches: shapes are all that is read
        probe = np.empty(parameter.shape, dtype=np.float32)
        views = matrices_of(parameter.name, probe, parameter.kind, min_evals=1, max_evals=max_evals)
        if isinstance(views, SkippedParameter):
            found[parameter.name] = views.reason
    return found


def _layer_names(parameters: Sequence[ParameterSpec], min_evals: int) -> list[str]:
    """The run file's layers for these parameters, in model order (as the run file derives them)."""
    names = []
    for parameter in parameters:
        probe = np.empty(parameter.shape, dtype=np.float32)  # shapes are all that is read
        views = matrices_of(parameter.name, probe, parameter.kind, min_evals=min_evals)
        if not isinstance(views, SkippedParameter):
            names.extend(view.name for view in views)
    return names


_VERSION = re.compile(r"version_(\d+)")


def new_version_dir(parent: Path) -> Path:
    """Create ``parent/version_N``, ``N`` one more than the highest existing, and return it.

    The numbering is Lightning's loggers' (``version_0``, ``version_1``, ...). The directory is
    created here, so two processes starting together never share one.

    Raises:
        OSError: ``parent`` or the new directory cannot be created.
    """
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = [int(match[1]) for path in parent.iterdir() if (match := _VERSION.fullmatch(path.name))]
        candidate = parent / f"version_{max(numbers, default=-1) + 1}"
        try:
            candidate.mkdir()
        except FileExistsError:  # another process took it meanwhile
            continue
        return candidate


def check_writable(directory: Path, caller: str) -> None:
    """Create ``directory`` and write a probe file there, before any training time is spent.

    Raises:
        ValueError: the directory cannot be created or written; the message has the path.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".spectral-write-test-{new_run_id()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"{caller} cannot write its run file to {directory}: {error}. Pass a writable log_dir."
        ) from error
