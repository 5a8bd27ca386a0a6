"""Layers with bad numbers never stop training or the analysis, and never report a made-up number.

A model with an all-zero layer, a rank-1 layer, a 1xN layer, a layer over ``max_evals`` and a
layer that turns NaN mid-training: each is recorded with its reason; every metric that could not
be computed is NaN in the run file and absent from TensorBoard.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard_events import read_events
from torch import nn
from torch.nn import functional

from spectral_callbacks import SpectralCallback, SpectralWarning, open_run

MAX_EVALS = 20


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, tiny: Any) -> dict:
    pl = tiny.lightning_package()
    root = tmp_path_factory.mktemp("bad-numbers")

    class BadNet(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.good = nn.Linear(16, 24)
            self.zero, self.rank1 = nn.Linear(24, 16), nn.Linear(24, 16)
            self.turns_nan = nn.Linear(24, 16)  # outside the forward pass: the NaN stays in it
            self.row = nn.Linear(16, 1)  # a 1x16 matrix: one eigenvalue
            self.huge = nn.Linear(24, 32)  # 24 eigenvalues > max_evals; outside the forward pass
            with torch.no_grad():
                self.zero.weight.zero_()
                self.rank1.weight.copy_(torch.outer(torch.randn(16), torch.randn(24)))
            for layer in (self.zero, self.rank1):
                layer.weight.requires_grad_(False)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x = functional.relu(self.good(batch[0]))
            x = self.zero(x) + self.rank1(x)
            return self.row(x).square().mean()

        def on_train_epoch_end(self) -> None:
            if self.current_epoch == 1:  # the snapshot after epoch 2 sees NaN in one layer
                with torch.no_grad():
                    self.turns_nan.weight[0, 0] = float("nan")

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 16)), batch_size=8)
    callback = SpectralCallback(log_dir=root, max_evals=MAX_EVALS)
    trainer = tiny.make_trainer(root, [callback], max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(BadNet(), data)
    events = read_events(root)
    return {
        "path": callback.run_path,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, SpectralWarning)],
        "tags": set(events.Tags()["scalars"]) | set(events.Tags()["histograms"]),
        "trainer": trainer,
    }


def test_training_finishes_and_every_snapshot_is_analyzed(bad_run: dict) -> None:
    assert bad_run["trainer"].current_epoch == 3
    with open_run(bad_run["path"]) as run:
        assert run.epochs.tolist() == [0, 1, 2, 3]
        assert run.layers == ["good", "zero", "rank1", "turns_nan"]


def test_too_small_and_too_large_layers_are_recorded_with_their_reason(bad_run: dict) -> None:
    with open_run(bad_run["path"]) as run:
        skipped = json.loads(run.attributes["skipped_parameters"])
        assert "row" not in run.parameters or "row" in skipped
    assert "1 eigenvalues < min_evals=8" in skipped["row"]
    assert f"24 eigenvalues per matrix > max_evals={MAX_EVALS}" in skipped["huge"]
    assert any("huge is not captured" in text and "max_evals" in text for text in bad_run["warnings"])


def test_zero_layer_is_skipped_with_nan_metrics(bad_run: dict) -> None:
    with open_run(bad_run["path"]) as run:
        statuses = run.layer_status("zero")
        assert {status for status, _ in statuses} == {"skipped"}
        assert "all zeros" in statuses[0][1]
        for name, values in run.metrics("zero").items():
            if name not in ("N", "M", "Q", "num_evals"):
                assert np.isnan(values).all(), name  # rank_loss too: not a made-up 0
    assert not any(tag.endswith("/zero") for tag in bad_run["tags"])


def test_rank_one_layer_has_its_rank_loss_but_no_alpha(bad_run: dict) -> None:
    with open_run(bad_run["path"]) as run:
        assert {status for status, _ in run.layer_status("rank1")} == {"no-fit"}
        assert (run.metric("rank_loss", "rank1") == 15).all()
        assert np.isnan(run.metric("alpha", "rank1")).all()
        assert np.isfinite(run.metric("log_norm", "rank1")).all()
    assert "rank_loss/rank1" in bad_run["tags"] and "alpha/rank1" not in bad_run["tags"]


def test_nan_weights_are_skipped_from_that_snapshot_on(bad_run: dict) -> None:
    with open_run(bad_run["path"]) as run:
        statuses = [status for status, _ in run.layer_status("turns_nan")]
        first = statuses.index("skipped")  # the NaN appears after epoch 2 (before or after its snapshot)
        assert first >= 2 and set(statuses[first:]) == {"skipped"} and "skipped" not in statuses[:first]
        assert math.isnan(run.metric("log_norm", "turns_nan")[-1])
        assert math.isfinite(run.metric("log_norm", "good")[-1])  # the other layers go on
    nan_warnings = [text for text in bad_run["warnings"] if "NaN" in text]
    assert len(nan_warnings) == 1, bad_run["warnings"]
