"""Offline datasets as Lightning data modules: scikit-learn's digits (shipped with the package)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DigitsDataModule"]


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), split 80/20 with a fixed seed.

    Args:
        batch_size: training batch size.
        flatten: give 64-vectors (for MLPs) instead of 1x8x8 images (for CNNs).
        seed: seed of the train/validation split.
    """

    def __init__(self, batch_size: int = 32, flatten: bool = True, seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.flatten = flatten
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        inputs = torch.tensor(images / 16.0, dtype=torch.float32)
        if not self.flatten:
            inputs = inputs.reshape(-1, 1, 8, 8)
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(self.seed))
        split = int(0.8 * len(inputs))
        targets = torch.tensor(labels)
        self.train_set = TensorDataset(inputs[order[:split]], targets[order[:split]])
        self.val_set = TensorDataset(inputs[order[split:]], targets[order[split:]])

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)
