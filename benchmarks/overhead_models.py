"""The models and synthetic data that ``bench_overhead.py`` trains: an MLP, ResNet-18, a Transformer.

Each workload is a Lightning module factory with its training (and optionally validation) data,
all generated here from a fixed seed: nothing is downloaded. ResNet-18 is written with torch alone
(He et al., 2016: the ImageNet stem, a 7x7 stride-2 convolution and a 3x3 max-pool, then basic
blocks 2-2-2-2 of widths 64-512), so that the benchmark needs neither torchvision nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLASSES = 10
MLP_BATCH = 64
Optimizer = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class Classifier(pl.LightningModule):
    """Cross-entropy training (and validation) of a network that maps a batch to class logits."""

    def __init__(self, net: nn.Module, optimizer: Optimizer) -> None:
        super().__init__()
        self.net = net
        self._optimizer = optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self.net(inputs), targets)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(inputs), targets))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._optimizer(list(self.parameters()))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (1x1 projection when the
    width or the resolution changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with the ImageNet stem; ``width`` is the first stage's (64 in the paper)."""

    def __init__(self, classes: int = CLASSES, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, inputs = [], width
        for stage in range(4):
            outputs, stride = width * 2**stage, 1 if stage == 0 else 2
            stages += [BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs, 1)]
            inputs = outputs
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(x))
        return self.head(features.mean(dim=(2, 3)))


class TransformerClassifier(nn.Module):
    """Token and position embeddings, ``torch.nn.TransformerEncoder``, mean pooling, a linear head."""

    def __init__(
        self, vocabulary: int, sequence: int, width: int, layers: int, heads: int, feedforward: int
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(sequence, width)
        layer = nn.TransformerEncoderLayer(width, heads, feedforward, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.encoder(self.tokens(tokens) + self.positions(positions))
        return self.head(hidden.mean(dim=1))


def mlp() -> nn.Module:
    """784 -> 1024 -> 256 -> 10 with ReLUs: 1.07M parameters."""
    return nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, CLASSES)
    )


@dataclass(frozen=True)
class Workload:
    """A model to train with and without the callback.

    Attributes:
        name: how the tables call it.
        model: the family (``mlp``, ``resnet18``, ``transformer``), which sets its targets.
        build: a new, freshly initialized Lightning module (seed it first for equal starts).
        train: the training batches (one epoch).
        val: validation batches, or ``None`` for no validation loop.
        description: size and shape, printed above the table.
    """

    name: str
    model: str
    build: Callable[[], pl.LightningModule]
    train: DataLoader
    val: DataLoader | None
    description: str


def mlp_workload(samples: int, validation: bool) -> Workload:
    """The MLP on ``samples`` Gaussian 784-vectors per epoch (60000: an MNIST-sized epoch), batch 64."""
    train, val = _loaders(lambda n, g: torch.randn(n, 784, generator=g), samples, MLP_BATCH, validation)
    return Workload(
        name=f"mlp {samples}{'+val' if validation else ''}",
        model="mlp",
        build=lambda: Classifier(mlp(), lambda params: torch.optim.SGD(params, lr=0.01)),
        train=train,
        val=val,
        description=f"MLP 784-1024-256-10, batch {MLP_BATCH}, {samples} samples per epoch",
    )


def resnet_workload(batches: int, batch: int, width: int, validation: bool) -> Workload:
    """ResNet-18 on ``batches`` batches of Gaussian 3x32x32 images; SGD with momentum."""
    train, val = _loaders(
        lambda n, g: torch.randn(n, 3, 32, 32, generator=g), batches * batch, batch, validation
    )
    return Workload(
        name=f"resnet18{'+val' if validation else ''}",
        model="resnet18",
        build=lambda: Classifier(
            ResNet18(width=width), lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)
        ),
        train=train,
        val=val,
        description=f"ResNet-18 (ImageNet stem, widths {width}-{8 * width}) on 3x32x32, "
        f"batch {batch}, {batches} batches per epoch",
    )


def transformer_workload(
    batches: int,
    batch: int,
    *,
    vocabulary: int,
    sequence: int,
    width: int,
    layers: int,
    heads: int,
    feedforward: int,
    validation: bool,
) -> Workload:
    """A Transformer encoder classifier on uniformly random token sequences; AdamW."""
    train, val = _loaders(
        lambda n, g: torch.randint(0, vocabulary, (n, sequence), generator=g),
        batches * batch,
        batch,
        validation,
    )
    return Workload(
        name=f"transformer{'+val' if validation else ''}",
        model="transformer",
        build=lambda: Classifier(
            TransformerClassifier(vocabulary, sequence, width, layers, heads, feedforward),
            lambda params: torch.optim.AdamW(params, lr=1e-4),
        ),
        train=train,
        val=val,
        description=f"Transformer encoder d_model {width}, {layers} layers, {heads} heads, "
        f"ff {feedforward}, sequence {sequence}, vocabulary {vocabulary}, batch {batch}, "
        f"{batches} batches per epoch",
    )


def parameter_count(workload: Workload) -> int:
    return sum(parameter.numel() for parameter in workload.build().parameters())


def _loaders(
    inputs: Callable[[int, torch.Generator], torch.Tensor], samples: int, batch: int, validation: bool
) -> tuple[DataLoader, DataLoader | None]:
    """Shuffled training batches and, with ``validation``, a quarter as many validation batches."""
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        inputs(samples, generator), torch.randint(0, CLASSES, (samples,), generator=generator)
    )
    train = DataLoader(data, batch_size=batch, shuffle=True, generator=generator)
    if not validation:
        return train, None
    held_out = max(batch, samples // 4)
    val_data = TensorDataset(
        inputs(held_out, generator), torch.randint(0, CLASSES, (held_out,), generator=generator)
    )
    return train, DataLoader(val_data, batch_size=batch)
