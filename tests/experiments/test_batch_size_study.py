"""Alpha over training and batch size (seed 001): phases from a run file, and the smoke run's outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_png, section_of

from experiments.batch_size_study import KNOB, STUDY, main
from experiments.phases import LABELS, layer_phases
from experiments.sweep import METRICS_FILE, run_name
from spectral_callbacks import open_run
from spectral_callbacks.model import analyze_weights
from spectral_callbacks.store import ParameterSpec, RunWriter

SMOKE_VALUES = ("8", "64")


def test_phases_from_the_run_file_are_the_analysis_labels(tmp_path):
    """A run file whose one layer goes through several phases: the labels derived from what the
    file stores equal those the analysis gave each matrix."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((200, 100))
    matrices = [
        noise,  # random-like
        noise + 0.5 * rng.standard_normal((200, 1)) @ rng.standard_normal((1, 100)),  # bulk+spikes
        rng.standard_t(1.5, (200, 100)),  # heavy-tailed
        rng.standard_normal((200, 20)) @ rng.standard_normal((20, 100)),  # rank-collapse
    ]
    spec = ParameterSpec("w", "linear", (200, 100))
    writer = RunWriter.open(
        tmp_path / "spectra.h5", run_id="phases", parameters=[spec], config_json="{}", framework="test",
        weights_dtype=None,
    )  # fmt: skip
    expected = []
    try:
        for epoch, matrix in enumerate(matrices):
            row = writer.append_index(epoch, epoch, "captured")
            (spectrum,) = analyze_weights([("w", matrix.astype(np.float32), "linear")])
            writer.append_layer(row, spectrum)
            writer.flush()
            writer.set_status(row, "analyzed")
            expected.append(spectrum.phase)
    finally:
        writer.close()
    assert len(set(expected)) == 4
    with open_run(tmp_path) as reader:
        assert layer_phases(reader, "w") == expected


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(runs root, figures directory, results file)`` of one smoke run of the study."""
    root = tmp_path_factory.mktemp("batch_size")
    results = root / "RESULTS.md"
    out = main(
        ["--smoke", "--runs", str(root / "runs"), "--out", str(root / "results"), "--results", str(results)]
    )
    return root / "runs" / "smoke", out, results


@pytest.mark.slow
def test_smoke_run_writes_runs_figures_and_a_well_formed_section(smoke):
    runs, out, results = smoke
    steps = {}
    for value in SMOKE_VALUES:
        run = runs / STUDY / run_name(KNOB, value)
        record = json.loads((run / METRICS_FILE).read_text())
        steps[value] = record["steps"]
        with open_run(run) as reader:
            assert reader.epochs.tolist() == [0, 1, 2]
            assert np.all(np.isfinite(reader.metric("alpha", "network.fc1")))
    assert steps["8"] > steps["64"]  # same epochs, more steps with smaller batches
    section = section_of(results, STUDY)
    assert section.strip().startswith("## Alpha over training and batch size (seed 001)")
    assert re.search(r"\*\*(Agrees|Does not agree)[^*]*\.\*\*", section)
    final_rows = [line for line in section.splitlines() if re.match(r"\| (8|64) \| \d+ \|", line)]
    assert len(final_rows) == 2
    phase_cells = re.findall(r"\| (?:conv1|conv2|fc1|fc2|out|) \| (?:8|64) \| ([^\n]+) \|\n", section)
    assert len(phase_cells) == 2 * 5  # runs x layers
    for cells in phase_cells:
        assert all(cell.strip() in LABELS for cell in cells.split("|"))
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", section)
    assert {Path(link).name for link in links} >= {"phases.png", "alpha.png", "alpha-vs-batch_size.png"}
    for link in links:
        assert_png(results.parent / link)
        assert (results.parent / link).parent == out


def test_an_unknown_metric_stops_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--smoke", "--runs", str(tmp_path), "--metrics", "alpha", "alpha_hat"])
    assert exited.value.code == 2
    assert "Unknown metric 'alpha_hat'. Available: " in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
