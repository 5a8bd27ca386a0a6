"""One validated settings object shared by the Lightning and Keras callbacks and their worker."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..analysis.alerts import SpectralMonitor
from ..analysis.deltas import DELTAS
from ..analysis.operators import OperatorOptions
from ..analysis.options import DEFAULT_MIN_EVALS, SpectrumOptions, check_integer, check_number
from ..capture.selection import LayerFilter
from ..spectra.esd import GRAM_RTOL
from .analysis_executor import check_executor
from .storage_policy import DEFAULT_MAX_RUN_FILE_BYTES

__all__ = ["SpectralConfig"]

_ON_FULL = ("block", "drop")


@dataclass(frozen=True)
class SpectralConfig:
    """What to snapshot, when, and how to analyze it. Every value is checked on creation.

    Attributes:
        every_n_epochs: snapshot after every n-th epoch (and at epoch 0, the initialization).
        every_n_steps: snapshot every n optimizer steps instead (``every_n_epochs`` then ignored).
        layers, exclude: layer names, regular expressions or layer classes to include / leave out.
        save_weights: keep the raw weights of every snapshot in the run file.
        max_run_file_bytes: the run file's size that saved weights may not push it past
            (default 2 GiB), or None for no limit: weights are kept for every k-th snapshot, k
            chosen at the start from the expected number of snapshots, and for none once the
            next would pass it; spectra are kept for every snapshot
            (:mod:`spectral_callbacks.live.storage_policy`).
        weights_dtype: dtype of the saved weights (``"float32"``, ``"float16"`` or ``"float64"``).
        log_dir: where the run file and TensorBoard events go when the trainer has no logger dir.
        tensorboard: also write TensorBoard histograms and scalars.
        queue_size: snapshots waiting for the worker before ``on_full`` applies.
        on_full: ``"block"`` (training waits, nothing lost) or ``"drop"`` (the new snapshot is
            dropped and recorded as such in the run file's index).
        min_evals: layers with fewer eigenvalues are skipped (WeightWatcher's default 8).
        max_evals: layers whose matrices have more eigenvalues each are neither captured nor
            analyzed (an SVD that size takes minutes every snapshot); the run file says why.
            ``None`` for no limit.
        normalize, conv2d_norm, xmax: ESD conventions, see ``spectra.analyze_matrix``.
        esd_method: how each slice's eigenvalues are computed: ``"auto"`` (certified Gram
            eigenvalues where a slice's shape is expected to pass, SVD elsewhere), ``"gram"`` or
            ``"svd"``; see :mod:`spectral_callbacks.spectra.esd`. The numbers are the same.
        gram_rtol: relative error allowed on any eigenvalue the Gram path keeps (its certificate).
        fix_fingers, detX, randomize, randomize_seed: WeightWatcher's options, each adding its
            columns to every snapshot (see
            :class:`spectral_callbacks.analysis.options.SpectrumOptions`); ``randomize`` about
            doubles the analysis' cost.
        max_overhead: a budget for the analysis' cost to training, as a fraction of training time
            (``0.03``: 3%), or ``None`` to analyze every due snapshot. A due snapshot is skipped
            (an index row with the reason) when the capture and analysis seconds of the
            snapshots taken so far, plus this one's estimate, would exceed the budget.
        histogram_bins: bins of the ``log10(lambda)`` TensorBoard histograms.
        esd_figures: also log an ESD log-log plot with the fitted power law (needs matplotlib).
        blas_threads: BLAS threads of the worker process, so training keeps its cores.
        lend_threads: while the worker has snapshots to analyze, training's intra-op thread pool
            (torch's) runs ``blas_threads`` threads short, so the analysis gets cores of its own
            even when training keeps every core busy (see ``spectral_callbacks.live.thread_lending``).
            Never with torch's deterministic algorithms on (``Trainer(deterministic=True)``): a
            pool whose size changes makes training's reductions round differently.
        close_timeout: seconds to wait at fit end for the worker to finish its queue.
        operators: conv layers to also analyze as the linear maps they apply to whole feature
            maps (anonymous, 2019): ``{layer name or regex: (H, W) of its input}``, or ``"auto"`` for
            every ``Conv2d`` with the input size it receives in the first training batch.
        operator_every_n_epochs: estimate operator spectra on snapshots whose epoch is a
            multiple of this (epoch 0 included; with ``every_n_steps``, the snapshot's epoch).
        operator_top_k: largest eigenvalues of each operator's ``A^T A`` (Lanczos).
        operator_bins: bins of its KPM histogram on ``[0, 1.01 lambda_1]``.
        operator_moments, operator_probes: Chebyshev moments and random probes of the KPM
            estimate (256 and 8: about 1% of the eigenvalues misplaced). Each probe costs
            ``operator_moments / 2`` products with ``A^T A``; the cost per snapshot is estimated
            and logged before the first snapshot.
        monitor: alert rules applied to each analyzed snapshot
            (:class:`spectral_callbacks.analysis.alerts.SpectralMonitor`): each alert is a warning,
            a TensorBoard text entry and a row of the run file; with ``stop=True`` training stops.
        deltas: ``"init"`` or ``"previous"`` to also analyze each matrix's change since the
            run's first snapshot (its initialization) or since the previous snapshot, as layers
            named ``<layer>.delta_init`` / ``<layer>.delta_previous``
            (:mod:`spectral_callbacks.analysis.deltas`); about doubles the analysis' cost.
        analysis_executor: where the analysis process analyzes each snapshot's layers:
            ``"process"`` (in itself), ``"processes"`` (a pool of ``analysis_workers``
            processes it starts), ``"dask"`` (a local dask cluster of ``analysis_workers``
            processes) or ``"dask://HOST:PORT"`` (a running dask scheduler's workers). The
            analysis process still writes everything; the rows are the same, bit for bit. A
            pool or cluster that cannot start or breaks means one warning and the analysis
            process from then on (:mod:`spectral_callbacks.live.analysis_executor`).
        analysis_workers: processes of the pool or local cluster (None: the CPU count), each
            on ``blas_threads`` BLAS threads.
    """

    every_n_epochs: int = 1
    every_n_steps: int | None = None
    layers: LayerFilter = None
    exclude: LayerFilter = None
    save_weights: bool = True
    weights_dtype: str = "float32"
    max_run_file_bytes: int | None = DEFAULT_MAX_RUN_FILE_BYTES
    log_dir: str | None = None
    tensorboard: bool = True
    queue_size: int = 4
    on_full: str = "block"
    min_evals: int = DEFAULT_MIN_EVALS
    max_evals: int | None = 16384
    normalize: str | None = None
    conv2d_norm: bool = True
    xmax: float | str | None = None
    esd_method: str = "auto"
    gram_rtol: float = GRAM_RTOL
    fix_fingers: str | None = None
    detX: bool = False  # noqa: N815 - WeightWatcher's option name
    randomize: bool = False
    randomize_seed: int = 0
    max_overhead: float | None = None
    histogram_bins: int = 64
    esd_figures: bool = False
    blas_threads: int = 1
    lend_threads: bool = True
    close_timeout: float = 600.0
    operators: dict[str, tuple[int, int]] | str | None = None
    operator_every_n_epochs: int = 1
    operator_top_k: int = 8
    operator_bins: int = 50
    operator_moments: int = 256
    operator_probes: int = 8
    monitor: SpectralMonitor | None = None
    deltas: str | None = None
    analysis_executor: str = "process"
    analysis_workers: int | None = None

    def __post_init__(self) -> None:
        check_integer("every_n_epochs", self.every_n_epochs, 1)
        if self.every_n_steps is not None:
            check_integer("every_n_steps", self.every_n_steps, 1)
        check_integer("queue_size", self.queue_size, 1)
        if self.max_run_file_bytes is not None:
            check_integer("max_run_file_bytes", self.max_run_file_bytes, 1)
        self.spectrum_options()  # checks min_evals and the ESD conventions
        if self.max_evals is not None:
            check_integer("max_evals", self.max_evals, self.min_evals)
        check_integer("histogram_bins", self.histogram_bins, 2)
        check_integer("blas_threads", self.blas_threads, 1)
        check_executor(self.analysis_executor, self.analysis_workers)
        if not isinstance(self.lend_threads, bool):
            raise ValueError(f"Invalid value for lend_threads={self.lend_threads!r}: expected True or False.")
        if self.on_full not in _ON_FULL:
            raise ValueError(f"Invalid value for on_full={self.on_full!r}: expected one of {_ON_FULL}.")
        if self.weights_dtype not in ("float16", "float32", "float64"):
            raise ValueError(
                f"Invalid value for weights_dtype={self.weights_dtype!r}: "
                "expected 'float16', 'float32' or 'float64'."
            )
        if self.max_overhead is not None and not check_number(self.max_overhead, 0, math.inf):
            raise ValueError(
                f"Invalid value for max_overhead={self.max_overhead!r}: expected None or a fraction of "
                "training time > 0, e.g. 0.03 for 3%."
            )
        if self.close_timeout <= 0:
            raise ValueError(f"Invalid value for close_timeout={self.close_timeout}: expected > 0.")
        if self.esd_figures and importlib.util.find_spec("matplotlib") is None:
            raise ValueError(
                "Invalid value for esd_figures=True: the figures need matplotlib, which is not installed. "
                'Install it with pip install "spectral-callbacks[plots]", or pass esd_figures=False.'
            )
        if self.deltas not in DELTAS:
            raise ValueError(f"Invalid value for deltas={self.deltas!r}: expected one of {DELTAS}.")
        if self.deltas == "init" and not self.save_weights:
            raise ValueError(
                "Invalid value for deltas='init' with save_weights=False: a resumed run needs the "
                "initial weights from the run file. Pass save_weights=True, or deltas='previous'."
            )
        if self.monitor is not None and not isinstance(self.monitor, SpectralMonitor):
            raise ValueError(
                f"Invalid value for monitor={self.monitor!r}: expected None or a SpectralMonitor(...)."
            )
        object.__setattr__(self, "operators", _operators(self.operators))
        for name, low in (("every_n_epochs", 1), ("top_k", 1), ("bins", 1), ("moments", 2), ("probes", 1)):
            check_integer(f"operator_{name}", getattr(self, f"operator_{name}"), low)

    def operator_options(self) -> OperatorOptions:
        """Schedule and estimator settings of the operator spectra, for the worker."""
        return OperatorOptions(
            every_n_epochs=self.operator_every_n_epochs,
            top_k=self.operator_top_k,
            bins=self.operator_bins,
            num_moments=self.operator_moments,
            num_probes=self.operator_probes,
        )

    def spectrum_options(self) -> SpectrumOptions:
        """How the worker analyzes each matrix."""
        return SpectrumOptions.of(self)

    def to_json(self) -> str:
        """The settings as JSON (layer classes by name), stored in the run file."""
        return json.dumps(asdict(self), default=_describe, sort_keys=True)


def _operators(value: Any) -> dict[str, tuple[int, int]] | str | None:
    """``operators`` checked, its input sizes as ``(int, int)`` tuples."""
    if value is None or value == "auto":
        return value
    if not isinstance(value, Mapping) or not value:
        raise ValueError(
            f"Invalid value for operators={value!r}: expected None, 'auto' or a non-empty dict "
            "{layer name or regex: (H, W) of the layer's input}."
        )
    checked = {}
    for key, size in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(
                f"Invalid key {key!r} in operators: expected a layer name or regular expression."
            )
        pair = tuple(size) if isinstance(size, (tuple, list)) else (size,)
        if len(pair) != 2 or not all(_positive_int(v) for v in pair):
            raise ValueError(
                f"Invalid value for operators[{key!r}]={size!r}: expected the (H, W) of the layer's input: "
                "two integers >= 1."
            )
        checked[key] = (int(pair[0]), int(pair[1]))
    return checked


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _describe(value: Any) -> str:
    return value.__name__ if isinstance(value, type) else repr(value)
