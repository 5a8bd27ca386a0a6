"""The spectral core: pure numpy/scipy, arrays in and numbers out, no I/O and no framework imports."""

from .analyze import EVALS_THRESH, METRIC_NAMES, LayerSpectrum, analyze_matrix, analyze_view
from .esd import eigenvalues, log10_histogram, singular_values
from .matrices import KINDS, MatrixView, SkippedParameter, matrices_of
from .metrics import frame_potential, matrix_entropy, norm_metrics, rank_metrics
from .mp import PHASES, MPFit, fit_marchenko_pastur, phase_label
from .powerlaw import DistributionComparison, PowerLawFit, compare_distributions, fit_power_law

analyze = analyze_matrix

__all__ = [
    "EVALS_THRESH",
    "KINDS",
    "METRIC_NAMES",
    "PHASES",
    "DistributionComparison",
    "LayerSpectrum",
    "MPFit",
    "MatrixView",
    "PowerLawFit",
    "SkippedParameter",
    "analyze",
    "analyze_matrix",
    "analyze_view",
    "compare_distributions",
    "eigenvalues",
    "fit_marchenko_pastur",
    "fit_power_law",
    "frame_potential",
    "log10_histogram",
    "matrices_of",
    "matrix_entropy",
    "norm_metrics",
    "phase_label",
    "rank_metrics",
    "singular_values",
]
