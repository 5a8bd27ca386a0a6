"""Shared set-up of the study tests: one thread, as the studies train; each test module's smoke run
of its study, under a temporary directory; checks of its outputs (CSV, PNG, results section)."""

from __future__ import annotations

import csv
import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from experiments import results as results_module
from experiments.results import section_markers, single_threaded

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session", autouse=True)
def _single_threaded() -> Iterator[None]:
    """One thread for torch and BLAS: the studies' matrices are small and the machine is shared."""
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def smoke(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """One ``--smoke`` run of the study a test module tests, shared by the module's tests.

    ``test_NAME.py`` tests ``experiments.NAME``: its ``main(["--smoke", "--runs", <tmp>/runs])``
    runs with the default figures directory and results file moved to ``<tmp>/real/``, which the
    smoke run must leave alone (it writes everything into ``<runs>/smoke/``).

    Returns:
        ``(runs, out, results)``: the smoke runs' directory, the study's figures directory (what
        ``main`` returns) and the smoke run's results file.
    """
    name = Path(request.module.__file__).stem.removeprefix("test_")
    study = importlib.import_module(f"experiments.{name}")
    root = tmp_path_factory.mktemp(name)
    real = root / "real"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(results_module, "DEFAULT_OUT", real / "results")
        patch.setattr(results_module, "DEFAULT_RESULTS", real / "RESULTS.md")
        out = study.main(["--smoke", "--runs", str(root / "runs")])
    assert not real.exists(), "a smoke run wrote where the real results go"
    runs = root / "runs" / "smoke"
    assert out.is_relative_to(runs)
    return runs, out, runs / "RESULTS.md"


def read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a CSV whose header is exactly ``columns``; every cell non-empty."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(columns)
        rows = list(reader)
    assert rows, f"{path} has no rows"
    assert all(value != "" for row in rows for value in row.values())
    return rows


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"


def section_of(results: Path, study: str) -> str:
    """The text between a study's markers, which must each appear exactly once."""
    text = results.read_text()
    opening, closing = section_markers(study)
    assert text.count(opening) == 1 and text.count(closing) == 1
    return text[text.index(opening) + len(opening) : text.index(closing)]
