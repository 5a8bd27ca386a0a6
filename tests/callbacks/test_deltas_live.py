"""Spectra of the weights' change during training: ``deltas="init"`` and ``"previous"`` add a
layer per matrix whose rows are the analysis of ``W_t - W_0`` or ``W_t - W_(t-1)``, recomputed
here from the saved weights; their scalars reach TensorBoard and stay out of the model averages."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
from tensorboard_events import read_events

from spectral_callbacks import SpectralCallback, averaged_layers, open_run
from spectral_callbacks.analysis.model import analyze_weights
from spectral_callbacks.reporting.compare import LabeledRun, compare_table, model_average

EPOCHS = 3


def fit(root, tiny, deltas: str) -> types.SimpleNamespace:
    callback = SpectralCallback(log_dir=root, deltas=deltas)
    trainer = tiny.make_trainer(root, [callback], max_epochs=EPOCHS)
    trainer.fit(tiny.make_model(), datamodule=tiny.make_datamodule())
    return types.SimpleNamespace(path=callback.run_path, run_dir=callback.run_dir)


@pytest.mark.parametrize("deltas", ["init", "previous"])
def test_delta_layers_are_the_analysis_of_the_change(tmp_path, tiny, deltas: str) -> None:
    run = fit(tmp_path, tiny, deltas)
    with open_run(run.path) as reader:
        assert sorted(reader.layers) == sorted(
            [*tiny.LAYERS, *(f"{name}.delta_{deltas}" for name in tiny.LAYERS)]
        )
        for name in tiny.LAYERS:
            kind = reader.layer_info(name)["kind"]
            stored = reader.metrics(f"{name}.delta_{deltas}")
            statuses = reader.layer_status(f"{name}.delta_{deltas}")
            for epoch in range(1, EPOCHS + 1):
                base = reader.weights(name, 0 if deltas == "init" else epoch - 1)
                change = reader.weights(name, epoch).astype(np.float32) - base
                (expected,) = analyze_weights([(name, change, kind)])
                row = epoch if deltas == "init" else epoch - 1  # "previous" has no row at epoch 0
                assert statuses[row][0] == expected.status
                for metric in ("alpha", "log_norm", "stable_rank", "lambda_min"):
                    assert stored[metric][row] == pytest.approx(
                        expected.metrics()[metric], rel=1e-9, nan_ok=True
                    )
            if deltas == "init":  # the initialization against itself: nothing to analyze
                reason = f"the change of {name!r} is all zeros; its spectrum is empty."
                assert statuses[0] == ("skipped", reason)
        # the model averages are the layers' own, the changes left out
        layers = list(tiny.LAYERS)
        alphas = np.array([reader.metric("alpha", name) for name in layers])
        statuses = [[status for status, _ in reader.layer_status(name)] for name in layers]
        expected_average = [
            np.mean([alphas[i, row] for i in averaged_layers([s[row] for s in statuses])])
            for row in range(alphas.shape[1])
        ]
        steps = reader.snapshots()["step"].tolist()
        # compare's and the Spectra tab's model average is the sink's: the changes left out
        assert model_average(reader, "alpha") == pytest.approx(expected_average, rel=1e-12)
        assert reader.change_layers == {f"{name}.delta_{deltas}" for name in tiny.LAYERS}
        table = compare_table([LabeledRun("run", reader)], "alpha", layers=[f"fc1.delta_{deltas}"])
        change = [row.value for row in table.rows if row.layer == f"fc1.delta_{deltas}"]
        stored_change = reader.metric("alpha", f"fc1.delta_{deltas}")
        expected_change = stored_change if deltas == "init" else [math.nan, *stored_change]
        assert change == pytest.approx(list(expected_change), nan_ok=True)
        final_alpha = {name: reader.metric("alpha", name)[-1] for name in reader.layers}
    assert_summary_rows(run.path, deltas, final_alpha)
    events = read_events(run.run_dir)
    scalars = events.Tags()["scalars"]
    assert f"log_norm/fc1.delta_{deltas}" in scalars
    model_alpha = [event.value for event in events.Scalars("model/alpha")]
    assert model_alpha == pytest.approx(expected_average, rel=1e-6)
    assert len(model_alpha) == len(steps)


def assert_summary_rows(path, deltas: str, final_alpha: dict) -> None:
    """``summary`` puts each layer's alpha under the epochs it belongs to: a ``"previous"`` change
    layer has none at the first epoch (its cell is empty), and its last is the last row's."""
    import contextlib
    import io

    from spectral_callbacks.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["summary", str(path)]) == 0
    lines = [line.split() for line in out.getvalue().splitlines()]
    header = next(line for line in lines if line and line[0] == "layer")
    assert header[3] == "alpha@0" and header[4] == f"alpha@{EPOCHS}"
    by_layer = {line[0]: line for line in lines if line and line[0] in final_alpha}
    assert set(by_layer) == set(final_alpha)
    for name, alpha in final_alpha.items():
        first, last = by_layer[name][3], by_layer[name][4]
        assert last == (f"{alpha:.4g}" if np.isfinite(alpha) else "-"), name
        if name.endswith(".delta_previous"):
            assert first == "-", name
