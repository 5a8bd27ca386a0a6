"""SpectralMonitor with Keras: strong weight decay collapses the spectra, the alert arrives from
the analysis process and ``model.stop_training`` ends the fit early, as EarlyStopping would."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

import keras_tiny as tiny  # noqa: E402

from spectral_callbacks import KerasSpectralCallback, SpectralMonitor, SpectralWarning, open_run  # noqa: E402

EPOCHS = 25


def test_a_rank_collapse_alert_stops_the_fit(tmp_path: Path) -> None:
    model = tiny.make_model(lr=0.2)
    # decoupled weight decay: each step multiplies the weights by 1 - 0.2 * 4.5 = 0.1
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.2, weight_decay=4.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    monitor = SpectralMonitor(alpha_range=None, spectral_norm_growth=None, stop=True)
    callback = KerasSpectralCallback(tmp_path, monitor=monitor, queue_size=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = tiny.fit(model, [callback], epochs=EPOCHS)
    messages = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    assert any("rank_collapse in layer" in message for message in messages), messages
    assert len(history.epoch) < EPOCHS
    with open_run(callback.run_path) as run:
        assert {alert["rule"] for alert in run.alerts()} == {"rank_collapse"}
