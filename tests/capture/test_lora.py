"""peft LoRA adapters captured as their update ``scaling * B @ A``: found, computed, analyzed.

Models are built from configs or ``nn.Sequential``s, wrapped with ``peft.get_peft_model``; peft
initializes ``B`` to zero, so every test sets the factors from a seeded generator to make the
update of rank ``r``. The expected update is computed here from the factors and ``lora_alpha``
and ``r`` of the config, not from the layer's ``scaling``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from weightwatcher_runs import weightwatcher_analysis

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from torch import nn  # noqa: E402 - after the skips above

from spectral_callbacks import analyze_model  # noqa: E402
from spectral_callbacks.analysis.model import analyze_weights  # noqa: E402
from spectral_callbacks.capture.torch import copy_weights, find_layers  # noqa: E402


def randomize_factors(model: nn.Module, seed: int, scale: float = 1.0) -> None:
    """Every LoRA factor drawn from a seeded normal (peft's zero ``B`` would make the update 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))


def lora_mlp(r: int = 8, lora_alpha: int = 32, seed: int = 0, scale: float = 1.0, **config: Any) -> nn.Module:
    """Three Linear layers, the first and last adapted; factors of standard deviation ``scale``."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(48, 96), nn.ReLU(), nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 40))
    config = peft.LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["0", "4"], **config)
    model = peft.get_peft_model(net, config)
    randomize_factors(model, seed, scale)
    return model


def tiny_bert(r: int = 8) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32,
    )  # fmt: skip
    lora = peft.LoraConfig(r=r, lora_alpha=16, target_modules=["query", "value"])
    model = peft.get_peft_model(transformers.BertModel(config), lora)
    randomize_factors(model, seed=1)
    return model


def tiny_gpt2(r: int = 8) -> nn.Module:
    """GPT-2's ``c_attn`` is a Hugging Face ``Conv1D``: peft adapts it with ``fan_in_fan_out``."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    lora = peft.LoraConfig(r=r, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    model = peft.get_peft_model(transformers.GPT2Model(config), lora)
    randomize_factors(model, seed=2)
    return model


def expected_update(module: nn.Module, adapter: str, lora_alpha: float, r: int, rslora: bool) -> np.ndarray:
    """``lora_alpha / r * B @ A`` (``/ sqrt(r)`` with rsLoRA) in float64 from the factors' values."""
    factor_a = module.lora_A[adapter].weight.detach().double().numpy()
    factor_b = module.lora_B[adapter].weight.detach().double().numpy()
    return lora_alpha / (math.sqrt(r) if rslora else r) * factor_b @ factor_a


def test_lora_layers_are_found_as_their_update() -> None:
    found = find_layers(tiny_bert())
    names = [weight.name for weight in found.weights]
    adapted = [
        f"base_model.model.encoder.layer.{i}.attention.self.{part}"
        for i in range(2)
        for part in ("query", "value")
    ]
    for layer in adapted:
        assert f"{layer}.lora_update" in names
        assert f"{layer}.base_layer" in names  # the base weight, as is
        assert f"{layer}.base_layer.bias" in found.skipped
    assert [name for name in names if "lora" in name] == [f"{layer}.lora_update" for layer in adapted]
    assert not any("lora_A" in name or "lora_B" in name for name in [*names, *found.skipped])
    updates = [weight for weight in found.weights if weight.name.endswith(".lora_update")]
    assert {(weight.kind, weight.shape) for weight in updates} == {("linear", (32, 32))}
    assert "base_model.model.encoder.layer.0.attention.self.key" in names  # not adapted: plain Linear


@pytest.mark.parametrize("rslora", [False, True])
def test_update_is_the_scaled_product_of_the_factors(rslora: bool) -> None:
    model = lora_mlp(r=8, lora_alpha=24, use_rslora=rslora)
    copies = copy_weights(find_layers(model).weights)
    for index, (out_features, in_features) in ((0, (96, 48)), (4, (40, 64))):
        module = model.base_model.model[index]
        update = copies[f"base_model.model.{index}.lora_update"]
        assert update.shape == (out_features, in_features) and update.dtype == np.float32
        expected = expected_update(module, "default", 24, 8, rslora)
        np.testing.assert_allclose(update, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        np.testing.assert_allclose(update, module.get_delta_weight("default").detach().numpy(), rtol=1e-6)
        assert np.linalg.matrix_rank(update) == 8  # float32 tolerance: rounding makes no rank
        assert copies[f"base_model.model.{index}.base_layer"].shape == (out_features, in_features)


def test_update_follows_the_layers_scaling_and_factors() -> None:
    model = lora_mlp()
    layer = model.base_model.model[0]
    (update,) = [w for w in find_layers(model).weights if w.name == "base_model.model.0.lora_update"]
    before = copy_weights([update])[update.name]
    layer.set_scale("default", 0.5)  # peft: scaling = 0.5 * lora_alpha / r
    np.testing.assert_allclose(copy_weights([update])[update.name], 0.5 * before, rtol=1e-6)
    with torch.no_grad():
        layer.lora_A["default"].weight.mul_(3.0)
    np.testing.assert_allclose(
        copy_weights([update])[update.name], 1.5 * before, rtol=1e-5, atol=1e-6 * np.abs(before).max()
    )


def test_conv1d_base_gives_the_update_as_out_by_in() -> None:
    model = tiny_gpt2()
    attention = model.base_model.model.h[0].attn.c_attn
    weights = {weight.name: weight for weight in find_layers(model).weights}
    update = weights["base_model.model.h.0.attn.c_attn.lora_update"]
    base = weights["base_model.model.h.0.attn.c_attn.base_layer"]
    assert update.shape == base.shape == (96, 32)  # (out, in), as the Conv1D weight is read
    copy = copy_weights([update])[update.name]
    np.testing.assert_allclose(copy, expected_update(attention, "default", 8, 8, False), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(copy.T, attention.get_delta_weight("default").detach().numpy(), rtol=1e-6)


def test_several_adapters_are_named_by_adapter() -> None:
    model = lora_mlp(r=8, lora_alpha=32)
    model.add_adapter("second", peft.LoraConfig(r=12, lora_alpha=6, target_modules=["0"]))
    randomize_factors(model, seed=5)
    copies = copy_weights(find_layers(model).weights)
    layer = model.base_model.model[0]
    assert {name for name in copies if "lora" in name} == {
        "base_model.model.0.lora_update.default",
        "base_model.model.0.lora_update.second",
        "base_model.model.4.lora_update",  # one adapter there
    }
    for adapter, alpha, r in (("default", 32, 8), ("second", 6, 12)):
        expected = expected_update(layer, adapter, alpha, r, False)
        np.testing.assert_allclose(
            copies[f"base_model.model.0.lora_update.{adapter}"], expected, rtol=1e-5, atol=1e-5
        )


def test_analyze_model_rows_for_the_update() -> None:
    model = lora_mlp(r=8, lora_alpha=32)
    rows = {row.name: row for row in analyze_model(model)}
    module = model.base_model.model[0]
    expected = expected_update(module, "default", 32, 8, False)
    row = rows["base_model.model.0.lora_update"]
    assert row.kind == "linear" and row.status in ("ok", "warning")
    assert row.log_norm == pytest.approx(math.log10(np.sum(expected**2)), rel=1e-6)
    assert row.log_spectral_norm == pytest.approx(2 * math.log10(np.linalg.norm(expected, 2)), rel=1e-6)
    assert row.rank_loss == min(expected.shape) - 8  # rank r: the other eigenvalues are zero
    assert rows["base_model.model.0.base_layer"].status in ("ok", "warning")
    assert not any("lora_A" in name or "lora_B" in name for name in rows)
    only = analyze_model(model, layers=r".*\.lora_update")
    assert [row.name for row in only.analyzed()] == [
        "base_model.model.0.lora_update",
        "base_model.model.4.lora_update",
    ]


def test_matches_weightwatchers_peft_analysis() -> None:
    """WeightWatcher's ``lora_BA`` rows are ``B @ A`` without the scaling: its numbers equal those of
    the unscaled product, and ours of the update differ from them by the scaling exactly where the
    scale enters (eigenvalues times ``scaling**2``); ``alpha``, ``D`` and ``stable_rank`` are the same.

    ``r = 24`` puts the ``r`` eigenvalues WeightWatcher keeps above its small-sample cutoff (20), below
    which it fits with an estimator of its own (see tests/zoo/test_torch_zoo.py).
    """
    pytest.importorskip("weightwatcher")
    r, lora_alpha = 24, 72
    scaling = lora_alpha / r
    model = lora_mlp(r=r, lora_alpha=lora_alpha, seed=3)
    frame = weightwatcher_analysis(model, peft=True)
    ww = {row.longname: row for row in frame.itertuples()}
    ours = {row.name: row for row in analyze_model(model)}
    modules = {0: model.base_model.model[0], 4: model.base_model.model[4]}
    assert sorted(ww) == [f"base_model.model.{i}.lora_BA.default" for i in modules]
    unscaled = analyze_weights(
        [(f"{i}", expected_update(module, "default", r, r, False), "linear") for i, module in modules.items()]
    )
    shift = 2 * math.log10(scaling)
    for (index, _), plain in zip(modules.items(), unscaled, strict=True):
        reference = ww[f"base_model.model.{index}.lora_BA.default"]
        row = ours[f"base_model.model.{index}.lora_update"]
        assert reference.num_evals == r
        assert reference.num_pl_spikes == row.num_pl_spikes == plain.num_pl_spikes
        for column in ("alpha", "D", "stable_rank"):
            assert getattr(row, column) == pytest.approx(getattr(reference, column), rel=1e-6), column
            assert getattr(plain, column) == pytest.approx(getattr(reference, column), rel=1e-6), column
        for column in ("log_norm", "log_spectral_norm"):
            assert getattr(plain, column) == pytest.approx(getattr(reference, column), rel=1e-6), column
            assert getattr(row, column) == pytest.approx(getattr(reference, column) + shift, rel=1e-6), column
        assert plain.xmin == pytest.approx(reference.xmin, rel=1e-6)
        assert row.xmin == pytest.approx(scaling**2 * reference.xmin, rel=1e-6)
        assert plain.alpha_weighted == pytest.approx(reference.alpha_weighted, rel=1e-6)


@pytest.mark.timeout(120)
def test_lightning_run_has_the_update_at_every_snapshot(tmp_path: Any) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from spectral_callbacks import SpectralCallback, open_run

    class LoraModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = lora_mlp(r=8, lora_alpha=16, scale=0.2)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.05)

    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(64, 48, generator=generator), torch.randint(0, 40, (64,))
    )
    module = LoraModule()
    callback = SpectralCallback(log_dir=tmp_path / "spectral", tensorboard=False)
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), max_epochs=2, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=[callback],
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    name = "net.base_model.model.0.lora_update"
    final = expected_update(module.net.base_model.model[0], "default", 16, 8, False)
    with open_run(callback.run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]
        assert name in run.layers and "net.base_model.model.0.base_layer" in run.layers
        assert not any("lora_A" in layer or "lora_B" in layer for layer in run.layers)
        assert run.layer_info(name)["kind"] == "linear"
        statuses = run.layer_status(name)
        assert len(statuses) == 3 and all(status in ("ok", "warning") for status, _ in statuses), statuses
        assert np.all(np.isfinite(run.metric("log_spectral_norm", name)))
        np.testing.assert_allclose(run.weights(name, 2), final, rtol=1e-5, atol=1e-5 * np.abs(final).max())
        assert not np.allclose(run.weights(name, 0), run.weights(name, 2))  # the adapter trained
        base = "net.base_model.model.0.base_layer"
        np.testing.assert_array_equal(run.weights(base, 0), run.weights(base, 2))  # peft freezes the base
