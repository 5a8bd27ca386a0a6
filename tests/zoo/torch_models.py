"""Small third-party torch architectures, built from ``transformers`` configs (no download), and
their random training data.

Each :class:`ZooModel` builds a seeded model whose matrices mostly have 64 or more eigenvalues
(hidden sizes 64-128), so WeightWatcher fits them with its standard power-law fit, yet small enough
that one epoch of a few batches trains in a second or two on a CPU. Every model takes keyword tensors
and returns an output with a ``loss`` when given ``labels``, so one LightningModule trains them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MODELS", "ZooModel"]

BATCH_SIZE = 8
NUM_BATCHES = 3
SEQUENCE_LENGTH = 16
VOCABULARY = 512  # token embeddings of 512 x 64: large enough for a fitted tail, fast to SVD
NUM_CLASSES = 10
IMAGE_SIZE = 32


@dataclass(frozen=True)
class ZooModel:
    """A named architecture: ``build()`` returns the seeded model, ``batch(generator)`` one batch
    of random inputs and labels of the shapes it expects (keyword arguments of its ``forward``)."""

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], dict[str, torch.Tensor]]

    def batches(self, seed: int = 0, count: int = NUM_BATCHES) -> list[dict[str, torch.Tensor]]:
        """``count`` batches drawn from a generator seeded with ``seed`` (the same ones every call)."""
        generator = torch.Generator().manual_seed(seed)
        return [self.batch(generator) for _ in range(count)]


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return factory()

    return build


def _tokens(generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, VOCABULARY, (BATCH_SIZE, SEQUENCE_LENGTH), generator=generator)


def _language_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
    tokens = _tokens(generator)
    return {"input_ids": tokens, "labels": tokens}


def _sequence_pair_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"input_ids": _tokens(generator), "labels": _tokens(generator)}


def _classification_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
    labels = torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=generator)
    return {"input_ids": _tokens(generator), "labels": labels}


def _image_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
    images = torch.randn(BATCH_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=generator)
    return {"pixel_values": images, "labels": labels}


def _gpt2() -> nn.Module:
    """GPT-2: HF ``Conv1D`` projections (weights stored ``(in, out)``), ``lm_head`` tied to ``wte``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCABULARY, n_positions=64, n_embd=64, n_layer=2, n_head=4, tie_word_embeddings=True
    )
    return GPT2LMHeadModel(config)


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCABULARY, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64, num_labels=NUM_CLASSES,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def _bart() -> nn.Module:
    """BART: the shared token embedding is tied to both embeddings and to ``lm_head``."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=VOCABULARY, d_model=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    return BartForConditionalGeneration(config)


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, num_labels=NUM_CLASSES,
    )  # fmt: skip
    return ViTForImageClassification(config)


def _resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 1, 1],
        layer_type="basic", num_labels=NUM_CLASSES,
    )  # fmt: skip
    return ResNetForImageClassification(config)


def _mobilenet_v2() -> nn.Module:
    """MobileNetV2: every inverted residual block has a depthwise 3x3 conv (``groups == channels``)."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    config = MobileNetV2Config(
        num_channels=3, image_size=IMAGE_SIZE, depth_multiplier=0.35, finegrained_output=False,
        num_labels=NUM_CLASSES,
    )  # fmt: skip
    return MobileNetV2ForImageClassification(config)


MODELS: dict[str, ZooModel] = {
    model.name: model
    for model in (
        ZooModel("gpt2", _seeded(_gpt2), _language_batch),
        ZooModel("bert", _seeded(_bert), _classification_batch),
        ZooModel("bart", _seeded(_bart), _sequence_pair_batch),
        ZooModel("vit", _seeded(_vit), _image_batch),
        ZooModel("resnet", _seeded(_resnet), _image_batch),
        ZooModel("mobilenet_v2", _seeded(_mobilenet_v2), _image_batch),
    )
}
