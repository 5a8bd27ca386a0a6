"""LeNet-300-100 on scikit-learn's digits, trained with SpectralCallback: the model of Heitmann (2020).

Heitmann (2020) trains LeCun et al.'s LeNet-300-100 (fully connected 784-300-100-10, Gaussian Glorot
initialization, SGD with momentum 0.9, batch 64) on MNIST. Nothing may be downloaded here, so the
input is scikit-learn's 8x8 digits: a 64-300-100-10 network. Its first layer has 300 neurons in a
64-dimensional input space (MNIST's has them in 784 dimensions), so its rows cannot all be
orthogonal: the frame potential's minimum is ``n^2 / d``, not ``n``.

Every epoch's weights go into the run file (``SpectralCallback(save_weights=True)``), so the
studies read the trained layers, and their history, back with :func:`spectral_callbacks.open_run`.
The digits' 20% validation split is the held-out test set: training runs a fixed number of
epochs and nothing is selected on it.

References:
    J. N. Heitmann, "Sources of redundancy in neural networks", semester project, LTS4, EPFL
    (2020). Y. LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE 86(11)
    (1998). X. Glorot and Y. Bengio, "Understanding the difficulty of training deep feedforward
    neural networks", AISTATS (2010).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from experiments.models import Classifier, mlp

__all__ = [
    "HIDDEN",
    "LAYERS",
    "TrainedLeNet",
    "accuracy",
    "describe_training",
    "lenet_300_100",
    "train_lenet",
]

HIDDEN = (300, 100)
LR, MOMENTUM, BATCH_SIZE = 0.01, 0.9, 64
# The fully connected layers as SpectralCallback names them inside ``Classifier`` (first to last).
LAYERS = ("network.0", "network.2", "network.4")
LAYER_LABELS = dict(zip(LAYERS, ("fc1 (300x64)", "fc2 (100x300)", "fc3 (10x100)"), strict=True))


@dataclass(frozen=True)
class TrainedLeNet:
    """A trained network, its run file and the held-out examples.

    Attributes:
        network: the trained ``nn.Sequential`` (Linear, ReLU, Linear, ReLU, Linear).
        run_path: the run file with every epoch's weights and spectra.
        test_inputs: held-out inputs ``(n, 64)``.
        test_targets: their labels.
    """

    network: nn.Sequential
    run_path: Path
    test_inputs: torch.Tensor
    test_targets: torch.Tensor

    def accuracy(self, network: nn.Module | None = None) -> float:
        """Held-out accuracy of ``network`` (default: the trained one)."""
        return accuracy(self.network if network is None else network, self.test_inputs, self.test_targets)


def lenet_300_100(inputs: int = 64, classes: int = 10, seed: int = 0) -> nn.Sequential:
    """The ``inputs``-300-100-``classes`` ReLU network, Gaussian Glorot weights and zero biases."""
    generator = torch.Generator().manual_seed(seed)
    network = mlp(inputs, HIDDEN, classes)
    for layer in network:
        if isinstance(layer, nn.Linear):
            fan_out, fan_in = layer.weight.shape
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            with torch.no_grad():
                layer.weight.normal_(0.0, std, generator=generator)
                layer.bias.zero_()
    return network


def train_lenet(
    run_dir: str | Path,
    *,
    epochs: int,
    seed: int = 0,
    lr: float = LR,
    batch_size: int = BATCH_SIZE,
    overwrite: bool = False,
) -> TrainedLeNet:
    """Train LeNet-300-100 on the digits with SGD (momentum :data:`MOMENTUM`), recording every epoch.

    Args:
        run_dir: directory of the run file (``spectra.h5``); must not hold another run's file
            unless ``overwrite``.
        epochs: training epochs (the run file has epochs 0, the initialization, to ``epochs``).
        seed: seed of the initialization, the data split and the batch order.
        lr: SGD learning rate.
        batch_size: training batch size (Heitmann, 2020: 64).
        overwrite: delete a run file already in ``run_dir`` first (each run of a study trains anew).
    """
    import lightning.pytorch as pl

    from experiments.data import DigitsDataModule
    from spectral_callbacks import RUN_FILE_NAME, SpectralCallback

    if overwrite:
        (Path(run_dir) / RUN_FILE_NAME).unlink(missing_ok=True)
    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=batch_size, seed=seed)
    model = Classifier(lenet_300_100(seed=seed), lr=lr, momentum=MOMENTUM)
    callback = SpectralCallback(log_dir=run_dir, tensorboard=False, save_weights=True)
    with _quiet_lightning():
        trainer = pl.Trainer(
            max_epochs=epochs,
            callbacks=[callback],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=str(run_dir),
        )
        trainer.fit(model, data)
    inputs, targets = data.val_set.tensors
    return TrainedLeNet(model.network.eval(), Path(callback.run_path), inputs, targets)


def describe_training(epochs: int) -> str:
    """The training recipe of :func:`train_lenet`'s defaults, for the results."""
    return (
        f"{epochs} epochs of SGD (lr {LR:g}, momentum {MOMENTUM:g}, batch {BATCH_SIZE}) from a Gaussian "
        "Glorot initialization, with SpectralCallback saving every epoch's weights"
    )


def accuracy(network: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of ``inputs`` whose arg-max output is the target."""
    with torch.no_grad():
        return float((network(inputs).argmax(dim=1) == targets).float().mean())


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's banners (accelerators, tips, 'max_epochs reached') and warnings, silenced."""
    # rank_zero_info logs through whichever Lightning package was imported last
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
