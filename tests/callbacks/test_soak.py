"""A long run: 200 epochs with a snapshot each; memory of training and of the worker stays flat.

Prints the resident set sizes (run with ``pytest -s`` to see them; docs/reliability.md quotes them).
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path
from typing import Any

import pytest

from spectral_callbacks import SpectralCallback, open_run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

EPOCHS = 200
WARM_UP = 20  # allocator pools and imports settle in the first epochs
MAX_GROWTH_MB = 40.0


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_200_epochs_memory_stays_flat(tmp_path: Path, tiny: Any) -> None:
    pl = tiny.lightning_package()
    samples: dict[str, dict[int, float]] = {"training": {}, "worker": {}}

    class MemoryProbe(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            epoch = trainer.current_epoch + 1
            if epoch in (WARM_UP, EPOCHS):
                workers = [p for p in multiprocessing.active_children() if p.name == "spectral-worker"]
                samples["training"][epoch] = rss_mb()
                samples["worker"][epoch] = rss_mb(workers[0].pid)

    spectral = SpectralCallback(log_dir=tmp_path / "spectral")
    trainer = tiny.make_trainer(tmp_path, [spectral, MemoryProbe()], max_epochs=EPOCHS)
    trainer.fit(tiny.make_model(), tiny.make_loader(num_batches=1))  # one step per epoch: a short soak

    with open_run(spectral.run_path) as run:
        assert run.epochs.tolist() == list(range(EPOCHS + 1))
    for process, rss in samples.items():
        growth = rss[EPOCHS] - rss[WARM_UP]
        print(f"soak {process}: RSS {rss[WARM_UP]:.1f} MB at epoch {WARM_UP}, "
              f"{rss[EPOCHS]:.1f} MB at epoch {EPOCHS} ({growth:+.1f} MB)")  # fmt: skip
        assert growth < MAX_GROWTH_MB, (process, rss)
