"""Tiny Lightning models, data and trainers for the end-to-end tests of ``SpectralCallback``.

Every helper takes the Lightning package (``lightning.pytorch`` or ``pytorch_lightning``) so the
same model runs under either ``Trainer``. The model is small enough that a fit takes well under a
second; the spawned analysis worker (2-4 s to start) dominates, so tests share runs where they can.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from tiny_layout import BATCH_SIZE, NUM_BATCHES, NUM_CLASSES, TINY_LAYERS
from torch import nn
from torch.nn import functional

AUX_LAYER = ("aux", (12, 12))  # optional layer outside the forward pass: never updated


def lightning_package(name: str = "lightning.pytorch") -> types.ModuleType:
    return importlib.import_module(name)


_MODEL_CLASSES: dict[str, type] = {}


def tiny_model_class(package: str = "lightning.pytorch") -> type:
    """``TinyNet`` deriving from ``<package>.LightningModule`` (one class per package)."""
    if package in _MODEL_CLASSES:
        return _MODEL_CLASSES[package]
    pl = lightning_package(package)

    class TinyNet(pl.LightningModule):
        """Conv2d on 3x8x8 inputs, then three Linear layers; SGD so every step changes the weights."""

        def __init__(self, lr: float = 0.05, aux: bool = False, lazy: bool = False):
            super().__init__()
            self.lr = lr
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc1 = nn.LazyLinear(16) if lazy else nn.Linear(8 * 8 * 8, 16)
            self.fc2 = nn.Linear(16, 16)
            self.head = nn.Linear(16, NUM_CLASSES)
            self.norm = nn.BatchNorm1d(16)  # not analyzable: never captured
            if aux:
                self.aux = nn.Linear(*reversed(AUX_LAYER[1]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = functional.relu(self.conv(x)).flatten(1)
            x = functional.relu(self.norm(self.fc1(x)))
            x = functional.relu(self.fc2(x))
            return self.head(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return functional.cross_entropy(self(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    TinyNet.__qualname__ = f"TinyNet[{package}]"
    _MODEL_CLASSES[package] = TinyNet
    return TinyNet


def make_model(package: str = "lightning.pytorch", seed: int = 0, **kwargs: Any) -> Any:
    torch.manual_seed(seed)
    return tiny_model_class(package)(**kwargs)


def make_loader(num_batches: int = NUM_BATCHES, seed: int = 0) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    size = num_batches * BATCH_SIZE
    x = torch.randn(size, 3, 8, 8, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=False, num_workers=0)


def make_datamodule(package: str = "lightning.pytorch", num_batches: int = NUM_BATCHES) -> Any:
    pl = lightning_package(package)

    class TinyData(pl.LightningDataModule):
        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return make_loader(num_batches)

    return TinyData()


def make_trainer(
    root: Any,
    callbacks: list[Any],
    *,
    package: str = "lightning.pytorch",
    max_epochs: int = 2,
    logger: Any = False,
    **kwargs: Any,
) -> Any:
    pl = lightning_package(package)
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        default_root_dir=str(root),
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=logger,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        **kwargs,
    )


def weights_of(module: Any) -> dict[str, np.ndarray]:
    """Copies of the analyzable weights of TinyNet, by layer name (independent of the capture code)."""
    names = [*TINY_LAYERS, AUX_LAYER[0]]
    return {
        name: getattr(module, name).weight.detach().cpu().numpy().copy()
        for name in names
        if hasattr(module, name) and not isinstance(getattr(module, name).weight, nn.UninitializedParameter)
    }


_CALLBACK_BASES = tuple(
    lightning_package(name).Callback for name in ("lightning.pytorch", "pytorch_lightning")
)


class WeightRecorder(*_CALLBACK_BASES):
    """Records the weights where SpectralCallback should snapshot them: by global step and epoch.

    ``at_epoch[e]`` holds the weights after ``e`` epochs (0: the initialization); ``at_step[s]``
    after ``s`` optimizer steps.
    """

    def __init__(self) -> None:
        super().__init__()
        self.at_step: dict[int, dict[str, np.ndarray]] = {}
        self.at_epoch: dict[int, dict[str, np.ndarray]] = {}

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step == 0 and not any(
            isinstance(p, nn.UninitializedParameter) for p in pl_module.parameters()
        ):
            self.at_step[0] = self.at_epoch[0] = weights_of(pl_module)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if trainer.global_step == 0 and 0 not in self.at_step:  # lazy layers are materialized now
            self.at_step[0] = self.at_epoch[0] = weights_of(pl_module)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.at_step[trainer.global_step] = weights_of(pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.at_epoch[trainer.current_epoch + 1] = weights_of(pl_module)


@pytest.fixture(scope="session")
def tiny() -> types.SimpleNamespace:
    """The helpers of this module, for tests and module-scoped fixtures."""
    return types.SimpleNamespace(
        LAYERS=TINY_LAYERS,
        NUM_BATCHES=NUM_BATCHES,
        make_model=make_model,
        make_loader=make_loader,
        make_datamodule=make_datamodule,
        make_trainer=make_trainer,
        weights_of=weights_of,
        WeightRecorder=WeightRecorder,
        lightning_package=lightning_package,
    )


@pytest.fixture(autouse=True)
def _quiet_lightning_data_warnings() -> None:
    """Lightning's advice about DataLoader workers is noise for these tiny runs."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*smaller than the logging.*")


class PoolResizes(list):
    """The sizes a test's 2-thread pool was set to, in order."""

    def lent_and_given_back(self) -> bool:
        """One thread lent at least once, and back at the end: 1, 2 (1, 2 ...: a worker quick
        enough to catch up during the fit gets the thread again at the next snapshot)."""
        return len(self) >= 2 and self == [1, 2] * (len(self) // 2)


@pytest.fixture
def torch_thread_resizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[PoolResizes]:
    """torch's intra-op pool set to 2 threads for the test, and every resize made meanwhile."""
    resizes = PoolResizes()
    original = torch.set_num_threads

    def recording_set_num_threads(count: int) -> None:
        resizes.append(count)
        original(count)

    monkeypatch.setattr(torch, "set_num_threads", recording_set_num_threads)
    threads_before = torch.get_num_threads()
    original(2)
    yield resizes
    original(threads_before)
