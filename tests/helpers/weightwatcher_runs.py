"""WeightWatcher run as the independent reference: its default analysis, without its output."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any


def weightwatcher_analysis(model: Any, base_model: Any = None, **options: Any) -> Any:
    """WeightWatcher's ``analyze(**options)`` of ``model`` (its pandas DataFrame, one row a layer;
    its default analysis without options), of its change from ``base_model`` if given.

    WeightWatcher prints progress, logs at INFO and warns about the layers it skips; all of that is
    silenced so that a failing test's output shows the failure. Callers skip without
    ``weightwatcher`` (``pytest.importorskip``) before calling this.
    """
    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return weightwatcher.WeightWatcher(model=model, base_model=base_model).analyze(**options)
