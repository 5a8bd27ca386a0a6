"""TensorBoard output of the analysis through tensorboardX's ``SummaryWriter`` (no hand-made protobufs).

tensorboardX is the standalone form of ``torch.utils.tensorboard`` (same API, same event
files) and needs neither TensorFlow nor torch, so Keras runs on jax or TensorFlow write the same
TensorBoard output as Lightning runs.

Tags group by metric so one chart compares layers: ``alpha/<layer>``, ``log_norm/<layer>``, ...;
``esd/<layer>`` holds the histogram of ``log10(lambda)``; ``model/<metric>`` the averages. Conv
layers analyzed as operators add ``operator_esd/<layer>``, the KPM histogram of the eigenvalues of
``A^T A`` (linear bins on ``[0, 1.01 lambda_1]``), and ``operator_spectral_norm/<layer>``,
``sigma_max(A) = sqrt(lambda_1)``.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..analysis.averages import AVERAGED_METRICS, SCALAR_METRICS, scalar_metrics
from ..analysis.operators import OperatorSpectrum
from ..spectra import LayerSpectrum

__all__ = ["TensorBoardSink"]

# Zero eigenvalues (rank collapse) show at log10(lambda) = -12 instead of -inf.
LOG_FLOOR = 1e-12
MIN_HISTOGRAM_BINS = 8


def _summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without torch unless torch is loaded already.

    tensorboardX imports torch (when installed) only to accept torch tensors; the worker logs
    numpy arrays, and loading torch's large native libraries would only lengthen its start and
    its exit at fit end.
    """
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError while this entry is None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class TensorBoardSink:
    """Writes ESD histograms, per-layer scalars and model averages for each snapshot."""

    def __init__(self, log_dir: str | Path, *, histogram_bins: int = 64, esd_figures: bool = False):
        self.log_dir = Path(log_dir)
        self.histogram_bins = histogram_bins
        self.esd_figures = esd_figures
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            SummaryWriter = _summary_writer_class()  # noqa: N806 - a class
            # tensorboardX names event files by the second they were opened in: a second writer in
            # the same directory and second (a resumed fit, a restarted worker) would overwrite the
            # first one's file without a suffix of its own
            suffix = f".{uuid.uuid4().hex[:8]}.spectral"
            self._writer = SummaryWriter(log_dir=str(self.log_dir), filename_suffix=suffix)
        return self._writer

    def write_layout(
        self, layers: Sequence[str], operators: Sequence[str] = (), metrics: Sequence[str] = SCALAR_METRICS
    ) -> None:
        """A custom-scalars layout: one chart per metric of ``metrics`` with every layer, the model
        averages, and the operator layers' spectral norms when there are any."""
        per_metric = {metric: ["Multiline", [rf"^{metric}/"]] for metric in metrics}
        averages = {metric: ["Multiline", [rf"^model/{metric}$"]] for metric in AVERAGED_METRICS}
        layout = {"spectral: layers": per_metric, "spectral: model": averages}
        if operators:
            layout["spectral: operators"] = {
                "operator_spectral_norm": ["Multiline", [r"^operator_spectral_norm/"]]
            }
        self.writer.add_custom_scalars(layout)

    def write_snapshot(
        self, step: int, spectra: Sequence[LayerSpectrum], scalars: dict[str, float] | None = None
    ) -> None:
        """Everything for one snapshot; skipped layers and NaN metrics are left out, never logged.

        ``scalars`` are the snapshot's :func:`scalar_metrics` when the caller has them already.
        """
        for spectrum in spectra:
            if spectrum.status == "skipped" or spectrum.evals.size == 0:
                continue
            self._histogram(f"esd/{spectrum.name}", spectrum.evals, step)
            if self.esd_figures and math.isfinite(spectrum.alpha):
                from ..reporting.plots import esd_figure

                self.writer.add_figure(f"esd_plot/{spectrum.name}", esd_figure(spectrum), step, close=True)
        for tag, value in (scalar_metrics(spectra) if scalars is None else scalars).items():
            if not tag.startswith("operator_spectral_norm/"):  # written with the operator histograms
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def write_alert(self, step: int, text: str) -> None:
        """An alert of the run's monitor as a text entry under the tag ``alerts``."""
        self.writer.add_text("alerts", text, step)
        self.writer.flush()

    def write_operators(self, step: int, operators: Sequence[OperatorSpectrum]) -> None:
        """The KPM histogram and the spectral norm of each operator layer; failed ones are left out."""
        for operator in operators:
            if not operator.ok:
                continue
            # KPM counts are estimates: a bin can come out slightly negative, which TensorBoard cannot show
            counts = np.maximum(operator.counts, 0.0)
            centers = (operator.edges[:-1] + operator.edges[1:]) / 2
            self.writer.add_histogram_raw(
                f"operator_esd/{operator.name}",
                min=float(operator.edges[0]),
                max=float(operator.edges[-1]),
                num=float(counts.sum()),
                sum=float(counts @ centers),
                sum_squares=float(counts @ centers**2),
                bucket_limits=operator.edges[1:].tolist(),
                bucket_counts=counts.tolist(),
                global_step=step,
            )
            norm = operator.spectral_norm
            if math.isfinite(norm):
                self.writer.add_scalar(f"operator_spectral_norm/{operator.name}", norm, step)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _histogram(self, tag: str, evals: np.ndarray, step: int) -> None:
        logs = np.log10(np.maximum(evals, LOG_FLOOR))
        # a few eigenvalues per bin at least, so small layers do not look like combs
        bins = min(self.histogram_bins, max(MIN_HISTOGRAM_BINS, evals.size // 4))
        self.writer.add_histogram(tag, logs, step, bins=bins)
