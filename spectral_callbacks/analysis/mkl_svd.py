"""Singular values (and Gram eigenvalues) of large matrices through the MKL LAPACK inside torch's
x86 wheels, when present.

scipy's OpenBLAS reduces a matrix to bidiagonal form one column at a time, reading the whole
trailing matrix for each: once the matrix outgrows the cache that is bound by memory bandwidth,
and two processes doing it at once slow each other down (``benchmarks/bench_svd_scaling.py``).
MKL's ``gesdd`` changes method for large matrices and keeps its work in cache: from a smaller
side of :data:`MKL_MIN_SIDE` up it is much faster on one thread, and two at once run as fast as
one. Below that size it is no faster, so smaller matrices keep scipy's LAPACK (and its exact
numbers); without torch, or with a torch built without MKL, everything does. Both are
backward-stable LAPACK SVDs: they agree to rounding.

The same holds for the symmetric eigensolver of the Gram path (``spectra.gram``): MKL's
``syevd`` is faster than scipy's ``dsyevr`` on one thread from n = :data:`MKL_EIGH_MIN_SIDE` up
and as fast below, so from there Gram matrices go to MKL. Both are backward stable, which is all
the Gram path's error bound assumes.

torch is imported on the first matrix that needs it, never for small ones (a worker that only
sees small layers does not pay the import).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from ..spectra.esd import lapack_svdvals
from ..spectra.gram import lapack_eigvalsh

__all__ = ["MKL_EIGH_MIN_SIDE", "MKL_MIN_SIDE", "eigvalsh", "mkl_torch", "svdvals"]

# Smallest min(rows, columns) from which MKL's SVD is the faster one on one thread
# (benchmarks/bench_svd_scaling.py --sizes compares the two LAPACKs at any size).
MKL_MIN_SIDE = 2560
# Smallest order of a Gram matrix from which MKL's syevd is faster than scipy's dsyevr on one thread.
MKL_EIGH_MIN_SIDE = 1280


def svdvals(matrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Singular values, descending, of a float64 column-major matrix (which may be overwritten).

    Args:
        matrix: as :data:`spectral_callbacks.spectra.esd.SvdValues` takes it.
        threads: torch's intra-op threads for MKL's SVD (restored after), or None to keep torch's
            setting; analysis workers pass their BLAS thread count so that both libraries agree.
    """
    torch = mkl_torch() if min(matrix.shape) >= MKL_MIN_SIDE else None
    if torch is None:
        return lapack_svdvals(matrix)
    with _torch_threads(torch, threads):
        return torch.linalg.svdvals(torch.from_numpy(matrix)).numpy()


def eigvalsh(gram: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Eigenvalues, ascending, of a symmetric float64 column-major matrix given by its upper
    triangle (which may be overwritten): :data:`spectral_callbacks.spectra.gram.EigValues`.

    Args:
        gram: a Gram matrix from :func:`spectral_callbacks.spectra.gram.gram_matrix`.
        threads: as for :func:`svdvals`.
    """
    torch = mkl_torch() if gram.shape[0] >= MKL_EIGH_MIN_SIDE else None
    if torch is None:
        return lapack_eigvalsh(gram)
    with _torch_threads(torch, threads):
        return torch.linalg.eigvalsh(torch.from_numpy(gram), UPLO="U").numpy()


@functools.cache
def mkl_torch() -> ModuleType | None:
    """torch, if it is installed and its LAPACK is MKL; else None (imported once, on first use).

    A torch that fails to load (missing shared libraries) means scipy's LAPACK, not a failed analysis.
    """
    try:
        import torch
    except (ImportError, OSError):
        return None
    return torch if torch.backends.mkl.is_available() else None


@contextlib.contextmanager
def _torch_threads(torch: ModuleType, threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (None: unchanged), restored after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
