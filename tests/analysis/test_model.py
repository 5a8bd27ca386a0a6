"""analyze_model on torch modules and {name: array} mappings: rows, skip reasons, table and DataFrame."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
from weightwatcher_runs import weightwatcher_analysis

from spectral_callbacks import analyze_model
from spectral_callbacks.analysis.model import ModelAnalysis

torch = pytest.importorskip("torch")
nn = torch.nn


def heavy(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(2.5, size=shape)


def esd(weight: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False) ** 2)


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(120, 24)
        self.attn = nn.MultiheadAttention(24, num_heads=4)
        self.conv = nn.Conv1d(24, 32, kernel_size=3)
        self.image = nn.Conv2d(3, 16, kernel_size=3)
        self.norm = nn.LayerNorm(32)
        self.fc1 = nn.Linear(32, 64)
        self.head = nn.Linear(64, 10)


@pytest.fixture
def net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet()


def test_torch_module_rows_in_model_order(net: SmallNet) -> None:
    rows = analyze_model(net)
    assert isinstance(rows, ModelAnalysis)
    assert [row.name for row in rows.analyzed()] == [
        "embed",
        "attn.in_proj",
        "attn.in_proj[q]",
        "attn.in_proj[k]",
        "attn.in_proj[v]",
        "attn.out_proj",
        "conv",
        "image",
        "fc1",
        "head",
    ]
    kinds = {row.name: row.kind for row in rows}
    assert kinds["embed"] == "embedding"
    assert kinds["attn.in_proj[k]"] == "attention"
    assert kinds["conv"] == "conv1d"
    assert kinds["image"] == "conv2d"
    assert kinds["fc1"] == "linear"
    assert all(row.status in ("ok", "warning") for row in rows.analyzed())
    skipped = {row.name: row.reason for row in rows if row.status == "skipped"}
    assert set(skipped) == {
        "attn.in_proj_bias", "attn.out_proj.bias", "conv.bias", "image.bias", "norm.weight", "norm.bias",
        "fc1.bias", "head.bias",
    }  # fmt: skip
    assert skipped["norm.weight"] == "1-D parameter (LayerNorm.weight) has no matrix view"


def test_torch_rows_match_numpy_and_powerlaw(net: SmallNet) -> None:
    powerlaw = pytest.importorskip("powerlaw")
    rows = {row.name: row for row in analyze_model(net)}
    fc1 = net.fc1.weight.detach().numpy().astype(np.float64)
    assert rows["fc1"].log_norm == pytest.approx(math.log10(np.sum(fc1**2)), rel=1e-6)
    assert rows["fc1"].log_spectral_norm == pytest.approx(2 * math.log10(np.linalg.norm(fc1, 2)), rel=1e-6)
    evals = esd(fc1)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(evals[evals > 1e-5], parameter_ranges={"alpha": [1, 1e6]}, verbose=False)
        ref_alpha = ref.power_law.alpha
    assert rows["fc1"].alpha == pytest.approx(ref_alpha, abs=1e-6)
    in_proj = net.attn.in_proj_weight.detach().numpy()
    np.testing.assert_allclose(rows["attn.in_proj[v]"].evals, esd(in_proj[48:]), rtol=1e-5)
    conv = net.image.weight.detach().numpy()
    pooled = np.sort(np.concatenate([esd(conv[:, :, i, j]) for i in range(3) for j in range(3)]))
    np.testing.assert_allclose(rows["image"].evals, 0.5 * pooled, rtol=1e-5)


def test_torch_module_matches_weightwatcher_by_order() -> None:
    pytest.importorskip("weightwatcher")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(120, 200), nn.ReLU(), nn.Linear(200, 150), nn.Conv2d(8, 24, 3))
    with torch.no_grad():
        model[2].weight.copy_(torch.from_numpy(heavy((150, 200), seed=1).astype(np.float32) / 20))
    frame = weightwatcher_analysis(model).sort_values("layer_id")
    rows = analyze_model(model).analyzed()
    assert len(rows) == len(frame) == 3
    for row, (_, ww_row) in zip(rows, frame.iterrows(), strict=True):
        assert row.num_evals == ww_row["num_evals"] >= 50
        for column in ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank"):
            assert getattr(row, column) == pytest.approx(ww_row[column], abs=1e-4), (row.name, column)


def test_torch_filters(net: SmallNet) -> None:
    only_linear = analyze_model(net, layers=nn.Linear).analyzed()
    assert [row.name for row in only_linear] == ["attn.out_proj", "fc1", "head"]  # out_proj is a Linear
    by_regex = analyze_model(net, layers=r"fc\d|head", exclude="head").analyzed()
    assert [row.name for row in by_regex] == ["fc1"]
    with pytest.raises(ValueError, match="matches no analyzable layer"):
        analyze_model(net, layers="nonexistent")


def test_torch_module_with_bad_weights_gives_skipped_rows(net: SmallNet) -> None:
    with torch.no_grad():
        net.fc1.weight[3, 4] = float("nan")
        net.head.weight.zero_()
    rows = {row.name: row for row in analyze_model(net)}
    assert rows["fc1"].status == "skipped"
    assert "NaN or Inf" in rows["fc1"].reason
    assert rows["head"].status == "skipped"
    assert "all zeros" in rows["head"].reason
    assert rows["conv"].status in ("ok", "warning")
    assert math.isnan(rows["fc1"].alpha)


@pytest.fixture
def mapping() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc.weight": heavy((80, 40), seed=1),
        "fc.bias": rng.standard_normal(80),
        "conv.weight": heavy((32, 16, 3, 3), seed=2).astype(np.float32),
        "tok_embed.weight": heavy((200, 16), seed=3),
        "attn.in_proj_weight": heavy((3 * 24, 24), seed=4),
        "broken.weight": np.where(rng.random((50, 30)) < 0.01, np.nan, 1.0),
        "infinite.weight": np.where(np.eye(50, 30) > 0, np.inf, 1.0),
        "zero.weight": np.zeros((50, 30)),
        "int.weight": rng.integers(-3, 4, size=(50, 30)),
        "tiny.weight": rng.standard_normal((6, 4)),
        "norm.weight": np.ones(30),
    }


def test_mapping_rows_and_skip_reasons(mapping: dict[str, np.ndarray]) -> None:
    rows = analyze_model(mapping)
    by_name = {row.name: row for row in rows}
    assert set(by_name) == {
        "fc.weight",
        "fc.bias",
        "conv.weight",
        "tok_embed.weight",
        "attn.in_proj_weight",
        "attn.in_proj_weight[q]",
        "attn.in_proj_weight[k]",
        "attn.in_proj_weight[v]",
        "broken.weight",
        "infinite.weight",
        "zero.weight",
        "int.weight",
        "tiny.weight",
        "norm.weight",
    }
    expected_skips = {
        "fc.bias": "1-D parameter has no matrix view",
        "norm.weight": "1-D parameter has no matrix view",
        "broken.weight": "NaN or Inf",
        "infinite.weight": "NaN or Inf",
        "zero.weight": "all zeros",
        "int.weight": "dtype int64",
        "tiny.weight": "4 eigenvalues < min_evals=8",
    }
    for name, reason in expected_skips.items():
        assert by_name[name].status == "skipped", name
        assert reason in by_name[name].reason, name
        assert math.isnan(by_name[name].alpha)
    analyzed = {row.name for row in rows.analyzed()}
    assert analyzed == set(by_name) - set(expected_skips)
    assert by_name["conv.weight"].kind == "conv2d"
    assert by_name["tok_embed.weight"].kind == "embedding"
    assert by_name["attn.in_proj_weight[k]"].kind == "attention"
    assert by_name["fc.weight"].log_norm == pytest.approx(math.log10(np.sum(mapping["fc.weight"] ** 2)))
    np.testing.assert_allclose(by_name["fc.weight"].evals, esd(mapping["fc.weight"]), rtol=1e-12)


def test_state_dict_of_tensors(net: SmallNet) -> None:
    state = net.state_dict()
    state["half"] = torch.randn(40, 20, dtype=torch.bfloat16)
    rows = {row.name: row for row in analyze_model(state)}
    assert rows["fc1.bias"].status == "skipped"
    assert rows["norm.weight"].reason == "1-D parameter has no matrix view"
    assert rows["fc1.weight"].status in ("ok", "warning")
    assert rows["fc1.weight"].log_norm == pytest.approx(
        math.log10(float((net.fc1.weight.detach().double() ** 2).sum())), rel=1e-6
    )
    assert rows["half"].status in ("ok", "warning")
    assert rows["half"].num_evals == 20
    assert "attn.in_proj_weight[q]" in rows


def test_table_and_dataframe(mapping: dict[str, np.ndarray]) -> None:
    pytest.importorskip("pandas")
    rows = analyze_model(mapping)
    table = rows.table()
    assert isinstance(table, str)
    for row in rows.analyzed():
        assert row.name in table
    assert "skipped" in table
    assert "alpha" in table.splitlines()[0]
    frame = rows.to_pandas()
    assert len(frame) == len(rows) == 14
    assert list(frame["name"]) == [row.name for row in rows]
    assert {"alpha", "log_norm", "status", "reason", "phase"} <= set(frame.columns)
    assert "evals" not in frame.columns
    assert (frame["status"] == "skipped").sum() == 7


def test_options_are_passed_through(mapping: dict[str, np.ndarray]) -> None:
    weights = {"fc.weight": mapping["fc.weight"], "conv.weight": mapping["conv.weight"]}
    default = {row.name: row for row in analyze_model(weights)}
    normalized = {row.name: row for row in analyze_model(weights, normalize="N")}
    assert normalized["fc.weight"].spectral_norm == pytest.approx(default["fc.weight"].spectral_norm / 80)
    raw = {row.name: row for row in analyze_model(weights, conv2d_norm=False)}
    assert raw["conv.weight"].norm == pytest.approx(2 * default["conv.weight"].norm, rel=1e-12)
    strict_size = analyze_model(weights, min_evals=1000)
    assert all(row.status == "skipped" for row in strict_size)


def test_rejects_other_inputs() -> None:
    with pytest.raises(TypeError, match="mapping of names to arrays"):
        analyze_model([np.ones((10, 10))])
