"""How far a layer moved between two snapshots: WeightWatcher's three ``distances`` and the
relative change.

For two versions ``W1`` (the reference: the previous snapshot, or the initialization) and ``W2``
of the same matrix view:

* ``delta_W``: ``||W2 - W1||_F`` over the whole view (WeightWatcher's ``method="raw"``);
* ``relative_delta``: ``||W2 - W1||_F / ||W1||_F``, the step size relative to the weights, the
  quantity that says whether a layer still learns (comparable across layers of any size);
* ``delta_W_slices``: the mean over the view's slices of ``||W2_s - W1_s||_F`` (``"euclidean"``;
  for a dense layer the same as ``delta_W``);
* ``cka``: the mean over slices of ``||W1_s^T W2_s||_F / sqrt(||W1_s^T W1_s||_F ||W2_s W2_s^T||_F)``,
  the uncentered alignment of the two matrices (``"cka"``; 1 for equal matrices up to scale;
  Kornblith et al., "Similarity of neural network representations revisited", ICML 2019, for the
  centered kernel version). Dense slices are taken as stored, conv slices with the larger
  dimension first, as WeightWatcher extracts them from a torch model.

Every product and norm is taken in float64, one slice at a time (without ``cka``, one block of
rows at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .matrices import MatrixView

__all__ = ["LayerDistance", "layer_distance"]

# A denominator WeightWatcher floors at this before dividing (an all-zero matrix's CKA).
_CKA_FLOOR = 1e-6
_BLOCK_ELEMENTS = 1 << 16  # float64 elements per block of rows (512 kB: stays in cache)


@dataclass(frozen=True)
class LayerDistance:
    """The distances between two versions of one matrix view (see the module docstring)."""

    delta_W: float  # noqa: N815 - WeightWatcher's column name
    relative_delta: float
    delta_W_slices: float  # noqa: N815 - as delta_W
    cka: float


def layer_distance(reference: MatrixView, current: MatrixView, *, alignment: bool = True) -> LayerDistance:
    """The distances of ``current`` from ``reference``, two views of the same shape.

    Args:
        alignment: compute ``cka`` (NaN otherwise). It multiplies the slices (about twice a Gram
            matrix's cost) where the other distances only read them once.

    Raises:
        ValueError: the views' slices differ in shape.
    """
    before, after = reference.slices, current.slices
    if before.shape != after.shape:
        raise ValueError(
            f"{current.name!r} has slices of shape {after.shape}, its reference {before.shape}: "
            "distances need two versions of the same layer."
        )
    squared_deltas = np.empty(before.shape[0])
    ckas = np.empty(before.shape[0])
    reference_squared = 0.0
    tall = reference.kind != "linear" and before.shape[1] < before.shape[2]
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        if not alignment:
            squared_deltas[index], squared = _squared_norms(old, new)
            reference_squared += squared
            ckas[index] = math.nan
            continue
        old64, new64 = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
        if tall:
            old64, new64 = old64.T, new64.T
        squared_deltas[index] = _squared_norm(new64 - old64)
        reference_squared += _squared_norm(old64)
        ckas[index] = _uncentered_cka(old64, new64)
    delta = math.sqrt(float(squared_deltas.sum()))
    return LayerDistance(
        delta_W=delta,
        relative_delta=delta / math.sqrt(reference_squared) if reference_squared > 0 else math.nan,
        delta_W_slices=float(np.mean(np.sqrt(squared_deltas))),
        cka=float(np.mean(ckas)),
    )


def _squared_norm(matrix: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", matrix, matrix))


def _squared_norms(old: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """``||new - old||_F^2`` and ``||old||_F^2`` in float64, from blocks of rows of about
    :data:`_BLOCK_ELEMENTS`: float64 copies of a whole token embedding would be three fresh
    allocations of its size per snapshot, each paid in page faults."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, old.shape[1]))
    delta_squared = reference_squared = 0.0
    for start in range(0, old.shape[0], rows):
        old64 = np.asarray(old[start : start + rows], dtype=np.float64)
        delta = np.subtract(new[start : start + rows], old64, dtype=np.float64)
        delta_squared += _squared_norm(delta)
        reference_squared += _squared_norm(old64)
    return delta_squared, reference_squared


def _uncentered_cka(first: np.ndarray, second: np.ndarray) -> float:
    """``||A^T B||_F / sqrt(||A^T A||_F ||B B^T||_F)`` with the smaller Gram matrices: ``||A^T A||_F
    = ||A A^T||_F``, and ``||A^T B||_F^2 = trace(A A^T B B^T)``."""
    cross = (
        np.linalg.norm(first.T @ second) if first.shape[1] <= first.shape[0] else _cross_norm(first, second)
    )
    norm = math.sqrt(_gram_norm(first) * _gram_norm(second))
    return float(cross / (norm + _CKA_FLOOR if norm < _CKA_FLOOR else norm))


def _gram_norm(matrix: np.ndarray) -> float:
    small = matrix.T @ matrix if matrix.shape[1] <= matrix.shape[0] else matrix @ matrix.T
    return float(np.linalg.norm(small))


def _cross_norm(first: np.ndarray, second: np.ndarray) -> float:
    """``||A^T B||_F`` of wide matrices through their row Gram matrices (``r x r``, ``r < n``)."""
    return math.sqrt(max(float(np.einsum("ij,ji->", first @ first.T, second @ second.T)), 0.0))
