"""Post-hoc analysis of many files: plan from metadata, fan the parameters out, gather in file order.

Planning reads only metadata: parameters that cannot be analyzed (1-D, integer, too few
eigenvalues) become skipped rows at once; the others are analyzed by tasks that load each tensor
and analyze it with :func:`spectral_callbacks.analysis.model.analyze_weights`, largest first, small ones
batched (:func:`guided_batches`). Each runs its BLAS on ``blas_threads`` threads in whatever
process it lands, so the numbers are identical (bit for bit) whatever the executor and the
number of workers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.blas_environment import blas_threads_limited
from ..analysis.executors import DEFAULT_TIMEOUT, ExecutorSpec, Runner, open_executor, parse_executor
from ..analysis.model import ModelAnalysis, analyze_weights
from ..analysis.options import SpectrumOptions, check_integer
from ..analysis.scheduling import guided_batches, largest_first
from ..analysis.scheduling import svd_cost as _svd_cost
from ..capture.selection import LayerFilter, select_layers
from ..runfile.store import ParameterSpec
from ..spectra import LayerSpectrum, SkippedParameter, matrices_of
from .progress import progress_bar
from .sources import ParameterRef, open_source

__all__ = [
    "AnalysisOptions",
    "FileResult",
    "analyze_batch",
    "analyze_parameter",
    "analyze_paths",
    "guided_batches",
    "plan_paths",
    "run_on",
    "run_plans",
]

# a batch's outcome per parameter: its rows, or why it could not be read or analyzed
ParameterOutcome = tuple[list[LayerSpectrum] | None, str | None]


@dataclass(frozen=True)
class AnalysisOptions(SpectrumOptions):
    """How each matrix is analyzed (:class:`~spectral_callbacks.analysis.options.SpectrumOptions`,
    the callbacks' checks and defaults) and with how many BLAS threads.

    Raises:
        ValueError: an invalid value, named with what is allowed.
    """

    blas_threads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_integer("blas_threads", self.blas_threads, 1)

    def spectrum(self) -> SpectrumOptions:
        """The options of each matrix's analysis alone, as the callbacks' worker takes them."""
        return SpectrumOptions.of(self)


@dataclass
class FileResult:
    """The analysis of one path (a file, or a directory of shards).

    Attributes:
        path: as given.
        format: the format it was read as, or ``None`` when it could not be opened.
        files: the files it spans (the shards of a directory).
        error: why it could not be analyzed at all, or ``None``.
        layer_errors: ``"<layer>: <error>"`` for parameters that could not be read or analyzed
            (they are skipped rows with that reason; the other rows are complete).
        parameters: the analyzable parameters, as the HDF5 schema declares them.
        rows: one row per matrix (and per skipped parameter), in model order, after the run.
    """

    path: Path
    format: str | None = None
    files: tuple[Path, ...] = ()
    error: str | None = None
    layer_errors: list[str] = field(default_factory=list)
    parameters: list[ParameterSpec] = field(default_factory=list)
    rows: ModelAnalysis = field(default_factory=ModelAnalysis)
    # planned rows: a skipped row, or the parameter a task analyzes (replaced by its rows)
    _slots: list[LayerSpectrum | ParameterRef] = field(default_factory=list, repr=False)

    @property
    def tasks(self) -> list[ParameterRef]:
        """The parameters planned for analysis and not run yet (none after :func:`run_plans`)."""
        return [slot for slot in self._slots if isinstance(slot, ParameterRef)]

    @property
    def failed(self) -> bool:
        """The path, or one of its parameters, could not be read."""
        return self.error is not None or bool(self.layer_errors)


def analyze_parameter(ref: ParameterRef, options: AnalysisOptions) -> list[LayerSpectrum]:
    """The task: load one parameter where this runs, and analyze its matrix view(s)."""
    with blas_threads_limited(options.blas_threads):
        items = [(ref.name, ref.load(), ref.kind)]
        return list(analyze_weights(items, **options.spectrum().kwargs(), svd_threads=options.blas_threads))


def analyze_batch(refs: Sequence[ParameterRef], options: AnalysisOptions) -> list[ParameterOutcome]:
    """A task of several parameters, each analyzed on its own: one that fails leaves the others."""
    outcomes: list[ParameterOutcome] = []
    for ref in refs:
        try:
            outcomes.append((analyze_parameter(ref, options), None))
        except Exception as error:  # noqa: BLE001 - reported as this parameter's skipped row
            outcomes.append((None, _failure(error)))
    return outcomes


def plan_paths(
    paths: Sequence[str | Path],
    *,
    options: AnalysisOptions | None = None,
    layers: LayerFilter = None,
    exclude: LayerFilter = None,
    allow_pickle: bool = False,
    base: str | Path | None = None,
) -> list[FileResult]:
    """Open every path and plan its rows from metadata; a path that fails gets its ``error``.

    Args:
        paths: files or directories (see :func:`~spectral_callbacks.posthoc.open_source`).
        options: analysis options (``min_evals`` decides what is too small).
        layers, exclude: layer names or regular expressions (``selection.select_layers``).
        allow_pickle: load torch checkpoints with ``weights_only=False`` (runs code in the file).
        base: a checkpoint of the same architecture: each row is then the spectrum of the change
            ``W - W_base`` (WeightWatcher's ``base_model``); parameters the base lacks, or has
            with another shape, are skipped rows saying so.

    Raises:
        ValueError: ``base`` cannot be opened (as :func:`~spectral_callbacks.posthoc.open_source`).
    """
    options = options or AnalysisOptions()
    base_refs = None
    if base is not None:
        try:
            base_refs = {ref.name: ref for ref in open_source(base, allow_pickle=allow_pickle).parameters}
        except ValueError as error:
            raise ValueError(f"base model: {error}") from error
    results = []
    for path in paths:
        result = FileResult(Path(path))
        results.append(result)
        try:
            source = open_source(path, allow_pickle=allow_pickle)
            chosen = list(source.parameters)
            if layers is not None or exclude is not None:
                chosen = select_layers(chosen, layers, exclude)
        except ValueError as error:
            result.error = str(error)
            continue
        result.format, result.files = source.format, source.files
        for ref in chosen:
            planned = (
                _plan(ref, options.min_evals) if base_refs is None else _plan_change(ref, base_refs, options)
            )
            result._slots.append(planned)
            if isinstance(planned, ParameterRef):
                result.parameters.append(ParameterSpec(ref.name, planned.kind, ref.shape))
    return results


def run_plans(
    results: Sequence[FileResult],
    *,
    options: AnalysisOptions | None = None,
    executor: str | ExecutorSpec = "local",
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
) -> None:
    """Run the planned tasks of all paths together on the executor; fill each result's ``rows``.

    Raises:
        ExecutorError: the executor cannot be set up (nothing was analyzed), or a dask cluster
            was left without workers for ``timeout`` seconds.
    """
    spec = parse_executor(executor) if isinstance(executor, str) else executor
    if not any(result.tasks for result in results):
        spec = ExecutorSpec("local")  # nothing to run: no pool or cluster to start
    with open_executor(spec, workers=workers, timeout=timeout) as runner:
        run_on(runner, results, options=options, progress=progress)


def run_on(
    runner: Runner,
    results: Sequence[FileResult],
    *,
    options: AnalysisOptions | None = None,
    progress: bool | None = None,
) -> None:
    """:func:`run_plans` on an executor already open (from ``executors.open_executor``)."""
    options = options or AnalysisOptions()
    tasks = [ref for result in results for ref in result.tasks]
    outcomes: list[ParameterOutcome] = [(None, None)] * len(tasks)
    order = largest_first(tasks)
    batches = guided_batches([_svd_cost(tasks[i].shape) for i in order], runner.workers)
    batch_refs = [[tasks[order[i]] for i in batch] for batch in batches]
    function = functools.partial(analyze_batch, options=options)
    description = f"analyzing {len(tasks)} parameters of {len(results)} path(s)"
    with progress_bar(len(tasks), description, enabled=progress) as advance:
        for index, value, error in runner.map(function, batch_refs):
            for position, task in enumerate(batches[index]):
                # a batch that could not run at all (its worker died) fails each of its parameters
                outcomes[order[task]] = value[position] if error is None else (None, _failure(error))
            advance(len(batches[index]))
    done = iter(outcomes)
    for result in results:
        for slot in result._slots:
            if isinstance(slot, LayerSpectrum):
                result.rows.append(slot)
                continue
            rows, failure = next(done)
            if failure is None:
                result.rows.extend(rows)
            else:
                reason = f"cannot read or analyze it: {failure}"
                result.layer_errors.append(f"{slot.name}: {reason}")
                result.rows.append(_skipped(slot, reason))
        result._slots = []


def analyze_paths(
    paths: Sequence[str | Path],
    *,
    options: AnalysisOptions | None = None,
    layers: LayerFilter = None,
    exclude: LayerFilter = None,
    allow_pickle: bool = False,
    executor: str | ExecutorSpec = "local",
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
) -> list[FileResult]:
    """:func:`plan_paths` then :func:`run_plans`: one result per path, in the order given.

    >>> results = analyze_paths(["model.safetensors"], executor="dask")  # doctest: +SKIP
    >>> print(results[0].rows.table())  # doctest: +SKIP
    """
    results = plan_paths(paths, options=options, layers=layers, exclude=exclude, allow_pickle=allow_pickle)
    run_plans(
        results, options=options, executor=executor, workers=workers, timeout=timeout, progress=progress
    )
    return results


def _plan_change(
    ref: ParameterRef, base_refs: dict[str, ParameterRef], options: AnalysisOptions
) -> LayerSpectrum | ParameterRef:
    """:func:`_plan` of the change from the base model's parameter of the same name and shape."""
    planned = _plan(ref, options.min_evals)
    if not isinstance(planned, ParameterRef):
        return planned
    before = base_refs.get(ref.name)
    if before is None:
        return _skipped(ref, "not in the base model")
    if before.shape != ref.shape or before.problem is not None:
        return _skipped(
            ref, before.problem or f"shape {ref.shape} differs from the base model's {before.shape}"
        )
    return dataclasses.replace(planned, base=before)


def _plan(ref: ParameterRef, min_evals: int) -> LayerSpectrum | ParameterRef:
    """A skipped row from metadata alone, or the parameter with its matrix kind settled."""
    if ref.problem is not None:
        return _skipped(ref, ref.problem)
    probe = np.broadcast_to(np.zeros((), dtype=np.float32), ref.shape)  # the shape, without memory
    try:
        views = matrices_of(ref.name, probe, ref.kind, min_evals=min_evals)
    except ValueError as error:
        return _skipped(ref, str(error))
    if isinstance(views, SkippedParameter):
        return LayerSpectrum.skipped(views, ref.kind or "")
    return dataclasses.replace(ref, kind=views[0].kind)


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _skipped(ref: ParameterRef, reason: str) -> LayerSpectrum:
    return LayerSpectrum.skipped(SkippedParameter(ref.name, ref.shape, reason), ref.kind or "")
