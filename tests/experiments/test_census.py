"""The census of shipped checkpoints: its smoke run on Silero's VAD, the ONNX loading, the null, the
kinds and the rules."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import assert_png, read_csv, section_of

from experiments import census
from experiments.verdicts import (
    EVIDENCE_COLUMNS,
    Evidence,
    derive_verdicts,
    read_evidence,
    verdicts_markdown,
)

needs_silero = pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None,
    reason="the smoke run analyzes silero-vad's checkpoint (dev extra)",
)


@needs_silero
def test_smoke_analyzes_the_smallest_checkpoint_and_its_null(smoke):
    _, out, results = smoke
    layers = read_csv(out / "layers.csv", census.LAYER_COLUMNS)
    assert {row["checkpoint"] for row in layers} == {"silero-vad:silero_vad_16k"}
    assert {(row["condition"], row["seed"]) for row in layers} == {
        ("trained", "0"), ("gaussian", "0"), ("gaussian", "1"),
    }  # fmt: skip
    names = {row["name"] for row in layers}
    assert "stft_conv.weight" not in names  # the fixed DFT basis is left out
    trained = {row["name"]: row for row in layers if row["condition"] == "trained"}
    # the 1x128 head has one eigenvalue: excluded by the library's min_evals rule, with its reason
    assert trained["final_conv.weight"]["status"] == "skipped"
    assert "min_evals" in trained["final_conv.weight"]["reason"]
    assert trained["lstm_cell.weight_hh"]["kind"] == "recurrent"
    assert trained["conv1.weight"]["kind"] == "conv"
    rows = read_csv(out / "checkpoints.csv", ["checkpoint", "condition", "seed", *census.SUMMARY_COLUMNS])
    assert all(row["excluded_min_evals"] == "1" for row in rows)
    assert_png(out / "census.png")
    evidence = read_evidence(out / "evidence.csv")
    assert evidence.conditions("pct_alpha_2_6")[:2] == ["trained", "gaussian"]
    body = section_of(results, census.STUDY)
    assert verdicts_markdown(derive_verdicts(census.CLAIMS, evidence)) in body
    assert "`silero-vad` 6.2.3" in body


@needs_silero
def test_the_evidence_file_has_the_shared_columns(smoke):
    _, out, _ = smoke
    header = (out / "evidence.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == EVIDENCE_COLUMNS


@pytest.mark.parametrize(
    ("name", "ndim", "kind"),
    [
        ("encoder.layer.0.attention.self.query.weight", 2, "attention Q"),
        ("encoder.layer.3.attention.self.key.weight", 2, "attention K"),
        ("encoder.layer.3.attention.self.value.weight", 2, "attention V"),
        ("encoder.layer.5.attention.output.dense.weight", 2, "attention O"),
        ("encoder.layer.5.output.dense.weight", 2, "dense"),
        ("embeddings.word_embeddings.weight", 2, "embedding"),
        ("emb.weight", 2, "embedding"),
        ("blocks.2.k_proj.weight", 2, "attention K"),
        ("blocks.2.out_proj.weight", 2, "attention O"),
        ("out_proj.0.weight", 2, "dense"),  # the read-out head, not an attention output
        ("lstm_cell.weight_ih", 2, "recurrent"),
        ("conv2.weight", 3, "conv"),
    ],
)
def test_layer_kinds_come_from_names_and_dimensions(name, ndim, kind):
    assert census.layer_kind(name, ndim) == kind


def test_the_null_keeps_shapes_and_scales_and_depends_on_the_seed():
    rng = np.random.default_rng(3)
    weights = {"a": rng.standard_t(3, size=(200, 80)).astype(np.float32) * 0.1, "b": np.ones((4, 8, 3))}
    null = census.gaussian_null(weights, 0, "model")
    for name, array in weights.items():
        assert null[name].shape == array.shape
        rms = np.sqrt(np.mean(np.square(array, dtype=np.float64)))
        assert np.sqrt(np.mean(np.square(null[name], dtype=np.float64))) == pytest.approx(rms, rel=0.1)
    assert np.array_equal(null["a"], census.gaussian_null(weights, 0, "model")["a"])
    assert not np.array_equal(null["a"], census.gaussian_null(weights, 1, "model")["a"])
    assert not np.array_equal(null["a"], census.gaussian_null(weights, 0, "other")["a"])


def test_summaries_count_exclusions_by_the_librarys_rule_and_bands_inclusively():
    rng = np.random.default_rng(0)
    weights = {"tiny": rng.normal(size=(3, 50)), "big": rng.normal(size=(300, 100))}
    layers = census.analyze_weights_of(weights, "m", "p", "trained", 0)
    summary = census.summarize(layers)
    assert (summary["analyzed"], summary["excluded_min_evals"], summary["fitted"]) == (1, 1, 1)

    def layer(alpha, q=2.0, rank_loss=0, lambda_min=1.0):
        return census.Layer("m", "p", "trained", 0, "w", "dense", 20, 10, q, 10, "ok", alpha, rank_loss,
                            lambda_min, "")  # fmt: skip

    summary = census.summarize([layer(2.0), layer(4.0), layer(6.0), layer(1.5), layer(9.0, rank_loss=1)])
    assert summary["pct_alpha_2_4"] == pytest.approx(40.0)
    assert summary["pct_alpha_2_6"] == pytest.approx(60.0)
    assert (summary["pct_alpha_below_2"], summary["pct_alpha_above_6"]) == (20.0, 20.0)
    assert summary["pct_rank_collapsed_q"] == pytest.approx(20.0)
    square = census.summarize([layer(3.0, q=1.0, rank_loss=1, lambda_min=0.0)])
    assert square["rank_loss_layers"] == 1 and square["q_gt_1_1_layers"] == 0


def evidence(statistic, trained, null):
    rows = [(statistic, "trained", i, v) for i, v in enumerate(trained)]
    return Evidence(rows + [(statistic, "gaussian", i, v) for i, v in enumerate(null)])


@pytest.mark.parametrize(
    ("trained", "null", "verdict"),
    [
        ([90, 85, 80, 95], [20, 30, 10, 25], "agrees"),
        ([90, 85, 80, 95], [90, 85, 80, 95], "partly"),  # the null passes too
        ([90, 20, 80, 95], [20, 30, 10, 25], "partly"),  # mean above 50, interval reaches below
        ([40, 20, 60, 30], [20, 30, 10, 25], "disagrees"),
    ],
)
def test_the_alpha_rule(trained, null, verdict):
    claim = next(c for c in census.CLAIMS if c.key == "alpha_2_6")
    assert claim.judge(evidence("pct_alpha_2_6", trained, null)).verdict == verdict


@pytest.mark.parametrize(
    ("trained", "null", "verdict"),
    [
        ([0, 0, 0], [5, 0, 0], "agrees"),
        ([0, 0, 0], [0, 0, 0], "partly"),
        ([10, 0, 0], [5, 0, 0], "partly"),
        ([20, 0, 0], [0, 0, 0], "disagrees"),
    ],
)
def test_the_rank_rule(trained, null, verdict):
    claim = next(c for c in census.CLAIMS if c.key == "no_rank_collapse")
    assert claim.judge(evidence("pct_rank_collapsed_q", trained, null)).verdict == verdict


def test_the_onnx_checkpoint_loads_one_kernel_per_convolution():
    """NudeNet's 320n.onnx (YOLOv8n, batch norms folded by the export) read through ``onnx``: one 4-D
    kernel per Conv node of the graph, and none of the graph's integer or scalar constants."""
    onnx = pytest.importorskip("onnx", reason="ONNX checkpoints are read with onnx (dev extra)")
    nudenet = [package for package in census.PACKAGES if package.distribution == "nudenet"]
    checkpoints, missing = census.find_checkpoints(nudenet)
    if missing:
        pytest.skip("nudenet (dev extra) is not installed")
    path = checkpoints[0].path
    weights = census.load_weights(path)
    graph = onnx.load(str(path)).graph
    kernels = [node.input[1] for node in graph.node if node.op_type == "Conv"]
    assert len(weights) == len(kernels) == 64
    assert sorted(weights) == sorted(kernels)
    assert len(graph.initializer) > len(weights)  # biases, shape constants and scalars are left out
    assert all(w.ndim == 4 and w.dtype == np.float32 for w in weights.values())
    assert weights["model.0.conv.weight"].shape == (16, 3, 3, 3)  # the stem: 16 filters on RGB
    assert weights["model.22.cv3.2.2.weight"].shape == (18, 64, 1, 1)  # NudeNet's 18 classes
    assert not any("bn" in name or "running" in name for name in weights)
