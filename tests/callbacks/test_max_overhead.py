"""``max_overhead``: a snapshot whose analysis is slow on purpose makes the callback space out
snapshots; every due snapshot is in the run index, analyzed or dropped with the reason; one
warning says what happened."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from threadpoolctl import threadpool_limits
from torch import nn

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run
from spectral_callbacks.analysis.model import analyze_weights

STEP_SECONDS = 0.05
BATCHES = 40
EPOCHS = 4  # 8 s of training: the worker starts (2-4 s) and measures a cost well before the end
FRACTION = 0.5


class SlowToAnalyze(LightningModule):
    """A small head that trains, and a 1200 x 1200 layer whose SVD takes a few tenths of a second
    of CPU per snapshot; each step sleeps, so training time is known."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 4)
        self.wide = nn.Linear(1200, 1200)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        time.sleep(STEP_SECONDS)
        x, y = batch
        return nn.functional.cross_entropy(self.head(x), y) + 0 * self.wide.weight.sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tiny, root: Path, callback: SpectralCallback) -> tuple[float, list[warnings.WarningMessage]]:
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(BATCHES * 4, 16, generator=generator),
        torch.randint(0, 4, (BATCHES * 4,), generator=generator),
    )
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    torch.manual_seed(0)
    trainer = tiny.make_trainer(root, [callback], max_epochs=EPOCHS)
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(SlowToAnalyze(), loader)
    return time.monotonic() - started, [w for w in caught if issubclass(w.category, SpectralWarning)]


def _analysis_seconds() -> float:
    """CPU seconds of one analysis of the wide layer in this process, on one BLAS thread."""
    weight = SlowToAnalyze().wide.weight.detach().numpy()
    with threadpool_limits(limits=1):
        started = time.process_time()
        analyze_weights([("wide", weight, "linear")], svd_threads=1)
        return time.process_time() - started


def test_a_slow_analysis_spaces_snapshots_out_and_lists_every_skipped_one(tmp_path: Path, tiny) -> None:
    callback = SpectralCallback(
        every_n_steps=1, max_overhead=FRACTION, log_dir=tmp_path / "spectral", tensorboard=False
    )
    fit_seconds, caught = _fit(tiny, tmp_path, callback)
    due = set(range(BATCHES * EPOCHS + 1))  # the initialization and every optimizer step
    with open_run(callback.run_path) as run:
        index = run.snapshots()
        analyzed = run.steps.tolist()
        dropped = {step: reason for _, step, reason in run.dropped}
    assert sorted(index["step"]) == sorted(due)  # every due snapshot has one row
    assert set(analyzed) | set(dropped) == due and not set(analyzed) & set(dropped)
    assert 0 in analyzed  # the first snapshot is always taken
    # the cadence adapts: snapshots go on being taken once the cost is known, within the budget
    # (each costs at least most of what the same analysis takes here, the first is free of it)
    assert len(analyzed) >= 2
    assert (len(analyzed) - 1) * 0.7 * _analysis_seconds() <= FRACTION * fit_seconds
    assert all(f"max_overhead={FRACTION:g}" in reason for reason in dropped.values())
    budget_warnings = [w for w in caught if "max_overhead" in str(w.message)]
    assert len(budget_warnings) == 1
    message = str(budget_warnings[0].message)
    assert "skipped" in message and "max_overhead=None" in message


def test_an_invalid_budget_is_refused_with_what_is_allowed() -> None:
    for value in (0, -0.1, "3%", True):
        with pytest.raises(Exception, match="max_overhead"):
            SpectralCallback(max_overhead=value)


def test_the_costs_of_a_fit_are_accounted_part_by_part(tmp_path: Path, tiny) -> None:
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    trainer = tiny.make_trainer(tmp_path, [callback], max_epochs=2)
    trainer.fit(tiny.make_model(), tiny.make_loader())
    costs = callback.costs
    assert (costs.taken, costs.skipped) == (3, 0)  # the initialization and two epochs
    assert costs.copy_seconds > 0 and costs.handover_seconds > 0 and costs.analysis_seconds > 0
    assert costs.lent_seconds >= 0
    assert "3 snapshot(s)" in costs.summary()
