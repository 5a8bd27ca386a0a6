"""spectral-callbacks: watch the spectra of a network's weight matrices while it trains.

Every name is imported on first use: ``import spectral_callbacks`` works without Lightning or
Keras installed, and loads no numpy, so that the command line can set the BLAS thread count
before numpy's BLAS starts (see ``cli``).
"""

from typing import Any

from ._version import __version__

__all__ = [
    "MODEL_AVERAGE",
    "PHASES",
    "RUN_FILE_NAME",
    "CompareTable",
    "KerasSpectralCallback",
    "LabeledRun",
    "LayerSpectrum",
    "ModelAnalysis",
    "PowerLawFit",
    "RunReader",
    "SnapshotCosts",
    "SpectralCallback",
    "SpectralMonitor",
    "SpectralWarning",
    "__version__",
    "analyze_matrix",
    "analyze_model",
    "averaged_layers",
    "check_metric",
    "compare_table",
    "comparison_images",
    "fit_power_law",
    "format_cell",
    "format_columns",
    "frame_potential",
    "load_runs",
    "open_run",
    "parameter_values",
    "png_bytes",
    "run_table",
]

# numpy, h5py, Lightning and Keras load on first use; the pure spectral core imports none of the last three.
_LAZY = {
    "LayerSpectrum": "spectra",
    "PowerLawFit": "spectra",
    "analyze_matrix": "spectra",
    "fit_power_law": "spectra",
    "frame_potential": "spectra",
    "averaged_layers": "analysis.averages",
    "ModelAnalysis": "analysis.model",
    "analyze_model": "analysis.model",
    "SpectralCallback": "callbacks.lightning",
    "KerasSpectralCallback": "callbacks.keras",
    "SpectralWarning": "live.session",
    "SpectralMonitor": "analysis.alerts",
    "SnapshotCosts": "live.overhead_budget",
    "RunReader": "runfile.reader",
    "open_run": "runfile.reader",
    "CompareTable": "reporting.compare",
    "LabeledRun": "reporting.compare",
    "MODEL_AVERAGE": "reporting.compare",
    "check_metric": "reporting.compare",
    "compare_table": "reporting.compare",
    "load_runs": "reporting.compare",
    "comparison_images": "reporting.report",
    "parameter_values": "reporting.run_params",
    "png_bytes": "reporting.plots",
    "run_table": "reporting.tables",
    "RUN_FILE_NAME": "runfile.reader",
    "PHASES": "spectra",
    "format_cell": "formatting",
    "format_columns": "formatting",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
