"""Small classifiers as Lightning modules: an MLP and a CNN, trained by SGD with optional weight decay."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

__all__ = ["Classifier", "mlp", "small_cnn"]


def mlp(inputs: int = 64, hidden: tuple[int, ...] = (256, 128), classes: int = 10) -> nn.Sequential:
    """A ReLU multilayer perceptron."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, classes))


def small_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 128, classes: int = 10) -> nn.Sequential:
    """Two 3x3 conv layers on 1x8x8 images, then two fully connected layers."""
    first, second = channels
    return nn.Sequential(
        nn.Conv2d(1, first, 3, padding=1), nn.ReLU(),
        nn.Conv2d(first, second, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(second * 16, hidden), nn.ReLU(), nn.Linear(hidden, classes),
    )  # fmt: skip


class Classifier(pl.LightningModule):
    """Cross-entropy training of any network, logging loss and accuracy.

    Args:
        network: the model.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty on all weights (SGD's weight decay).
    """

    def __init__(
        self, network: nn.Module, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0
    ):
        super().__init__()
        self.network = network
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = nn.functional.cross_entropy(self(inputs), targets)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        logits = self(inputs)
        self.log("val/loss", nn.functional.cross_entropy(logits, targets))
        self.log("val/accuracy", (logits.argmax(dim=1) == targets).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
