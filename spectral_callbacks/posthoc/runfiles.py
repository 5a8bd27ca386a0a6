"""Run files given to ``analyze``: analyze the snapshots they hold as captured but not analyzed.

A worker that died (or a training process killed) leaves snapshots whose weights are in the run
file but whose spectra are not. This opens the run as its writer, with the analysis options it was
recorded with, and lets :class:`~spectral_callbacks.live.snapshot_analysis.SnapshotAnalyzer` catch up.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..analysis.options import SpectrumOptions
from ..live.snapshot_analysis import SnapshotAnalyzer
from ..runfile.reader import RUN_FILE_NAME, check_stored, open_for_reading, open_run
from ..runfile.store import ParameterSpec, RunFileBusyError, RunWriter

__all__ = ["catch_up_run", "is_run_path"]

# resume after the largest step there is: keep every snapshot (as the live worker's restart does)
_KEEP_ALL = int(np.iinfo(np.int64).max)
# how long to wait for a live writer (a training run's worker) before saying so
LOCK_TIMEOUT = 2.0


def is_run_path(path: str | Path) -> bool:
    """A spectral-callbacks run file, or a directory holding one (``spectra.h5``)."""
    path = Path(path)
    if path.is_dir():
        path = path / RUN_FILE_NAME
    if not (path.is_file() and h5py.is_hdf5(path)):
        return False
    try:
        # a plain open unless a writer has the file: a SWMR reader retries every damaged metadata
        # read for minutes (see ``runfile.reader``)
        with open_for_reading(path) as file:
            return "format_version" in file.attrs and "index" in file
    except (OSError, RuntimeError, ValueError, KeyError):
        return False


def catch_up_run(path: str | Path, *, lock_timeout: float = LOCK_TIMEOUT) -> tuple[int, list[str]]:
    """Analyze the run's captured snapshots; returns how many, and the messages of the analysis.

    Nothing is written when no snapshot is pending.

    Raises:
        ValueError: the file is not a readable run file (damaged or forged: its metadata, or
            datasets claiming more than the file stores), or a live process is writing it.
    """
    try:
        return _catch_up(path, lock_timeout)
    except (KeyError, TypeError, IndexError, AttributeError, RuntimeError, OSError) as error:
        # what a damaged or forged run file makes h5py or the run's own code raise
        text = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ValueError(f"not a readable run file (damaged?): {type(error).__name__}: {text}") from error


def _catch_up(path: str | Path, lock_timeout: float) -> tuple[int, list[str]]:
    with open_run(path) as run:
        if run.snapshots("captured")["epoch"].size == 0:
            return 0, []
        run_path, attributes, config = run.path, run.attributes, run.config
    _check_readable(run_path)
    try:
        writer = RunWriter.open(
            run_path,
            run_id=str(attributes["run_id"]),
            parameters=(),
            config_json=json.dumps(config),
            framework=str(attributes.get("framework", "")),
            weights_dtype=None,
            min_evals=SpectrumOptions.from_config(config).min_evals,
            resume_after_step=_KEEP_ALL,
            lock_timeout=lock_timeout,
        )
    except RunFileBusyError as error:
        raise ValueError(f"{error} A live run analyzes its own snapshots.") from None
    messages: list[str] = []
    try:
        parameters, weights_dtype = _parameters(writer.file)
        analyzer = SnapshotAnalyzer(
            writer,
            parameters,
            SpectrumOptions.from_config(config),
            report=lambda kind, text: messages.append(f"{kind}: {text}"),
            weights_dtype=weights_dtype,
        )
        done = analyzer.catch_up()
    finally:
        writer.close()
    return done, messages


def _check_readable(path: Path) -> None:
    """Read every object's metadata once, opened plainly, and check every dataset's claimed size
    against what the file stores, before the writer opens the file: a SWMR writer retries every
    damaged metadata read for minutes, and its recovery reads whole datasets.

    Raises:
        ValueError: a dataset claims more bytes than the file stores.
        OSError, RuntimeError, KeyError: damaged metadata (as h5py reports it).
    """
    with open_for_reading(path) as file:
        file.visititems(
            lambda _, item: check_stored(item.id, path) if isinstance(item, h5py.Dataset) else None
        )


def _parameters(file: h5py.File) -> tuple[list[ParameterSpec], str | None]:
    """The run's parameters in model order, and the dtype its weights were saved in (or None)."""
    parameters, dtype = [], None
    for key in file["parameters"]:
        group = file["parameters"][key]
        attrs = group.attrs
        parameters.append(
            ParameterSpec(str(attrs["name"]), str(attrs["kind"]), tuple(int(n) for n in attrs["shape"]))
        )
        if "weights" in group:
            dtype = str(group["weights"].dtype)
    return parameters, dtype
