"""``analysis_executor``: a fit whose layers are analyzed on a process pool or a dask cluster writes
the same run file, bit for bit, as one analyzed in the analysis process; a scheduler that cannot be
reached costs one warning and no snapshot."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run

EPOCHS = 2


def fit(root: Path, tiny: types.SimpleNamespace, **options: object) -> tuple[Path, list[str]]:
    """A TinyNet fit (same seed, same data) with the movement and change columns on; the run file
    and the callback's warnings."""
    callback = SpectralCallback(log_dir=root, tensorboard=False, deltas="previous", **options)
    trainer = tiny.make_trainer(root, [callback], max_epochs=EPOCHS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny.make_model(), datamodule=tiny.make_datamodule())
    return callback.run_path, [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]


def contents(path: Path) -> dict[str, object]:
    """Everything analyzed in a run file: per layer every metric, status and singular values."""
    with open_run(path) as run:
        steps = run.snapshots()["step"].tolist()
        statuses = run.snapshots()["status"].tolist()
        layers = {}
        for name in sorted(run.layers):
            svals = []
            for step in steps:
                try:
                    svals.append(run.svals(name, step=step))
                except KeyError:  # a change layer has no row at the first snapshot
                    svals.append(None)
            layers[name] = (run.metrics(name), run.layer_status(name), svals)
    return {"steps": steps, "statuses": statuses, "layers": layers}


def assert_identical(found: dict, expected: dict) -> None:
    assert found["steps"] == expected["steps"] and found["statuses"] == expected["statuses"]
    assert found["layers"].keys() == expected["layers"].keys()
    for name, (metrics, statuses, svals) in expected["layers"].items():
        other_metrics, other_statuses, other_svals = found["layers"][name]
        assert other_statuses == statuses, name
        for metric, values in metrics.items():  # NaN in the same places counts as equal
            np.testing.assert_array_equal(other_metrics[metric], values, err_msg=f"{name} {metric}")
        for mine, theirs in zip(other_svals, svals, strict=True):
            assert (mine is None) == (theirs is None)
            if mine is not None:
                assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), name


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, tiny: types.SimpleNamespace) -> dict:
    path, caught = fit(tmp_path_factory.mktemp("process"), tiny)
    assert caught == []
    found = contents(path)
    assert len(found["steps"]) == EPOCHS + 1 and set(found["statuses"]) == {"analyzed"}
    assert any(name.endswith(".delta_previous") for name in found["layers"])
    return found


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_layers_analyzed_on_two_workers_give_the_same_run_file(
    tmp_path: Path, tiny: types.SimpleNamespace, single: dict, executor: str
) -> None:
    path, caught = fit(tmp_path, tiny, analysis_executor=executor, analysis_workers=2)
    assert caught == []
    assert_identical(contents(path), single)


def test_an_unreachable_scheduler_costs_one_warning_and_no_snapshot(
    tmp_path: Path, tiny: types.SimpleNamespace, single: dict
) -> None:
    path, caught = fit(tmp_path, tiny, analysis_executor="dask://127.0.0.1:1")
    assert len(caught) == 1
    assert "analysis_executor='dask://127.0.0.1:1' cannot start" in caught[0]
    assert "tcp://127.0.0.1:1" in caught[0]
    assert_identical(contents(path), single)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"analysis_executor": "threads"},
            r"analysis_executor='threads'.*'processes', 'dask' or 'dask://HOST:PORT'",
        ),
        ({"analysis_executor": "dask://nohost"}, r"analysis_executor='dask://nohost'"),
        ({"analysis_executor": "processes", "analysis_workers": 0}, r"analysis_workers=0.*>= 1"),
        ({"analysis_executor": "dask", "analysis_workers": 1.5}, r"analysis_workers=1.5"),
        ({"analysis_workers": 2}, r"analysis_workers=2 with analysis_executor='process'"),
    ],
)
def test_invalid_executor_options_raise_naming_the_value(options: dict, match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        SpectralCallback(**options)
