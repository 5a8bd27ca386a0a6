"""Alpha over training and batch size (Martin & Mahoney, 2021): the smoke run's outputs, its phases
the run files'."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_png, section_of

from experiments.batch_size_study import KNOB, STUDY, main
from experiments.phases import LABELS
from experiments.sweep import METRICS_FILE, run_name
from spectral_callbacks import open_run

SMOKE_VALUES = ("8", "64")


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
    assert section.strip().startswith("## Alpha over training and batch size (Martin & Mahoney, 2021)")
    assert re.search(r"\*\*(Agrees|Does not agree)[^*]*\.\*\*", section)
    final_rows = [line for line in section.splitlines() if re.match(r"\| (8|64) \| \d+ \|", line)]
    assert len(final_rows) == 2
    phase_rows = re.findall(r"\| (conv1|conv2|fc1|fc2|out|) \| (8|64) \| ([^\n]+) \|\n", section)
    assert len(phase_rows) == 2 * 5  # runs x layers
    layer = ""
    for name, value, cells in phase_rows:
        labels = [cell.strip() for cell in cells.split("|")]
        assert all(label in LABELS for label in labels)
        layer = name or layer  # a layer's name is on its first row only
        with open_run(runs / STUDY / run_name(KNOB, value)) as reader:
            assert labels[:-1] == reader.phases(f"network.{layer}")  # epochs 0, 1, 2, then the most frequent
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
