"""What the analysis process does with a snapshot: store it, analyze it, record the result.

Kept apart from the process plumbing in ``worker.py`` so the same steps serve the live worker
and the offline catch-up of snapshots a dead worker left unanalyzed.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.alerts import Alert, SpectralMonitor
from ..analysis.averages import scalar_metrics
from ..analysis.deltas import delta_items, delta_name
from ..analysis.model import ModelAnalysis, analyze_weights
from ..analysis.operators import OperatorOptions, OperatorSpec, OperatorSpectrum, analyze_operators
from ..analysis.options import SpectrumOptions
from ..runfile.store import ParameterSpec, RunWriter
from ..spectra import LayerSpectrum
from .analysis_executor import LayerExecutor
from .storage_policy import WeightPolicy

__all__ = ["SnapshotAnalyzer"]

# (kind, text) for the user. Kinds "skipped:<layer>", "operator:<layer>" and "write-error" are
# warned about once each (a layer that turns NaN is skipped at every later snapshot); other texts
# once per text.
Report = Callable[[str, str], None]
# (epoch, step, scalars by TensorBoard tag) of each analyzed snapshot, for the user's own loggers.
Results = Callable[[int, int, dict[str, float]], None]
_FAILED = object()  # what a write that raised an OSError returns
Item = tuple[str, np.ndarray, str]  # a parameter's (name, weights, kind)
_SNAPSHOT_MARGIN_BYTES = 256 * 1024  # metrics, singular values, HDF5 metadata of a snapshot


class SnapshotAnalyzer:
    """Writes snapshots and their spectra to a run file (and optionally TensorBoard).

    Each layer's row also says how far it moved since the previous snapshot analyzed here
    (``delta_W``, ``relative_delta``: :mod:`spectral_callbacks.spectra.distances`); for that the
    analyzer keeps that snapshot's arrays, one snapshot's memory.

    Args:
        writer: the open run file.
        parameters: the captured parameters, in model order.
        spectrum: how each matrix is analyzed (``min_evals``, ESD conventions, eigensolver).
        sink: a TensorBoard sink, or ``None``.
        report: called with ``(kind, text)`` for anything the user should hear about.
        weights_dtype: dtype of saved weights, or ``None`` when weights are not saved.
        operators: conv layers whose operator spectra are estimated after the matrix analysis,
            on the snapshots ``operator_options`` says are due.
        operator_options: their schedule and estimator settings.
        results: called with ``(epoch, step, scalars)`` once a snapshot's spectra are in the run
            file, ``scalars`` named as the TensorBoard tags (see
            :func:`spectral_callbacks.analysis.averages.scalar_metrics`); ``None`` to send nothing.
        monitor: alert rules applied to each analyzed snapshot; an alert goes to the run file,
            to TensorBoard (tag ``alerts``) and to ``report`` as kind ``"alert"``.
        deltas: ``"init"`` or ``"previous"``: also analyze each matrix's change since the run's
            first snapshot (kept in memory, or read from the run file when resuming) or since
            the previous one, as the layers the run file has for them.
        weight_policy: which snapshots keep their weights (:mod:`.storage_policy`); None keeps
            all of them.
        layer_executor: where the layers (and their changes) are analyzed
            (:mod:`.analysis_executor`); None: in this process.
    """

    def __init__(
        self,
        writer: RunWriter,
        parameters: Sequence[ParameterSpec],
        spectrum: SpectrumOptions,
        *,
        sink: Any = None,
        report: Report,
        weights_dtype: str | None,
        operators: Sequence[OperatorSpec] = (),
        operator_options: OperatorOptions | None = None,
        results: Results | None = None,
        monitor: SpectralMonitor | None = None,
        deltas: str | None = None,
        weight_policy: WeightPolicy | None = None,
        layer_executor: LayerExecutor | None = None,
    ):
        self.writer = writer
        self.parameters = tuple(parameters)
        self.spectrum = spectrum
        self.sink = sink
        self.report = report
        self.weights_dtype = weights_dtype
        self.operator_options = operator_options or OperatorOptions()
        self.results = results
        self._monitor = monitor.state() if monitor is not None else None
        self._operators = tuple(spec for spec in operators if spec.name in set(writer.operator_names))
        self._layers = set(writer.layer_names)
        self._committed_steps = writer.committed_steps()
        # the last analyzed snapshot's arrays: each layer's movement is measured from them
        self._previous: dict[str, np.ndarray] | None = None
        self.deltas = deltas
        self.weight_policy = weight_policy
        self._initial: dict[str, np.ndarray] | None = None
        self._layer_executor = layer_executor or LayerExecutor(report=report)

    def record_dropped(self, dropped: Sequence[tuple[int, int, float, str]]) -> None:
        """Index rows for snapshots the training side dropped (``on_full="drop"``)."""
        for epoch, step, when, reason in dropped:
            self._written(self.writer.append_index, epoch, step, "dropped", reason, when)

    def add(self, epoch: int, step: int, when: float, arrays: dict[str, np.ndarray]) -> None:
        """Commit a new snapshot's weights and index row, then analyze it.

        A snapshot at a step the file already holds is skipped: the training side hands a
        restarted worker what the dead one had not acknowledged, and a resumed run its last one.
        """
        if step in self._committed_steps:
            return
        if not self._room_for(arrays):
            return

        def commit() -> int:
            if self._keeps_weights():
                self.writer.append_weights(
                    {name: array.astype(self.weights_dtype, copy=False) for name, array in arrays.items()}
                )
            return self.writer.append_index(epoch, step, "captured", when=when)

        row = self._written(commit)
        if row is not _FAILED:
            self._committed_steps.add(step)
            self._analyze(row, epoch, step, arrays)

    def catch_up(self) -> int:
        """Analyze snapshots committed earlier but never analyzed (a worker died); returns how many.

        Their saved weights are used; without them (not saved, or not kept by the storage budget)
        they are marked failed with the reason.
        """
        done = 0
        for row, epoch, step in self.writer.pending():
            arrays = self.writer.saved_weights(row)
            if not arrays:
                reason = (
                    "analysis interrupted and weights not saved (save_weights=False)"
                    if arrays is None
                    else "analysis interrupted and this snapshot's weights not kept (max_run_file_bytes)"
                )
                self._written(self.writer.set_status, row, "failed", reason)
                continue
            self._analyze(row, epoch, step, arrays)
            done += 1
        return done

    def _analyze(self, row: int, epoch: int, step: int, arrays: dict[str, np.ndarray]) -> None:
        try:
            items = [(p.name, arrays[p.name], p.kind) for p in self.parameters if p.name in arrays]
            analyzed = self._analyze_weights(items, reference=self._previous)
            spectra = [s for s in analyzed if s.name in self._layers]
            changes = self._changes(row, items, arrays)
            self._previous = arrays
        except Exception as error:  # noqa: BLE001 - recorded, never raised into training
            self._written(self.writer.set_status, row, "failed", f"{type(error).__name__}: {error}")
            self.report("warning", f"analysis of epoch {epoch} step {step} failed: {error}")
            return
        operators = analyze_operators(self._operators, arrays, self.operator_options, epoch)
        if self._written(self.writer.record_analysis, row, [*spectra, *changes], operators) is not _FAILED:
            scalars = scalar_metrics(spectra, operators, changes)
            if self.sink is not None:
                self.sink.write_snapshot(step, [*spectra, *changes], scalars)
                if operators:
                    self.sink.write_operators(step, operators)
            if self.results is not None:
                self.results(epoch, step, scalars)
            if self._monitor is not None:
                self._alert(row, step, self._monitor.check(epoch, step, spectra))
        _report_skipped(spectra, epoch, step, self.report)
        _report_operators(operators, epoch, step, self.report)

    def _analyze_weights(
        self, items: Sequence[Item], reference: dict[str, np.ndarray] | None = None, *, snapshot: bool = True
    ) -> ModelAnalysis:
        """``analyze_weights`` of the items, here or on the layer executor (the same rows);
        ``snapshot``: the items are the snapshot's own arrays, the next one's reference."""
        if self._layer_executor.parallel:
            return self._layer_executor.analyze(
                items, self.spectrum, reference=reference, referred_to_next=snapshot
            )
        return analyze_weights(items, **self.spectrum.kwargs(), reference=reference)

    def _keeps_weights(self) -> bool:
        """Whether the next snapshot's weights go into the run file (said once when the budget
        stops them)."""
        if self.weights_dtype is None:
            return False
        policy = self.weight_policy
        if policy is None:
            return True
        snapshot = self.writer.snapshot_count()
        if policy.keeps(snapshot, self.writer.file_bytes()):
            return True
        if snapshot % policy.stride == 0:
            self.report(
                "storage",
                f"the run file's weights reached max_run_file_bytes={policy.max_bytes}: from snapshot "
                f"{snapshot} on, weights are not kept (spectra are). Raise max_run_file_bytes (None: "
                "no limit) to keep them",
            )
        return False

    def _changes(self, row: int, items: list[Item], arrays: dict[str, np.ndarray]) -> list[LayerSpectrum]:
        """The rows of each matrix's change (``deltas``), for the layers the run file has; none
        without ``deltas`` or a reference (the first snapshot, for ``"previous"``)."""
        if self.deltas is None:
            return []
        if self.deltas == "init" and self._initial is None:
            self._initial = arrays if row == 0 else self.writer.saved_weights(0)
        base = self._initial if self.deltas == "init" else self._previous
        if base is None:
            return []
        if not base:  # a resumed run whose file kept no weights of its initialization
            self.report(
                "warning",
                "deltas='init' needs the initial weights, which the run file did not keep "
                "(max_run_file_bytes below one snapshot): no changes are analyzed",
            )
            return []
        changes, skipped = delta_items(items, base)
        rows = [*self._analyze_weights(changes, snapshot=False), *skipped]
        named = [
            dataclasses.replace(
                r,
                name=delta_name(r.name, self.deltas),
                # "'fc' is all zeros" of an unchanged layer is said of the change, not the layer
                reason=r.reason and r.reason.replace(repr(r.name), f"the change of {r.name!r}"),
            )
            for r in rows
        ]
        return [r for r in named if r.name in self._layers]

    def _alert(self, row: int, step: int, alerts: Sequence[Alert]) -> None:
        """Each alert into the run file, TensorBoard and a message to the training process."""
        for alert in alerts:
            self._written(self.writer.append_alert, row, alert)
            if self.sink is not None:
                self.sink.write_alert(step, alert.message())
            self.report("alert", alert.message())

    def _room_for(self, arrays: dict[str, np.ndarray]) -> bool:
        """Whether the disk has room for a snapshot, with a margin; reported when it has not.

        Checked beforehand because HDF5 reports a full disk only sometimes: chunk writes that fail
        when its cache evicts them are lost without an exception, under an index row saying
        the snapshot is there.
        """
        itemsize = np.dtype(self.weights_dtype).itemsize if self.weights_dtype is not None else 0
        needed = 2 * sum(array.size for array in arrays.values()) * itemsize + _SNAPSHOT_MARGIN_BYTES
        free = shutil.disk_usage(Path(self.writer.file.filename).parent).free
        if free >= needed:
            return True
        self._written(_raise_disk_full, free, needed)
        return False

    def _written(self, write: Callable[..., Any], *args: Any) -> Any:
        """``write(*args)``'s result; an OS error (disk full, file gone) is reported and gives
        ``_FAILED`` instead of an exception. Snapshots committed before stay readable.
        """
        try:
            return write(*args)
        except (OSError, RuntimeError) as error:  # h5py raises either when a write fails
            self.report(
                "write-error",
                f"cannot write to the run file {self.writer.file.filename}: {error}. Snapshots "
                "already in it are intact; later ones are lost until the write succeeds again",
            )
            return _FAILED


def _raise_disk_full(free: int, needed: int) -> None:
    raise OSError(errno.ENOSPC, f"No space left for a snapshot: {free} bytes free, about {needed} needed")


def _report_operators(operators: Sequence[OperatorSpectrum], epoch: int, step: int, report: Report) -> None:
    for operator in operators:
        if operator.reason:
            outcome = "approximate" if operator.ok else "failed"
            text = f"operator spectrum of {operator.name} {outcome} at epoch {epoch} step {step}"
            report(f"operator:{operator.name}", f"{text}: {operator.reason}")


def _report_skipped(spectra: Sequence[LayerSpectrum], epoch: int, step: int, report: Report) -> None:
    for spectrum in spectra:
        if spectrum.status == "skipped":
            report(
                f"skipped:{spectrum.name}",
                f"layer {spectrum.name} skipped at epoch {epoch} step {step}: {spectrum.reason}",
            )
