"""Spectra of weight changes: ``W - W_base`` for fine-tuning deltas (WeightWatcher's
``base_model``) and, during training, the change since initialization or since the previous
snapshot.

A fine-tuning update is often low-rank and heavy-tailed in its own right, while the weights it is
added to are dominated by pretraining: the delta's spectrum says what training changed. During
training, ``W_t - W_0`` accumulates what was learned, and ``W_t - W_(t-1)`` is one interval's
step, whose spectrum shows whether updates are spread over many directions or a few.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..spectra import LayerSpectrum, SkippedParameter

__all__ = ["DELTAS", "delta_items", "delta_name", "weight_change"]

# Live deltas: none, since the run's first snapshot (its initialization), since the previous one.
DELTAS = (None, "init", "previous")


def delta_name(name: str, deltas: str) -> str:
    """The layer name of a matrix's delta rows: ``fc1.delta_init``, ``fc1.delta_previous``."""
    return f"{name}.delta_{deltas}"


def weight_change(weights: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``weights - base`` in at least float32 (float16 weights would round the change)."""
    weights, base = np.asarray(weights), np.asarray(base)
    return np.subtract(weights, base, dtype=np.result_type(weights, base, np.float32))


def delta_items(
    items: Iterable[tuple[str, np.ndarray, str | None]], base: Mapping[str, Any]
) -> tuple[list[tuple[str, np.ndarray, str | None]], list[LayerSpectrum]]:
    """``(name, W - W_base, kind)`` for the parameters ``base`` has with the same shape, and
    skipped rows (with the reason) for the others."""
    changes, skipped = [], []
    for name, array, kind in items:
        before = base.get(name)
        if before is None or np.shape(before) != np.shape(array):
            reason = (
                "not in the base model"
                if before is None
                else f"shape {np.shape(array)} differs from the base model's {np.shape(before)}"
            )
            shape = tuple(np.shape(array))
            skipped.append(LayerSpectrum.skipped(SkippedParameter(name, shape, reason), kind or ""))
            continue
        changes.append((name, weight_change(array, before), kind))
    return changes, skipped
