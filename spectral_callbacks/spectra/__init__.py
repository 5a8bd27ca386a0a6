"""The spectral core: pure numpy/scipy, arrays in and numbers out, no I/O and no framework imports."""

from .analyze import EVALS_THRESH, FIX_FINGERS, METRIC_NAMES, LayerSpectrum, analyze_matrix, analyze_view
from .esd import (
    GRAM_RTOL,
    METHODS,
    SingularValues,
    compute_singular_values,
    eigenvalues,
    log10_histogram,
    singular_values,
)
from .kpm import KPMDensity, MatvecBudgetWarning, kpm_density, top_eigenvalues
from .matrices import KINDS, MatrixView, SkippedParameter, matrices_of
from .metrics import frame_potential, matrix_entropy, norm_metrics, rank_metrics
from .mp import PHASES, MPFit, fit_marchenko_pastur, phase_label
from .operators import PADDING_MODES, ConvOperator, exact_circular_conv_svals
from .powerlaw import DistributionComparison, PowerLawFit, compare_distributions, fit_power_law

__all__ = [
    "EVALS_THRESH",
    "FIX_FINGERS",
    "GRAM_RTOL",
    "KINDS",
    "METHODS",
    "METRIC_NAMES",
    "PADDING_MODES",
    "PHASES",
    "ConvOperator",
    "DistributionComparison",
    "KPMDensity",
    "LayerSpectrum",
    "MPFit",
    "MatrixView",
    "MatvecBudgetWarning",
    "PowerLawFit",
    "SingularValues",
    "SkippedParameter",
    "analyze_matrix",
    "analyze_view",
    "compare_distributions",
    "compute_singular_values",
    "eigenvalues",
    "exact_circular_conv_svals",
    "fit_marchenko_pastur",
    "fit_power_law",
    "frame_potential",
    "kpm_density",
    "log10_histogram",
    "matrices_of",
    "matrix_entropy",
    "norm_metrics",
    "phase_label",
    "rank_metrics",
    "singular_values",
    "top_eigenvalues",
]
