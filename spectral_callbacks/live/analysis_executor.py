"""Where the analysis process analyzes a snapshot's layers: in itself, on a process pool, or on dask.

The analysis process stays the run file's only writer. With ``"processes"``, ``"dask"`` or
``"dask://HOST:PORT"`` it sends each snapshot's layers out as tasks, the largest SVD first and the
small ones batched (:mod:`spectral_callbacks.analysis.scheduling`, as the post-hoc analysis does),
each carrying its arrays (and the previous snapshot's, for the movement columns), and puts the
rows back in model order. Workers on this machine read the arrays from a file in shared memory
(:mod:`.shared_arrays`: the previous snapshot's from the file it was written to as the new one);
a remote cluster's get them in the tasks. Every task runs
:func:`~spectral_callbacks.analysis.model.analyze_weights` on the same arrays with the same
options and BLAS thread count as the analysis process would, so the rows are the same, bit for bit.

An executor that cannot start (a scheduler that does not answer) or breaks (a worker that dies)
costs one warning: that snapshot, and every later one, is analyzed in the analysis process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..analysis.blas_environment import blas_threads_limited
from ..analysis.executors import (
    DEFAULT_TIMEOUT,
    ExecutorError,
    ExecutorSpec,
    Runner,
    open_executor,
    parse_executor,
)
from ..analysis.model import ModelAnalysis, analyze_weights
from ..analysis.options import SpectrumOptions, check_integer
from ..analysis.scheduling import guided_batches, largest_first, svd_cost
from ..spectra import LayerSpectrum
from .shared_arrays import SharedSnapshots, StoredArray, loaded, scratch_directory

__all__ = ["EXECUTORS", "LayerExecutor", "analyze_layers", "check_executor"]

EXECUTORS = ("process", "processes", "dask", "dask://HOST:PORT")
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends
Item = tuple[str, np.ndarray, str | None]  # a parameter's (name, weights, kind)
Array = np.ndarray | StoredArray
# a task's share of a snapshot: each parameter (name, weights, kind) with its previous version
Task = Sequence[tuple[tuple[str, Array, str | None], Array | None]]


def check_executor(executor: Any, workers: Any) -> None:
    """Raise a ValueError naming the value unless ``executor`` is one of :data:`EXECUTORS` and
    ``workers`` None or an integer >= 1 (and None or 1 with ``"process"``, which has one)."""
    if not (isinstance(executor, str) and (executor == "process" or _spec(executor) is not None)):
        raise ValueError(
            f"Invalid value for analysis_executor={executor!r}: expected one of "
            "'process', 'processes', 'dask' or 'dask://HOST:PORT'."
        )
    if workers is None:
        return
    check_integer("analysis_workers", workers, 1)
    if executor == "process" and workers != 1:
        raise ValueError(
            f"Invalid value for analysis_workers={workers!r} with analysis_executor='process', which "
            "analyzes in one process: pass analysis_executor='processes' or 'dask', or analysis_workers=None."
        )


def _spec(executor: str) -> ExecutorSpec | None:
    """The executor behind ``executor``, or None for ``"process"`` and for anything invalid."""
    if executor in ("process", "local"):
        return None
    try:
        return parse_executor(executor)
    except ExecutorError:
        return None


def analyze_layers(
    task: Task, options: Mapping[str, Any], threads: int, own_worker: bool = False
) -> tuple[list[list[LayerSpectrum]], float]:
    """The task: each parameter's rows, as ``analyze_weights`` gives them in the analysis process,
    and the CPU seconds the task took (its process's, all threads).

    ``threads`` is the analysis process's BLAS (and torch) thread count: results depend on it.
    ``own_worker``: the task runs in a process of the analysis process's own pool, which is to
    end with it.
    """
    if own_worker:
        _end_with_parent()
    started = time.process_time()
    with blas_threads_limited(threads):
        rows = [
            list(
                analyze_weights(
                    [(name, loaded(array), kind)],
                    **options,
                    svd_threads=threads,
                    reference=None if before is None else {name: loaded(before)},
                )
            )
            for (name, array, kind), before in task
        ]
    return rows, time.process_time() - started


class LayerExecutor:
    """Analyzes a snapshot's parameters on the chosen executor; :meth:`analyze` is
    ``analyze_weights`` with the same rows.

    Args:
        executor: one of :data:`EXECUTORS`.
        workers: processes of the pool or of the local dask cluster (None: the CPU count);
            a running scheduler's cluster has its own.
        blas_threads: BLAS threads of the analysis process, which each task uses too.
        report: called with ``("warning", text)`` when the executor cannot start or breaks.
        timeout: seconds to wait for a dask scheduler to answer, or for a cluster left without
            workers to get one again.
    """

    def __init__(
        self,
        executor: str = "process",
        workers: int | None = None,
        *,
        blas_threads: int = 1,
        report: Callable[[str, str], None] = lambda kind, text: None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        check_executor(executor, workers)
        self.executor = executor
        self.workers = workers
        self.blas_threads = blas_threads
        self.report = report
        self.timeout = timeout
        self._spec = _spec(executor)
        self._stack = contextlib.ExitStack()
        self._runner: Runner | None = None
        self._scratch = None  # shared memory for workers on this machine (None: send arrays)
        self._local_seconds = 0.0  # CPU seconds of tasks in this machine's other processes
        self._shared = SharedSnapshots(None)

    @property
    def parallel(self) -> bool:
        """Whether layers still go to the executor (False for ``"process"`` and once it broke)."""
        return self._spec is not None

    def start(self) -> None:
        """Start the pool or cluster, or connect to the scheduler (a warning when it fails)."""
        if self._spec is None or self._runner is not None:
            return
        try:
            self._runner = self._stack.enter_context(
                open_executor(self._spec, workers=self.workers, timeout=self.timeout)
            )
            # each worker imports the analysis now rather than during the first snapshot
            ready = functools.partial(_ready, own_worker=self._spec.kind == "processes")
            for _, _, error in self._runner.map(ready, range(self._runner.workers)):
                if error is not None:
                    raise error
            if self._spec.address is None:
                self._scratch = scratch_directory()
                self._shared = SharedSnapshots(self._scratch)
        except Exception as error:  # noqa: BLE001 - any failure to start means the local path
            self._give_up(f"cannot start ({error})")

    def analyze(
        self,
        items: Sequence[Item],
        options: SpectrumOptions,
        *,
        reference: Mapping[str, np.ndarray] | None = None,
        referred_to_next: bool = True,
    ) -> ModelAnalysis:
        """``analyze_weights(items, **options.kwargs(), reference=reference)``'s rows, in the
        order of ``items``, computed on the executor.

        ``referred_to_next``: the next call's ``reference`` may hold these items' arrays (the
        next snapshot's previous one), so workers on this machine keep them in shared memory
        until then rather than be sent them again.
        """
        self.start()
        if self._spec is None or not items:
            return analyze_weights(items, **options.kwargs(), reference=reference)
        order = largest_first([array for _, array, _ in items])
        batches = guided_batches([svd_cost(items[i][1].shape) for i in order], self._runner.workers)
        function = functools.partial(
            analyze_layers,
            options=options.kwargs(),
            threads=self.blas_threads,
            own_worker=self._spec.kind == "processes",
        )
        found: list[list[LayerSpectrum] | None] = [None] * len(items)
        before = [_reference_of(item, reference) for item in items]
        current = [array for _, array, _ in items]
        previous = [array for array in before if array is not None]
        try:
            sharing = self._shared.share(current, previous, keep=referred_to_next)
            with sharing as shared, warnings.catch_warnings():
                sent = shared[0] + shared[1]
                # dask warns about any graph over 10 MB; here the arrays are the point
                warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
                tasks = _tasks(items, before, sent, [[order[i] for i in batch] for batch in batches])
                for index, result, error in self._runner.map(function, tasks):
                    if error is not None:
                        raise error
                    rows, seconds = result
                    if self._spec.address is None:
                        self._local_seconds += seconds
                    for position, task in enumerate(batches[index]):
                        found[order[task]] = rows[position]
        except (Exception, asyncio.CancelledError) as error:  # noqa: BLE001 - analyzed here instead
            if _broken(error):
                self._give_up(f"failed ({type(error).__name__}: {error})")
            return analyze_weights(items, **options.kwargs(), reference=reference)
        return ModelAnalysis(row for rows in found for row in rows)

    def adopt(self, arrays: Mapping[str, np.ndarray], locations: Mapping[str, Array]) -> None:
        """The next snapshot's ``arrays`` are mapped from ``locations`` in shared memory: workers on
        this machine map them from there, rather than have them written again."""
        if self._spec is not None:
            self._shared.adopt(arrays, locations)

    def take_cpu_seconds(self) -> float:
        """The CPU seconds tasks took in other processes of this machine (a pool or local dask
        cluster; not a running scheduler's) since the last call: with the analysis process's
        own, what a snapshot cost the machine training runs on."""
        seconds, self._local_seconds = self._local_seconds, 0.0
        return seconds

    def close(self) -> None:
        """Stop the pool or cluster (never raises: the run file is written already)."""
        with contextlib.suppress(Exception):
            self._stack.close()
        self._runner = None
        self._shared.close()
        self._shared = SharedSnapshots(None)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _give_up(self, what: str) -> None:
        self.close()
        self._spec = None
        self.report(
            "warning",
            f"analysis_executor={self.executor!r} {what}: analyzing every layer in the analysis "
            "process from now on (same results, on one process)",
        )


def _ready(_: int, own_worker: bool) -> bool:
    """A first task: true once the worker has imported the analysis (which this module does)."""
    if own_worker:
        _end_with_parent()
    return True


@functools.cache
def _end_with_parent() -> None:
    """Have the kernel send this process SIGTERM when the process that started it ends (Linux).

    The analysis process is killed outright when training's process ends without closing it (it
    is started daemonic); its pool's workers, blocked waiting for tasks, would live on.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tasks(
    items: Sequence[Item],
    before: Sequence[np.ndarray | None],
    sent: Sequence[Array],
    batches: list[list[int]],
) -> list[Task]:
    """Each batch of parameters (indices into ``items``) as a task, with their arrays as
    ``sent``: the items' arrays, then those of ``before`` that are not None."""
    previous = iter(sent[len(items) :])
    sent_before = [None if array is None else next(previous) for array in before]
    return [[((items[j][0], sent[j], items[j][2]), sent_before[j]) for j in batch] for batch in batches]


def _reference_of(item: Item, reference: Mapping[str, np.ndarray] | None) -> np.ndarray | None:
    """The previous version of a parameter, where ``analyze_weights`` would look for it."""
    return None if reference is None else reference.get(item[0])


def _broken(error: BaseException) -> bool:
    """Whether an error comes from the executor (a dead worker, a lost connection) rather than
    from the analysis itself, which the analysis process would raise as well."""
    futures = concurrent.futures
    infrastructure = (futures.BrokenExecutor, futures.CancelledError, OSError, EOFError, ExecutorError)
    return isinstance(error, infrastructure) or type(error).__module__.split(".")[0] == "distributed"
