"""Optional dependencies: each feature's error names an extra of pyproject.toml that installs the
missing package, and the README's install table documents every extra.

A missing package is simulated with ``sys.modules[name] = None``, which makes ``import name`` raise
``ImportError`` as if it were not installed (the features import them lazily).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from spectral_callbacks import analyze_matrix
from spectral_callbacks.analysis.model import ModelAnalysis
from spectral_callbacks.reporting.compare import CompareTable
from spectral_callbacks.reporting.plots import esd_figure

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
requirements = pytest.importorskip("packaging.requirements")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "spectral-callbacks"
NOT_IN_ALL = {"all", "dev", "experiments"}  # the test suite and the scripts of a clone


def extras() -> dict[str, list[str]]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["optional-dependencies"]


def distributions(extra: str) -> set[str]:
    """The distributions an extra installs, its references to other extras followed."""
    found = set()
    for line in extras()[extra]:
        requirement = requirements.Requirement(line)
        if requirement.name == PACKAGE:
            found |= {name for other in requirement.extras for name in distributions(other)}
        else:
            found.add(requirement.name.lower())
    return found


def assert_names_an_extra_providing(message: str, module: str) -> None:
    """The message's ``pip install "spectral-callbacks[X]"`` names an extra that installs ``module``."""
    match = re.search(r'pip install "spectral-callbacks\[(\w+)\]"', message)
    assert match, message
    providers = {name.lower() for name in importlib.metadata.packages_distributions()[module]}
    assert providers & distributions(match.group(1)), (match.group(1), providers)


def test_the_readme_install_table_documents_every_extra() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("| extra | installs | enables |")
    section = readme[start : readme.index("\n\n", start)]
    documented = re.findall(r"^\| `([\w-]+)` \|", section, flags=re.MULTILINE)
    assert sorted(documented) == sorted(extras())


def test_all_installs_every_runtime_extra() -> None:
    runtime = set(extras()) - NOT_IN_ALL
    assert distributions("all") == set().union(*(distributions(extra) for extra in runtime))


def test_to_pandas_without_pandas_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    rows = ModelAnalysis([analyze_matrix(np.random.default_rng(0).standard_normal((20, 10)), name="w")])
    table = CompareTable("alpha", ["run"], ["w"], [])
    for to_pandas in (rows.to_pandas, table.to_pandas):
        with pytest.raises(ModuleNotFoundError) as error:
            to_pandas()
        assert error.value.name == "pandas"
        assert_names_an_extra_providing(str(error.value), "pandas")


def test_figures_without_matplotlib_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    spectrum = analyze_matrix(np.random.default_rng(1).standard_normal((60, 30)), name="w")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ModuleNotFoundError) as error:
        esd_figure(spectrum)  # what the worker draws with esd_figures=True
    assert error.value.name == "matplotlib"
    assert_names_an_extra_providing(str(error.value), "matplotlib")


def test_esd_figures_without_matplotlib_is_refused_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    from spectral_callbacks.live.config import SpectralConfig

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "matplotlib" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ValueError, match=r"esd_figures=True.*spectral-callbacks\[plots\]"):
        SpectralConfig(esd_figures=True)
    SpectralConfig(esd_figures=False)  # nothing needed without figures
