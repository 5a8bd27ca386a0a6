"""``spectral-callbacks analyze``: tables, HDF5 and CSV outputs, run files, and one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from posthoc_models import analyzable

from spectral_callbacks import analyze_matrix, analyze_model, open_run
from spectral_callbacks.analysis.blas_environment import BLAS_THREAD_VARIABLES
from spectral_callbacks.cli import main
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter


def run_cli(capsys: pytest.CaptureFixture, *arguments: object) -> tuple[int, str, str]:
    code = main(["analyze", *map(str, arguments)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def corrupt(model_files, tmp_path: Path) -> Path:
    data = model_files["safetensors"].read_bytes()
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_table_hdf5_and_csv(model_files, state, tmp_path: Path, capsys) -> None:
    h5, table = tmp_path / "results.h5", tmp_path / "results.csv"
    code, out, err = run_cli(capsys, model_files["safetensors"], "--out", h5, "--out", table)
    assert code == 0 and err == ""
    expected = {row.name: row for row in analyze_model(analyzable(state))}
    lines = out.splitlines()
    assert lines[0] == f"== {model_files['safetensors']}"
    assert lines[1] == f"safetensors, 1 file: {len(expected)} matrices analyzed"
    assert lines[2].split()[:4] == ["name", "kind", "shape", "alpha"]
    for name in expected:
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert f"wrote {h5}" in lines and f"wrote {table}" in lines
    with open_run(h5) as run:
        assert sorted(run.layers) == sorted(expected)
        assert run.epochs.tolist() == [0]
        for name, row in expected.items():
            assert run.metric("alpha", name)[0] == row.alpha
            np.testing.assert_array_equal(run.svals(name, 0), row.svals)
        assert run.config["posthoc"]["paths"] == [str(model_files["safetensors"])]
        assert run.config["min_evals"] == 8
    with table.open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(state)  # every parameter, the skipped ones (biases, norms) too
    by_name = {row["name"]: row for row in rows}
    assert float(by_name["blocks.1.mlp.fc2"]["log_norm"]) == pytest.approx(
        expected["blocks.1.mlp.fc2"].log_norm, rel=1e-15
    )
    assert by_name["blocks.0.norm"]["status"] == "skipped"


def test_a_corrupt_file_among_good_ones(model_files, corrupt: Path, tmp_path: Path, capsys) -> None:
    h5 = tmp_path / "results.h5"
    paths = [model_files["sharded"], corrupt, model_files["npz"]]
    code, out, err = run_cli(capsys, *paths, "--executor", "processes", "--workers", "2", "--out", h5)
    assert code == 1  # some input could not be analyzed; the others were, and were written
    (line,) = err.splitlines()
    assert line.startswith(f"spectral-callbacks: {corrupt}: not a readable safetensors file")
    assert f"== {model_files['sharded']}" in out and f"== {model_files['npz']}" in out
    with open_run(h5) as run:
        index = run.snapshots()
        assert index["status"].tolist() == ["analyzed", "failed", "analyzed"]
        assert "truncated or corrupt" in index["reason"][1]
        assert run.epochs.tolist() == [0, 2]
        assert run.metric("alpha", "embed")[0] == run.metric("alpha", "embed")[1]


def test_layer_selection(model_files, capsys) -> None:
    code, out, _ = run_cli(capsys, model_files["npz"], "--layers", r"blocks\.1\..*", "--exclude", ".*fc2")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[4:] if line.startswith("blocks")]
    assert names == [f"blocks.1.attn.{p}" for p in "qkvo"] + ["blocks.1.mlp.fc1"]
    code, _, err = run_cli(capsys, model_files["npz"], "--layers", "decoder.*")
    assert code == 1
    assert "Layer filter 'decoder.*' matches no analyzable layer. Available: embed, " in err


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["{missing}"], 1, "{missing}: no such file or directory."),
        (["{script}"], 1, "unknown format '.py'"),
        (["{pickled}"], 1, "pass --allow-pickle"),
        (["{npz}", "--executor", "spark"], 2, "Invalid executor 'spark'"),
        (["{npz}", "--out", "results.json"], 2, "Unsupported output 'results.json'"),
        (["{npz}", "--out", "{existing}"], 2, "already exists; remove it or choose another name"),
        (["{npz}", "--executor", "dask://127.0.0.1:9", "--timeout", "1"], 2, "Cannot reach the dask"),
        (["{npz}", "--min-evals", "0"], 2, "Invalid value for min_evals=0"),
        (["{npz}", "--executor", "processes", "--workers", "0"], 2, "Invalid value for workers=0"),
        (["{npz}", "--out", "{script}/results.csv"], 1, "cannot write {script}/results.csv"),
    ],
)
def test_bad_input_is_one_line_never_a_traceback(
    model_files, tmp_path: Path, capsys, arguments: list[str], code: int, message: str
) -> None:
    torch = pytest.importorskip("torch")
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.ones(3, 3)}, "callbacks": {"cb": object}}, pickled)
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"")
    (tmp_path / "train.py").write_text("")
    names = {
        "missing": tmp_path / "absent.safetensors",
        "script": tmp_path / "train.py",
        "pickled": pickled,
        "npz": model_files["npz"],
        "existing": existing,
    }
    returned, _, err = run_cli(capsys, *[argument.format(**names) for argument in arguments])
    assert returned == code
    (line,) = err.splitlines()
    assert line.startswith("spectral-callbacks: ")
    assert message.format(**names) in line


def make_run(path: Path, *, epochs: list[int], captured: int) -> dict[str, np.ndarray]:
    """A run file as a dead worker leaves it: analyzed ``epochs``, then one ``captured`` snapshot."""
    parameters = (ParameterSpec("fc", "linear", (24, 12)), ParameterSpec("conv", "conv2d", (8, 3, 3, 3)))
    rng = np.random.default_rng(captured)
    arrays = {spec.name: rng.standard_normal(spec.shape).astype(np.float32) for spec in parameters}
    writer = RunWriter.open(
        path, run_id="run", parameters=parameters, config_json=json.dumps({"min_evals": 8}),
        framework="test", weights_dtype="float32",
    )  # fmt: skip
    for epoch in epochs:
        writer.append_weights(arrays)
        row = writer.append_index(epoch, epoch, "captured")
        writer.set_status(row, "analyzed")  # no layer rows: this test only needs the index
    writer.append_weights(arrays)
    writer.append_index(captured, 10 * captured, "captured")
    writer.close()
    return arrays


def test_run_file_snapshots_left_captured_are_analyzed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run" / "spectra.h5"
    arrays = make_run(path, epochs=[], captured=4)
    code, out, err = run_cli(capsys, path.parent)
    assert code == 0 and err == ""
    assert out.startswith(f"== {path.parent} (run file: 1 snapshot(s) analyzed now")
    assert "alpha@4" in out
    with open_run(path) as run:
        assert run.epochs.tolist() == [4]
        expected = analyze_matrix(arrays["conv"], kind="conv2d")
        assert run.metric("log_norm", "conv")[0] == expected.log_norm
    code, out, _ = run_cli(capsys, path)  # nothing pending: the table only, the file untouched
    assert code == 0 and "(run file: 0 snapshot(s)" in out


def test_a_live_run_is_left_to_its_worker(tmp_path: Path, capsys) -> None:
    path = tmp_path / "spectra.h5"
    make_run(path, epochs=[], captured=2)
    writer = RunWriter.open(
        path, run_id="run", parameters=(), config_json="{}", framework="test",
        weights_dtype="float32", resume_after_step=10**9,
    )  # fmt: skip
    try:
        code, _, err = run_cli(capsys, path)
    finally:
        writer.close()
    assert code == 1
    assert "still being written by another process" in err and "live run analyzes its own" in err


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys) -> None:
    from spectral_callbacks.posthoc.progress import progress_bar

    with progress_bar(3, "analyzing") as advance:  # stderr is not a terminal here: nothing
        advance(1)
        advance(2)
    assert capsys.readouterr().err == ""
    pytest.importorskip("rich")
    with progress_bar(3, "analyzing", enabled=True) as advance:
        advance(1)
        advance(2)


@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "npz", "pt", "ckpt", "keras", "weights.h5"])
def test_every_format_on_the_command_line(model_files, state, tmp_path: Path, capsys, fmt: str) -> None:
    if fmt in ("keras", "weights.h5"):
        keras = pytest.importorskip("keras")
        model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(10)])
        path = tmp_path / f"model.{fmt}"
        if fmt == "keras":
            model.save(path)
        else:
            model.save_weights(path)
        expected = 2
    elif fmt not in model_files:
        pytest.skip(f"{fmt} needs torch")
    else:
        path, expected = model_files[fmt], len(analyzable(state))
    code, out, err = run_cli(capsys, path)
    assert (code, err) == (0, "")
    assert out.splitlines()[1].endswith(f": {expected} matrices analyzed")


BLAS_PROBE = (
    "import sys; from spectral_callbacks.cli import main; code = main(sys.argv[1:]); "
    "from threadpoolctl import threadpool_info; "
    "print(code, sorted({i['num_threads'] for i in threadpool_info() if i['internal_api'] == 'openblas'}))"
)


def run_blas_probe(model_files, environment: dict[str, str], threads: int) -> str:
    """The command in a new interpreter; afterwards, the thread counts OpenBLAS started with
    (each task's limit is undone when it ends)."""
    env = {key: value for key, value in os.environ.items() if key not in BLAS_THREAD_VARIABLES}
    arguments = ["analyze", str(model_files["npz"]), "--threads", str(threads)]
    done = subprocess.run(
        [sys.executable, "-c", BLAS_PROBE, *arguments],
        env={**env, **environment}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()[-1]


CPUS = os.cpu_count() or 1
one_cpu = pytest.mark.skipif(CPUS < 2, reason="OpenBLAS starts one thread on one CPU whatever is asked")


@one_cpu
def test_the_command_starts_blas_with_its_thread_count(model_files) -> None:
    """OpenBLAS starts its threads when it loads (one per CPU unless told), and they spin for
    work the tasks do not give them: ``analyze`` sets the count before numpy loads."""
    assert run_blas_probe(model_files, {}, CPUS - 1) == f"0 [{CPUS - 1}]"


@one_cpu
def test_the_users_blas_thread_setting_is_kept(model_files) -> None:
    assert run_blas_probe(model_files, {"OPENBLAS_NUM_THREADS": str(CPUS)}, CPUS - 1) == f"0 [{CPUS}]"
