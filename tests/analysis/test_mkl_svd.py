"""Large SVDs and Gram eigenvalues through torch's MKL: a known spectrum, the same numbers every
time, threads restored, small matrices left to scipy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from known_spectra import spread_singular_values, with_singular_values

from spectral_callbacks.analysis import mkl_svd
from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.spectra.esd import GRAM_RTOL, lapack_svdvals
from spectral_callbacks.spectra.gram import gram_error_bound, gram_matrix, lapack_eigvalsh

torch = pytest.importorskip("torch")
if mkl_svd.mkl_torch() is None:
    pytest.skip("this torch has no MKL", allow_module_level=True)

SIDE = mkl_svd.MKL_MIN_SIDE + 7
EPS64 = np.finfo(np.float64).eps


def graded_square(side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A dense square matrix with singular values ``s`` over six decades, and ``s``; built from
    Householder reflections, in O(side^2)."""
    rng = np.random.default_rng(seed)
    s = spread_singular_values(side, (-4, 2), rng)
    return with_singular_values(s, side, rng, reflections=True), s


class SvdSpy:
    """Wraps ``torch.linalg.svdvals``: how often it ran, and on how many threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        self._original = torch.linalg.svdvals
        monkeypatch.setattr(torch.linalg, "svdvals", self)

    def __call__(self, tensor: Any) -> Any:
        self.threads.append(torch.get_num_threads())
        return self._original(tensor)


@pytest.fixture(scope="module")
def large() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A large matrix, its known singular values, and MKL's on one thread."""
    matrix, s = graded_square(SIDE, seed=0)
    return matrix, s, mkl_svd.svdvals(np.asfortranarray(matrix), threads=1)


def test_a_large_matrix_goes_to_mkl_on_the_threads_asked_and_keeps_its_spectrum(large, monkeypatch) -> None:
    matrix, s, _ = large
    spy = SvdSpy(monkeypatch)
    before = torch.get_num_threads()
    svals = mkl_svd.svdvals(np.asfortranarray(matrix), threads=1)
    assert spy.threads == [1] and torch.get_num_threads() == before
    # backward stable, as LAPACK's SVD: absolute error ~ eps * ||W||, small values included
    np.testing.assert_allclose(svals, s, rtol=0, atol=50 * EPS64 * s[0])
    assert np.all(np.diff(svals) <= 0)


def test_analyze_weights_sends_large_layers_to_mkl_with_the_same_numbers_every_time(
    large, monkeypatch
) -> None:
    matrix, _, reference = large
    spy = SvdSpy(monkeypatch)
    (row,) = analyze_weights([("big", matrix, "linear")], svd_threads=1)
    assert spy.threads == [1]
    np.testing.assert_array_equal(row.svals[0], reference)  # bit for bit, as on every run


def test_small_matrices_stay_with_scipy(monkeypatch) -> None:
    spy = SvdSpy(monkeypatch)
    matrix, _ = graded_square(mkl_svd.MKL_MIN_SIDE - 1, seed=1)
    tall_but_narrow = np.random.default_rng(2).standard_normal((3 * mkl_svd.MKL_MIN_SIDE, 64))
    for source in (matrix[:, :300], tall_but_narrow):
        expected = lapack_svdvals(np.asfortranarray(source))
        np.testing.assert_array_equal(mkl_svd.svdvals(np.asfortranarray(source), threads=1), expected)
    assert spy.threads == []


def test_without_torch_with_mkl_large_matrices_stay_with_scipy(large, monkeypatch) -> None:
    monkeypatch.setattr(mkl_svd, "mkl_torch", lambda: None)
    spy = SvdSpy(monkeypatch)
    calls = []
    monkeypatch.setattr(mkl_svd, "lapack_svdvals", lambda matrix: calls.append(matrix.shape) or "scipy's")
    assert mkl_svd.svdvals(np.asfortranarray(large[0]), threads=1) == "scipy's"
    assert calls == [(SIDE, SIDE)] and spy.threads == []


class EigvalshSpy:
    """Wraps ``torch.linalg.eigvalsh``: on how many threads it ran, each time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        self._original = torch.linalg.eigvalsh
        monkeypatch.setattr(torch.linalg, "eigvalsh", self)

    def __call__(self, tensor: Any, UPLO: str = "L") -> Any:  # noqa: N803 - torch's keyword
        self.threads.append(torch.get_num_threads())
        return self._original(tensor, UPLO=UPLO)


def test_a_large_gram_matrix_goes_to_mkls_eigensolver_within_the_bound(monkeypatch) -> None:
    side = mkl_svd.MKL_EIGH_MIN_SIDE + 3
    matrix, s = graded_square(side, seed=3)
    gram, roundings = gram_matrix(matrix)
    trace = float(np.trace(gram))
    spy = EigvalshSpy(monkeypatch)
    before = torch.get_num_threads()
    evals = mkl_svd.eigvalsh(gram, threads=1)
    assert spy.threads == [1] and torch.get_num_threads() == before
    assert np.all(np.diff(evals) >= 0)
    delta = gram_error_bound(trace, float(evals[-1]), side, roundings)
    # the exact eigenvalues s^2, up to the bound and the Householder construction's own rounding
    construction = 2 * s[::-1] * 50 * EPS64 * s[0]
    assert np.all(np.abs(evals - s[::-1] ** 2) <= delta + construction)


def test_small_gram_matrices_stay_with_scipy(monkeypatch) -> None:
    spy = EigvalshSpy(monkeypatch)
    weight = np.random.default_rng(4).standard_normal((600, 300))
    gram, _ = gram_matrix(weight)
    expected = lapack_eigvalsh(np.array(gram, order="F"))
    np.testing.assert_array_equal(mkl_svd.eigvalsh(gram, threads=1), expected)
    assert spy.threads == []


def test_analyze_weights_takes_a_large_tall_layers_gram_eigenvalues_from_mkl(monkeypatch) -> None:
    """A tall 2n x n layer is well conditioned: auto takes its Gram matrix's eigenvalues, from
    MKL on the threads asked; method="svd" never forms it."""
    side = mkl_svd.MKL_EIGH_MIN_SIDE + 3
    weight = np.random.default_rng(5).standard_normal((2 * side, side)).astype(np.float32)
    spy = EigvalshSpy(monkeypatch)
    (row,) = analyze_weights([("tall", weight, "linear")], svd_threads=1)
    assert spy.threads == [1] and (row.gram_slices, row.gram_fallbacks) == (1, 0)
    (svd_row,) = analyze_weights([("tall", weight, "linear")], svd_threads=1, method="svd")
    assert spy.threads == [1] and (svd_row.gram_slices, svd_row.gram_fallbacks) == (0, 0)
    np.testing.assert_allclose(row.svals, svd_row.svals, rtol=GRAM_RTOL / 2)
    assert row.alpha == pytest.approx(svd_row.alpha, rel=1e-9)


@pytest.mark.parametrize(
    ("options", "match"), [({"method": "qr"}, "method='qr'"), ({"gram_rtol": 2.0}, "gram_rtol=2.0")]
)
def test_analyze_weights_rejects_invalid_options_instead_of_skipping_every_layer(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        analyze_weights([("w", np.eye(20), "linear")], **options)
