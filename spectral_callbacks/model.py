"""Post-hoc analysis of a whole model or state dict, one row per matrix (like WeightWatcher's analyze)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import mkl_svd
from .spectra import LayerSpectrum, SkippedParameter, analyze_view, matrices_of
from .tables import format_columns

__all__ = [
    "TABLE_COLUMNS",
    "ModelAnalysis",
    "analyze_model",
    "analyze_weights",
    "format_table",
    "skipped_note",
    "table_cells",
]

TABLE_COLUMNS = (
    "name", "kind", "shape", "alpha", "D", "alpha_weighted", "log_norm",
    "log_spectral_norm", "stable_rank", "rank_loss", "lambda_min", "phase",
)  # fmt: skip


class ModelAnalysis(list):
    """A list of :class:`LayerSpectrum` rows with table and DataFrame views."""

    def analyzed(self) -> list[LayerSpectrum]:
        """The rows that were analyzed (not skipped)."""
        return [row for row in self if row.status != "skipped"]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per matrix (needs pandas)."""
        import pandas as pd

        return pd.DataFrame([row.row() for row in self])

    def table(self) -> str:
        """A readable plain-text table of the analyzed rows, and a line on the skipped ones."""
        return format_table(self)


def analyze_model(
    model: Any,
    *,
    layers: Any = None,
    exclude: Any = None,
    normalize: str | None = None,
    conv2d_norm: bool = True,
    xmax: float | str | None = None,
    min_evals: int = 8,
) -> ModelAnalysis:
    """Analyze every analyzable weight of a torch module or a ``{name: array}`` mapping.

    Args:
        model: a ``torch.nn.Module`` (layers found by type) or a mapping of parameter names to
            arrays or tensors (kinds guessed from names and shapes; 1-D entries are skipped).
        layers, exclude: for a torch module, layer names, regular expressions or classes.
        normalize, conv2d_norm, xmax, min_evals: as :func:`spectral_callbacks.spectra.analyze_matrix`.

    Returns:
        One row per matrix, in model order; bad or too-small parameters are rows with
        ``status="skipped"`` and a reason, never an exception.
    """
    if hasattr(model, "named_modules"):
        from .capture.torch import analyzable_layers, copy_weights

        found = analyzable_layers(model, layers, exclude)
        arrays = copy_weights(found)
        items = [(weight.name, arrays[weight.name], weight.kind) for weight in found]
    elif isinstance(model, Mapping):
        items = [(name, _as_array(value), None) for name, value in model.items()]
    else:
        raise TypeError(
            f"analyze_model takes a torch.nn.Module or a mapping of names to arrays; "
            f"received {type(model).__name__}."
        )
    return analyze_weights(
        items, normalize=normalize, conv2d_norm=conv2d_norm, xmax=xmax, min_evals=min_evals
    )


def analyze_weights(
    items: Iterable[tuple[str, np.ndarray, str | None]],
    *,
    normalize: str | None = None,
    conv2d_norm: bool = True,
    xmax: float | str | None = None,
    min_evals: int = 8,
    max_evals: int | None = None,
    svd_threads: int | None = None,
) -> ModelAnalysis:
    """Analyze ``(name, array, kind)`` triples; failures become skipped rows with the reason.

    Large matrices go to MKL's SVD when torch carries it (:mod:`spectral_callbacks.mkl_svd`), on
    ``svd_threads`` threads (None: torch's own setting).
    """
    svdvals = functools.partial(mkl_svd.svdvals, threads=svd_threads)
    rows = ModelAnalysis()
    for name, array, kind in items:
        try:
            views = matrices_of(name, array, kind, min_evals=min_evals, max_evals=max_evals)
        except ValueError as error:
            views = SkippedParameter(name, tuple(array.shape), str(error))
        if isinstance(views, SkippedParameter):
            rows.append(LayerSpectrum.skipped(views, kind or ""))
            continue
        for view in views:
            try:
                rows.append(
                    analyze_view(
                        view,
                        weights_dtype=array.dtype,
                        normalize=normalize,
                        conv2d_norm=conv2d_norm,
                        xmax=xmax,
                        svdvals=svdvals,
                    )
                )
            except ValueError as error:
                skipped = SkippedParameter(view.name, tuple(view.slices.shape[1:]), str(error))
                rows.append(LayerSpectrum.skipped(skipped, view.kind))
    return rows


def format_table(rows: Iterable[LayerSpectrum]) -> str:
    """Plain-text table of the analyzed rows, and a line on the skipped ones."""
    rows = list(rows)
    table = format_columns(TABLE_COLUMNS, table_cells(rows))
    note = skipped_note(rows)
    return f"{table}\n{note}" if note else table


def table_cells(rows: Iterable[LayerSpectrum]) -> list[list[object]]:
    """The cells of :data:`TABLE_COLUMNS` for each analyzed (not skipped) row."""
    return [[_cell(row, column) for column in TABLE_COLUMNS] for row in rows if row.status != "skipped"]


def skipped_note(rows: Iterable[LayerSpectrum]) -> str | None:
    """A line on the skipped rows (how many, and the first one's reason), or None."""
    skipped = [row for row in rows if row.status == "skipped"]
    if not skipped:
        return None
    return f"({len(skipped)} parameter(s) skipped, e.g. {skipped[0].name}: {skipped[0].reason})"


def _cell(row: LayerSpectrum, column: str) -> object:
    return f"{row.N}x{row.M}" if column == "shape" else getattr(row, column)


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.dtype.is_floating_point and value.element_size() < 4:
            value = value.float()  # numpy has no bfloat16
    return np.asarray(value)
