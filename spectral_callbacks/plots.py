"""Matplotlib figures of spectra (imported lazily: matplotlib is optional)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .spectra import LayerSpectrum

__all__ = ["esd_figure"]


def esd_figure(spectrum: LayerSpectrum) -> Any:
    """Log-log density of the ESD with the fitted power law over its tail ``[xmin, xmax]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = spectrum.evals[spectrum.evals > 0]
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=90)
    edges = np.logspace(np.log10(evals.min()), np.log10(evals.max()), 40)
    density, _ = np.histogram(evals, bins=edges, density=True)
    centers = np.sqrt(edges[:-1] * edges[1:])
    axes.loglog(centers[density > 0], density[density > 0], "o", ms=3, label="ESD")
    tail = np.logspace(np.log10(spectrum.xmin), np.log10(spectrum.xmax), 20)
    fraction = spectrum.num_pl_spikes / evals.size
    # the fitted density on the tail, scaled by the tail's share of all eigenvalues
    fitted = fraction * (spectrum.alpha - 1) / spectrum.xmin * (tail / spectrum.xmin) ** -spectrum.alpha
    axes.loglog(tail, fitted, "-", color="crimson", label=f"power law, alpha={spectrum.alpha:.2f}")
    axes.axvline(spectrum.xmin, color="gray", ls=":", lw=1)
    axes.set_xlabel("eigenvalue lambda")
    axes.set_ylabel("density")
    axes.set_title(spectrum.name, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure
