"""Post-hoc analysis of a whole model or state dict, one row per matrix (like WeightWatcher's analyze)."""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..capture.names import clean_name
from ..extras import import_extra
from ..formatting import format_columns
from ..spectra import LayerSpectrum, SkippedParameter, analyze_view, matrices_of
from ..spectra.distances import layer_distance
from ..spectra.esd import GRAM_RTOL, METHODS
from ..spectra.matrices import DEFAULT_MIN_EVALS, MatrixView
from . import mkl_svd
from .deltas import delta_items

__all__ = [
    "TABLE_COLUMNS",
    "ModelAnalysis",
    "analyze_model",
    "analyze_weights",
    "format_table",
    "skipped_note",
    "table_cells",
    "table_columns",
]

TABLE_COLUMNS = (
    "name", "kind", "shape", "alpha", "D", "alpha_weighted", "log_norm",
    "log_spectral_norm", "stable_rank", "rank_loss", "lambda_min", "phase",
)  # fmt: skip


_OPTION_COLUMNS = {
    "fix_fingers": ("num_fingers", "raw_alpha"),
    "randomize": ("num_traps", "rand_distance"),
    "detX": ("detX_num", "ERG_gap"),
}


class ModelAnalysis(list):
    """A list of :class:`LayerSpectrum` rows with table and DataFrame views.

    Attributes:
        aliases: for a tied parameter analyzed once, its name -> the other names of the same tensor.
    """

    aliases: dict[str, tuple[str, ...]]

    def __init__(self, rows: Iterable[LayerSpectrum] = ()):
        super().__init__(rows)
        self.aliases = {}

    def analyzed(self) -> list[LayerSpectrum]:
        """The rows that were analyzed (not skipped)."""
        return [row for row in self if row.status != "skipped"]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` with one row per matrix.

        Raises:
            ModuleNotFoundError: pandas is not installed (the ``pandas`` extra installs it).
        """
        pd = import_extra("pandas", "pandas", "ModelAnalysis.to_pandas()")

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
    min_evals: int = DEFAULT_MIN_EVALS,
    method: str = "auto",
    gram_rtol: float = GRAM_RTOL,
    fix_fingers: str | None = None,
    detX: bool = False,  # noqa: N803 - WeightWatcher's option name
    randomize: bool = False,
    randomize_seed: int = 0,
    base_model: Any = None,
) -> ModelAnalysis:
    """Analyze every analyzable weight of a torch module or a ``{name: array}`` mapping.

    Args:
        model: a ``torch.nn.Module`` (layers found by type, see :mod:`spectral_callbacks.capture.torch`)
            or a mapping of parameter names to arrays or tensors (kinds guessed from names and
            shapes; 1-D entries are skipped). Either way a tensor stored under several names (tied
            weights) is analyzed once, under its first name, the others in ``aliases``; names lose
            ``torch.compile``'s ``_orig_mod.`` and a ``DataParallel`` wrapper's ``module.``.
        layers, exclude: for a torch module, layer names, regular expressions or classes.
        normalize, conv2d_norm, xmax, min_evals, method, gram_rtol: as
            :func:`spectral_callbacks.spectra.analyze_matrix`.
        fix_fingers, detX, randomize, randomize_seed: WeightWatcher's options of the same names
            (its ``randomize`` draws from numpy's global generator; ours from one generator per
            matrix, seeded by ``randomize_seed`` and the matrix's name), see
            :class:`spectral_callbacks.analysis.options.SpectrumOptions`.
        base_model: a model of the same architecture (module or mapping, as ``model``): each
            row is then the spectrum of the change ``W - W_base`` (WeightWatcher's
            ``base_model``, e.g. a fine-tuning update); parameters the base lacks, or has with
            another shape, are skipped rows saying so.

    Returns:
        One row per matrix, in model order; bad or too-small parameters are rows with
        ``status="skipped"`` and a reason, never an exception (for a module, every parameter of
        no analyzable layer too, after the analyzed ones).
    """
    skipped: dict[str, str] = {}
    if hasattr(model, "named_modules"):
        from ..capture.torch import copy_weights, find_layers

        found = find_layers(model, layers, exclude)
        arrays = copy_weights(found.weights)
        items = [(weight.name, arrays[weight.name], weight.kind) for weight in found.weights]
        aliases = {weight.name: weight.aliases for weight in found.weights if weight.aliases}
        skipped = found.skipped
    elif isinstance(model, Mapping):
        named, aliases = _distinct_tensors(model)
        items = [(name, _as_array(value), None) for name, value in named.items()]
    else:
        raise TypeError(
            f"analyze_model takes a torch.nn.Module or a mapping of names to arrays; "
            f"received {type(model).__name__}."
        )
    base_skipped: list[LayerSpectrum] = []
    if base_model is not None:
        items, base_skipped = delta_items(items, _base_arrays(base_model, layers, exclude))
    rows = analyze_weights(
        items,
        normalize=normalize,
        conv2d_norm=conv2d_norm,
        xmax=xmax,
        min_evals=min_evals,
        method=method,
        gram_rtol=gram_rtol,
        fix_fingers=fix_fingers,
        detX=detX,
        randomize=randomize,
        randomize_seed=randomize_seed,
    )
    rows.aliases = aliases
    rows.extend(base_skipped)
    for name, reason in skipped.items():
        rows.append(LayerSpectrum.skipped(SkippedParameter(name, (), reason), ""))
    return rows


def _base_arrays(base_model: Any, layers: Any, exclude: Any) -> dict[str, np.ndarray]:
    """The weights of ``base_model`` by name, found as :func:`analyze_model` finds ``model``'s."""
    if hasattr(base_model, "named_modules"):
        from ..capture.torch import copy_weights, find_layers

        return copy_weights(find_layers(base_model, layers, exclude).weights)
    if isinstance(base_model, Mapping):
        return {name: _as_array(value) for name, value in _distinct_tensors(base_model)[0].items()}
    raise TypeError(
        "base_model takes a torch.nn.Module or a mapping of names to arrays; "
        f"received {type(base_model).__name__}."
    )


def analyze_weights(
    items: Iterable[tuple[str, np.ndarray, str | None]],
    *,
    normalize: str | None = None,
    conv2d_norm: bool = True,
    xmax: float | str | None = None,
    min_evals: int = DEFAULT_MIN_EVALS,
    max_evals: int | None = None,
    svd_threads: int | None = None,
    method: str = "auto",
    gram_rtol: float = GRAM_RTOL,
    reference: Mapping[str, np.ndarray] | None = None,
    alignment: bool = False,
    fix_fingers: str | None = None,
    detX: bool = False,  # noqa: N803 - WeightWatcher's option name
    randomize: bool = False,
    randomize_seed: int = 0,
) -> ModelAnalysis:
    """Analyze ``(name, array, kind)`` triples; failures become skipped rows with the reason.

    With ``reference`` (arrays of the same parameters at another point, e.g. the previous
    snapshot), each row also carries its distances from that version
    (:func:`spectral_callbacks.spectra.distances.layer_distance`; ``cka`` only with ``alignment``).
    ``fix_fingers``, ``detX`` and ``randomize`` add WeightWatcher's columns of those options (see
    :class:`spectral_callbacks.analysis.options.SpectrumOptions`).

    Large matrices go to MKL's SVD (and large Gram matrices to MKL's eigensolver) when torch
    carries it (:mod:`spectral_callbacks.analysis.mkl_svd`), on ``svd_threads`` threads (None: torch's own
    setting). ``method`` chooses how singular values are computed: ``"auto"`` (certified Gram
    eigenvalues where expected to pass, SVD elsewhere), ``"gram"`` or ``"svd"``, and ``gram_rtol``
    the Gram path's certified relative error; see
    :mod:`spectral_callbacks.spectra.esd`.

    Raises:
        ValueError: an invalid ``method`` or ``gram_rtol`` (bad layers become skipped rows).
    """
    if method not in METHODS:
        raise ValueError(f"Invalid value for method={method!r}: expected one of {METHODS}.")
    if not 0 < gram_rtol < 1:
        raise ValueError(f"Invalid value for gram_rtol={gram_rtol!r}: expected in (0, 1), e.g. {GRAM_RTOL}.")
    svdvals = functools.partial(mkl_svd.svdvals, threads=svd_threads)
    eigvalsh = functools.partial(mkl_svd.eigvalsh, threads=svd_threads)
    rows = ModelAnalysis()
    for name, array, kind in items:
        try:
            views = matrices_of(name, array, kind, min_evals=min_evals, max_evals=max_evals)
        except ValueError as error:
            views = SkippedParameter(name, tuple(array.shape), str(error))
        if isinstance(views, SkippedParameter):
            rows.append(LayerSpectrum.skipped(views, kind or ""))
            continue
        before = _reference_views(reference, name, array, kind, len(views))
        for position, view in enumerate(views):
            try:
                row = analyze_view(
                    view,
                    weights_dtype=array.dtype,
                    normalize=normalize,
                    conv2d_norm=conv2d_norm,
                    xmax=xmax,
                    svdvals=svdvals,
                    method=method,
                    eigvalsh=eigvalsh,
                    gram_rtol=gram_rtol,
                    fix_fingers=fix_fingers,
                    detX=detX,
                    randomize=layer_generator(randomize_seed, view.name) if randomize else None,
                )
                if before is not None:
                    distance = layer_distance(before[position], view, alignment=alignment)
                    row = dataclasses.replace(row, **dataclasses.asdict(distance))
                rows.append(row)
            except ValueError as error:
                skipped = SkippedParameter(view.name, tuple(view.slices.shape[1:]), str(error))
                rows.append(LayerSpectrum.skipped(skipped, view.kind))
    return rows


def layer_generator(seed: int, name: str) -> np.random.Generator:
    """The random generator of one matrix: from the run's seed and the matrix's name, so that its
    shuffles do not depend on the order, or the process, in which matrices are analyzed."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _reference_views(
    reference: Mapping[str, np.ndarray] | None, name: str, array: np.ndarray, kind: str | None, count: int
) -> list[MatrixView] | None:
    """The reference version's views of a parameter, or None when it has none of the same shape."""
    if reference is None or name not in reference or np.shape(reference[name]) != array.shape:
        return None
    try:
        views = matrices_of(name, np.asarray(reference[name]), kind, min_evals=1)
    except ValueError:
        return None
    if isinstance(views, SkippedParameter) or len(views) != count:
        return None
    return views


def format_table(rows: Iterable[LayerSpectrum]) -> str:
    """Plain-text table of the analyzed rows, and a line on the skipped ones."""
    rows = list(rows)
    table = format_columns(TABLE_COLUMNS, table_cells(rows))
    note = skipped_note(rows)
    return f"{table}\n{note}" if note else table


def table_cells(rows: Iterable[LayerSpectrum], columns: Sequence[str] = TABLE_COLUMNS) -> list[list[object]]:
    """The cells of ``columns`` (:data:`TABLE_COLUMNS`) for each analyzed (not skipped) row."""
    return [[_cell(row, column) for column in columns] for row in rows if row.status != "skipped"]


def table_columns(options: Any) -> tuple[str, ...]:
    """:data:`TABLE_COLUMNS`, with the main columns of the WeightWatcher options ``options`` has on
    (``fix_fingers``, ``randomize``, ``detX`` attributes) before the phase."""
    added = [
        column
        for option, columns in _OPTION_COLUMNS.items()
        if getattr(options, option)
        for column in columns
    ]
    return (*TABLE_COLUMNS[:-1], *added, TABLE_COLUMNS[-1])


def skipped_note(rows: Iterable[LayerSpectrum]) -> str | None:
    """A line on the skipped rows (how many, and the first one's reason), or None."""
    skipped = [row for row in rows if row.status == "skipped"]
    if not skipped:
        return None
    return f"({len(skipped)} parameter(s) skipped, e.g. {skipped[0].name}: {skipped[0].reason})"


def _cell(row: LayerSpectrum, column: str) -> object:
    return f"{row.N}x{row.M}" if column == "shape" else getattr(row, column)


def _distinct_tensors(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """The entries of a state dict with each tensor once, under cleaned names, and the aliases.

    Tied weights share memory (``torch.load`` keeps the sharing): an entry whose data pointer,
    shape, strides and dtype equal an earlier one's is that tensor again. Names lose
    ``_orig_mod.`` parts, and ``module.`` when every name starts with it (a saved DataParallel).
    """
    unwrap = bool(state) and all(str(name).startswith("module.") for name in state)
    first: dict[tuple, str] = {}
    named: dict[str, Any] = {}
    aliases: dict[str, list[str]] = {}
    for raw_name, value in state.items():
        name = clean_name(str(raw_name), unwrap) or str(raw_name)
        key = _memory_key(value)
        if key is not None and key in first:
            aliases[first[key]].append(name)
            continue
        if key is not None:
            first[key] = name
        named[name], aliases[name] = value, []
    return named, {name: tuple(others) for name, others in aliases.items() if others}


def _memory_key(value: Any) -> tuple | None:
    """What identifies a tensor's memory (None for empty tensors and for other objects)."""
    if hasattr(value, "data_ptr") and hasattr(value, "stride"):
        if value.numel() == 0:
            return None
        return ("torch", value.device.type, value.data_ptr(), tuple(value.shape), value.stride(), value.dtype)
    if isinstance(value, np.ndarray) and value.size:
        return ("numpy", value.__array_interface__["data"][0], value.shape, value.strides, value.dtype.str)
    return None


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.dtype.is_floating_point and value.element_size() < 4:
            value = value.float()  # numpy has no bfloat16
    return np.asarray(value)
