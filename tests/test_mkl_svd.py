"""Large SVDs through torch's MKL: a known spectrum, the same numbers every time, threads restored,
small matrices left to scipy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spectral_callbacks import mkl_svd
from spectral_callbacks.model import analyze_weights
from spectral_callbacks.spectra.esd import lapack_svdvals

torch = pytest.importorskip("torch")
if mkl_svd.mkl_torch() is None:
    pytest.skip("this torch has no MKL", allow_module_level=True)

SIDE = mkl_svd.MKL_MIN_SIDE + 7
EPS64 = np.finfo(np.float64).eps


def known_spectrum(side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``H1 diag(s) H2`` with Householder reflections ``H = I - 2 v v^T``: dense, with singular
    values ``s`` over six decades, built in O(side^2)."""
    rng = np.random.default_rng(seed)
    s = np.sort(np.logspace(-4, 2, side) * rng.uniform(0.5, 1.5, side))[::-1]
    v, w = (x / np.linalg.norm(x) for x in rng.standard_normal((2, side)))
    sw = s * w
    matrix = np.diag(s) - 2 * np.outer(v, v * s) - 2 * np.outer(sw, w) + 4 * (v @ sw) * np.outer(v, w)
    return matrix, s


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
    matrix, s = known_spectrum(SIDE, seed=0)
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
    matrix, _ = known_spectrum(mkl_svd.MKL_MIN_SIDE - 1, seed=1)
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
