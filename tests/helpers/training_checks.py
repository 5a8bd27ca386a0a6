"""Checks on a training run that must stop before it changes anything, for any framework."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import numpy as np
import pytest


def fails_before_training(
    fit: Callable[[], object],
    *,
    weights: Callable[[], Mapping[Hashable, np.ndarray]],
    steps: Callable[[], int],
    error: type[BaseException],
    match: str,
) -> str:
    """Call ``fit``, which must raise ``error`` (message matching ``match``) before the first
    optimizer step: ``steps()`` is still 0 afterwards and every array of ``weights()`` keeps its
    value. Returns the message.

    A mistake found once training has started would cost the user a run; these checks tell a
    failure at set-up from one after some steps.
    """
    before = {name: np.array(array, copy=True) for name, array in weights().items()}
    with pytest.raises(error, match=match) as raised:
        fit()
    assert steps() == 0
    after = weights()
    assert list(after) == list(before)
    for name, array in before.items():
        np.testing.assert_array_equal(after[name], array, err_msg=f"weight {name!r} changed")
    return str(raised.value)
