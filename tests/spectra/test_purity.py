"""The spectral core is pure numpy/scipy: importing and using it loads no framework, storage or plotting."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

FORBIDDEN = (
    "torch",
    "keras",
    "lightning",
    "pytorch_lightning",
    "tensorflow",
    "h5py",
    "tensorboard",
    "pandas",
    "matplotlib",
    "powerlaw",  # only needed on demand by compare_distributions
)

IMPORT_ONLY = "import spectral_callbacks.spectra"
IMPORT_AND_USE = textwrap.dedent(
    """
    import numpy as np
    import spectral_callbacks.spectra as spectra
    weight = np.random.default_rng(0).standard_t(3, size=(60, 30))
    spectra.analyze_matrix(weight)
    spectra.analyze_matrix(np.random.default_rng(1).standard_normal((16, 8, 3, 3)))
    spectra.fit_power_law(np.random.default_rng(2).pareto(1.5, 200) + 1)
    conv = spectra.ConvOperator(np.ones((2, 2, 3, 3)), input_hw=(6, 6), padding=1, padding_mode="circular")
    spectra.kpm_density(conv, 5, num_moments=8, num_probes=2)
    spectra.exact_circular_conv_svals(np.ones((2, 2, 3, 3)), (6, 6))
    """
)


def _loaded_top_level_modules(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def loaded_on_import() -> set[str]:
    return _loaded_top_level_modules(IMPORT_ONLY)


@pytest.fixture(scope="module")
def loaded_on_use() -> set[str]:
    return _loaded_top_level_modules(IMPORT_AND_USE)


def test_probe_sees_modules(loaded_on_import: set[str]) -> None:
    """The subprocess probe works: numpy and the package itself are seen as loaded."""
    assert {"numpy", "spectral_callbacks"} <= loaded_on_import


@pytest.mark.parametrize("module", FORBIDDEN)
def test_importing_the_spectral_core_loads_no_heavy_module(module: str, loaded_on_import: set[str]) -> None:
    assert module not in loaded_on_import


@pytest.mark.parametrize("module", FORBIDDEN)
def test_using_the_spectral_core_loads_no_heavy_module(module: str, loaded_on_use: set[str]) -> None:
    assert module not in loaded_on_use
