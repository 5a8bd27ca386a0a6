"""Long runs: 200 epochs with a snapshot each, and 60 of a model with 8 MB snapshots; memory of
training and of the worker stays flat, to within half a snapshot for the large one.

Prints the resident set sizes (run with ``pytest -s`` to see them; docs/reliability.md quotes them).
"""

from __future__ import annotations

import ctypes
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


def trim_heap() -> None:
    """Return the memory glibc's allocator keeps after frees to the system (``malloc_trim``), so
    that resident memory measures what the process holds."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)


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


SNAPSHOT_MB = 8.0  # two 1024x1024 float32 layers: 240 times TinyNet's weights
LARGE_EPOCHS = 60
LARGE_WARM_UP = 10
MAX_LARGE_GROWTH_MB = SNAPSHOT_MB / 2  # one leaked snapshot would pass it


def floor_of(rss: dict[int, float], epochs: range) -> float:
    """The second-lowest resident size of some epochs: a snapshot in flight at a sample is there
    for a moment and a leaked one for good, so a floor sees only the leaked one; taking the
    second-lowest keeps one stray low sample (the allocator returning a free chunk to the system
    just then) from setting the floor by itself."""
    return sorted(rss[epoch] for epoch in epochs)[1]


def test_a_large_model_keeps_no_snapshot_it_should_not(tmp_path: Path, tiny: Any) -> None:
    """Snapshots of 8 MB: after the first epochs (the previous snapshot, kept for the movement
    metrics, and the allocator's pools), neither process's lowest memory of ten epochs may grow by
    half a snapshot."""
    import torch
    from torch import nn
    from torch.nn import functional

    pl = tiny.lightning_package()
    samples: dict[str, dict[int, float]] = {"training": {}, "worker": {}}

    class Wide(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(1024, 1024, bias=False), nn.Linear(1024, 1024, bias=False)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return functional.mse_loss(self.fc2(torch.relu(self.fc1(batch[0]))), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class MemoryProbe(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            epoch = trainer.current_epoch + 1
            if epoch >= LARGE_WARM_UP:
                workers = [p for p in multiprocessing.active_children() if p.name == "spectral-worker"]
                trim_heap()  # freed copies back to the system: what stays is what is held
                samples["training"][epoch] = rss_mb()
                samples["worker"][epoch] = rss_mb(workers[0].pid)

    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(4, 1024, generator=generator), torch.randn(4, 1024, generator=generator)
    )
    torch.manual_seed(0)
    # a queue of one: the worker keeps pace, so the queue's own snapshots are not counted as growth
    spectral = SpectralCallback(
        log_dir=tmp_path / "spectral", queue_size=1, save_weights=False, tensorboard=False
    )
    trainer = tiny.make_trainer(tmp_path, [spectral, MemoryProbe()], max_epochs=LARGE_EPOCHS)
    trainer.fit(Wide(), torch.utils.data.DataLoader(data, batch_size=4))

    with open_run(spectral.run_path) as run:
        assert run.epochs.tolist() == list(range(LARGE_EPOCHS + 1))
    for process, rss in samples.items():
        early = floor_of(rss, range(LARGE_WARM_UP, LARGE_WARM_UP + 10))
        late = floor_of(rss, range(LARGE_EPOCHS - 9, LARGE_EPOCHS + 1))
        print(f"soak (8 MB snapshots) {process}: RSS floor {early:.1f} MB in epochs {LARGE_WARM_UP}-"
              f"{LARGE_WARM_UP + 9}, {late:.1f} MB in epochs {LARGE_EPOCHS - 9}-{LARGE_EPOCHS} "
              f"({late - early:+.1f} MB)")  # fmt: skip
        assert late - early < MAX_LARGE_GROWTH_MB, (process, rss)
