"""Hugging Face ``peft`` LoRA adapters seen as the update they apply to their layer.

A LoRA layer (Hu et al., 2021) keeps its pretrained ``base_layer`` and adds, for each adapter, a
low-rank path: its output is ``base_layer(x) + scaling * B(A(x))``, with ``A`` an ``r x in`` and
``B`` an ``out x r`` matrix. The change the adapter makes to the base weight is therefore

    ``delta_W = scaling * B @ A``  (``out x in``, rank at most ``r``),

the matrix peft's ``get_delta_weight`` adds when merging. That matrix is what is analyzed, as a
linear layer named ``<module>.lora_update`` (``<module>.lora_update.<adapter>`` when the module
holds several adapters), ``<module>`` being the LoRA layer's own name. The base weight is captured
as any layer, under its module name ``<module>.base_layer``. The factors are not layers of their
own: ``A`` and ``B`` have only ``r`` singular values each, and their spectra depend on how the
product is split between them, which the update does not.

The scaling is the layer's own ``scaling[adapter]``, read each time the update is computed: peft
sets it to ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with ``use_rslora`` (Kalajdzievski,
2023), and ``set_scale``/``scale_layer`` change it at run time. ``B @ A`` is ``out x in`` also for
layers over Hugging Face ``Conv1D`` (``fan_in_fan_out``), where peft transposes it only to add it
to the weight as stored. With DoRA (``use_dora``) the row is the low-rank part ``scaling * B @ A``
of the direction's update, without the normalization and magnitude vector DoRA applies to the
merged weight.

WeightWatcher's ``analyze(peft=True)`` analyzes the product ``B @ A`` without the scaling (its
``lora_BA`` rows), keeping its ``r`` largest eigenvalues; here all ``min(out, in)`` are kept, the
``min(out, in) - r`` zero ones counted by ``rank_loss`` and left out of the power-law fit (float32
rounding leaves them near ``1e-15`` times the largest, below the fit's threshold of ``1e-5`` for
any update whose largest eigenvalue is below about ``1e9``). So its ``alpha``, ``D`` and
``stable_rank`` equal ours, and its eigenvalues, ``xmin`` and norms are ours divided by
``scaling**2``.

LoRA layers are recognized without importing peft: a module with a ``base_layer``, a ``scaling``
dict and ``lora_A``/``lora_B`` module dicts, an adapter being a key of both whose two entries are
``nn.Linear`` (peft's ``lora.Linear``, over a Linear or a ``Conv1D``). Adapters of other layer
types (peft's LoRA for embeddings and convolutions) keep the ordinary rules of
:mod:`spectral_callbacks.capture.torch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LoraUpdate", "is_lora_layer", "lora_updates"]

UPDATE = "lora_update"


@dataclass(frozen=True)
class LoraUpdate:
    """The update of one adapter of a LoRA layer, computed from the live factors.

    Attributes:
        name: ``<module>.lora_update``, with ``.<adapter>`` when the module has several adapters.
        adapter: the adapter's name in peft (``"default"`` unless named).
        factor_b: the live ``B`` weight (``out x r``), the parameter the update is computed from.
        product: ``B -> scaling * B @ A`` with the layer's current ``A`` and ``scaling``.
        factors: the ids of the ``A`` and ``B`` weights, which are not analyzed on their own.
    """

    name: str
    adapter: str
    factor_b: torch.Tensor = field(repr=False)
    product: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, compare=False)
    factors: frozenset[int] = field(repr=False, default=frozenset())


def is_lora_layer(module: nn.Module) -> bool:
    """Whether ``module`` looks like a peft ``LoraLayer`` (base layer, scaling and factor dicts)."""
    return (
        isinstance(getattr(module, "base_layer", None), nn.Module)
        and isinstance(getattr(module, "scaling", None), dict)
        and isinstance(getattr(module, "lora_A", None), nn.ModuleDict)
        and isinstance(getattr(module, "lora_B", None), nn.ModuleDict)
    )


def lora_updates(name: str, module: nn.Module) -> list[LoraUpdate]:
    """The update of each linear adapter of a LoRA layer named ``name`` (none for other modules).

    Example:
        With ``get_peft_model(nn.Sequential(nn.Linear(64, 32)), LoraConfig(target_modules=["0"]))``
        the layer ``base_model.model.0`` gives one update, ``base_model.model.0.lora_update``.
    """
    if not is_lora_layer(module):
        return []
    adapters = [
        adapter
        for adapter in module.lora_A
        if adapter in module.lora_B
        and adapter in module.scaling
        and isinstance(module.lora_A[adapter], nn.Linear)
        and isinstance(module.lora_B[adapter], nn.Linear)
    ]
    updates = []
    for adapter in adapters:
        factor_a, factor_b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
        updates.append(
            LoraUpdate(
                name=f"{name}.{UPDATE}" if len(adapters) == 1 else f"{name}.{UPDATE}.{adapter}",
                adapter=adapter,
                factor_b=factor_b,
                product=_product(module, adapter),
                factors=frozenset((id(factor_a), id(factor_b))),
            )
        )
    return updates


def _product(module: nn.Module, adapter: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``B -> scaling * B @ A`` for one adapter, reading ``A`` and the scaling when called (half
    precision factors are multiplied in float32)."""

    def product(factor_b: torch.Tensor) -> torch.Tensor:
        factor_a = module.lora_A[adapter].weight.detach()
        if factor_b.dtype not in (torch.float32, torch.float64):
            factor_a, factor_b = factor_a.float(), factor_b.float()
        return float(module.scaling[adapter]) * (factor_b @ factor_a.to(factor_b.dtype))

    return product
