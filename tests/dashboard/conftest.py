"""Log directories for the dashboard's tests, written through the store API."""

from __future__ import annotations

from pathlib import Path

import pytest
from dashboard_client import Get, client_of, write_run


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
