"""Classifiers for the experiments: the studied publications' networks and a LightningModule to train them.

Networks (every one an ``nn.Sequential`` with named layers, taking ``input_shape`` and
``num_classes``, which the experiments' CLI fills in from the data module):

- :class:`MLP`: ReLU multilayer perceptron; ``hidden=(300, 100)`` is LeNet-300-100 (Heitmann, 2020).
- :class:`ConvNet`: blocks of 3x3 convolutions, each block followed by 2x2 max pooling, then
  fully connected layers. ``channels=[[64, 64]]``, ``[[64, 64], [128, 128]]`` and
  ``[[64, 64], [128, 128], [256, 256]]`` with ``hidden=(256, 256)`` are Conv-2/4/6 of Frankle &
  Carbin (ICLR 2019, fig. 2); with ``batch_norm=True`` it is a small VGG (Simonyan & Zisserman 2015).
- :class:`MiniAlexNet`: the small AlexNet of Martin (2018): two 5x5 conv layers with 3x3/2 max pooling,
  then fully connected 384 and 192 and the classifier.

Fully connected layers are named ``fc1, fc2, ...`` and the output layer ``out``, so run files
and tables read ``network.fc1``. ``mlp`` and ``small_cnn`` are the demo's networks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import nn

__all__ = [
    "MLP",
    "OPTIMIZERS",
    "Classifier",
    "ConvNet",
    "MiniAlexNet",
    "hidden_linear_layers",
    "mlp",
    "small_cnn",
]

OPTIMIZERS = ("sgd", "adam", "adamw")


def mlp(inputs: int = 64, hidden: tuple[int, ...] = (256, 128), classes: int = 10) -> nn.Sequential:
    """A ReLU multilayer perceptron (the demo's; layers named by position)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, classes))


def small_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 128, classes: int = 10) -> nn.Sequential:
    """Two 3x3 conv layers on 1x8x8 images, then two fully connected layers (the demo's)."""
    first, second = channels
    return nn.Sequential(
        nn.Conv2d(1, first, 3, padding=1), nn.ReLU(),
        nn.Conv2d(first, second, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(second * 16, hidden), nn.ReLU(), nn.Linear(hidden, classes),
    )  # fmt: skip


class MLP(nn.Sequential):
    """A ReLU multilayer perceptron on flattened inputs of any shape.

    Args:
        input_shape: shape of one input (flattened here).
        num_classes: outputs of the last layer.
        hidden: widths of the hidden layers; ``(300, 100)`` is LeNet-300-100.
    """

    def __init__(
        self, input_shape: Sequence[int] = (64,), num_classes: int = 10, hidden: Sequence[int] = (300, 100)
    ):
        inputs = int(torch.Size(input_shape).numel())
        super().__init__(
            OrderedDict([("flatten", nn.Flatten()), *_fully_connected(inputs, hidden, num_classes)])
        )
        self.input_shape = tuple(input_shape)


class ConvNet(nn.Sequential):
    """Blocks of 3x3 same-padded convolutions with ReLU, 2x2 max pooling after each block, then FC.

    Args:
        input_shape: ``(channels, height, width)`` of one image.
        num_classes: outputs of the last layer.
        channels: output channels of the convolutions, one list per block (``[[64, 64]]`` is Conv-2).
        hidden: widths of the fully connected hidden layers.
        batch_norm: batch normalization after each convolution (VGG-style).

    Raises:
        ValueError: ``input_shape`` is not an image shape, or too small for the pooling.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        channels: Sequence[Sequence[int]] = ((64, 64),),
        hidden: Sequence[int] = (256, 256),
        batch_norm: bool = False,
    ):
        in_channels = _image_channels(input_shape, type(self).__name__)
        layers: list[tuple[str, nn.Module]] = []
        for block, widths in enumerate(channels, start=1):
            for index, width in enumerate(widths, start=1):
                name = f"conv{block}_{index}"
                layers.append((name, nn.Conv2d(in_channels, width, 3, padding=1)))
                if batch_norm:
                    layers.append((f"bn{block}_{index}", nn.BatchNorm2d(width)))
                layers.append((f"relu{block}_{index}", nn.ReLU()))
                in_channels = width
            layers.append((f"pool{block}", nn.MaxPool2d(2)))
        features = _flat_size(layers, input_shape, type(self).__name__)
        super().__init__(
            OrderedDict(
                [*layers, ("flatten", nn.Flatten()), *_fully_connected(features, hidden, num_classes)]
            )
        )
        self.input_shape = tuple(input_shape)


class MiniAlexNet(nn.Sequential):
    """Martin's (2018) small AlexNet: conv 5x5, max pool 3x3/2, conv 5x5, max pool 3x3/2, FC, FC, classifier.

    On 3x32x32 images the first FC layer sees ``channels[1] * 8 * 8`` features; on the 1x8x8
    digits, ``channels[1] * 2 * 2``.

    Args:
        input_shape: ``(channels, height, width)`` of one image.
        num_classes: outputs of the last layer.
        channels: output channels of the two conv layers (Martin's Keras model: 64 each here).
        hidden: widths of the fully connected layers (Martin's: 384 and 192).

    Raises:
        ValueError: ``input_shape`` is not an image shape.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        channels: tuple[int, int] = (64, 64),
        hidden: Sequence[int] = (384, 192),
    ):
        in_channels = _image_channels(input_shape, type(self).__name__)
        layers: list[tuple[str, nn.Module]] = []
        for index, width in enumerate(channels, start=1):
            layers += [
                (f"conv{index}", nn.Conv2d(in_channels, width, 5, padding=2)),
                (f"relu{index}", nn.ReLU()),
                (f"pool{index}", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
            in_channels = width
        features = _flat_size(layers, input_shape, type(self).__name__)
        super().__init__(
            OrderedDict(
                [*layers, ("flatten", nn.Flatten()), *_fully_connected(features, hidden, num_classes)]
            )
        )
        self.input_shape = tuple(input_shape)


def hidden_linear_layers(network: nn.Module) -> list[str]:
    """Names of the network's ``nn.Linear`` modules but the last one (the classifier), in order."""
    names = [name for name, module in network.named_modules() if isinstance(module, nn.Linear)]
    return names[:-1]


class Classifier(pl.LightningModule):
    """Cross-entropy training of any network, logging loss and accuracy for train, val and test.

    Two kinds of L2 regularization:

    - ``weight_decay``: the optimizer's weight decay on every parameter.
    - ``fc_l2``: the penalty ``fc_l2 * ||W||_F^2`` for the weight ``W`` of each layer in
      ``l2_layers`` (by default the hidden fully connected layers: every ``nn.Linear`` but the
      classifier) added to the loss, as Keras' ``kernel_regularizer=l2(fc_l2)`` on the Dense
      layers of Martin's (2018) MiniAlexNet. With plain SGD it equals a weight decay of ``2 * fc_l2``
      on those weights only.

    The arguments but ``network`` are saved as hyperparameters (``hparams.yaml`` of the logger,
    where ``spectral-callbacks compare --param fc_l2`` finds them).

    Args:
        network: the model.
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: the optimizer's weight decay on all parameters.
        fc_l2: strength of the L2 penalty on the weights of ``l2_layers``.
        l2_layers: module names inside ``network`` (e.g. ``["fc1"]``) that ``fc_l2`` applies to;
            by default its hidden ``nn.Linear`` layers.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.

    Raises:
        ValueError: an unknown optimizer or layer name, a negative strength, or ``fc_l2 > 0``
            with no layer to apply it to; the message lists what is available.
    """

    def __init__(
        self,
        network: nn.Module,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        fc_l2: float = 0.0,
        l2_layers: list[str] | None = None,
        optimizer: str = "sgd",
    ):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"Invalid value for optimizer={optimizer!r}. Must be one of {OPTIMIZERS}.")
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("fc_l2", fc_l2)):
            if not value >= 0:
                raise ValueError(f"Invalid value for {name}={value!r}. Must be >= 0.")
        self.save_hyperparameters(ignore=["network"])
        self.network = network
        self.lr, self.momentum, self.weight_decay, self.optimizer = lr, momentum, weight_decay, optimizer
        self.fc_l2 = fc_l2
        self.l2_layers = _l2_modules(network, l2_layers, fc_l2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)

    def l2_penalty(self) -> torch.Tensor:
        """``fc_l2`` times the summed squared Frobenius norms of the ``l2_layers`` weights."""
        squares = [module.weight.square().sum() for module in self.l2_layers.values()]
        if not squares:
            return torch.zeros((), device=self.device)
        return self.fc_l2 * torch.stack(squares).sum()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = nn.functional.cross_entropy(self(inputs), targets)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        if self.fc_l2 > 0:
            penalty = self.l2_penalty()
            self.log("train/l2_penalty", penalty, on_epoch=True, on_step=False)
            loss = loss + penalty
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        optimizer = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return optimizer(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        inputs, targets = batch
        logits = self(inputs)
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, targets))
        self.log(f"{stage}/accuracy", (logits.argmax(dim=1) == targets).float().mean())


def _fully_connected(inputs: int, hidden: Sequence[int], classes: int) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = []
    for index, width in enumerate(hidden, start=1):
        layers += [(f"fc{index}", nn.Linear(inputs, width)), (f"relu_fc{index}", nn.ReLU())]
        inputs = width
    return [*layers, ("out", nn.Linear(inputs, classes))]


def _image_channels(input_shape: Sequence[int], network: str) -> int:
    if len(input_shape) != 3:
        raise ValueError(
            f"{network} needs image inputs (channels, height, width); "
            f"received input_shape={tuple(input_shape)}. Use MLP for vectors (mnist1d)."
        )
    return int(input_shape[0])


def _flat_size(layers: list[tuple[str, nn.Module]], input_shape: Sequence[int], network: str) -> int:
    """Features after the conv layers, by a forward pass of one zero image."""
    try:
        with torch.no_grad():
            return int(nn.Sequential(OrderedDict(layers))(torch.zeros(1, *input_shape)).numel())
    except RuntimeError as error:
        raise ValueError(
            f"{network}: input_shape={tuple(input_shape)} is too small for its convolutions and "
            f"pooling: {error}"
        ) from error


def _l2_modules(network: nn.Module, names: list[str] | None, fc_l2: float) -> dict[str, nn.Module]:
    """The modules ``fc_l2`` applies to, by name; checked against the network's weighted layers."""
    weighted = {
        name: module
        for name, module in network.named_modules()
        if isinstance(getattr(module, "weight", None), nn.Parameter) and module.weight.ndim >= 2
    }
    chosen = hidden_linear_layers(network) if names is None else list(names)
    unknown = [name for name in chosen if name not in weighted]
    if unknown:
        raise ValueError(
            f"Invalid value for l2_layers={names!r}: no weight matrix named {', '.join(unknown)}. "
            f"Layers with one: {', '.join(weighted)}."
        )
    if fc_l2 > 0 and not chosen:
        raise ValueError(
            f"fc_l2={fc_l2} but the network has no hidden fully connected layer to apply it to; "
            f"pass l2_layers from: {', '.join(weighted)}."
        )
    return {name: weighted[name] for name in chosen}
