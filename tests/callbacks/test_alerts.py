"""Spectral alerts in training: strong weight decay collapses the layers' spectra, the monitor
says so (a warning, a TensorBoard text entry, a row of the run file) and stops training; the same
training without weight decay raises no rank-collapse alert.

The alpha rule is off in the collapse run: on this tiny net it fires within two epochs too, and
its stop would end the run before the collapse could be seen."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard_events import read_events

from spectral_callbacks import SpectralCallback, SpectralMonitor, SpectralWarning, open_run

MAX_EPOCHS = 25


def fit(
    root: Path, tiny: types.SimpleNamespace, weight_decay: float, monitor: SpectralMonitor, epochs: int
) -> types.SimpleNamespace:
    model = tiny.make_model(lr=0.2)
    model.configure_optimizers = lambda: torch.optim.SGD(
        model.parameters(), lr=0.2, weight_decay=weight_decay
    )
    # a queue of one snapshot: training waits for the worker, so an alert arrives within epochs
    callback = SpectralCallback(log_dir=root, monitor=monitor, queue_size=1)
    trainer = tiny.make_trainer(root, [callback], max_epochs=epochs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=tiny.make_datamodule())
    spectral = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    with open_run(callback.run_path) as run:
        alerts, last_epoch = run.alerts(), int(run.snapshots()["epoch"][-1])
    return types.SimpleNamespace(
        trainer=trainer, warnings=spectral, alerts=alerts, last_epoch=last_epoch, run_dir=callback.run_dir
    )


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory: pytest.TempPathFactory, tiny: types.SimpleNamespace) -> types.SimpleNamespace:
    monitor = SpectralMonitor(alpha_range=None, stop=True)
    return fit(
        tmp_path_factory.mktemp("collapse"), tiny, weight_decay=4.0, monitor=monitor, epochs=MAX_EPOCHS
    )


def test_rank_collapse_is_reported_with_layer_epoch_metric_and_value(collapsed) -> None:
    rank_alerts = [alert for alert in collapsed.alerts if alert["rule"] == "rank_collapse"]
    assert rank_alerts, collapsed.alerts
    first = rank_alerts[0]
    assert first["metric"] in ("rank_loss", "lambda_min") and first["epoch"] >= 1
    text = f"rank_collapse in layer {first['layer']} at epoch {first['epoch']}"
    assert any(text in message and first["metric"] in message for message in collapsed.warnings), (
        collapsed.warnings
    )


def test_the_alert_stops_training_early(collapsed) -> None:
    first_epoch = min(alert["epoch"] for alert in collapsed.alerts)
    assert collapsed.trainer.should_stop
    assert collapsed.trainer.current_epoch < MAX_EPOCHS - 1
    # the stop follows the alert by the queue (one snapshot) and the hand-over of results
    assert collapsed.last_epoch <= first_epoch + 4


def test_each_alert_is_a_tensorboard_text_entry(collapsed) -> None:
    events = read_events(collapsed.run_dir)
    assert "alerts/text_summary" in events.Tags()["tensors"]
    texts = [event.tensor_proto.string_val[0].decode() for event in events.Tensors("alerts/text_summary")]
    assert len(texts) == len(collapsed.alerts)
    assert all(alert["layer"] in text for alert, text in zip(collapsed.alerts, texts, strict=True))


def test_without_weight_decay_no_rank_collapse_is_reported(
    tmp_path: Path, tiny: types.SimpleNamespace
) -> None:
    healthy = fit(tmp_path, tiny, weight_decay=0.0, monitor=SpectralMonitor(), epochs=6)
    assert [alert for alert in healthy.alerts if alert["rule"] == "rank_collapse"] == []
