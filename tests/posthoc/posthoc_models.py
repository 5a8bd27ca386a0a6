"""A small transformer-like state dict for the post-hoc tests, and helpers on its names."""

from __future__ import annotations

import re

import numpy as np

WIDTH, HIDDEN, BLOCKS, VOCABULARY = 32, 64, 2, 50


def transformer_state(seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters in torch layout and model order: embedding, blocks (q, k, v, o, MLP), head.

    Weights are Student-t (heavy-tailed, so the power-law fits have tails to find), float32.
    """
    rng = np.random.default_rng(seed)

    def weight(rows: int, columns: int) -> np.ndarray:
        return (rng.standard_t(3.0, size=(rows, columns)) / np.sqrt(columns)).astype(np.float32)

    state = {"embed.weight": weight(VOCABULARY, WIDTH)}
    for block in range(BLOCKS):
        prefix = f"blocks.{block}"
        for part in ("q", "k", "v", "o"):
            state[f"{prefix}.attn.{part}.weight"] = weight(WIDTH, WIDTH)
            state[f"{prefix}.attn.{part}.bias"] = np.zeros(WIDTH, dtype=np.float32)
        state[f"{prefix}.norm.weight"] = np.ones(WIDTH, dtype=np.float32)
        state[f"{prefix}.mlp.fc1.weight"] = weight(HIDDEN, WIDTH)
        state[f"{prefix}.mlp.fc2.weight"] = weight(WIDTH, HIDDEN)
    state["head.weight"] = weight(10, WIDTH)
    return state


def layer_name(key: str) -> str:
    return key.removesuffix(".weight")


def analyzable(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The matrices WeightWatcher's state-dict rule analyzes, by layer name, in model order."""
    return {layer_name(key): array for key, array in state.items() if array.ndim >= 2}


def natural_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)])
