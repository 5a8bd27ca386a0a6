"""Log directories for the dashboard's tests, written through the store API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dashboard_client import Get, client_of
from run_files import CONFIG, PARAMETERS, append_snapshot, open_writer


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


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """Two runs of a weight-decay sweep, as Lightning's loggers lay them out, and a foreign file."""
    root = tmp_path / "logs"
    for seed, decay in enumerate((0.0001, 0.01)):
        path = root / f"wd_{decay}" / "version_0" / "spectra.h5"
        write_run(path, seed=seed, hparams={"weight_decay": decay})
    (root / "checkpoint.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)  # not HDF5 inside
    return root


@pytest.fixture
def get(logdir: Path) -> Get:
    return client_of(logdir)
