"""Run files written through the store API, the way the analysis worker writes them, without its
process: a writer on a file, weights for it, and one snapshot at a time.

The defaults describe a small run (``PARAMETERS``) that saves its weights; the tests of other parts
(comparison, summary, operator rows) pass their own parameters, configuration and weight policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.analysis.operators import OperatorOptions, OperatorSpec, OperatorSpectrum
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter
from spectral_callbacks.spectra import LayerSpectrum

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
    path: Path,
    *,
    parameters: Sequence[ParameterSpec] = PARAMETERS,
    run_id: str = RUN_ID,
    config: Mapping[str, Any] = CONFIG,
    weights_dtype: str | None = "float32",
    skipped: Mapping[str, str] | None = None,
    resume_after_step: int | None = None,
    lock_timeout: float = 10.0,
    operators: Sequence[OperatorSpec] = (),
    operator_options: OperatorOptions | None = None,
    deltas: str | None = None,
) -> RunWriter:
    """A writer on ``path`` (created, or reopened to resume after ``resume_after_step``).

    ``weights_dtype=None`` makes a run that saves no weights. The lock timeout is short so that a
    test that finds the file locked fails in seconds rather than after the library's two minutes.
    """
    return RunWriter.open(
        path,
        run_id=run_id,
        parameters=parameters,
        config_json=json.dumps(config),
        framework="test",
        weights_dtype=weights_dtype,
        skipped=skipped,
        resume_after_step=resume_after_step,
        lock_timeout=lock_timeout,
        operators=operators,
        operator_options=operator_options,
        deltas=deltas,
    )


def random_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {spec.name: rng.standard_normal(spec.shape).astype(np.float32) for spec in PARAMETERS}


def analyze(
    arrays: dict[str, np.ndarray], specs: Sequence[ParameterSpec] = PARAMETERS
) -> list[LayerSpectrum]:
    """The analysis of every parameter of ``specs`` in ``arrays`` (skipped ones included)."""
    return analyze_weights([(spec.name, arrays[spec.name], spec.kind) for spec in specs])


def append_snapshot(
    writer: RunWriter,
    epoch: int,
    step: int,
    arrays: dict[str, np.ndarray],
    *,
    specs: Sequence[ParameterSpec] = PARAMETERS,
    operators: Sequence[OperatorSpectrum] = (),
    commit: bool = True,
) -> list[LayerSpectrum]:
    """What the worker does for one snapshot: its weights (kept only by a writer that saves them),
    its index row, then the analysis of ``arrays`` and the ``operators`` rows, committed with the
    "analyzed" mark. ``commit=False`` stops before that mark, as a worker killed meanwhile.

    Returns the analysis of each parameter of ``specs`` (skipped ones included): the independent
    reference for what a reader reads back.
    """
    writer.append_weights(arrays)
    row = writer.append_index(epoch, step, "captured")
    spectra = analyze(arrays, specs)
    if commit:
        writer.record_analysis(row, spectra, operators)
        return spectra
    layers = set(writer.layer_names)  # the rows record_analysis would have written
    for spectrum in spectra:
        if spectrum.name in layers:
            writer.append_layer(row, spectrum)
    for operator in operators:
        writer.append_operator(row, operator)
    return spectra
