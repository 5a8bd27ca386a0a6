"""Property: damaged copies of valid files of every format fail cleanly, in bounded memory.

Each case copies a small valid file, applies one mutation drawn by Hypothesis (truncation,
overwritten bytes, lying headers, shapes, dtypes, offsets, zip sizes, HDF5 datasets; see
``fuzz_mutations``) and runs ``spectral-callbacks analyze`` on it in this process. The contract
is in ``fuzz_harness.check_contract``. ``SPECTRAL_FUZZ_PROFILE=slow`` runs 10,000 cases per format.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_files import MAKERS
from fuzz_harness import analyze, check_contract, damaged_copy, fuzz_settings
from fuzz_mutations import mutations
from hypothesis import given
from hypothesis import strategies as st

FORMATS = sorted(MAKERS)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One valid file per format; each is analyzed once first, so imports and first-call costs
    are not counted in any case's memory, and so that the valid file is known to pass."""
    root = tmp_path_factory.mktemp("valid")
    made = {}
    for fmt in FORMATS:
        if fmt == "torch":
            pytest.importorskip("torch")
        directory = root / fmt
        directory.mkdir()
        made[fmt] = MAKERS[fmt](directory)
    return made


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_valid_files_are_analyzed(templates: dict[str, Path], fmt: str) -> None:
    with damaged_copy(templates[fmt], lambda path: None) as path:
        outcome = analyze(path)
    assert (outcome.code, outcome.err) == (0, ""), outcome.err
    assert "matrices analyzed" in outcome.out or "snapshot(s) analyzed now" in outcome.out
    check_contract(path, outcome)


@pytest.mark.timeout(0)
@pytest.mark.parametrize("fmt", FORMATS)
@fuzz_settings()
@given(data=st.data())
def test_a_damaged_file_fails_in_one_line_in_bounded_memory(
    templates: dict[str, Path], fmt: str, data: st.DataObject
) -> None:
    mutation = data.draw(mutations(fmt), label="mutation")
    with damaged_copy(templates[fmt], mutation) as path:
        check_contract(path, analyze(path))
