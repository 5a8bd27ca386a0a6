"""The HDF5 run file: one per run, written by the worker alone, readable while it grows (SWMR).

Layout (format version 4)::

    /                      attrs: format_version, library_version, framework, run_id, created, config (JSON)
    /index/                one row per snapshot: epoch, step, time, status, reason
    /                      attrs: skipped_parameters (JSON name -> reason), parameter_aliases (JSON
                           name -> other names of the same tied tensor)
    /parameters/<param>/   attrs: kind, shape, aliases;  datasets: snapshot, weights (rows = snapshots)
    /layers/<matrix>/      attrs: name, parameter, kind, N, M, Q, num_slices
                           datasets: snapshot, svals (float64), status, reason, phase,
                           metrics (float64, one column per name in its attribute ``names``)
    /alerts/               one row per alert of the run's SpectralMonitor: snapshot, epoch, step,
                           layer, rule, metric, value, previous (absent from older files)
    /operators/<layer>/    attrs: name, input_hw, stride, padding, padding_mode, dilation, groups,
                           in_shape, out_shape, dimension
                           datasets: snapshot, top (top_k), edges (bins + 1), counts (bins),
                           count_errors (bins), seconds, reason (only snapshots whose epoch is due)

Every dataset grows along its first axis. A snapshot is committed by its index row: weights are
appended and flushed first, then the index row ("captured"); analysis rows follow, then the index
row becomes "analyzed". A crash at any moment leaves every committed snapshot readable; rows
without an index row are ignored by readers and cut when the run is resumed.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..analysis.alerts import Alert
from ..analysis.deltas import delta_name
from ..analysis.operators import OperatorOptions, OperatorSpec, OperatorSpectrum
from ..spectra import METRIC_NAMES, PHASES, LayerSpectrum, SkippedParameter, matrices_of
from ..spectra.matrices import DEFAULT_MIN_EVALS
from .lock import RunFileBusyError, WriterLock

__all__ = [
    "FORMAT_VERSION",
    "LAYER_STATUS",
    "SNAPSHOT_STATUS",
    "ParameterSpec",
    "RunFileBusyError",
    "RunFileConflictError",
    "RunWriter",
]

FORMAT_VERSION = 4
SNAPSHOT_STATUS = {"captured": 0, "analyzed": 1, "dropped": 2, "failed": 3}
LAYER_STATUS = {"ok": 0, "warning": 1, "no-fit": 2, "skipped": 3}
REASON_DTYPE = "S240"
PHASE_CODES = ("unknown", *PHASES)  # a layer's training phase (Martin & Mahoney, 2021), stored as its index
WRITER_LOCK_TIMEOUT = 120.0
_ALERT_COLUMNS = {
    "snapshot": "i8", "epoch": "i8", "step": "i8", "layer": REASON_DTYPE, "rule": REASON_DTYPE,
    "metric": REASON_DTYPE, "value": "f8", "previous": "f8",
}  # fmt: skip
_CHUNK_BYTES = 1 << 14


class RunFileConflictError(FileExistsError):
    """The run file exists and belongs to another run."""


@dataclass(frozen=True)
class ParameterSpec:
    """A parameter the run captures: its name, matrix kind, shape (in that kind's layout), and
    the other names of the same tensor (tied weights)."""

    name: str
    kind: str
    shape: tuple[int, ...]
    aliases: tuple[str, ...] = ()


def group_name(name: str) -> str:
    """An HDF5-safe group name for a layer or parameter name (``/`` is a path separator)."""
    return name.replace("/", "|")


class RunWriter:
    """Appends snapshots and their analysis to a run file (single writer, SWMR)."""

    def __init__(self, file: h5py.File, lock: WriterLock | None = None):
        self.file = file
        self._lock = lock
        # each layer's datasets, looked up once: a snapshot appends six rows to every layer
        self._layers: dict[str, dict[str, h5py.Dataset]] = {}
        self._names: set[str] | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        run_id: str,
        parameters: Sequence[ParameterSpec],
        config_json: str,
        framework: str,
        weights_dtype: str | None,
        min_evals: int = DEFAULT_MIN_EVALS,
        skipped: Mapping[str, str] | None = None,
        resume_after_step: int | None = None,
        lock_timeout: float = WRITER_LOCK_TIMEOUT,
        operators: Sequence[OperatorSpec] = (),
        operator_options: OperatorOptions | None = None,
        deltas: str | None = None,
    ) -> RunWriter:
        """Create the run file, or reopen it to resume after ``resume_after_step``.

        ``skipped`` names parameters left out of the capture, with the reason, for the record.
        ``operators`` are the conv layers whose operator spectra the run records, with the
        ``operator_options`` that fix their rows' sizes (``top_k``, ``bins``). ``deltas``
        (``"init"``, ``"previous"``) adds a layer for each matrix's change, named by
        :func:`spectral_callbacks.analysis.deltas.delta_name`.
        Only one writer at a time: a previous worker still finishing its queue (its training
        process was killed) is waited for, up to ``lock_timeout`` seconds.

        Raises:
            RunFileConflictError: the file exists and is not this run's (or resuming was not asked).
            RunFileBusyError: another process kept writing the file for ``lock_timeout`` seconds.
        """
        path = Path(path)
        lock = WriterLock.acquire(path, timeout=lock_timeout)
        try:
            if not path.exists():
                layout = _Layout(
                    run_id,
                    tuple(parameters),
                    config_json,
                    framework,
                    weights_dtype,
                    min_evals,
                    dict(skipped or {}),
                    tuple(operators),
                    operator_options or OperatorOptions(),
                    deltas,
                )
                _create_file(path, layout)
            elif resume_after_step is None:
                raise RunFileConflictError(_conflict_message(path, _run_id_of(path)))
            file = _open_for_append(path)
            if file.attrs.get("run_id") != run_id:
                existing = file.attrs.get("run_id")
                file.close()
                raise RunFileConflictError(_conflict_message(path, existing))
            writer = cls(file, lock)
            if resume_after_step is not None:
                writer._truncate_after(resume_after_step)
        except BaseException:
            lock.release()
            raise
        return writer

    def close(self) -> None:
        if self.file.id.valid:
            self.file.flush()
            self.file.close()
        if self._lock is not None:
            self._lock.release()

    def _layer_datasets(self, layer: str) -> dict[str, h5py.Dataset]:
        datasets = self._layers.get(layer)
        if datasets is None:
            group = self.file["layers"][group_name(layer)]
            datasets = self._layers[layer] = {name: group[name] for name in group}
        return datasets

    def _layer_name_set(self) -> set[str]:
        """The run's layers, read once (the file's layout is fixed when it is created)."""
        if self._names is None:
            self._names = set(self.layer_names)
        return self._names

    @property
    def layer_names(self) -> list[str]:
        return [self.file["layers"][key].attrs["name"] for key in self.file["layers"]]

    @property
    def operator_names(self) -> list[str]:
        groups = self.file["operators"].values() if "operators" in self.file else []  # none in format 3
        return [group.attrs["name"] for group in groups]

    def snapshot_count(self) -> int:
        """Index rows so far: the id the next snapshot gets."""
        return int(self.file["index/epoch"].shape[0])

    def file_bytes(self) -> int:
        """The run file's size now: what it holds, with HDF5's own structures."""
        return int(self.file.id.get_filesize())

    def append_weights(self, arrays: dict[str, np.ndarray]) -> int:
        """Append one snapshot's weights; return its snapshot id (not committed until indexed)."""
        snapshot = self.file["index/epoch"].shape[0]
        parameters = self.file["parameters"]
        for key in parameters:
            group = parameters[key]
            name = group.attrs["name"]
            if "weights" in group and name in arrays:
                _append(group["weights"], arrays[name])
                _append(group["snapshot"], snapshot)
        self.file.flush()
        return snapshot

    def append_index(
        self, epoch: int, step: int, status: str, reason: str = "", when: float | None = None
    ) -> int:
        """Commit a snapshot row; return its id."""
        index = self.file["index"]
        _append(index["epoch"], epoch)
        _append(index["step"], step)
        _append(index["time"], time.time() if when is None else when)
        _append(index["status"], SNAPSHOT_STATUS[status])
        _append(index["reason"], _reason(reason))
        self.file.flush()
        return index["epoch"].shape[0] - 1

    def set_status(self, snapshot: int, status: str, reason: str = "") -> None:
        self.file["index/status"][snapshot] = SNAPSHOT_STATUS[status]
        self.file["index/reason"][snapshot] = _reason(reason)
        self.file.flush()

    def append_layer(self, snapshot: int, spectrum: LayerSpectrum) -> None:
        """Append one matrix's analysis for a snapshot (NaN metrics when skipped)."""
        group = self._layer_datasets(spectrum.name)
        _append(group["snapshot"], snapshot)
        svals = np.full(group["svals"].shape[1:], np.nan)
        if spectrum.svals.size:
            svals[...] = spectrum.svals
        _append(group["svals"], svals)
        _append(group["status"], LAYER_STATUS[spectrum.status])
        _append(group["reason"], _reason(spectrum.reason or ""))
        _append(group["phase"], PHASE_CODES.index(spectrum.phase))
        values = spectrum.metrics()
        _append(group["metrics"], [values[metric] for metric in METRIC_NAMES])

    def append_alert(self, snapshot: int, alert: Alert) -> bool:
        """Record an alert of the run's monitor; False for a file made before alerts were kept
        (a resumed older run: HDF5 cannot add the group while readers may be reading)."""
        if "alerts" not in self.file:
            return False
        group = self.file["alerts"]
        row = {
            "snapshot": snapshot, "epoch": alert.epoch, "step": alert.step,
            "layer": _reason(alert.layer), "rule": _reason(alert.rule), "metric": _reason(alert.metric),
            "value": alert.value, "previous": alert.previous,
        }  # fmt: skip
        for name in _ALERT_COLUMNS:
            _append(group[name], row[name])
        self.file.flush()
        return True

    def append_operator(self, snapshot: int, spectrum: OperatorSpectrum) -> None:
        """Append one operator layer's spectrum for a snapshot (NaN values when it failed)."""
        group = self.file["operators"][group_name(spectrum.name)]
        _append(group["snapshot"], snapshot)
        for name in ("top", "edges", "counts", "count_errors", "seconds"):
            _append(group[name], getattr(spectrum, name))
        _append(group["reason"], _reason(spectrum.reason))

    def flush(self) -> None:
        self.file.flush()

    def record_analysis(
        self,
        snapshot: int,
        spectra: Sequence[LayerSpectrum],
        operators: Sequence[OperatorSpectrum] = (),
    ) -> None:
        """Commit a captured snapshot's analysis: its rows for the run's layers (others are left
        out), flushed to disk, and only then the status ``"analyzed"``, so a crash in between
        leaves the snapshot ``"captured"`` (analyzed again later), never half-analyzed."""
        layers = self._layer_name_set()
        for spectrum in spectra:
            if spectrum.name in layers:
                self.append_layer(snapshot, spectrum)
        for operator in operators:
            self.append_operator(snapshot, operator)
        self.file.flush()
        self.set_status(snapshot, "analyzed")

    def pending(self) -> list[tuple[int, int, int]]:
        """``(snapshot id, epoch, step)`` of every snapshot captured but not (yet) analyzed."""
        index = self.file["index"]
        status = index["status"][...]
        rows = np.flatnonzero(status == SNAPSHOT_STATUS["captured"])
        epochs, steps = index["epoch"][...], index["step"][...]
        return [(int(row), int(epochs[row]), int(steps[row])) for row in rows]

    def committed_steps(self) -> set[int]:
        """Steps of the snapshots the file holds (captured, analyzed or failed; not dropped)."""
        index = self.file["index"]
        committed = index["status"][...] != SNAPSHOT_STATUS["dropped"]
        return {int(step) for step in index["step"][...][committed]}

    def saved_weights(self, snapshot: int) -> dict[str, np.ndarray] | None:
        """The weights saved with a snapshot, or ``None`` when the run does not save weights."""
        arrays = {}
        for key in self.file["parameters"]:
            group = self.file["parameters"][key]
            if "weights" not in group:
                return None
            rows = np.flatnonzero(group["snapshot"][...] == snapshot)
            if rows.size:
                arrays[group.attrs["name"]] = group["weights"][int(rows[-1])]
        return arrays

    def _create_layout(self, layout: _Layout) -> None:
        attrs = self.file.attrs
        attrs.update(
            format_version=FORMAT_VERSION,
            library_version=__version__,
            framework=layout.framework,
            run_id=layout.run_id,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            config=layout.config_json,
        )
        index = self.file.create_group("index")
        for name, dtype in (("epoch", "i8"), ("step", "i8"), ("time", "f8"), ("status", "i1")):
            _growing(index, name, (), dtype)
        _growing(index, "reason", (), REASON_DTYPE)
        skipped = dict(layout.skipped)
        # track_order keeps layers in model order (the last one is the classifier)
        self.file.create_group("parameters", track_order=True)
        self.file.create_group("layers", track_order=True)
        for spec in layout.parameters:
            group = self.file["parameters"].create_group(group_name(spec.name))
            aliases = json.dumps(spec.aliases)
            group.attrs.update(name=spec.name, kind=spec.kind, shape=spec.shape, aliases=aliases)
            _growing(group, "snapshot", (), "i8")
            if layout.weights_dtype is not None:
                _growing(group, "weights", spec.shape, layout.weights_dtype)
            views = matrices_of(
                spec.name, np.empty(spec.shape, dtype=np.float32), spec.kind, min_evals=layout.min_evals
            )
            if isinstance(views, SkippedParameter):
                skipped[spec.name] = views.reason
                continue
            for view in views:
                self._create_layer(spec.name, view.name, view.kind, view.slices.shape, view.N, view.M)
            for view in views if layout.deltas else ():
                name = delta_name(view.name, layout.deltas)
                self._create_layer(spec.name, name, view.kind, view.slices.shape, view.N, view.M)
        attrs["skipped_parameters"] = json.dumps(skipped)
        attrs["parameter_aliases"] = json.dumps(
            {spec.name: list(spec.aliases) for spec in layout.parameters if spec.aliases}
        )
        alerts = self.file.create_group("alerts")
        for name, dtype in _ALERT_COLUMNS.items():
            _growing(alerts, name, (), dtype)
        self.file.create_group("operators", track_order=True)
        for spec in layout.operators:
            self._create_operator(spec, layout.operator_options)

    def _create_operator(self, spec: OperatorSpec, options: OperatorOptions) -> None:
        group = self.file["operators"].create_group(group_name(spec.name))
        group.attrs.update(spec.attributes())
        _growing(group, "snapshot", (), "i8")
        sizes = {"top": options.top_k, "edges": options.bins + 1}
        for name in ("top", "edges", "counts", "count_errors"):
            _growing(group, name, (sizes.get(name, options.bins),), "f8")
        _growing(group, "seconds", (), "f8")
        _growing(group, "reason", (), REASON_DTYPE)

    def _create_layer(
        self, parameter: str, name: str, kind: str, slices: tuple[int, ...], n: int, m: int
    ) -> None:
        group = self.file["layers"].create_group(group_name(name))
        group.attrs.update(name=name, parameter=parameter, kind=kind, N=n, M=m, Q=n / m, num_slices=slices[0])
        _growing(group, "snapshot", (), "i8")
        _growing(group, "svals", (slices[0], m), "f8")
        _growing(group, "status", (), "i1")
        _growing(group, "reason", (), REASON_DTYPE)
        _growing(group, "phase", (), "i1")  # index into PHASE_CODES
        # one 2-D dataset, not one per metric: a snapshot's metrics are one write, not dozens
        metrics = _growing(group, "metrics", (len(METRIC_NAMES),), "f8")
        metrics.attrs["names"] = list(METRIC_NAMES)

    def _truncate_after(self, last_step: int) -> None:
        """Drop snapshots after ``last_step`` and rows never committed, renumbering the rest."""
        index = self.file["index"]
        keep = np.flatnonzero(index["step"][...] <= last_step)
        renumber = np.full(index["step"].shape[0], -1)
        renumber[keep] = np.arange(keep.size)
        for name in index:
            _keep_rows(index[name], keep)
        if "alerts" in self.file:
            alerts = self.file["alerts"]
            old = alerts["snapshot"][...]
            kept = np.flatnonzero((old >= 0) & (old < renumber.size))
            kept = kept[renumber[old[kept]] >= 0]
            for dataset in alerts.values():
                _keep_rows(dataset, kept)
            alerts["snapshot"][...] = renumber[old[kept]]
        for root in ("parameters", "layers", "operators"):
            for key in self.file.get(root, ()):
                group = self.file[root][key]
                old = group["snapshot"][...]
                valid = (old < renumber.size) & (old >= 0)
                rows = np.flatnonzero(valid)
                rows = rows[renumber[old[rows]] >= 0]
                for dataset in group.values():
                    _keep_rows(dataset, rows)
                group["snapshot"][...] = renumber[old[rows]]
        self.file.flush()


@dataclass(frozen=True)
class _Layout:
    """What a new run file is built from."""

    run_id: str
    parameters: tuple[ParameterSpec, ...]
    config_json: str
    framework: str
    weights_dtype: str | None
    min_evals: int
    skipped: dict[str, str]
    operators: tuple[OperatorSpec, ...]
    operator_options: OperatorOptions
    deltas: str | None = None


def _create_file(path: Path, layout: _Layout) -> None:
    """Build a new run file under a temporary name, then move it into place.

    The run file itself is only ever open in SWMR mode, which readers can always open; a file
    left flagged by a writer killed outside SWMR mode could not be opened at all.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f".{path.name}.creating")
    with h5py.File(building, "w", libver="latest") as file:
        RunWriter(file)._create_layout(layout)
    os.replace(building, path)


def _open_swmr_writer(path: Path) -> h5py.File:
    """Open straight into SWMR write mode (h5py's ``"a"`` then ``swmr_mode = True`` would leave a
    moment in which a killed writer makes the file unreadable)."""
    access = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    access.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    flags = h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE
    return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=access))


def _run_id_of(path: Path) -> str | None:
    with h5py.File(path, "r", libver="latest", swmr=True) as file:
        return file.attrs.get("run_id")


def _conflict_message(path: Path, existing: str | None) -> str:
    return (
        f"Run file {path} already exists and belongs to run {existing!r}. Resume that run from its "
        "checkpoint (the callback's state holds the run), or choose another log_dir."
    )


def _open_for_append(path: Path) -> h5py.File:
    """Open a run file to append; one whose writer was killed is first copied to a clean file.

    A SWMR writer that dies leaves the file flagged as open for writing, and HDF5 refuses to
    open it for writing again (``h5clear -s`` would clear the flag); the committed content is
    intact and readable, so it is copied into a fresh file that replaces the old one. The
    caller holds the writer lock, so the flag cannot belong to a live writer.
    """
    try:
        return _open_swmr_writer(path)
    except OSError as error:
        if "already open" not in str(error):
            raise
    fresh = path.with_name(f".{path.name}.recovering")
    with (
        h5py.File(path, "r", libver="latest", swmr=True) as source,
        h5py.File(fresh, "w", libver="latest") as target,
    ):
        target.attrs.update(source.attrs)
        for key in source:
            source.copy(key, target)
    os.replace(fresh, path)
    return _open_swmr_writer(path)


def new_run_id() -> str:
    return uuid.uuid4().hex


def _growing(group: h5py.Group, name: str, row_shape: tuple[int, ...], dtype: str) -> h5py.Dataset:
    """A dataset growing by rows; chunks of about 16 KiB (one row when rows are larger)."""
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    rows_per_chunk = max(1, min(256, _CHUNK_BYTES // row_bytes))
    return group.create_dataset(
        name,
        shape=(0, *row_shape),
        maxshape=(None, *row_shape),
        dtype=dtype,
        chunks=(rows_per_chunk, *row_shape),
    )


def _append(dataset: h5py.Dataset, value: object) -> None:
    """One row at the end of a growing dataset, written through h5py's low-level API: the
    high-level ``dataset[size] = value`` rebuilds a selection from Python objects each time, and
    a snapshot appends several rows to every layer (a third of its recording time)."""
    identifier = dataset.id
    size, *row_shape = identifier.shape
    identifier.set_extent((size + 1, *row_shape))
    row = np.ascontiguousarray(value, dtype=dataset.dtype).reshape(1, *row_shape)
    file_space = identifier.get_space()
    file_space.select_hyperslab((size, *(0 for _ in row_shape)), row.shape)
    identifier.write(h5py.h5s.create_simple(row.shape), file_space, row)


def _keep_rows(dataset: h5py.Dataset, rows: np.ndarray) -> None:
    kept = dataset[...][rows]
    dataset.resize(rows.size, axis=0)
    if rows.size:
        dataset[...] = kept


def _reason(text: str) -> bytes:
    return text.encode("utf-8")[:240]
