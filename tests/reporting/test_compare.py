"""Comparing runs: labels, the long table, model averages, CSV/PNG/HTML outputs, bad input, live runs.

Runs are written through the store API with synthetic matrices (the worker's steps without its
process), so the whole module takes about a second.
"""

from __future__ import annotations

import csv
import doctest
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from run_files import append_snapshot, open_writer

from spectral_callbacks.analysis.averages import model_averages
from spectral_callbacks.cli import main
from spectral_callbacks.reporting import report, run_params
from spectral_callbacks.reporting.compare import (
    COMPARE_CSV_COLUMNS,
    MODEL_AVERAGE,
    LabeledRun,
    compare_table,
    load_runs,
    model_average,
    run_labels,
    select_compared_layers,
)
from spectral_callbacks.reporting.report import comparison_images, html_page, write_outputs
from spectral_callbacks.reporting.run_params import label_number, parameter_values, stored_parameter
from spectral_callbacks.runfile.reader import RUN_FILE_NAME, open_run
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter
from spectral_callbacks.spectra import METRIC_NAMES

SPECS = (
    ParameterSpec("fc1", "linear", (32, 16)),
    ParameterSpec("fc2", "linear", (24, 16)),
    ParameterSpec("head", "linear", (10, 16)),  # the classifier: left out of model averages
)
LAYERS = [spec.name for spec in SPECS]
STRENGTHS = (0.0001, 0.0003, 0.0005)
EPOCHS = 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_weights(strength: float, epoch: int, specs=SPECS, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Gaussian matrices whose columns shrink faster with ``strength * epoch``: like L2, the
    smallest eigenvalue falls with the regularization strength and with training."""
    rng = np.random.default_rng(seed + epoch)
    arrays = {}
    for spec in specs:
        decay = 1.0 / (1.0 + 1e4 * strength * epoch * np.arange(spec.shape[1]) / spec.shape[1])
        arrays[spec.name] = rng.standard_normal(spec.shape) * decay
    return arrays


def compared_writer(path: Path, specs=SPECS) -> RunWriter:
    """A writer for a run of the comparison: no saved weights, its directory's name as run id."""
    return open_writer(
        path, parameters=specs, run_id=path.parent.name, config={"every_n_epochs": 1}, weights_dtype=None
    )


def write_run(path: Path, strength: float, specs=SPECS, *, epochs: int = EPOCHS) -> list:
    """A closed run file; returns the analysis of each epoch (the independent reference)."""
    writer = compared_writer(path, specs)
    try:
        return [
            append_snapshot(writer, epoch, 10 * epoch, synthetic_weights(strength, epoch, specs), specs=specs)
            for epoch in range(epochs)
        ]
    finally:
        writer.close()


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """``runs/l2_<strength>/lightning_logs/version_0/spectra.h5`` for three strengths."""
    root = tmp_path_factory.mktemp("compare") / "runs"
    spectra = {}
    for strength in STRENGTHS:
        label = f"l2_{strength}"
        spectra[label] = write_run(root / label / "lightning_logs" / "version_0" / RUN_FILE_NAME, strength)
    return root, spectra


@pytest.fixture
def runs(runs_root):
    root, _ = runs_root
    opened = load_runs([root / f"l2_{strength}" for strength in STRENGTHS])
    yield opened
    for run in opened:
        run.reader.close()


# -- finding and labelling runs ----------------------------------------------------------------------
def test_directories_are_searched_and_labelled_by_the_distinguishing_part(runs_root) -> None:
    root, _ = runs_root
    opened = load_runs([root])  # one directory holding the three runs
    try:
        assert [run.label for run in opened] == [f"l2_{strength}" for strength in STRENGTHS]
        assert all(run.reader.path.name == RUN_FILE_NAME for run in opened)
    finally:
        for run in opened:
            run.reader.close()


def test_a_run_given_twice_is_opened_once(runs_root) -> None:
    root, _ = runs_root
    run_file = next((root / "l2_0.0001").rglob(RUN_FILE_NAME))
    opened = load_runs([run_file, root / "l2_0.0001"])
    try:
        assert len(opened) == 1
    finally:
        opened[0].reader.close()


@pytest.mark.parametrize(
    ("directories", "labels"),
    [
        (["/r/a/lightning_logs/version_0", "/r/b/lightning_logs/version_0"], ["a", "b"]),
        (["/r/a/lightning_logs/version_0", "/r/a/lightning_logs/version_1"], ["version_0", "version_1"]),
        (
            ["/r/a/logs/version_0", "/r/a/logs/version_1", "/r/b/logs/version_0"],
            ["a/version_0", "a/version_1", "b/version_0"],
        ),
        (["/r/a", "/s/b/c"], ["a", "c"]),
        (["/r/only/version_3"], ["only"]),
        (["/r/a/lightning_logs/version_0", "/s/b"], ["a", "b"]),
    ],
)
def test_labels_are_short_and_distinct(directories: list[str], labels: list[str]) -> None:
    assert run_labels([Path(d) / RUN_FILE_NAME for d in directories]) == labels


def test_a_run_file_with_another_name_is_labelled_by_its_stem() -> None:
    assert run_labels([Path("/r/x/first.h5"), Path("/r/x/second.h5")]) == ["first", "second"]


# -- the table ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["alpha", "lambda_min", "log_norm"])
def test_table_values_are_the_readers_values(runs, metric: str) -> None:
    table = compare_table(runs, metric)
    assert table.layers == [*LAYERS, MODEL_AVERAGE]
    assert table.runs == [run.label for run in runs]
    for label, reader in runs:
        for layer in LAYERS:
            series = table.series(label, layer)
            np.testing.assert_array_equal(series["value"], reader.metric(metric, layer))
            np.testing.assert_array_equal(series["epoch"], reader.epochs)
            np.testing.assert_array_equal(series["step"], reader.steps)
    assert {row.metric for row in table.rows} == {metric}
    assert len(table.rows) == len(runs) * (len(LAYERS) + 1) * EPOCHS


@pytest.mark.parametrize("metric", ["alpha", "log_norm", "lambda_min"])
def test_model_average_leaves_out_the_last_layer(runs, runs_root, metric: str) -> None:
    _, spectra = runs_root
    table = compare_table(runs, metric)
    for label, reader in runs:
        averages = table.series(label, MODEL_AVERAGE)["value"]
        np.testing.assert_array_equal(averages, model_average(reader, metric))
        for epoch, rows in enumerate(spectra[label]):
            by_name = {row.name: getattr(row, metric) for row in rows}
            assert all(row.status in ("ok", "warning") for row in rows)  # all fitted
            assert averages[epoch] == pytest.approx(np.mean([by_name["fc1"], by_name["fc2"]]), rel=1e-12)
            assert averages[epoch] != pytest.approx(np.mean(list(by_name.values())), rel=1e-9)
            if metric in ("alpha", "log_norm"):  # the TensorBoard sink's model/<metric>
                assert averages[epoch] == pytest.approx(model_averages(rows)[metric], rel=1e-12)


def test_model_average_follows_the_sink_when_layers_are_skipped(tmp_path: Path) -> None:
    """A skipped layer (all zeros) is left out; the classifier still is; same as model/<metric>."""
    path = tmp_path / "run" / RUN_FILE_NAME
    writer = compared_writer(path)
    expected = []
    try:
        for epoch in range(3):
            arrays = synthetic_weights(0.0002, epoch)
            if epoch == 1:
                arrays["fc1"] = np.zeros_like(arrays["fc1"])
            rows = append_snapshot(writer, epoch, 10 * epoch, arrays, specs=SPECS)
            expected.append(model_averages(rows)["alpha"])
    finally:
        writer.close()
    with open_run(path) as reader:
        assert reader.layer_status("fc1")[1][0] == "skipped"
        averages = model_average(reader, "alpha")
    assert averages == pytest.approx(expected, rel=1e-12)


def test_epoch_keeps_that_epoch_only_and_at_epoch_reads_it(runs) -> None:
    table = compare_table(runs, "lambda_min", epoch=2)
    assert {row.epoch for row in table.rows} == {2}
    values = table.at_epoch(2)
    for label, reader in runs:
        assert values["fc2"][label] == reader.metric("lambda_min", "fc2")[2]
    assert compare_table(runs, "alpha").common_epoch() == EPOCHS - 1


def test_wide_table_has_one_row_per_layer_and_run(runs) -> None:
    table = compare_table(runs, "alpha")
    header, rows = table.wide()
    assert header == ["layer", "run", *[f"epoch {e}" for e in range(EPOCHS)]]
    assert [row[:2] for row in rows] == [[layer, run.label] for layer in table.layers for run in runs]
    assert rows[0][2:] == runs[0].reader.metric("alpha", "fc1").tolist()
    header, _ = table.wide(max_epochs=2)
    assert header[2:] == ["epoch 0", f"epoch {EPOCHS - 1}"]


def test_to_pandas_has_the_csv_columns(runs) -> None:
    pd = pytest.importorskip("pandas")
    frame = compare_table(runs, "alpha").to_pandas()
    assert list(frame.columns) == list(COMPARE_CSV_COLUMNS)
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == len(runs) * (len(LAYERS) + 1) * EPOCHS


# -- outputs -----------------------------------------------------------------------------------------
def test_csv_round_trips(runs, tmp_path: Path) -> None:
    table = compare_table(runs, "lambda_min")
    written, _ = write_outputs([tmp_path / "report.csv"], runs, table)
    assert written == [tmp_path / "report.csv"]
    with open(tmp_path / "report.csv", newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == COMPARE_CSV_COLUMNS
        read = [
            (r["run"], r["layer"], int(r["epoch"]), int(r["step"]), r["metric"], float(r["value"]))
            for r in reader
        ]
    assert read == [tuple(row) for row in table.rows]


def test_png_and_html_outputs(runs, tmp_path: Path) -> None:
    table = compare_table(runs, "lambda_min")
    outputs = [tmp_path / "out" / "report.png", tmp_path / "out" / "report.html"]
    written, notes = write_outputs(outputs, runs, table)
    pngs = [tmp_path / "out" / name for name in ("report.png", "report-vs-l2.png", "report-esd.png")]
    assert written == [*pngs, outputs[1]]
    assert notes == []
    for path in pngs:
        assert path.read_bytes()[:8] == PNG_MAGIC
    page = outputs[1].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<img src="data:image/png;base64,') == 3
    assert "lambda_min against l2" in page
    assert all(run.label in page and str(run.reader.path) in page for run in runs)


def test_csv_is_written_before_the_figures_need_matplotlib(runs, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails from here on
    table = compare_table(runs, "alpha")
    outputs = [tmp_path / "report.html", tmp_path / "report.csv", tmp_path / "report.png"]
    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "spectral-callbacks[plots]"')):
        write_outputs(outputs, runs, table)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.csv"]
    with open(tmp_path / "report.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == len(table.rows)


def test_html_escapes_names(runs) -> None:
    table = compare_table(runs, "alpha")
    renamed = [LabeledRun("<b>&run", runs[0].reader)]
    page = html_page(renamed, table, [], ["a <note>"])
    assert "<b>&run" not in page and "&lt;b&gt;&amp;run" in page and "a &lt;note&gt;" in page


# -- run parameters ----------------------------------------------------------------------------------
def test_parameter_from_the_label(runs) -> None:
    assert parameter_values(runs) == ("l2", dict(zip([r.label for r in runs], STRENGTHS, strict=True)), [])
    name, values, _ = parameter_values(runs, "weight_decay")  # not stored: the label's only number
    assert name == "weight_decay"
    assert list(values.values()) == list(STRENGTHS)


def test_parameter_from_hparams_yaml_wins_over_the_label(runs) -> None:
    pytest.importorskip("yaml")
    hparams = runs[0].reader.path.parent / "hparams.yaml"
    hparams.write_text("model:\n  weight_decay: 0.25\n  layers: !!python/tuple [1, 2]\nlr: 0.1\n")
    try:
        _, values, _ = parameter_values(runs, "weight_decay")
        assert values[runs[0].label] == 0.25
        assert values[runs[1].label] == STRENGTHS[1]
        assert parameter_values(runs, "model.weight_decay")[1][runs[0].label] == 0.25
    finally:
        hparams.unlink()


def test_parameter_lookup_and_label_parsing() -> None:
    assert doctest.testmod(run_params).failed == 0
    assert stored_parameter({"every_n_epochs": 2}, "every_n_epochs") == 2.0
    assert stored_parameter({"a": {"lr": True}}, "lr") is None
    with pytest.raises(ValueError, match=r"ambiguous.*model\.lr=0\.1.*optimizer\.lr=0\.2"):
        stored_parameter({"model": {"lr": 0.1}, "optimizer": {"lr": 0.2}}, "lr")
    assert label_number("weight_decay=1e-4") == ("weight_decay", 1e-4)
    assert label_number("wd1e-4_seed_3", "wd") == ("wd", 1e-4)
    assert label_number("seed_1_wd_2") is None  # two numbers, no name: ambiguous


def test_without_a_parameter_the_plot_is_left_out_with_a_note(runs_root, monkeypatch) -> None:
    root, _ = runs_root
    opened = load_runs([root / "l2_0.0001", root / "l2_0.0005"])
    renamed = [LabeledRun(name, run.reader) for name, run in zip(("mlp", "cnn"), opened, strict=True)]
    for name in ("metric_figure", "parameter_figure", "esd_overlay_figure"):  # notes only: no drawing
        monkeypatch.setattr(report, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(report, "png_bytes", lambda figure: PNG_MAGIC)
    try:
        table = compare_table(renamed, "alpha")
        images, notes = comparison_images(renamed, table)
        assert [image.suffix for image in images] == ["", "-esd"]
        assert len(notes) == 1 and "pass --param NAME" in notes[0]
        _, notes = comparison_images(renamed, table, parameter="dropout")
        assert "No plot against dropout" in notes[0]
    finally:
        for run in opened:
            run.reader.close()


# -- bad input ---------------------------------------------------------------------------------------
def test_directory_without_run_file(tmp_path: Path) -> None:
    (tmp_path / "empty" / "lightning_logs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"No run file \(spectra\.h5\) in .*empty"):
        load_runs([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match=r"No run file or directory at .*missing"):
        load_runs([tmp_path / "missing"])


def test_unknown_metric_lists_the_metrics(runs) -> None:
    with pytest.raises(ValueError, match=r"Unknown metric 'alpha_hat'\. Available: ") as error:
        compare_table(runs, "alpha_hat")
    assert all(name in str(error.value) for name in METRIC_NAMES)


def test_different_layer_sets_compare_the_common_layers(runs, tmp_path: Path) -> None:
    extra = (SPECS[0], ParameterSpec("fc1b", "linear", (20, 16)), *SPECS[1:])
    write_run(tmp_path / "wide" / RUN_FILE_NAME, 0.0002, extra, epochs=2)
    opened = load_runs([tmp_path / "wide"])
    try:
        mixed = [*runs, *opened]
        table = compare_table(mixed, "alpha")
        assert table.layers == [*LAYERS, MODEL_AVERAGE]
        assert any("l2_0.0001 lacks fc1b" in note for note in table.notes)
        # the model average of each run is over its own layers (fc1b included), as in TensorBoard
        np.testing.assert_array_equal(
            table.series("wide", MODEL_AVERAGE)["value"], model_average(opened[0].reader, "alpha")
        )
        with pytest.raises(ValueError, match=r"Layer 'fc1b' is not in run l2_0.0001, .*Layers in every run: "
                           r"fc1, fc2, head\."):  # fmt: skip
            compare_table(mixed, "alpha", layers=["fc1b"])
        with pytest.raises(ValueError, match=r"Layer 'nope' is not in any run\. Layers in every run: fc1"):
            select_compared_layers(mixed, ["nope"])
        assert compare_table(mixed, "alpha", layers=["fc2"]).layers == ["fc2", MODEL_AVERAGE]
    finally:
        opened[0].reader.close()


def test_runs_without_a_common_layer(runs, tmp_path: Path) -> None:
    write_run(tmp_path / "other" / RUN_FILE_NAME, 0.0002, (ParameterSpec("conv", "linear", (12, 9)),))
    opened = load_runs([tmp_path / "other"])
    try:
        expected = r"No layer is common to all runs\. Layers: fc1, fc2, head in l2_0\.0001, l2_0\.0003, "
        with pytest.raises(ValueError, match=expected + r"l2_0\.0005; conv in other\."):
            compare_table([*runs, *opened], "alpha")
    finally:
        opened[0].reader.close()


def test_an_epoch_missing_in_some_run(runs, tmp_path: Path) -> None:
    write_run(tmp_path / "short" / RUN_FILE_NAME, 0.0002, epochs=2)
    opened = load_runs([tmp_path / "short"])
    try:
        mixed = [*runs, *opened]
        with pytest.raises(ValueError, match=r"Epoch 3 is not analyzed in every run.*short: 0, 1"):
            compare_table(mixed, "alpha", epoch=3)
        assert compare_table(mixed, "alpha").common_epoch() == 1  # the last epoch all runs have
    finally:
        opened[0].reader.close()


# -- a live run --------------------------------------------------------------------------------------
def test_compare_follows_a_live_run(runs_root, tmp_path: Path) -> None:
    root, _ = runs_root
    live = tmp_path / "l2_0.0002" / RUN_FILE_NAME
    writer = compared_writer(live)
    try:
        for epoch in range(2):
            append_snapshot(writer, epoch, 10 * epoch, synthetic_weights(0.0002, epoch), specs=SPECS)
        append_snapshot(writer, 2, 20, synthetic_weights(0.0002, 2), specs=SPECS, commit=False)  # analyzing
        opened = load_runs([root / "l2_0.0001", live.parent])
        try:
            table = compare_table(opened, "alpha")
            assert table.epochs("l2_0.0002") == [0, 1]
            assert table.common_epoch() == 1
            assert len(comparison_images(opened, table)[0]) == 3

            writer.set_status(2, "analyzed")
            append_snapshot(writer, 3, 30, synthetic_weights(0.0002, 3), specs=SPECS)
            table = compare_table(opened, "alpha")
            assert table.epochs("l2_0.0002") == [0, 1, 2, 3]
            np.testing.assert_array_equal(
                table.series("l2_0.0002", "fc1")["value"], opened[1].reader.metric("alpha", "fc1")
            )
        finally:
            for run in opened:
                run.reader.close()
        assert main(["compare", str(root / "l2_0.0001"), str(live.parent)]) == 0  # the CLI, still live
    finally:
        writer.close()


# -- the command -------------------------------------------------------------------------------------
def test_cli_prints_the_table_and_writes_outputs(runs_root, tmp_path: Path, capsys) -> None:
    root, _ = runs_root
    out = tmp_path / "report"
    code = main([
        "compare", str(root), "--metric", "lambda_min", "--layers", "fc1", "fc2",
        "--out", f"{out}.csv", "--out", f"{out}.html", "--out", f"{out}.png",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "lambda_min per layer and epoch, 3 runs"
    assert lines[1].split() == ["layer", "run", "epoch", "0", "epoch", "1", "epoch", "2", "epoch", "3"]
    with open_run(next((root / "l2_0.0005").rglob(RUN_FILE_NAME))) as reader:
        last = reader.metric("lambda_min", "fc2")[-1]
    assert any(line.split()[-1] == f"{last:.4g}" and "l2_0.0005" in line for line in lines)
    assert f"wrote {out}.csv" in lines and f"wrote {out}-vs-l2.png" in lines
    assert (tmp_path / "report-esd.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_without_matplotlib_writes_the_csv_and_names_the_extra(runs_root, tmp_path: Path) -> None:
    """The command as installed without the ``plots`` extra: matplotlib cannot be imported."""
    root, _ = runs_root
    program = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from spectral_callbacks.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    outputs = [tmp_path / "out" / name for name in ("report.html", "report.csv", "report.png")]
    arguments = ["compare", str(root), *[option for path in outputs for option in ("--out", str(path))]]
    done = subprocess.run(
        [sys.executable, "-c", program, *arguments], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["report.csv"]
    assert f"wrote {outputs[1]}" in done.stdout.splitlines()
    (error,) = [line for line in done.stderr.splitlines() if not line.startswith("note: ")]
    assert error.startswith(f"spectral-callbacks: {outputs[0]}, {outputs[2]} not written: ")
    assert error.endswith('pip install "spectral-callbacks[plots]"')
    # the CSV is the one written with matplotlib at hand
    assert main(["compare", str(root), "--out", str(tmp_path / "reference.csv")]) == 0
    assert outputs[1].read_text() == (tmp_path / "reference.csv").read_text()


def test_cli_output_that_cannot_be_written_is_one_line_and_exit_code_1(runs_root, tmp_path, capsys) -> None:
    root, _ = runs_root
    (tmp_path / "taken").write_text("a file where the output directory should be")
    code = main(["compare", str(root), "--out", str(tmp_path / "taken" / "report.csv")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert error.startswith("spectral-callbacks: cannot write an output: ") and "taken" in error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--metric", "alpha_hat"], r"Unknown metric 'alpha_hat'\. Available: .*, alpha, .*, lambda_min, "),
        (["--layers", "fc9"], r"Layer 'fc9' is not in any run\. Layers in every run: fc1, fc2, head\."),
        (["--epoch", "9"], r"Epoch 9 is not analyzed in every run"),
        (["--out", "report.pdf"], r"Unsupported output 'report\.pdf'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(runs_root, capsys, arguments, message) -> None:
    root, _ = runs_root
    code = main(["compare", str(root), *arguments])
    captured = capsys.readouterr()
    assert code == 2
    error = captured.err.strip()
    assert "\n" not in error and "Traceback" not in error
    assert error.startswith("spectral-callbacks: ")
    assert re.search(message, error), error


def test_cli_directory_without_run_file(tmp_path: Path, capsys) -> None:
    assert main(["compare", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"spectral-callbacks: No run file (spectra.h5) in {tmp_path} or its subdirectories; "
        "pass run directories written by SpectralCallback, or their run files."
    )


def test_no_nan_in_table_of_complete_runs(runs) -> None:
    assert all(math.isfinite(row.value) for row in compare_table(runs, "alpha").rows)
