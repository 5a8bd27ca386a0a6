"""The streamed R factor of tall matrices: singular values against numpy.linalg.svd and a known spectrum."""

from __future__ import annotations

import numpy as np
import pytest
from known_spectra import spread_singular_values, with_singular_values

from spectral_callbacks.spectra import matrices_of, singular_values
from spectral_callbacks.spectra.streaming_qr import (
    STREAMING_QR_MAX_COLUMNS,
    STREAMING_QR_MIN_ASPECT,
    STREAMING_QR_MIN_SIZE,
    r_factor,
    streams_well,
)

EPS64 = np.finfo(np.float64).eps


def graded_matrix(rows: int, columns: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``rows x columns`` matrix with singular values ``s`` over eight decades, and ``s``."""
    rng = np.random.default_rng(seed)
    s = spread_singular_values(columns, (-6, 2), rng)
    return with_singular_values(s, rows, rng), s


def svals_of_r(matrix: np.ndarray, **options) -> np.ndarray:
    return np.linalg.svd(r_factor(matrix, **options), compute_uv=False)


@pytest.mark.parametrize("block_rows", [None, 7, 64, 1000])
def test_r_factor_keeps_a_known_spectrum_to_rounding(block_rows: int | None) -> None:
    """Blocks smaller than, equal to and larger than the matrix, with a partial last block."""
    matrix, s = graded_matrix(301, 24, seed=0)
    svals = svals_of_r(matrix, block_rows=block_rows)
    # an orthogonal reduction is backward stable: absolute error ~ eps * ||W||, small ones included
    np.testing.assert_allclose(svals, s, rtol=0, atol=50 * EPS64 * s[0])
    np.testing.assert_allclose(svals, np.linalg.svd(matrix, compute_uv=False), rtol=0, atol=50 * EPS64 * s[0])


def test_r_factor_is_upper_triangular_with_the_gram_matrix_of_the_input() -> None:
    matrix = np.random.default_rng(1).standard_normal((500, 40))
    r = r_factor(matrix, block_rows=90)
    assert r.shape == (40, 40) and r.dtype == np.float64 and r.flags.f_contiguous
    np.testing.assert_array_equal(np.tril(r, -1), 0.0)
    # R^T R = W^T W (checked here only: the factor itself never forms it)
    np.testing.assert_allclose(r.T @ r, matrix.T @ matrix, rtol=0, atol=1e-11 * np.linalg.norm(matrix) ** 2)
    # and |R| is numpy's R up to the signs of its rows
    np.testing.assert_allclose(np.abs(r), np.abs(np.linalg.qr(matrix, mode="r")), rtol=0, atol=1e-11)


@pytest.mark.parametrize(
    "layout",
    ["float32 row-major", "float16 row-major", "float64 column-major", "every other row", "conv slice"],
)
def test_r_factor_reads_any_float_dtype_and_layout(layout: str) -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((2 * 400, 30))
    source = {
        "float32 row-major": base.astype(np.float32),
        "float16 row-major": base.astype(np.float16),
        "float64 column-major": np.asfortranarray(base),
        "every other row": base[::2],
        "conv slice": rng.standard_normal((400, 30, 3, 3)).astype(np.float32)[:, :, 1, 2],
    }[layout]
    reference = np.linalg.svd(source.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(svals_of_r(source, block_rows=50), reference, rtol=1e-13, atol=0)


def test_r_factor_of_rank_deficient_and_zero_matrices() -> None:
    rng = np.random.default_rng(3)
    low_rank = rng.standard_normal((600, 3)) @ rng.standard_normal((3, 20))
    svals = svals_of_r(low_rank, block_rows=40)
    reference = np.linalg.svd(low_rank, compute_uv=False)
    np.testing.assert_allclose(svals[:3], reference[:3], rtol=1e-13)
    assert np.all(svals[3:] < 1e-13 * svals[0])
    np.testing.assert_array_equal(r_factor(np.zeros((100, 10)), block_rows=30), 0.0)


def test_r_factor_refuses_a_wide_matrix() -> None:
    with pytest.raises(ValueError, match=r"tall 2-D matrix .*\(10, 20\)"):
        r_factor(np.ones((10, 20)))


def test_streams_well_only_for_large_very_tall_slices_of_moderate_width() -> None:
    assert streams_well(STREAMING_QR_MIN_ASPECT * 384, 384)
    assert not streams_well(STREAMING_QR_MIN_ASPECT * 384 - 1, 384)
    assert streams_well(50257, STREAMING_QR_MAX_COLUMNS)
    assert not streams_well(500000, STREAMING_QR_MAX_COLUMNS + 1)
    assert streams_well(STREAMING_QR_MIN_SIZE // 64, 64)
    assert not streams_well(STREAMING_QR_MIN_SIZE // 64 - 1, 64)
    assert not streams_well(64, 3)  # a conv kernel's slice: in cache anyway


@pytest.mark.parametrize("orientation", ["tall (out x in)", "wide (an output head seen transposed)"])
def test_a_very_tall_layer_takes_the_streamed_path_and_matches_numpy(orientation: str) -> None:
    """An embedding-like layer: the SVD path's singular values equal LAPACK's full SVD (the default
    path takes the Gram matrix's eigenvalues for such a slice; see test_gram.py)."""
    matrix, _ = graded_matrix(8 * 130 + 11, 130, seed=4)
    weight = matrix.astype(np.float32) if orientation.startswith("tall") else matrix.T.astype(np.float32)
    assert streams_well(*matrix.shape)
    (view,) = matrices_of("embedding", weight)
    svals = singular_values(view, method="svd")[0]
    reference = np.linalg.svd(weight.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(svals, reference, rtol=0, atol=50 * EPS64 * reference[0])
    np.testing.assert_allclose(svals[:100], reference[:100], rtol=1e-10)
