"""KerasSpectralCallback on the other Keras backends (jax; tensorflow when installed).

Keras picks its backend once per process, so each backend runs in a subprocess: one fit with two
callbacks (one per epoch, one every 3 batches), checked against the weights the model had at each
snapshot. On jax the training state lives outside the model's variables during an epoch, so this
also checks that a snapshot taken at a batch end sees the current weights. Neither torch nor
Lightning may be imported by the callback there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")

SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests_dir!r})
import keras
import keras_tiny as tiny
from spectral_callbacks import KerasSpectralCallback, analyze_matrix, open_run

assert keras.backend.backend() == {backend!r}, keras.backend.backend()
per_epoch = KerasSpectralCallback({log_dir!r} + "/epochs")
per_batch = KerasSpectralCallback({log_dir!r} + "/batches", every_n_batches=3, tensorboard=False)
recorder = tiny.WeightRecorder()
model = tiny.make_model()
tiny.fit(model, [per_epoch, per_batch, recorder], epochs=2)
result = {{"modules": sorted(m for m in ("torch", "lightning", "pytorch_lightning") if m in sys.modules)}}
for key, callback, recorded, by in (
    ("epochs", per_epoch, recorder.at_epoch, "epoch"), ("batches", per_batch, recorder.at_step, "step")
):
    with open_run(callback.run_path) as run:
        result[key] = {{"epochs": run.epochs.tolist(), "steps": run.steps.tolist(), "layers": run.layers,
                        "framework": str(run.attributes["framework"])}}
        for at in getattr(run, by + "s").tolist():
            for name in tiny.TINY_LAYERS:
                expected = recorded[at][name]
                np.testing.assert_array_equal(run.weights(name, **{{by: at}}), expected)
                alpha = run.metric("alpha", name)[list(getattr(run, by + "s")).index(at)]
                fit = analyze_matrix(expected, kind=tiny.KINDS[name])
                assert np.isclose(alpha, fit.alpha, rtol=1e-6, equal_nan=True), (name, at, alpha, fit.alpha)
print("RESULT " + json.dumps(result))
"""


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_fit_on_another_backend(tmp_path: Path, backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    script = SCRIPT.format(tests_dir=str(Path(__file__).parent), backend=backend, log_dir=str(tmp_path))
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["modules"] == []  # neither torch nor Lightning on this backend
    assert result["epochs"]["epochs"] == [0, 1, 2]
    assert result["epochs"]["steps"] == [0, 4, 8]
    assert result["batches"]["steps"] == [0, 3, 6]
    assert result["batches"]["epochs"] == [0, 0, 1]
    for run in ("epochs", "batches"):
        assert result[run]["layers"] == ["conv", "fc1", "fc2", "head"]
        assert result[run]["framework"] == "keras"
    assert any("tfevents" in path.name for path in (tmp_path / "epochs").iterdir())
