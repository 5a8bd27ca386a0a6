"""Regularization sweep (Martin, 2018): the smoke run's outputs, bad input, and the direction L2 pushes.

The smoke run (fc_l2 = 0 and 0.1, two epochs of 140 digits in batches of 16, a fixed seed)
writes its runs, figures and section into a temporary directory, never into the real RESULTS.md;
the direction test reads the same runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import assert_png, section_of

from experiments.reg_sweep import KNOB, STUDY, main
from experiments.sweep import METRICS_FILE, run_name
from spectral_callbacks import open_run
from spectral_callbacks.spectra import METRIC_NAMES

SMOKE_VALUES = ("0", "1e-1")
FC_LAYERS = ("network.fc1", "network.fc2")


@pytest.mark.slow
def test_smoke_run_writes_runs_figures_and_a_well_formed_section(smoke):
    runs, out, results = smoke
    for value in SMOKE_VALUES:
        run = runs / STUDY / run_name(KNOB, value)
        record = json.loads((run / METRICS_FILE).read_text())
        assert record["epochs"] == 2 and 0 <= record["metrics"]["test/accuracy"] <= 1
        with open_run(run) as reader:
            assert reader.epochs.tolist() == [0, 1, 2]
            assert {"network.fc1", "network.fc2"} <= set(reader.layers)
    section = section_of(results, STUDY)
    assert section.strip().startswith("## Regularization sweep (Martin, 2018)")
    assert "python -m experiments.reg_sweep --smoke" in section
    assert re.search(r"\*\*(Agrees|Does not agree)[^*]*\.\*\*", section)
    table = [line for line in section.splitlines() if line.startswith("| 0 |") or line.startswith("| 0.1 |")]
    assert len(table) == 2  # one row per strength at the end of training
    cells = table[0].strip("|").split("|")
    assert len(cells) == 2 + 2 * 4 and all(cell.strip() for cell in cells)
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", section)
    assert {Path(link).name for link in links} >= {"lambda_min.png", "lambda_min-vs-fc_l2.png", "esd.png"}
    for link in links:
        assert_png(results.parent / link)
    assert all(path.parent == out for path in (results.parent / link for link in links))


@pytest.mark.slow
def test_report_only_rewrites_the_same_section_from_the_runs(smoke):
    runs, out, results = smoke
    before = section_of(results, STUDY)
    main(
        [
            "--smoke",
            "--report-only",
            "--runs",
            str(runs.parent),
            "--out",
            str(out.parent),
            "--results",
            str(results),
        ]
    )
    assert section_of(results, STUDY) == before
    assert results.read_text().count("<!-- study:") == 1


def test_an_unknown_metric_stops_before_any_run_and_lists_the_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--smoke", "--runs", str(tmp_path), "--metrics", "lambda_max"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "Unknown metric 'lambda_max'" in error and all(name in error for name in ("lambda_min", "alpha"))
    assert not any(tmp_path.iterdir())
    assert "lambda_min" in METRIC_NAMES


@pytest.mark.slow
def test_stronger_l2_leaves_the_fc_layers_a_smaller_lambda_min(smoke):
    """Martin's (2018) direction, where it is large at any size: fc_l2 = 0.1 against none, same seed.

    With SGD (lr 0.01, momentum 0.9) each step multiplies fc1 and fc2 by about
    1 - 2 lr fc_l2 / (1 - momentum) = 0.98 on top of what the data gradient does, so the smoke
    run's 18 steps shrink their smallest eigenvalue by tens of percent, while without the penalty
    it moves by about a percent.
    """
    runs, _, _ = smoke
    final = {}
    for value in SMOKE_VALUES:
        with open_run(runs / STUDY / run_name(KNOB, value)) as reader:
            assert reader.epochs.tolist() == [0, 1, 2]
            final[value] = {layer: reader.metric("lambda_min", layer) for layer in FC_LAYERS}
    for layer in FC_LAYERS:
        start, plain, penalized = final["0"][layer][0], final["0"][layer][-1], final["1e-1"][layer][-1]
        assert abs(plain / start - 1) < 0.05, layer
        assert penalized < 0.8 * plain, layer
