"""Where the per-parameter tasks run: this process, a process pool, or a dask.distributed cluster.

Every executor runs the same function on the same items and reports ``(index, result, error)``
as tasks finish; callers put results back by index, so the output order never depends on the
executor or on timing. Items start in the order given. Post hoc, items are small descriptions (a
file path and a key) and each task loads its own tensor where it runs; the live analysis sends
the snapshot's arrays themselves (:mod:`spectral_callbacks.live.analysis_executor`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..analysis.blas_environment import blas_threads_limited
from ..analysis.spawning import main_module_hidden

__all__ = [
    "DEFAULT_TIMEOUT",
    "ExecutorError",
    "ExecutorSpec",
    "Outcome",
    "Runner",
    "local_cluster",
    "open_executor",
    "parse_executor",
    "process_context",
]

DEFAULT_TIMEOUT = 10.0
# How often a dask map without finished tasks checks that the cluster still has workers.
_DASK_POLL_SECONDS = 1.0
EXECUTORS = ("local", "processes", "dask", "dask://HOST:PORT")
_DASK_ADDRESS = re.compile(r"dask://(?P<address>(?:[a-z]+://)?[^/\s]+:\d+)/?")

# (index of the item, the function's result or None, the exception it raised or None)
Outcome = tuple[int, Any, BaseException | None]


# a map(function, items) that yields an Outcome per item as tasks finish
MapFunction = Callable[[Callable[[Any], Any], Sequence[Any]], Iterator[Outcome]]


@dataclass(frozen=True)
class Runner:
    """An open executor: ``map(function, items)`` and how many tasks it runs at once."""

    map: MapFunction
    workers: int


class ExecutorError(ValueError):
    """An executor that cannot be set up: unknown, not installed, or a scheduler that does not answer."""


@dataclass(frozen=True)
class ExecutorSpec:
    """``kind`` is ``"local"``, ``"processes"`` or ``"dask"``; ``address`` a dask scheduler or None."""

    kind: str
    address: str | None = None


def parse_executor(text: str) -> ExecutorSpec:
    """``local``, ``processes``, ``dask`` (a local cluster) or ``dask://HOST:PORT`` (a scheduler).

    >>> parse_executor("dask://10.0.0.5:8786")
    ExecutorSpec(kind='dask', address='tcp://10.0.0.5:8786')

    Raises:
        ExecutorError: anything else.
    """
    if text in ("local", "processes", "dask"):
        return ExecutorSpec(text)
    match = _DASK_ADDRESS.fullmatch(text)
    if match:
        address = match.group("address")
        return ExecutorSpec("dask", address if "://" in address else f"tcp://{address}")
    raise ExecutorError(f"Invalid executor {text!r}: expected one of {', '.join(EXECUTORS)}.")


@contextlib.contextmanager
def open_executor(
    spec: ExecutorSpec, *, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[Runner]:
    """A :class:`Runner` whose ``map`` yields an :data:`Outcome` per item as tasks finish.

    Args:
        spec: from :func:`parse_executor`.
        workers: processes of a process pool or of a local dask cluster (default: CPU count).
        timeout: seconds to wait for a dask scheduler to answer, and for a dask cluster left
            without workers to get one before ``map`` raises :class:`ExecutorError`.

    Raises:
        ExecutorError: dask is not installed, or the scheduler does not answer within ``timeout``.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ExecutorError(f"Invalid value for workers={workers}: expected >= 1.")
    if spec.kind == "local":
        yield Runner(_map_local, 1)
    elif spec.kind == "processes":
        context = process_context()
        with (
            main_module_hidden(),
            _forked_blas_on_one_thread(context),
            concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
        ):
            pool.submit(int)  # start the workers now, before any progress bar's thread
            try:
                yield Runner(lambda function, items: _map_futures(pool, function, items), workers)
            finally:  # on an error here, the tasks not started yet are dropped, not waited for
                pool.shutdown(cancel_futures=True)
    else:
        with _dask_client(spec.address, workers, timeout) as client:
            threads = sum(client.nthreads().values()) or workers  # a remote cluster's own size
            yield Runner(lambda function, items: _map_dask(client, function, items, timeout), threads)


def process_context() -> multiprocessing.context.BaseContext:
    """``fork`` on Linux while no other Python thread runs, else ``spawn``.

    A forked worker starts with numpy and scipy already loaded, where a spawned one starts an
    interpreter and imports them first: on a short job that start decides what a second worker
    gains (docs/performance.md).
    Forking while another thread may hold a lock is unsafe, and macOS' system libraries do not
    survive a fork, so everything else gets fresh interpreters.
    """
    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _forked_blas_on_one_thread(context: multiprocessing.context.BaseContext) -> Any:
    """Hold this process's BLAS pools at one thread while a forked pool is open.

    Forked workers inherit the count, so their tasks (one BLAS thread each by default) set none,
    which would restart OpenBLAS's pool in each worker (``blas_threads_limited``). Restoring the
    count here also restarts it, in this process: after the pool has closed, not while its
    workers need the cores.
    """
    if context.get_start_method() != "fork":
        return contextlib.nullcontext()
    return blas_threads_limited(1)


def _map_local(function: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Outcome]:
    for index, item in enumerate(items):
        try:
            yield index, function(item), None
        except Exception as error:  # noqa: BLE001 - reported for this item; the others go on
            yield index, None, error


def _map_futures(
    pool: concurrent.futures.Executor, function: Callable[[Any], Any], items: Sequence[Any]
) -> Iterator[Outcome]:
    futures = {pool.submit(function, item): index for index, item in enumerate(items)}
    for future in concurrent.futures.as_completed(futures):
        error = future.exception()
        yield futures[future], None if error else future.result(), error


def _map_dask(
    client: Any, function: Callable[[Any], Any], items: Sequence[Any], timeout: float
) -> Iterator[Outcome]:
    """Tasks on the cluster, yielded as they finish; raises :class:`ExecutorError` once the
    cluster has had no worker for ``timeout`` seconds (its tasks would wait for one forever)."""
    from distributed import wait

    futures = client.map(function, list(items), pure=False)
    index = {future.key: i for i, future in enumerate(futures)}
    pending, idle_since = set(futures), None
    while pending:
        try:
            done, pending = wait(
                pending, timeout=min(timeout, _DASK_POLL_SECONDS), return_when="FIRST_COMPLETED"
            )
        except TimeoutError:
            idle_since = _idle_since(client, idle_since, timeout)
            continue
        idle_since = None
        for future in done:
            if future.status == "error":
                yield index[future.key], None, future.exception()
            else:
                yield index[future.key], future.result(), None
            future.release()


def _idle_since(client: Any, since: float | None, timeout: float) -> float | None:
    """When the cluster was first seen without a worker (None while it has one); raises
    :class:`ExecutorError` when that was over ``timeout`` seconds ago."""
    if client.nthreads():
        return None
    now = time.monotonic()
    if since is None:
        return now
    if now - since >= timeout:
        raise ExecutorError(
            f"the dask cluster at {client.scheduler.address} has had no worker for {timeout:g} s; "
            "start workers (`dask worker ADDRESS`) or use another analysis executor"
        )
    return since


@contextlib.contextmanager
def _dask_client(address: str | None, workers: int, timeout: float) -> Iterator[Any]:
    try:
        from distributed import Client
    except ImportError as error:
        raise ExecutorError(
            "The dask executor needs dask.distributed: pip install 'spectral-callbacks[distributed]'."
        ) from error
    if address is not None:
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as error:
            raise ExecutorError(
                f"Cannot reach the dask scheduler at {address} within {timeout:g} s ({error}). Is a "
                "scheduler running there (`dask scheduler`), and is the port open?"
            ) from None
        with client:
            yield client
        return
    with main_module_hidden(), local_cluster(workers) as cluster, Client(cluster) as client:
        yield client


# A local cluster's workers share the machine's cores with the tasks, so whatever dask does beside
# them comes out of the analysis' time. Its statistical profiler samples each running task 100
# times a second for the dashboard, taking a core from a task when both are busy; its event-loop
# tick (20 ms), memory checks (100 ms) and system monitor (500 ms) wake even idle workers that
# often, and these longer intervals wake them less (docs/performance.md, "Quiet dask workers").
# Memory limits are still enforced, checked twice a second.
QUIET_WORKERS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
}


def local_cluster(workers: int) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded processes, reachable from this
    machine only, its dashboard on any free port (8787 may be taken), its logs errors only."""
    import dask.config
    from distributed import LocalCluster

    # dask has its workers hand freed memory back to the system at once (MALLOC_TRIM_THRESHOLD_,
    # which also stops glibc from raising its mmap threshold); the analysis frees and allocates
    # copies of the same sizes layer after layer, and with glibc's defaults reuses them instead of
    # taking fresh pages from the system, each zeroed on its first touch (docs/performance.md)
    environment = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environment.pop("MALLOC_TRIM_THRESHOLD_", None)
    settings = {"distributed.nanny.pre-spawn-environ": environment, **QUIET_WORKERS}
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
