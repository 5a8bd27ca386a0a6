"""A small run file for the tests of the writer, the reader and the snapshot analyzer: its
parameters, a writer on it, weights for it, and a snapshot written as the worker writes one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter

PARAMETERS = (
    ParameterSpec("fc", "linear", (12, 10)),
    ParameterSpec("conv", "conv2d", (8, 3, 3, 3)),
    ParameterSpec("blocks/0", "linear", (9, 9)),  # '/' is an HDF5 path separator
    ParameterSpec("tiny", "linear", (4, 3)),  # 3 eigenvalues < min_evals=8: no analyzed layer
)
ANALYZED_LAYERS = ["fc", "conv", "blocks/0"]
RUN_ID = "run-under-test"
CONFIG = {"every_n_epochs": 1, "normalize": None, "conv2d_norm": True}


def open_writer(
    path: Path, *, run_id: str = RUN_ID, resume_after_step: int | None = None, lock_timeout: float = 10.0
) -> RunWriter:
    return RunWriter.open(
        path,
        run_id=run_id,
        parameters=PARAMETERS,
        config_json=json.dumps(CONFIG),
        framework="test",
        weights_dtype="float32",
        resume_after_step=resume_after_step,
        lock_timeout=lock_timeout,
    )


def random_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {spec.name: rng.standard_normal(spec.shape).astype(np.float32) for spec in PARAMETERS}


def analyze(arrays: dict[str, np.ndarray]) -> list:
    return analyze_weights([(spec.name, arrays[spec.name], spec.kind) for spec in PARAMETERS])


def append_snapshot(
    writer: RunWriter, epoch: int, step: int, arrays: dict[str, np.ndarray], *, commit: bool = True
) -> int:
    """What the worker does for one snapshot; ``commit=False`` stops before the "analyzed" mark."""
    writer.append_weights(arrays)
    row = writer.append_index(epoch, step, "captured")
    spectra = [spectrum for spectrum in analyze(arrays) if spectrum.status != "skipped"]
    if commit:
        writer.record_analysis(row, spectra)
        return row
    for spectrum in spectra:  # a worker stopped before its commit
        writer.append_layer(row, spectrum)
    return row
