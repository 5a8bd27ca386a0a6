"""Whole layers of a sharded model, gathered one at a time so that global rank zero can copy them.

Under sharded data parallelism no rank holds a whole weight: FSDP (``FullyShardedDataParallel``)
keeps a flat slice of each wrapped unit's parameters per rank, FSDP2 (``fully_shard``) and tensor
parallelism keep each parameter as a ``DTensor`` of local shards, DeepSpeed ZeRO-3 partitions
every parameter. A copy of the weights as rank zero sees them would be slices. Gathering a weight
is a collective: every rank has to enter it, in the same order. So a snapshot is taken in rounds
that all ranks enter at the same point of training (:meth:`ShardedCapture.round`): inside a
round, rank zero (the leader) sends the names of the parameters it wants, then every rank gathers
them one after the other, and only rank zero keeps a copy. Extra memory is one gathered weight at
a time (one FSDP unit's parameters with ``FullyShardedDataParallel``, whose unit of gathering is
the wrapped module), never the whole model.

How each kind of sharded parameter is gathered:

- ``FullyShardedDataParallel``: ``summon_full_params(unit, recurse=False, writeback=False,
  rank0_only=True, offload_to_cpu=True)`` of the unit that owns the parameter (``offload_to_cpu``
  only off the CPU): rank zero sees the whole parameter in CPU memory, the other ranks keep their
  shards.
- ``DTensor`` (FSDP2, tensor parallelism): ``full_tensor()``, an all-gather: every rank holds the
  whole weight for the time of its copy.
- DeepSpeed ZeRO-3 (a parameter with ``ds_id``): ``deepspeed.zero.GatheredParameters([parameter],
  modifier_rank=None)``, read-only.
- Anything else (a parameter left unsharded) is read as it is.

The layers themselves are found before the model is wrapped, on the plain module (names, matrix
kinds, shapes and layouts as :func:`~spectral_callbacks.capture.torch.find_layers` gives them);
:meth:`ShardedCapture.bind` keeps those and replaces each live parameter by a placeholder on the
meta device that carries its shape, so the wrapped model's slices are never read directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .torch import LayerWeight, copy_weights

__all__ = ["ShardedCapture", "is_sharded_strategy"]

# path parts that wrappers insert between a module and its children
_WRAPPER_PARTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


def is_sharded_strategy(strategy: Any) -> bool:
    """Whether a Lightning strategy shards the weights across ranks: ``FSDPStrategy``,
    ``ModelParallelStrategy`` (FSDP2, tensor parallelism), ``DeepSpeedStrategy`` at ZeRO stage 3.

    Recognized by class name, so that either Lightning package's strategies (and subclasses) count.
    """
    names = {cls.__name__ for cls in type(strategy).__mro__}
    if names & {"FSDPStrategy", "ModelParallelStrategy"}:
        return True
    return "DeepSpeedStrategy" in names and bool(getattr(strategy, "zero_stage_3", False))


class ShardedCapture:
    """Copies of a sharded model's layers on global rank zero, gathered one layer at a time.

    Args:
        model: the plain module whose layers are analyzed (a ``LightningModule``); the names of
            :meth:`bind` are its parameter names.
        wrapped: returns the module the strategy trains (the FSDP root, a DeepSpeed engine, or
            ``model`` itself), asked at the first gather, once the model is wrapped.
    """

    def __init__(self, model: nn.Module, wrapped: Callable[[], nn.Module]):
        self._model = model
        self._wrapped = wrapped
        self._names: dict[str, str] = {}  # layer name -> parameter name in ``model``
        self._modules: dict[str, tuple[nn.Module, nn.Module | None]] | None = None
        self._leading = False

    def bind(self, weights: Sequence[LayerWeight]) -> list[LayerWeight]:
        """The layers found on the plain model, each parameter replaced by a meta-device
        placeholder of its shape and dtype (the layouts and shapes stay right after wrapping).

        Raises:
            ValueError: a layer is a LoRA update (a product of two factors, each gathered
                separately: not supported under sharding), or its weight is no parameter of the model.
        """
        names = {id(parameter): name for name, parameter in self._model.named_parameters()}
        bound = []
        for weight in weights:
            if weight.name.endswith(".lora_update"):
                raise ValueError(
                    f"Layer {weight.name} is a LoRA update; under sharded training LoRA updates are not "
                    "analyzed. Leave them out with exclude=[...]."
                )
            name = names.get(id(weight.parameter))
            if name is None:
                raise ValueError(f"The weight of layer {weight.name} is not a parameter of the model.")
            self._names[weight.name] = _unwrapped(name)
            placeholder = torch.empty(weight.parameter.shape, dtype=weight.parameter.dtype, device="meta")
            bound.append(dataclasses.replace(weight, parameter=placeholder))
        return bound

    def copy(self, weights: Sequence[LayerWeight]) -> dict[str, np.ndarray]:
        """On global rank zero, inside a :meth:`round`: the whole weights as
        :func:`~spectral_callbacks.capture.torch.copy_weights` gives them, gathered one by one
        with every other rank taking part."""
        if not self._leading:
            raise RuntimeError("ShardedCapture.copy runs on global rank zero inside a round.")
        plan = [self._names[weight.name] for weight in weights]
        _broadcast(plan)
        copies: dict[str, np.ndarray] = {}
        by_parameter = {self._names[weight.name]: weight for weight in weights}
        for name, tensor in self._gathered(plan):
            weight = by_parameter[name]
            copies.update(copy_weights([dataclasses.replace(weight, parameter=tensor)]))
        return copies

    @contextlib.contextmanager
    def round(self, leader: bool) -> Iterator[None]:
        """A point of training where rank zero may take a snapshot; every rank enters it.

        Rank zero (``leader``) runs the body, in which each :meth:`copy` tells the others what to
        gather; on leaving, it tells them the round is over. The other ranks run the body too
        (it should do nothing there), then take part in each gather rank zero asks for.
        """
        if leader:
            self._leading = True
            try:
                yield
            finally:
                self._leading = False
                _broadcast(None)
            return
        yield
        while (plan := _broadcast(None)) is not None:
            for _ in self._gathered(plan):
                pass

    # -- gathering ------------------------------------------------------------------------------
    def _gathered(self, plan: Sequence[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Gather the parameters of ``plan`` in order, on every rank; yield each whole one on rank
        zero (and, for an all-gather, on every rank), valid until the next one is asked for."""
        places = self._resolve(plan)
        index = 0
        while index < len(plan):
            module, attribute, unit = places[plan[index]]
            if unit is not None:  # FullyShardedDataParallel: one summon for the unit's run of names
                group = [plan[index]]
                while index + len(group) < len(plan) and places[plan[index + len(group)]][2] is unit:
                    group.append(plan[index + len(group)])
                yield from _summoned(unit, [(name, *places[name][:2]) for name in group])
                index += len(group)
                continue
            parameter = getattr(module, attribute)
            with _whole(parameter) as tensor:
                if tensor is not None:
                    yield plan[index], tensor
            index += 1

    def _resolve(self, names: Sequence[str]) -> dict[str, tuple[nn.Module, str, nn.Module | None]]:
        """Each parameter name of ``model`` -> (its module in the wrapped model, attribute, owning
        ``FullyShardedDataParallel`` unit or None); the wrapped model's modules are read once."""
        if self._modules is None:
            self._modules = self._wrapped_modules()
        places = {}
        for name in names:
            module_path, _, attribute = name.rpartition(".")
            if module_path not in self._modules:
                raise RuntimeError(f"Parameter {name} is not found in the wrapped model.")
            module, unit = self._modules[module_path]
            places[name] = (module, attribute, unit)
        return places

    def _wrapped_modules(self) -> dict[str, tuple[nn.Module, nn.Module | None]]:
        """The wrapped model's modules by their path in ``model`` (wrappers' parts left out), each
        with its owning ``FullyShardedDataParallel`` unit or None."""
        wrapped = self._wrapped()
        modules = dict(wrapped.named_modules(remove_duplicate=False))
        prefix = next((path for path, module in modules.items() if module is self._model), "")
        fsdp = _fsdp_class()
        by_path: dict[str, tuple[nn.Module, nn.Module | None]] = {}
        for path, module in modules.items():
            if prefix and path != prefix and not path.startswith(prefix + "."):
                continue  # the wrappers around ``model``
            relative = _unwrapped(path[len(prefix) :])
            by_path[relative] = (module, _owning_unit(path, modules, fsdp))  # the innermost wins
        return by_path


def _unwrapped(path: str) -> str:
    """A module or parameter path without the parts wrappers insert."""
    return ".".join(part for part in path.split(".") if part and part not in _WRAPPER_PARTS)


def _broadcast(value: Any) -> Any:
    """``value`` from global rank zero, on every rank (rank zero's own on rank zero)."""
    message = [value]
    torch.distributed.broadcast_object_list(message, src=0)
    return message[0]


def _fsdp_class() -> type | None:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return None
    return FullyShardedDataParallel


def _owning_unit(path: str, modules: dict[str, nn.Module], fsdp: type | None) -> nn.Module | None:
    """The innermost ``FullyShardedDataParallel`` module at or above ``path``, or None."""
    if fsdp is None:
        return None
    parts = path.split(".") if path else []
    for end in range(len(parts), -1, -1):
        module = modules.get(".".join(parts[:end]))
        if isinstance(module, fsdp):
            return module
    return None


def _summoned(
    unit: nn.Module, places: Sequence[tuple[str, nn.Module, str]]
) -> Iterator[tuple[str, torch.Tensor]]:
    """One FSDP unit's parameters gathered whole on rank zero only, off the device.

    A unit computing on the CPU is not offloaded: FSDP would free the gathered parameters that the
    "offloaded" ones (the same tensors) still view.
    """
    fsdp = _fsdp_class()
    offload = getattr(unit, "compute_device", torch.device("cpu")).type != "cpu"
    summoned = fsdp.summon_full_params(
        unit, recurse=False, writeback=False, rank0_only=True, offload_to_cpu=offload
    )
    with summoned:
        if torch.distributed.get_rank() == 0:
            for name, module, attribute in places:
                yield name, getattr(module, attribute)


@contextlib.contextmanager
def _whole(parameter: torch.Tensor) -> Iterator[torch.Tensor | None]:
    """A parameter gathered whole (None on ranks that do not keep it)."""
    from torch.distributed.tensor import DTensor

    if isinstance(parameter, DTensor):
        whole = parameter.full_tensor()
        try:
            yield whole if torch.distributed.get_rank() == 0 else None
        finally:
            del whole
    elif hasattr(parameter, "ds_id"):  # DeepSpeed ZeRO-3
        import deepspeed

        with deepspeed.zero.GatheredParameters([parameter], modifier_rank=None):
            yield parameter if torch.distributed.get_rank() == 0 else None
    else:
        yield parameter if torch.distributed.get_rank() == 0 else None
