"""SpectralCallback with the user's own Lightning loggers: where each run's file goes, and the
spectral scalars read back from each logger's own files.

Every test runs the same small script twice in one root, as a user re-running it would: each run
must get its own directory and run file, and the values a logger recorded must equal the run
file's at each snapshot's step. Model averages are recomputed here from the run file's per-layer
values and statuses (mean over the fitted layers, the last layer left out, as the README says).
"""

from __future__ import annotations

import csv
import math
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from logged_names import AVERAGED, LAYER_METRICS
from tensorboard_events import read_events

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run

MAX_EPOCHS = 2


def expected_scalars(run_path: Path) -> dict[int, dict[str, float]]:
    """Step -> {name: value} of every analyzed snapshot, from the run file (finite values only)."""
    with open_run(run_path) as run:
        steps = run.steps.tolist()
        layers = run.layers  # model order
        values = {layer: {m: run.metric(m, layer) for m in LAYER_METRICS} for layer in layers}
        statuses = {layer: [status for status, _ in run.layer_status(layer)] for layer in layers}
    expected: dict[int, dict[str, float]] = {}
    for i, step in enumerate(steps):
        scalars = {
            f"{metric}/{layer}": float(values[layer][metric][i])
            for layer in layers
            for metric in LAYER_METRICS
            if math.isfinite(values[layer][metric][i])
        }
        fitted = [layer for layer in layers if statuses[layer][i] in ("ok", "warning")]
        if len(fitted) > 1 and fitted[-1] == layers[-1]:
            fitted = fitted[:-1]
        for metric in AVERAGED:
            finite = [values[layer][metric][i] for layer in fitted if math.isfinite(values[layer][metric][i])]
            if finite:
                scalars[f"model/{metric}"] = float(np.mean(finite))
        expected[step] = scalars
    return expected


def assert_same_scalars(logged: dict[int, dict[str, float]], run_path: Path) -> None:
    expected = expected_scalars(run_path)
    assert sorted(logged) == sorted(expected)  # one entry per snapshot, at the snapshot's step
    for step, scalars in expected.items():
        assert sorted(logged[step]) == sorted(scalars), step
        names = sorted(scalars)
        np.testing.assert_allclose(
            [logged[step][name] for name in names], [scalars[name] for name in names], rtol=1e-12, atol=0
        )
    assert any(name.startswith("model/") for name in expected[0])
    assert {f"alpha/{layer}" for layer in ("conv", "fc1", "fc2", "head")} <= set(expected[0])


def fit_twice(
    root: Path, tiny: types.SimpleNamespace, make_logger: Callable[[], Any]
) -> list[types.SimpleNamespace]:
    """The same script twice in ``root``: a new trainer, logger and callback each time."""
    runs = []
    for seed in (0, 1):
        callback = SpectralCallback()
        logger = make_logger()
        trainer = tiny.make_trainer(root, [callback], max_epochs=MAX_EPOCHS, logger=logger)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(tiny.make_model(seed=seed), datamodule=tiny.make_datamodule())
        assert [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)] == []
        with open_run(callback.run_path) as run:
            assert run.epochs.tolist() == list(range(MAX_EPOCHS + 1))
        runs.append(types.SimpleNamespace(callback=callback, logger=logger, trainer=trainer))
    return runs


def assert_callback_metrics_hold_the_last_snapshot(run: types.SimpleNamespace) -> None:
    """The final snapshot's values, logged after the worker drained at train end."""
    expected = expected_scalars(run.callback.run_path)
    last = expected[max(expected)]
    metrics = run.trainer.callback_metrics
    names = sorted(last)
    # callback_metrics holds float32 tensors
    got = [float(metrics[name]) for name in names]
    np.testing.assert_allclose(got, [last[name] for name in names], rtol=1e-6)


def csv_scalars(path: Path) -> dict[int, dict[str, float]]:
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    logged: dict[int, dict[str, float]] = {}
    for row in rows:
        values = {name: float(value) for name, value in row.items() if "/" in name and value != ""}
        if values:
            assert int(row["step"]) not in logged  # each snapshot logged once
            logged[int(row["step"])] = values
    return logged


def test_csv_logger_runs_get_their_own_version_and_metrics_csv(tmp_path: Path, tiny) -> None:
    runs = fit_twice(tmp_path, tiny, lambda: CSVLogger(save_dir=str(tmp_path)))
    for version, run in enumerate(runs):
        log_dir = tmp_path / "lightning_logs" / f"version_{version}"
        assert Path(run.logger.log_dir) == log_dir
        assert run.callback.run_path == log_dir / "spectra.h5"
        assert_same_scalars(csv_scalars(log_dir / "metrics.csv"), run.callback.run_path)
        assert_callback_metrics_hold_the_last_snapshot(run)


def test_operator_spectral_norms_reach_the_logger_too(tmp_path: Path, tiny) -> None:
    callback = SpectralCallback(operators={"conv": (8, 8)})
    logger = CSVLogger(save_dir=str(tmp_path))
    tiny.make_trainer(tmp_path, [callback], max_epochs=MAX_EPOCHS, logger=logger).fit(
        tiny.make_model(), datamodule=tiny.make_datamodule()
    )
    logged = csv_scalars(Path(logger.log_dir) / "metrics.csv")
    with open_run(callback.run_path) as run:
        index = run.snapshots("analyzed")
        step_of = dict(zip(index["epoch"].tolist(), index["step"].tolist(), strict=True))
        epochs = run.operator_epochs("conv").tolist()
        norms = run.operator_spectral_norm("conv")
    assert epochs == list(range(MAX_EPOCHS + 1))
    got = [logged[step_of[epoch]].pop("operator_spectral_norm/conv") for epoch in epochs]
    np.testing.assert_allclose(got, norms, rtol=1e-12)
    assert_same_scalars(logged, callback.run_path)  # and nothing else besides the layers' scalars


def test_without_logger_runs_get_new_versions_under_default_root_dir(tmp_path: Path, tiny) -> None:
    runs = fit_twice(tmp_path, tiny, lambda: False)
    assert [run.callback.run_path for run in runs] == [
        tmp_path / "spectral_logs" / f"version_{version}" / "spectra.h5" for version in (0, 1)
    ]
    for run in runs:
        assert run.trainer.loggers == []
        assert_callback_metrics_hold_the_last_snapshot(run)


def test_mlflow_logger_gets_every_snapshot_at_its_step(
    tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    # mlflow 3 refuses its file store unless asked (a database store needs SQLAlchemy, which
    # mlflow-skinny lacks); the file store is what a test can use without a server
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    runs = fit_twice(tmp_path / "root", tiny, lambda: MLFlowLogger(experiment_name="tiny", tracking_uri=uri))
    assert [run.callback.run_path for run in runs] == [
        tmp_path / "root" / "spectral_logs" / f"version_{version}" / "spectra.h5" for version in (0, 1)
    ]
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    assert runs[0].logger.run_id != runs[1].logger.run_id
    for run in runs:
        names = client.get_run(run.logger.run_id).data.metrics.keys()
        logged: dict[int, dict[str, float]] = {}
        for name in names:
            for point in client.get_metric_history(run.logger.run_id, name):
                logged.setdefault(point.step, {})[name] = point.value
        assert_same_scalars(logged, run.callback.run_path)


def spectral_scalars_in(directory: Path) -> dict[str, dict[int, float]]:
    """Tag -> {step: value} of the scalars with a '/' in every event file of ``directory``."""
    found: dict[str, dict[int, float]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        events = read_events(path)
        for tag in events.Tags()["scalars"]:
            if "/" in tag:
                found.setdefault(tag, {}).update({event.step: event.value for event in events.Scalars(tag)})
    return found


def test_resumed_run_writes_its_events_next_to_its_run_file(tmp_path: Path, tiny) -> None:
    checkpoints = tmp_path / "checkpoints"
    first = SpectralCallback()
    trainer = tiny.make_trainer(
        tmp_path, [first, ModelCheckpoint(dirpath=checkpoints, save_last=True)], max_epochs=2,
        logger=TensorBoardLogger(save_dir=str(tmp_path), name="tb"), enable_checkpointing=True,
    )  # fmt: skip
    trainer.fit(tiny.make_model(), datamodule=tiny.make_datamodule())
    version_0, version_1 = tmp_path / "tb" / "version_0", tmp_path / "tb" / "version_1"
    assert first.run_path == version_0 / "spectra.h5"

    resumed = SpectralCallback()
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")  # a new version: version_1
    trainer = tiny.make_trainer(
        tmp_path, [resumed, ModelCheckpoint(dirpath=checkpoints, save_last=True)], max_epochs=3,
        logger=logger, enable_checkpointing=True,
    )  # fmt: skip
    last = str(checkpoints / "last.ckpt")
    trainer.fit(tiny.make_model(), datamodule=tiny.make_datamodule(), ckpt_path=last)
    assert Path(logger.log_dir) == version_1
    assert resumed.run_path == first.run_path
    assert resumed.run_dir == version_0
    steps = [epoch * tiny.NUM_BATCHES for epoch in range(4)]
    with open_run(resumed.run_path) as run:
        assert run.steps.tolist() == steps
        alpha = run.metric("alpha", "fc1")
    events = spectral_scalars_in(version_0)
    assert sorted(events["alpha/fc1"]) == steps  # the resumed epoch's events too
    np.testing.assert_allclose([events["alpha/fc1"][step] for step in steps], alpha, rtol=1e-6)
    # the logger of the resumed fit gets no second copy: its TensorBoard run has no spectral tags
    assert not list(version_1.glob("*.spectral"))
    assert spectral_scalars_in(version_1) == {}


def test_tensorboard_logger_gets_the_scalars_when_the_worker_writes_no_events(tmp_path: Path, tiny) -> None:
    callback = SpectralCallback(tensorboard=False)
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    tiny.make_trainer(tmp_path, [callback], max_epochs=MAX_EPOCHS, logger=logger).fit(
        tiny.make_model(), datamodule=tiny.make_datamodule()
    )
    log_dir = Path(logger.log_dir)
    assert callback.run_path == log_dir / "spectra.h5"
    assert not list(log_dir.glob("*.spectral"))  # no events of the worker's own
    by_tag = spectral_scalars_in(log_dir)
    logged: dict[int, dict[str, float]] = {}
    for tag, points in by_tag.items():
        for step, value in points.items():
            logged.setdefault(step, {})[tag] = value
    expected = expected_scalars(callback.run_path)
    assert sorted(logged) == sorted(expected)
    for step, scalars in expected.items():
        assert sorted(logged[step]) == sorted(scalars)
        names = sorted(scalars)
        # TensorBoard stores float32
        np.testing.assert_allclose([logged[step][n] for n in names], [scalars[n] for n in names], rtol=1e-6)


def test_new_version_dir_follows_the_highest_version(tmp_path: Path) -> None:
    from spectral_callbacks.live.session import new_version_dir

    assert new_version_dir(tmp_path / "spectral_logs") == tmp_path / "spectral_logs" / "version_0"
    (tmp_path / "spectral_logs" / "version_7").mkdir()
    (tmp_path / "spectral_logs" / "version_9.txt").write_text("")  # not a version
    (tmp_path / "spectral_logs" / "version_x").mkdir()
    created = new_version_dir(tmp_path / "spectral_logs")
    assert created == tmp_path / "spectral_logs" / "version_8"
    assert created.is_dir()
