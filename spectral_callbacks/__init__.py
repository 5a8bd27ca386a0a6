"""spectral-callbacks: watch the spectra of a network's weight matrices while it trains."""

from .model import ModelAnalysis, analyze_model
from .spectra import LayerSpectrum, PowerLawFit, analyze_matrix, fit_power_law

__version__ = "0.1.0"

__all__ = [
    "LayerSpectrum",
    "ModelAnalysis",
    "PowerLawFit",
    "__version__",
    "analyze_matrix",
    "analyze_model",
    "fit_power_law",
]
