"""spectral-callbacks: watch the spectra of a network's weight matrices while it trains.

``SpectralCallback`` (Lightning) and ``KerasSpectralCallback`` (Keras 3) are imported on first
use, so ``import spectral_callbacks`` works without Lightning or Keras installed.
"""

from typing import Any

from ._version import __version__
from .model import ModelAnalysis, analyze_model
from .spectra import LayerSpectrum, PowerLawFit, analyze_matrix, fit_power_law

__all__ = [
    "KerasSpectralCallback",
    "LayerSpectrum",
    "ModelAnalysis",
    "PowerLawFit",
    "RunReader",
    "SpectralCallback",
    "SpectralWarning",
    "__version__",
    "analyze_matrix",
    "analyze_model",
    "fit_power_law",
    "open_run",
]

# h5py, Lightning and Keras load on first use, so the pure spectral core imports neither.
_LAZY = {
    "SpectralCallback": "callbacks.lightning",
    "KerasSpectralCallback": "callbacks.keras",
    "SpectralWarning": "session",
    "RunReader": "reader",
    "open_run": "reader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
