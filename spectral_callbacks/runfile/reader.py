"""Reading a run file, also while the worker is still writing it (HDF5 SWMR).

Only committed snapshots are visible: those whose index row says "analyzed" for metrics and
spectra, and any committed one ("captured", "analyzed" or "failed" analysis) for weights.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..analysis.deltas import delta_name
from ..spectra import METRIC_NAMES, eigenvalues
from .store import FORMAT_VERSION, LAYER_STATUS, PHASE_CODES, SNAPSHOT_STATUS, group_name

__all__ = ["READABLE_FORMATS", "RUN_FILE_NAME", "RunReader", "check_stored", "open_for_reading", "open_run"]

RUN_FILE_NAME = "spectra.h5"
# Format 4 only added /operators: a format-3 file reads as a run without operator spectra.
READABLE_FORMATS = (3, FORMAT_VERSION)
_LOCK_RETRY_SECONDS = 10.0
_LAYER_STATUS_NAMES = {code: name for name, code in LAYER_STATUS.items()}


def open_run(path: str | Path) -> RunReader:
    """Open a run file, or the ``spectra.h5`` inside a run directory, for reading.

    Raises:
        FileNotFoundError: no run file at ``path``.
        ValueError: the file is not a spectral-callbacks run file (or is truncated/corrupt).
    """
    return RunReader(path)


class RunReader:
    """A read-only view of a run: layers, epochs, metrics per layer and epoch, ESDs and weights."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            path = path / RUN_FILE_NAME
        if not path.exists():
            raise FileNotFoundError(
                f"No run file at {path}; expected a {RUN_FILE_NAME} written by a callback."
            )
        try:
            self._file = open_for_reading(path)
        except OSError as error:
            raise ValueError(
                f"{path} is not a readable HDF5 run file (truncated or corrupt?): {error}"
            ) from error
        if "format_version" not in self._file.attrs or "index" not in self._file:
            self._file.close()
            raise ValueError(f"{path} is an HDF5 file but not a spectral-callbacks run file.")
        version = int(self._file.attrs["format_version"])
        if version not in READABLE_FORMATS:
            library = self._file.attrs.get("library_version", "?")
            self._file.close()
            raise ValueError(
                f"{path} is a run file of format {version} (written by spectral-callbacks {library}); "
                f"this version reads formats {', '.join(map(str, READABLE_FORMATS))}. Analyze its saved "
                "weights again with the current version, or read it with the version that wrote it."
            )
        self.path = path

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def config(self) -> dict[str, Any]:
        """The callback settings the run was recorded with."""
        return json.loads(self._file.attrs["config"])

    @property
    def attributes(self) -> dict[str, Any]:
        """Run metadata: format and library version, framework, run id, creation time."""
        return {key: self._file.attrs[key] for key in self._file.attrs if key != "config"}

    @property
    def skipped_parameters(self) -> dict[str, str]:
        """``{parameter: reason}`` for the model's parameters that have no analyzed matrix.

        Run files written before the attribute existed read as ``{}``.
        """
        return self._json_attribute("skipped_parameters")

    @property
    def parameter_aliases(self) -> dict[str, list[str]]:
        """``{parameter: [other names]}``: tensors the model holds under several names (tied
        weights), recorded once under the first name; ``{}`` for runs without the attribute."""
        return {name: list(others) for name, others in self._json_attribute("parameter_aliases").items()}

    @property
    def layers(self) -> list[str]:
        """Names of the analyzed matrices, in model order."""
        return [group.attrs["name"] for group in self._groups("layers")]

    @property
    def change_layers(self) -> set[str]:
        """The layers of the weights' changes (``deltas="init"`` or ``"previous"``), which the
        model averages leave out; empty for a run without them."""
        deltas = self.config.get("deltas")
        suffix = delta_name("", deltas) if deltas else None
        return {name for name in self.layers if suffix and name.endswith(suffix)}

    def layer_status_names(self, codes: np.ndarray) -> list[str]:
        """Layer statuses (``"ok"``, ``"skipped"``, ...) of the codes :meth:`metric_grid` gives."""
        return [_LAYER_STATUS_NAMES[int(code)] for code in codes]

    @property
    def layer_count(self) -> int:
        """How many matrices the run analyzes (without reading their names)."""
        return len(self._file["layers"]) if "layers" in self._file else 0

    @property
    def parameters(self) -> list[str]:
        return [group.attrs["name"] for group in self._groups("parameters")]

    @property
    def operators(self) -> list[str]:
        """Names of the conv layers whose operator spectra the run records, in model order."""
        return [group.attrs["name"] for group in self._groups("operators")]

    def operator_info(self, layer: str) -> dict[str, Any]:
        """An operator layer's ``input_hw``, ``stride``, ``padding``, ``padding_mode``, ``dilation``,
        ``groups``, ``in_shape``, ``out_shape`` and ``dimension`` (of its Gram operator), as Python values."""
        attrs = self._group("operators", layer).attrs
        return {key: _python(attrs[key]) for key in attrs}

    def operator_epochs(self, layer: str) -> np.ndarray:
        """Epochs of the analyzed snapshots that have an operator row for ``layer``."""
        group = self._group("operators", layer)
        rows = self._analyzed_rows(group)  # refreshes the snapshot column first
        return self.snapshots()["epoch"][_refreshed(group["snapshot"], self.path)[...][rows]]

    def operator_spectral_norm(self, layer: str) -> np.ndarray:
        """The operator's spectral norm ``sigma_max(A) = sqrt(lambda_1)`` at every analyzed snapshot
        with an operator row (:meth:`operator_epochs`); NaN where its analysis failed."""
        group = self._group("operators", layer)
        rows = self._analyzed_rows(group)
        return np.sqrt(_refreshed(group["top"], self.path)[:, 0][rows])

    def operator_spectrum(
        self, layer: str, epoch: int | None = None, *, step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(top, edges, counts, count_errors)`` of an operator layer at an epoch (its last
        snapshot) or step, by default the last one: the ``top_k`` largest eigenvalues of its Gram
        operator (squared singular values, descending) and the KPM histogram of all of them.

        Raises:
            KeyError: no such operator layer, or no operator row at that epoch or step.
        """
        group = self._group("operators", layer)
        try:
            row = self._row_at(group, epoch, step, analyzed=True)
        except KeyError:
            what = f"step {step}" if step is not None else f"epoch {epoch}"
            raise KeyError(
                f"No operator spectrum of {layer!r} at {what} in {self.path}; it has epochs "
                f"{self.operator_epochs(layer).tolist()} (operator_every_n_epochs="
                f"{self.config.get('operator_every_n_epochs')})."
            ) from None
        names = ("top", "edges", "counts", "count_errors")
        return tuple(_refreshed(group[name], self.path)[row] for name in names)

    def layer_info(self, layer: str) -> dict[str, Any]:
        """Kind, N, M, Q and number of slices of a layer."""
        return dict(self._layer(layer).attrs)

    def snapshots(self, status: str | None = None) -> dict[str, np.ndarray]:
        """The index as arrays: ``epoch``, ``step``, ``time``, ``status``, ``reason``; optionally filtered."""
        index = self._file["index"]
        columns = {}
        for name in ("epoch", "step", "time", "status", "reason"):
            columns[name] = _refreshed(index[name], self.path)[...]
        size = min(len(column) for column in columns.values())
        columns = {name: column[:size] for name, column in columns.items()}
        columns["status"] = np.array([_name_of(code) for code in columns["status"]], dtype=object)
        columns["reason"] = np.array([text.decode("utf-8") for text in columns["reason"]], dtype=object)
        if status is not None:
            keep = columns["status"] == status
            columns = {name: column[keep] for name, column in columns.items()}
        return columns

    @property
    def epochs(self) -> np.ndarray:
        """Epoch of every analyzed snapshot (0 is the initialization)."""
        return self.snapshots("analyzed")["epoch"]

    @property
    def steps(self) -> np.ndarray:
        """Global step of every analyzed snapshot."""
        return self.snapshots("analyzed")["step"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts the run's ``SpectralMonitor`` raised, oldest first: dicts with ``epoch``,
        ``step``, ``layer``, ``rule``, ``metric``, ``value`` and ``previous``; those of
        snapshots not (yet) committed as analyzed are left out. Empty for files without alerts."""
        if "alerts" not in self._file:
            return []
        group = self._file["alerts"]
        columns = {name: _refreshed(group[name], self.path)[...] for name in _ALERT_FIELDS}
        size = min(len(column) for column in columns.values())
        analyzed = set(np.flatnonzero(self._status_codes() == SNAPSHOT_STATUS["analyzed"]).tolist())
        rows = []
        for row in range(size):
            if int(columns["snapshot"][row]) not in analyzed:
                continue
            rows.append(
                {
                    name: columns[name][row].decode("utf-8", "replace")
                    if isinstance(columns[name][row], bytes)
                    else columns[name][row].item()
                    for name in _ALERT_FIELDS
                    if name != "snapshot"
                }
            )
        return rows

    @property
    def dropped(self) -> list[tuple[int, int, str]]:
        """``(epoch, step, reason)`` of every snapshot dropped because the worker was behind."""
        rows = self.snapshots("dropped")
        return list(zip(rows["epoch"].tolist(), rows["step"].tolist(), rows["reason"].tolist(), strict=True))

    def metric(self, name: str, layer: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """One metric over the analyzed snapshots: for one layer, or a dict over all layers.

        Raises:
            KeyError: unknown metric or layer; the message lists the available ones.
        """
        if name not in METRIC_NAMES:
            raise KeyError(f"Unknown metric {name!r}. Available: {', '.join(METRIC_NAMES)}.")
        if layer is None:
            return {layer_name: self.metric(name, layer_name) for layer_name in self.layers}
        group = self._layer(layer)
        rows = self._analyzed_rows(group)
        dataset = _refreshed(group["metrics"], self.path)
        column = _column(dataset, name)
        if column is None:  # a metric added after the version that wrote the file
            return np.full(len(rows), np.nan)
        return dataset[:, column][rows]

    def metric_grid(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, phases, statuses)`` of one metric for every layer at every analyzed snapshot:
        arrays of shape ``(layers, snapshots)`` in model order, phases as indices into
        ``PHASE_CODES`` and statuses as the codes of ``LAYER_STATUS``. A layer without a row at
        some snapshot has NaN there, phase ``unknown`` and status ``skipped``.

        The whole run's table in four reads per layer, where :meth:`metric`, :meth:`phases` and
        :meth:`layer_status` read the index again for every layer: what a dashboard needs.

        Raises:
            KeyError: unknown metric.
        """
        if name not in METRIC_NAMES:
            raise KeyError(f"Unknown metric {name!r}. Available: {', '.join(METRIC_NAMES)}.")
        analyzed = np.flatnonzero(self._status_codes() == SNAPSHOT_STATUS["analyzed"])
        root = self._file["layers"].id if "layers" in self._file else None
        keys = list(root) if root is not None else []
        values = np.full((len(keys), analyzed.size), np.nan)
        phases = np.zeros((len(keys), analyzed.size), dtype=np.int8)
        statuses = np.full((len(keys), analyzed.size), LAYER_STATUS["skipped"], dtype=np.int8)
        # every layer of a file has the same columns: those of the version that wrote it
        # (None: a metric added after the version that wrote the file, NaN throughout)
        column = _column(self._file["layers"][keys[0]]["metrics"], name) if keys else None
        for position, key in enumerate(keys):
            names = (b"snapshot", b"metrics", b"phase", b"status")
            snapshot, metrics, phase, status = _read_datasets(root, key, names, self.path)
            size = min(len(snapshot), len(metrics), len(phase), len(status))
            rows = np.flatnonzero(np.isin(snapshot[:size], analyzed))
            columns = np.searchsorted(analyzed, snapshot[rows])  # later rows of a snapshot win
            if column is not None:
                values[position, columns] = metrics[rows, column]
            phases[position, columns] = phase[rows]
            statuses[position, columns] = status[rows]
        return values, phases, statuses

    def metrics(self, layer: str) -> dict[str, np.ndarray]:
        """All metrics of one layer over the analyzed snapshots."""
        return {name: self.metric(name, layer) for name in METRIC_NAMES}

    def layer_status(self, layer: str) -> list[tuple[str, str]]:
        """``(status, reason)`` of a layer at every analyzed snapshot."""
        group = self._layer(layer)
        rows = self._analyzed_rows(group)
        codes = _refreshed(group["status"], self.path)[...][rows]
        reasons = _refreshed(group["reason"], self.path)[...][rows]
        return [(_LAYER_STATUS_NAMES[int(c)], r.decode("utf-8")) for c, r in zip(codes, reasons, strict=True)]

    def phases(self, layer: str) -> list[str]:
        """The training phase (Martin & Mahoney's labels, 2021, or "unknown") of a layer at every
        analyzed snapshot."""
        group = self._layer(layer)
        rows = self._analyzed_rows(group)
        return [PHASE_CODES[int(code)] for code in _refreshed(group["phase"], self.path)[...][rows]]

    def layer_steps(self, layer: str) -> np.ndarray:
        """Global steps of the analyzed snapshots a layer has a row at, in the order of
        :meth:`metric`, :meth:`layer_status` and :meth:`phases` for that layer: every analyzed
        snapshot's, but for a change layer of ``deltas="previous"``, which has none at the first."""
        group = self._layer(layer)
        snapshot = _refreshed(group["snapshot"], self.path)[...][self._analyzed_rows(group)]
        return _refreshed(self._file["index/step"], self.path)[...][snapshot]

    def svals(self, layer: str, epoch: int | None = None, *, step: int | None = None) -> np.ndarray:
        """Singular values ``(slices, M)`` of a layer at an epoch (the last snapshot of it) or step."""
        group = self._layer(layer)
        row = self._row_at(group, epoch, step, analyzed=True)
        return _refreshed(group["svals"], self.path)[row]

    def esd(self, layer: str, epoch: int | None = None, *, step: int | None = None) -> np.ndarray:
        """The ESD (eigenvalues, ascending) of a layer, with the run's conventions."""
        attrs = self._layer(layer).attrs
        config = self.config
        return eigenvalues(
            self.svals(layer, epoch, step=step),
            kind=attrs["kind"],
            N=int(attrs["N"]),
            normalize=config.get("normalize"),
            conv2d_norm=config.get("conv2d_norm", True),
        )

    def weights(self, parameter: str, epoch: int | None = None, *, step: int | None = None) -> np.ndarray:
        """Saved weights of a parameter at an epoch or step.

        Raises:
            KeyError: the run did not save weights, or no such parameter / snapshot.
        """
        group = self._group("parameters", parameter)
        if "weights" not in group:
            raise KeyError(f"Run {self.path} did not save weights (save_weights=False).")
        try:
            row = self._row_at(group, epoch, step, analyzed=False)
        except KeyError:
            kept = self.weight_epochs(parameter).tolist()
            what = f"step {step}" if step is not None else f"epoch {epoch}"
            if (step is not None and step in self.steps) or (step is None and epoch in self.epochs):
                raise KeyError(
                    f"The weights of {what} were not kept in {self.path} (its max_run_file_bytes "
                    f"budget); epochs with weights: {kept}."
                ) from None
            raise
        return _refreshed(group["weights"], self.path)[row]

    def weight_epochs(self, parameter: str) -> np.ndarray:
        """The epochs of the committed snapshots whose weights the run file kept for ``parameter``
        (all of them unless the run's ``max_run_file_bytes`` thinned them; none without
        ``save_weights``)."""
        group = self._group("parameters", parameter)
        index = self.snapshots()
        if "weights" not in group:
            return np.empty(0, dtype=np.int64)
        committed = np.flatnonzero(np.isin(index["status"], ["analyzed", "captured", "failed"]))
        stored = _refreshed(group["snapshot"], self.path)[...]
        return np.asarray(index["epoch"])[np.intersect1d(committed, stored)]

    def _json_attribute(self, name: str) -> dict[str, Any]:
        """A root attribute holding a JSON object, ``{}`` when absent.

        Raises:
            ValueError: the attribute is not a JSON object.
        """
        text = self._file.attrs.get(name)
        if text is None:
            return {}
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise ValueError(f"{self.path}: the attribute {name} is not a JSON object: {str(text)[:80]!r}.")
        return value

    def _groups(self, root: str) -> list[h5py.Group]:
        return [self._file[root][key] for key in self._file[root]] if root in self._file else []

    def _group(self, root: str, name: str) -> h5py.Group:
        key = group_name(name)
        if root not in self._file or key not in self._file[root]:
            available = {"layers": self.layers, "operators": self.operators}.get(root, self.parameters)
            what = "operator layer" if root == "operators" else root[:-1]
            raise KeyError(
                f"No {what} {name!r} in {self.path}. Available: {', '.join(available) or '(none)'}."
            )
        return self._file[root][key]

    def _layer(self, layer: str) -> h5py.Group:
        return self._group("layers", layer)

    def _analyzed_rows(self, group: h5py.Group) -> np.ndarray:
        analyzed = np.flatnonzero(self._status_codes() == SNAPSHOT_STATUS["analyzed"])
        snapshot = _refreshed(group["snapshot"], self.path)[...]
        rows = np.flatnonzero(np.isin(snapshot, analyzed))
        # one row per snapshot: keep the last written (a resumed run never duplicates, but be safe)
        _, last = np.unique(snapshot[rows][::-1], return_index=True)
        return np.sort(rows[::-1][last])

    def _row_at(self, group: h5py.Group, epoch: int | None, step: int | None, *, analyzed: bool) -> int:
        index = self.snapshots()
        wanted = {"analyzed"} if analyzed else {"analyzed", "captured", "failed"}
        committed = np.array([status in wanted for status in index["status"]])
        if step is not None:
            match = committed & (index["step"] == step)
        elif epoch is not None:
            match = committed & (index["epoch"] == epoch)
        else:
            match = committed
        ids = np.flatnonzero(match)
        snapshots = _refreshed(group["snapshot"], self.path)[...]
        rows = np.flatnonzero(np.isin(snapshots, ids))
        if rows.size == 0:
            what = f"step {step}" if step is not None else f"epoch {epoch}"
            if ids.size == 0:
                epochs = self.epochs.tolist()
                raise KeyError(f"No committed snapshot at {what} in {self.path}; epochs: {epochs}.")
            held = sorted(set(index["epoch"][np.intersect1d(snapshots, np.flatnonzero(committed))].tolist()))
            raise KeyError(
                f"{group.attrs.get('name', group.name)!r} has no row at {what} in {self.path} (a change "
                f"layer of deltas='previous' has none at the first snapshot); its epochs: {held}."
            )
        return int(rows[-1])

    def _status_codes(self) -> np.ndarray:
        return _refreshed(self._file["index/status"], self.path)[...]


def _read_datasets(
    root: h5py.h5g.GroupID, key: bytes, names: tuple[bytes, ...], path: Path
) -> list[np.ndarray]:
    """Whole datasets of the group ``key`` under ``root``, refreshed, through h5py's low-level
    API: half the time of ``group[name][...]`` per dataset, which a run of hundreds of layers
    read for a dashboard adds up."""
    group = h5py.h5g.open(root, key)
    arrays = []
    for name in names:
        dataset = h5py.h5d.open(group, name)
        dataset.refresh()
        check_stored(dataset, path)
        array = np.empty(dataset.shape, dtype=dataset.dtype)
        if array.size:
            dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, array)
        arrays.append(array)
    return arrays


def _refreshed(dataset: h5py.Dataset, path: Path) -> h5py.Dataset:
    """``dataset`` with the rows its writer has flushed since, checked by :func:`check_stored`."""
    dataset.refresh()
    check_stored(dataset.id, path)
    return dataset


def check_stored(dataset: h5py.h5d.DatasetID, path: Path) -> None:
    """Refuse a dataset whose shape claims more bytes than the file stores for it.

    Run files are written uncompressed, row after row, so a dataset's rows are stored but for at
    most one chunk (a writer killed between growing and writing it). A damaged or forged file can
    claim a shape of terabytes over a few bytes: reading it would fill memory with fill values.

    Raises:
        ValueError: the claimed size exceeds what is stored by more than one chunk.
    """
    itemsize = dataset.dtype.itemsize
    claimed = math.prod(dataset.shape) * itemsize
    creation = dataset.get_create_plist()
    chunk = creation.get_chunk() if creation.get_layout() == h5py.h5d.CHUNKED else None
    slack = math.prod(chunk) * itemsize if chunk else 0
    stored = dataset.get_storage_size()
    if claimed > stored + slack:
        raise ValueError(
            f"{path}: a dataset claims {claimed:,} bytes (shape {dataset.shape}) but the file stores "
            f"{stored:,} for it: a damaged or forged run file; refused."
        )


def open_for_reading(path: Path) -> h5py.File:
    """Open for reading: in SWMR mode only while a writer has the file (a live run, or one whose
    writer was killed), otherwise plainly.

    A plain open checks the end of the file (a truncated file fails here, which a SWMR open would
    not notice) and fails at once on corrupt metadata, where a SWMR reader retries every
    metadata read that fails its checksum, for minutes, holding Python's lock all the while. A
    file open for writing refuses the plain open and is read in SWMR mode. While the writer opens
    or closes the file (it holds HDF5's lock for a moment then), retry for up to
    ``_LOCK_RETRY_SECONDS``.
    """
    deadline = time.monotonic() + _LOCK_RETRY_SECONDS
    while True:
        try:
            try:
                return h5py.File(path, "r", libver="latest")
            except OSError as error:
                if "already open for write" not in str(error):
                    raise
            return h5py.File(path, "r", libver="latest", swmr=True)
        except OSError as error:
            if "unable to lock file" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _python(value: Any) -> Any:
    """An HDF5 attribute as a Python value: arrays as tuples, numpy scalars as ints, floats, str."""
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return value.item() if isinstance(value, np.generic) else value


def _name_of(code: int) -> str:
    return next(name for name, value in SNAPSHOT_STATUS.items() if value == code)


_ALERT_FIELDS = ("snapshot", "epoch", "step", "layer", "rule", "metric", "value", "previous")


def _column(metrics: Any, name: str) -> int | None:
    """The column of a metric in a layer's ``metrics`` dataset, or None if the file has none."""
    names = list(metrics.attrs["names"])
    return names.index(name) if name in names else None
