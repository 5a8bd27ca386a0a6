"""The tiled float64 column-major copy against numpy's own copy."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_callbacks.spectra.fortran_copy import COPY_TILE, TILED_COPY_MIN_SIZE, float64_fortran


def _copy_sources() -> dict[str, tuple[np.ndarray, bool]]:
    """Row-major, column-major and strided matrices, and whether they take the tiled path."""
    rng = np.random.default_rng(4)
    tall = rng.standard_normal((4 * COPY_TILE + 17, 2 * COPY_TILE + 5))  # edges not on a tile
    conv = rng.standard_normal((300, 260, 3, 3)).astype(np.float32)
    return {
        "row-major float32, tall": (tall.astype(np.float32), True),
        "row-major float64, wide": (np.ascontiguousarray(tall.T), True),
        "row-major float16": (tall.astype(np.float16), True),
        "a conv kernel's strided slice": (conv[:, :, 1, 2], True),
        "every other row": (tall[::2].astype(np.float32), True),
        "one long row": (rng.standard_normal((1, TILED_COPY_MIN_SIZE + 3)).astype(np.float32), False),
        "column-major float32": (np.asfortranarray(tall.astype(np.float32)), False),
        "small row-major": (rng.standard_normal((40, 30)).astype(np.float32), False),
    }


@pytest.mark.parametrize("name", list(_copy_sources()))
def test_float64_fortran_is_numpys_column_major_copy(name: str) -> None:
    source, tiled = _copy_sources()[name]
    assert tiled == (source.size >= TILED_COPY_MIN_SIZE and not source.flags.f_contiguous)
    copy = float64_fortran(source)
    expected = np.array(source, dtype=np.float64, order="F")
    assert copy.dtype == np.float64 and copy.flags.f_contiguous and copy.shape == source.shape
    np.testing.assert_array_equal(copy, expected)
    assert not np.shares_memory(copy, source)
