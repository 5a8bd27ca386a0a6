"""Shared checks of a study's outputs (CSV, PNG, results section), and single-threaded BLAS."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from experiments.results import section_markers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_blas() -> Iterator[None]:
    """One BLAS thread: the studies' matrices are small and the machine is shared (see tests/spectra)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


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
