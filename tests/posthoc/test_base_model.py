"""``spectral-callbacks analyze TUNED --base-model BASE``: the spectra of each layer's change,
equal to ``analyze_model(tuned, base_model=base)``; what the base lacks is a skipped row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spectral_callbacks import analyze_model
from spectral_callbacks.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    rng = np.random.default_rng(0)
    base = {
        "encoder.dense.weight": rng.standard_normal((96, 64)).astype(np.float32),
        "encoder.proj.weight": rng.standard_normal((64, 48)).astype(np.float32),
    }
    tuned = {
        name: value + 0.01 * rng.standard_normal(value.shape).astype(np.float32)
        for name, value in base.items()
    }
    tuned["head.weight"] = rng.standard_normal((40, 64)).astype(np.float32)  # new in the tuned model
    directory = tmp_path_factory.mktemp("checkpoints")
    paths = {"base": directory / "base.safetensors", "tuned": directory / "tuned.safetensors"}
    safetensors_numpy.save_file(base, str(paths["base"]))
    safetensors_numpy.save_file(tuned, str(paths["tuned"]))
    return {"paths": paths, "base": base, "tuned": tuned}


def test_each_row_is_the_change_from_the_base(checkpoints, tmp_path: Path, capsys) -> None:
    paths = checkpoints["paths"]
    out = tmp_path / "rows.csv"
    assert main(["analyze", str(paths["tuned"]), "--base-model", str(paths["base"]), "--out", str(out)]) == 0
    import csv

    rows = {row["name"]: row for row in csv.DictReader(out.open())}
    # analyze_model keeps a mapping's keys; the file reader names layers without ".weight"
    changes = analyze_model(checkpoints["tuned"], base_model=checkpoints["base"])
    expected = {row.name.removesuffix(".weight"): row for row in changes}
    for name in ("encoder.dense", "encoder.proj"):
        assert float(rows[name]["log_norm"]) == pytest.approx(expected[name].log_norm, rel=1e-9)
        assert float(rows[name]["alpha"]) == pytest.approx(expected[name].alpha, rel=1e-9)
        # the change is 1% of the weights: its squared norm 10^-4 of theirs
        weights = analyze_model(checkpoints["tuned"])
        assert expected[name].log_norm < next(r.log_norm for r in weights if r.name == f"{name}.weight") - 3
    assert rows["head"]["status"] == "skipped" and rows["head"]["reason"] == "not in the base model"


def test_an_unreadable_base_model_is_one_line(checkpoints, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere.safetensors"
    assert main(["analyze", str(checkpoints["paths"]["tuned"]), "--base-model", str(missing)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("spectral-callbacks: base model:")
    assert str(missing) in error
