"""Run files for the dashboard's tests, and its endpoints called in process (no server, no HTTP)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from run_files import CONFIG, PARAMETERS, append_snapshot, open_writer
from tensorboard.plugins import base_plugin
from werkzeug.test import Client
from werkzeug.wrappers import Response

from spectral_callbacks.dashboard.plugin import SpectraPlugin

Get = Callable[..., tuple[int, dict]]


def client_of(logdir: Path) -> Get:
    """``get(route, **parameters) -> (status, json)`` on a plugin over ``logdir``, without HTTP."""
    apps = SpectraPlugin(base_plugin.TBContext(logdir=str(logdir)), prepare=False).get_plugin_apps()

    def get(route: str, **parameters: object) -> tuple[int, dict]:
        response = Client(apps[route], Response).get(route, query_string=parameters)
        assert response.mimetype == "application/json"
        return response.status_code, json.loads(response.data)

    return get


def write_run(path: Path, *, seed: int, epochs: int = 3, hparams: dict | None = None) -> list[list]:
    """A closed run file of the default parameters, ``epochs + 1`` snapshots (epoch 0 is the
    initialization), and optionally Lightning's ``hparams.yaml`` beside it; returns each
    snapshot's analysis (the reference)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if hparams is not None:
        lines = [f"{key}: {value}\n" for key, value in hparams.items()]
        (path.parent / "hparams.yaml").write_text("".join(lines))
    rng = np.random.default_rng(seed)
    writer = open_writer(path, run_id=f"run-{seed}", config=CONFIG)
    spectra = []
    try:
        for epoch in range(epochs + 1):
            arrays = {spec.name: rng.standard_normal(spec.shape) for spec in PARAMETERS}
            spectra.append(append_snapshot(writer, epoch, 7 * epoch, arrays))
    finally:
        writer.close()
    return spectra
