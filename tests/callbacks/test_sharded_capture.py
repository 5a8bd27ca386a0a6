"""Sharded training with 2 CPU processes (gloo): the run file holds whole layers, gathered one at a time.

Two strategies that shard every weight run on CPU here:

- FSDP (``FullyShardedDataParallel``) through Lightning's ``FSDPStrategy``. Lightning refuses
  ``FSDPStrategy`` with ``accelerator="cpu"`` (a check on the exact class), and FSDP needs
  ``device_id=torch.device("cpu")`` to accept a CPU-only machine, which Lightning does not pass;
  so the script uses a subclass that wraps the model itself with that device.
- FSDP2 (``fully_shard``, ``DTensor`` parameters) through Lightning's ``ModelParallelStrategy``
  with the model sharded in ``configure_model``.

Each run's snapshots are compared, epoch by epoch, with the full state dict the strategy itself
assembles (FSDP's ``FULL_STATE_DICT``; ``get_model_state_dict(full_state_dict=True)`` for FSDP2),
saved by rank zero at the same points. Rank zero's resident memory is measured around each
snapshot's copy (peak RSS reset through ``/proc/self/clear_refs``, large allocations returned to
the system at once with ``MALLOC_MMAP_THRESHOLD_``): beyond the copies themselves, it must stay
near one layer, well below the model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from spectral_callbacks import open_run
from spectral_callbacks.capture.sharded import ShardedCapture, is_sharded_strategy
from spectral_callbacks.capture.torch import LayerWeight, copy_weights, find_layers

EPOCHS = 3
WIDTHS = (64, 1024, 1024, 1024, 1024, 1024, 1024, 256, 10)  # hidden layers dominate: 4 MiB each
LAYERS = ("embed", *(f"layers.{index}" for index in range(len(WIDTHS) - 1)))
SHAPES = {"embed": (50, WIDTHS[0])} | {
    f"layers.{index}": (WIDTHS[index + 1], WIDTHS[index]) for index in range(len(WIDTHS) - 1)
}
LAYER_BYTES = {name: 4 * rows * columns for name, (rows, columns) in SHAPES.items()}  # float32

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from torch import nn
    from torch.nn import functional
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
    from spectral_callbacks import SpectralCallback
    from spectral_callbacks.capture import sharded

    root, mode, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    widths = [int(width) for width in sys.argv[4].split(",")]
    torch.set_num_threads(1)


    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, widths[0])  # FSDP: in the root unit (only Linear are wrapped)
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

        def configure_model(self):
            if mode == "fsdp2":
                from torch.distributed.fsdp import fully_shard

                mesh = self.device_mesh["data_parallel"]
                for layer in (self.embed, *self.layers):  # training_step skips the root's hooks
                    fully_shard(layer, mesh=mesh)
                fully_shard(self, mesh=mesh)

        def training_step(self, batch, batch_idx):
            tokens, y = batch
            hidden = self.embed(tokens).mean(dim=1)
            for layer in self.layers[:-1]:
                hidden = functional.relu(layer(hidden))
            return functional.cross_entropy(self.layers[-1](hidden), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)


    class CPUFSDPStrategy(FSDPStrategy):
        # FSDP on a CPU-only machine needs its device given; Lightning's own wrapping passes none
        def _setup_model(self, model):
            from torch.distributed.fsdp import FullyShardedDataParallel

            model = FullyShardedDataParallel(
                model, device_id=torch.device("cpu"), sharding_strategy=self.sharding_strategy, **self.kwargs
            )
            return super()._setup_model(model)


    class FullStateDict(pl.Callback):
        # the strategy's own full state dict at each point a snapshot is taken, saved by rank zero
        def on_train_start(self, trainer, pl_module):
            self.save(trainer, pl_module, 0)

        def on_train_epoch_end(self, trainer, pl_module):
            self.save(trainer, pl_module, trainer.current_epoch + 1)

        def on_train_end(self, trainer, pl_module):
            # the same measure around a gather of the whole model at once, for comparison
            with open("/proc/self/clear_refs", "w") as file:
                file.write("5")
            before = status("VmRSS")
            if mode == "fsdp2":
                whole = [parameter.full_tensor() for parameter in pl_module.parameters()]
                peak = status("VmHWM") - before
                del whole
            else:
                from torch.distributed import fsdp

                with fsdp.FullyShardedDataParallel.summon_full_params(
                    trainer.strategy.model, writeback=False, rank0_only=True
                ):
                    peak = status("VmHWM") - before
            if trainer.is_global_zero:
                record(f"WHOLE {peak}")

        def save(self, trainer, pl_module, epoch):
            if mode == "fsdp2":
                from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

                options = StateDictOptions(full_state_dict=True, cpu_offload=True)
                state = get_model_state_dict(pl_module, options=options)
            else:  # as FSDPStrategy's own, without the CPU offload that breaks on a CPU-only FSDP
                from torch.distributed import fsdp

                config = fsdp.FullStateDictConfig(offload_to_cpu=False, rank0_only=True)
                with fsdp.FullyShardedDataParallel.state_dict_type(
                    trainer.strategy.model, fsdp.StateDictType.FULL_STATE_DICT, config
                ):
                    state = trainer.strategy.model.state_dict()
            if trainer.is_global_zero:
                torch.save(state, os.path.join(root, f"full_{epoch}.pt"))


    def status(field):
        with open("/proc/self/status") as file:
            return next(int(line.split()[1]) * 1024 for line in file if line.startswith(field + ":"))


    def record(line):  # rank zero's measurements, in a file (both ranks share stdout)
        with open(os.path.join(root, "memory.txt"), "a") as file:
            file.write(line + "\\n")


    measured_copy = sharded.ShardedCapture.copy

    def copy(self, weights):
        # rank zero's peak resident memory during the copy, beyond the copies it returns
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        before = status("VmRSS")
        copies = measured_copy(self, weights)
        peak = status("VmHWM") - before - sum(array.nbytes for array in copies.values())
        record(f"PEAK {peak} {sum(array.nbytes for array in copies.values())}")
        return copies

    sharded.ShardedCapture.copy = copy

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (64, 8), generator=generator)
    y = torch.randint(0, widths[-1], (64,), generator=generator)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, y), batch_size=32)
    torch.manual_seed(0)
    if mode == "fsdp1":
        strategy = CPUFSDPStrategy(auto_wrap_policy={nn.Linear}, process_group_backend="gloo")
    else:
        strategy = ModelParallelStrategy(
            data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo"
        )
    trainer = pl.Trainer(
        default_root_dir=root, max_epochs=epochs, accelerator="cpu", devices=2, strategy=strategy,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[
            FullStateDict(),
            SpectralCallback(log_dir=os.path.join(root, "spectral"), tensorboard=False, queue_size=1),
        ],
    )
    trainer.fit(Net(), data)
    print("DONE", trainer.global_rank, flush=True)
    """
)


def fit(root: Path, mode: str) -> str:
    script = root / "train.py"  # the strategy re-runs the script for rank 1, so it must be a file
    root.mkdir(parents=True)
    script.write_text(_SCRIPT)
    # large blocks are mapped and unmapped at once, so resident memory follows what is allocated
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(
        [sys.executable, str(script), str(root), mode, str(EPOCHS), ",".join(map(str, WIDTHS))],
        capture_output=True, text=True, timeout=600, cwd=root, env=env,
    )  # fmt: skip
    output = result.stdout + result.stderr[-4000:]
    assert result.returncode == 0, output
    assert "DONE 0" in output and "DONE 1" in output, output
    return output


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp1", "fsdp2"])
def test_sharded_run_file_holds_the_full_weights_gathered_one_layer_at_a_time(
    tmp_path: Path, mode: str
) -> None:
    root = tmp_path / mode
    fit(root, mode)

    run_files = sorted(path.relative_to(root) for path in root.rglob("*.h5"))
    assert run_files == [Path("spectral/spectra.h5")]  # one file: rank 1 wrote nothing
    with open_run(root / "spectral") as run:
        assert run.layers == list(LAYERS)
        assert run.epochs.tolist() == list(range(EPOCHS + 1))
        for epoch in range(EPOCHS + 1):
            full = torch.load(root / f"full_{epoch}.pt")
            for layer in LAYERS:
                expected = full[f"{layer}.weight"].numpy()
                assert expected.shape == SHAPES[layer]
                np.testing.assert_array_equal(
                    run.weights(layer, epoch), expected, err_msg=f"{layer} @ {epoch}"
                )
        # the weights changed: the comparison is not between initializations only
        assert not np.array_equal(run.weights("layers.1", 0), run.weights("layers.1", EPOCHS))

    memory = (root / "memory.txt").read_text()
    peaks = [(int(extra), int(copied)) for extra, copied in re.findall(r"^PEAK (-?\d+) (\d+)$", memory, re.M)]
    assert len(peaks) == EPOCHS + 1, memory
    model_bytes, largest = sum(LAYER_BYTES.values()), max(LAYER_BYTES.values())
    whole = [int(peak) for peak in re.findall(r"^WHOLE (-?\d+)$", memory, re.M)]
    assert len(whole) == 1 and whole[0] > 0.9 * model_bytes, (whole, model_bytes)  # the measure sees it
    for extra, copied in peaks:
        assert copied == model_bytes  # every layer copied
        # one whole layer at a time (the gathered tensor and the gather's own buffers), never the
        # model: gathering every layer at once would need the model's size again
        assert extra < 2.5 * largest < 0.5 * model_bytes, (extra, largest, model_bytes)


# -- the pieces, in one process ---------------------------------------------------------------------


def test_sharded_strategies_are_recognized_by_class() -> None:
    def strategy(name: str, **attributes: object) -> object:
        return type(name, (), attributes)()

    class CPUFSDPStrategy(type(strategy("FSDPStrategy"))):  # a subclass counts
        pass

    assert is_sharded_strategy(strategy("FSDPStrategy"))
    assert is_sharded_strategy(CPUFSDPStrategy())
    assert is_sharded_strategy(strategy("ModelParallelStrategy"))
    assert is_sharded_strategy(strategy("DeepSpeedStrategy", zero_stage_3=True))
    assert not is_sharded_strategy(strategy("DeepSpeedStrategy", zero_stage_3=False))  # ZeRO-1/2
    assert not is_sharded_strategy(strategy("DDPStrategy"))
    assert not is_sharded_strategy(strategy("SingleDeviceStrategy"))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, groups=2), torch.nn.Flatten(), torch.nn.Linear(8, 6), torch.nn.Linear(6, 3)
    )


def test_bind_keeps_names_kinds_and_shapes_on_meta_placeholders() -> None:
    model = _model()
    found = find_layers(model).weights
    bound = ShardedCapture(model, lambda: model).bind(found)
    assert [(w.name, w.kind, w.shape) for w in bound] == [(w.name, w.kind, w.shape) for w in found]
    assert bound[0].shape == (2, 4, 2, 3, 3)  # the grouped layout still applies
    assert all(weight.parameter.device.type == "meta" for weight in bound)


def test_bind_refuses_lora_updates_and_foreign_weights() -> None:
    model = _model()
    capture = ShardedCapture(model, lambda: model)
    lora = LayerWeight("2.lora_update", "linear", torch.nn.Linear, model[2].weight)
    with pytest.raises(ValueError, match=r"2\.lora_update is a LoRA update"):
        capture.bind([lora])
    foreign = LayerWeight("other", "linear", torch.nn.Linear, torch.nn.Parameter(torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="layer other is not a parameter of the model"):
        capture.bind([foreign])


def test_copy_in_a_round_equals_copy_weights_and_outside_one_raises(tmp_path: Path) -> None:
    """One process as the whole group: the leader's path, with plain parameters to gather."""
    distributed = torch.distributed
    distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = _model()
        capture = ShardedCapture(model, lambda: model)
        bound = capture.bind(find_layers(model).weights)
        with pytest.raises(RuntimeError, match="inside a round"):
            capture.copy(bound)
        with capture.round(leader=True):
            copies = capture.copy(bound)
        expected = copy_weights(find_layers(model).weights)
        assert list(copies) == list(expected)
        for name, array in expected.items():
            np.testing.assert_array_equal(copies[name], array)
    finally:
        distributed.destroy_process_group()
