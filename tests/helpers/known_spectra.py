"""Matrices whose singular values are known in advance: the reference that needs no SVD."""

from __future__ import annotations

import numpy as np


def with_singular_values(
    s: np.ndarray, rows: int, rng: np.random.Generator, *, reflections: bool = False
) -> np.ndarray:
    """A dense float64 ``rows x len(s)`` matrix ``U diag(s) V^T`` whose singular values are ``s``.

    ``U`` and ``V`` are the orthonormal Q factors of Gaussian matrices drawn from ``rng`` (in that
    order). With ``reflections=True`` (square matrices only) they are two Householder reflections
    ``I - 2 v v^T`` instead, so the matrix is built in O(n^2) where QR factors cost O(n^3): the way
    to make a known spectrum of a large side.
    """
    s = np.asarray(s, dtype=np.float64)
    columns = s.size
    if not reflections:
        u = np.linalg.qr(rng.standard_normal((rows, columns)))[0]
        v = np.linalg.qr(rng.standard_normal((columns, columns)))[0]
        return (u * s) @ v.T
    if rows != columns:
        raise ValueError(f"reflections=True makes square matrices. Received: rows={rows}, len(s)={columns}")
    # (I - 2 v v^T) diag(s) (I - 2 w w^T), expanded: outer products only, no matrix product
    v, w = (x / np.linalg.norm(x) for x in rng.standard_normal((2, columns)))
    sw = s * w
    return np.diag(s) - 2 * np.outer(v, v * s) - 2 * np.outer(sw, w) + 4 * (v @ sw) * np.outer(v, w)


def spread_singular_values(count: int, decades: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``count`` values spread over ``10**decades[0]`` to ``10**decades[1]``, each scaled by a
    random factor in [0.5, 1.5) (so they are not a clean geometric sequence), in descending order."""
    return np.sort(np.logspace(*decades, count) * rng.uniform(0.5, 1.5, count))[::-1]
