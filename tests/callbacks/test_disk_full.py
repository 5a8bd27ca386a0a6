"""A full disk: training goes on, the user hears once, and the snapshots written before are intact.

The run goes to a 3 MiB tmpfs mounted for the test (needs root and mount permission: skipped
otherwise; tests/test_snapshot_analysis.py injects ENOSPC at the h5py layer everywhere).
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_keeps_training_and_earlier_snapshots(small_disk: Path, tmp_path: Path, tiny: Any) -> None:
    recorder = tiny.WeightRecorder()
    # TinyNet's weights are ~70 KiB a snapshot in float64: the 3 MiB disk is full long before epoch 60
    callback = SpectralCallback(log_dir=small_disk, weights_dtype="float64", tensorboard=False)
    trainer = tiny.make_trainer(tmp_path, [recorder, callback], max_epochs=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny.make_model(), tiny.make_loader())
    assert trainer.current_epoch == 60  # training went on to the end

    messages = [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)]
    full = [text for text in messages if "No space left" in text or "cannot write" in text]
    assert len(full) == 1, messages  # said once, with the cause
    assert "intact" in full[0]

    with open_run(small_disk) as run:
        epochs = run.epochs.tolist()
        assert 3 <= len(epochs) < 61, epochs  # some snapshots written, then the disk was full
        assert epochs == list(range(len(epochs)))
        for epoch in epochs:
            np.testing.assert_array_equal(run.weights("fc1", epoch), recorder.at_epoch[epoch]["fc1"])
            assert np.isfinite(run.metric("log_norm", "fc1")[epoch])
