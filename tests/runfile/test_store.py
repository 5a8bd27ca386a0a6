"""The HDF5 run file: RunWriter appends, RunReader (open_run) reads, also while it grows (SWMR)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from run_files import (
    ANALYZED_LAYERS,
    CONFIG,
    PARAMETERS,
    RUN_ID,
    analyze,
    append_snapshot,
    open_writer,
    random_weights,
)

from spectral_callbacks import RunReader, open_run
from spectral_callbacks.runfile.reader import READABLE_FORMATS, RUN_FILE_NAME
from spectral_callbacks.runfile.store import (
    FORMAT_VERSION,
    LAYER_STATUS,
    PHASE_CODES,
    RunFileBusyError,
    RunFileConflictError,
    RunWriter,
)
from spectral_callbacks.spectra import METRIC_NAMES

STATUS_NAMES = {code: name for name, code in LAYER_STATUS.items()}


@pytest.fixture
def run_path(tmp_path: Path) -> Path:
    return tmp_path / RUN_FILE_NAME


@pytest.fixture
def written_run(run_path: Path) -> dict[int, dict[str, np.ndarray]]:
    """A closed run file with snapshots at epochs 0, 1, 2 (steps 0, 5, 10)."""
    writer = open_writer(run_path)
    snapshots = {}
    for epoch in range(3):
        snapshots[epoch] = random_weights(epoch)
        append_snapshot(writer, epoch, 5 * epoch, snapshots[epoch])
    writer.close()
    return snapshots


# -- round trip -------------------------------------------------------------------------------------
def test_round_trip_index_and_attributes(run_path: Path, written_run: dict) -> None:
    with open_run(run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]
        assert run.steps.tolist() == [0, 5, 10]
        assert run.dropped == []
        assert sorted(run.layers) == sorted(ANALYZED_LAYERS)
        assert sorted(run.parameters) == sorted(spec.name for spec in PARAMETERS)
        attributes = run.attributes
        assert attributes["run_id"] == RUN_ID
        assert attributes["framework"] == "test"
        assert attributes["format_version"] == FORMAT_VERSION
        assert "library_version" in attributes
        assert json.loads(attributes["skipped_parameters"]) == {"tiny": "3 eigenvalues < min_evals=8"}
        assert run.config == CONFIG
        assert set(run.snapshots()["status"]) == {"analyzed"}


def test_layers_and_parameters_are_listed_in_model_order(run_path: Path, written_run: dict) -> None:
    """``RunReader.layers`` promises model order (plots and 'last layer' averages rely on it)."""
    with open_run(run_path) as run:
        assert run.layers == ANALYZED_LAYERS
        assert run.parameters == [spec.name for spec in PARAMETERS]
        assert list(run.metric("alpha")) == ANALYZED_LAYERS


def test_round_trip_weights_and_layer_info(run_path: Path, written_run: dict) -> None:
    with open_run(run_path) as run:
        for epoch, arrays in written_run.items():
            for spec in PARAMETERS:
                saved = run.weights(spec.name, epoch)
                assert saved.dtype == np.float32
                np.testing.assert_array_equal(saved, arrays[spec.name])
            np.testing.assert_array_equal(run.weights("fc", step=5 * epoch), arrays["fc"])
        # without epoch or step: the last snapshot
        np.testing.assert_array_equal(run.weights("fc"), written_run[2]["fc"])
        info = run.layer_info("conv")
        assert (info["kind"], info["N"], info["M"], info["num_slices"]) == ("conv2d", 8, 3, 9)
        assert info["Q"] == pytest.approx(8 / 3)
        assert run.layer_info("blocks/0")["parameter"] == "blocks/0"


def test_round_trip_spectra_and_metrics(run_path: Path, written_run: dict) -> None:
    with open_run(run_path) as run:
        for epoch, arrays in written_run.items():
            rows = {row.name: row for row in analyze(arrays)}
            for layer in ANALYZED_LAYERS:
                expected = rows[layer]
                np.testing.assert_array_equal(run.svals(layer, epoch), expected.svals)
                np.testing.assert_allclose(run.esd(layer, epoch), expected.evals, rtol=1e-12)
                for metric in METRIC_NAMES:
                    assert run.metric(metric, layer)[epoch] == pytest.approx(
                        expected.metrics()[metric], rel=1e-12, nan_ok=True
                    ), (layer, metric)
                status, reason = run.layer_status(layer)[epoch]
                assert status == expected.status
                assert reason == (expected.reason or "")
                assert run.phases(layer)[epoch] == expected.phase
        by_layer = run.metric("alpha")
        assert sorted(by_layer) == sorted(ANALYZED_LAYERS)
        assert all(values.shape == (3,) for values in by_layer.values())
        assert set(run.metrics("fc")) == set(METRIC_NAMES)


def test_uncommitted_analysis_is_invisible_but_weights_are_readable(run_path: Path) -> None:
    writer = open_writer(run_path)
    append_snapshot(writer, 0, 0, random_weights(0))
    captured = random_weights(1)
    append_snapshot(writer, 1, 5, captured, commit=False)  # worker stopped before "analyzed"
    writer.close()
    with open_run(run_path) as run:
        assert run.epochs.tolist() == [0]
        assert run.snapshots()["status"].tolist() == ["analyzed", "captured"]
        assert run.metric("alpha", "fc").shape == (1,)
        assert len(run.layer_status("fc")) == 1
        np.testing.assert_array_equal(run.weights("fc", 1), captured["fc"])
        with pytest.raises(KeyError, match="epoch 1"):
            run.svals("fc", 1)


def test_dropped_and_failed_snapshots_are_listed_not_analyzed(run_path: Path) -> None:
    writer = open_writer(run_path)
    append_snapshot(writer, 0, 0, random_weights(0))
    writer.append_index(1, 5, "dropped", "worker behind: queue of 1 full")
    row = writer.append_index(2, 10, "captured")
    writer.set_status(row, "failed", "RuntimeError: boom")
    writer.close()
    with open_run(run_path) as run:
        assert run.epochs.tolist() == [0]
        assert run.dropped == [(1, 5, "worker behind: queue of 1 full")]
        failed = run.snapshots("failed")
        assert failed["epoch"].tolist() == [2]
        assert failed["reason"].tolist() == ["RuntimeError: boom"]


@pytest.mark.parametrize("metric", ["alpha", "stable_rank", "num_spikes"])
def test_the_metric_grid_equals_the_per_layer_reads(run_path: Path, metric: str) -> None:
    """Analyzed, uncommitted, dropped and failed snapshots mixed: the grid keeps the analyzed ones."""
    writer = open_writer(run_path)
    append_snapshot(writer, 0, 0, random_weights(0))
    append_snapshot(writer, 1, 5, random_weights(1), commit=False)
    writer.append_index(2, 10, "dropped", "worker behind")
    append_snapshot(writer, 3, 15, random_weights(3))
    row = writer.append_index(4, 20, "captured")
    writer.set_status(row, "failed", "RuntimeError: boom")
    append_snapshot(writer, 5, 25, random_weights(5))
    writer.close()
    with open_run(run_path) as run:
        values, phases, statuses = run.metric_grid(metric)
        assert values.shape == phases.shape == statuses.shape == (len(ANALYZED_LAYERS), 3)
        assert run.layer_count == len(run.layers) == len(ANALYZED_LAYERS)
        for row, layer in enumerate(run.layers):
            np.testing.assert_array_equal(values[row], run.metric(metric, layer))
            assert [PHASE_CODES[code] for code in phases[row]] == run.phases(layer)
            assert [STATUS_NAMES[code] for code in statuses[row]] == [s for s, _ in run.layer_status(layer)]
        with pytest.raises(KeyError, match="Unknown metric"):
            run.metric_grid("__init__")


def test_weights_not_saved_is_a_clear_key_error(run_path: Path) -> None:
    writer = RunWriter.open(
        run_path, run_id=RUN_ID, parameters=PARAMETERS[:1], config_json="{}", framework="test",
        weights_dtype=None,
    )  # fmt: skip
    writer.append_weights(random_weights(0))
    row = writer.append_index(0, 0, "captured")
    writer.set_status(row, "analyzed")
    writer.close()
    with open_run(run_path) as run, pytest.raises(KeyError, match="save_weights=False"):
        run.weights("fc", 0)


# -- opening --------------------------------------------------------------------------------------------
def test_open_run_on_a_directory_finds_the_run_file(run_path: Path, written_run: dict) -> None:
    with open_run(run_path.parent) as run:
        assert run.path == run_path
        assert run.epochs.tolist() == [0, 1, 2]


def test_open_run_on_a_directory_without_run_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=RUN_FILE_NAME):
        open_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        open_run(tmp_path / "missing.h5")


def test_non_hdf5_file_is_a_value_error_naming_the_file(run_path: Path) -> None:
    run_path.write_text("epoch,alpha\n0,2.5\n")
    with pytest.raises(ValueError, match="not a readable HDF5 run file") as error:
        open_run(run_path)
    assert str(run_path) in str(error.value)


def test_truncated_run_file_is_a_value_error_naming_the_file(run_path: Path, written_run: dict) -> None:
    data = run_path.read_bytes()
    truncated = run_path.with_name("truncated.h5")
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as error:
        open_run(truncated)
    assert str(truncated) in str(error.value)


def test_run_file_of_another_format_version_says_so(run_path: Path, written_run: dict) -> None:
    with h5py.File(run_path, "a") as file:
        file.attrs["format_version"] = min(READABLE_FORMATS) - 1
    with pytest.raises(ValueError, match=rf"format {min(READABLE_FORMATS) - 1} .*reads formats 3, 4"):
        open_run(run_path)


def test_format_3_run_file_reads_as_a_run_without_operators(run_path: Path, written_run: dict) -> None:
    with h5py.File(run_path, "a") as file:  # what format 4 added, taken away
        file.attrs["format_version"] = 3
        del file["operators"]
    with open_run(run_path) as reader:
        assert reader.operators == [] and reader.layers == ANALYZED_LAYERS
        with pytest.raises(KeyError, match=r"No operator layer 'conv' .* Available: \(none\)"):
            reader.operator_spectral_norm("conv")


def test_hdf5_file_that_is_not_a_run_file(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file["data"] = np.arange(3)
    with pytest.raises(ValueError, match="not a spectral-callbacks run file") as error:
        open_run(other)
    assert str(other) in str(error.value)


def test_unknown_metric_or_layer_lists_what_is_available(run_path: Path, written_run: dict) -> None:
    with open_run(run_path) as run:
        with pytest.raises(KeyError, match="alpha_hat") as error:
            run.metric("alpha_hat", "fc")
        assert "Available" in str(error.value)
        assert all(name in str(error.value) for name in ("alpha", "log_norm", "stable_rank"))
        with pytest.raises(KeyError, match="alpha_hat"):
            run.metric("alpha_hat")
        with pytest.raises(KeyError, match="fc9") as error:
            run.metric("alpha", "fc9")
        assert all(layer in str(error.value) for layer in ANALYZED_LAYERS)
        with pytest.raises(KeyError, match="epoch 7"):
            run.svals("fc", 7)


# -- ownership and resume --------------------------------------------------------------------------
def test_existing_run_file_of_another_run_is_refused(run_path: Path, written_run: dict) -> None:
    before = run_path.read_bytes()
    with pytest.raises(RunFileConflictError, match="already exists") as error:
        open_writer(run_path, run_id="another-run", resume_after_step=10)
    assert str(run_path) in str(error.value)
    assert RUN_ID in str(error.value)
    # the same run without asking to resume is refused too: a new run never appends to an old file
    with pytest.raises(RunFileConflictError):
        open_writer(run_path)
    assert run_path.read_bytes() == before
    with open_run(run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]


def test_resume_cuts_later_and_uncommitted_rows_and_appends(run_path: Path) -> None:
    writer = open_writer(run_path)
    for epoch in range(3):
        append_snapshot(writer, epoch, 5 * epoch, random_weights(epoch))
    writer.append_weights(random_weights(99))  # a crash after the weights, before the index row
    writer.close()

    writer = open_writer(run_path, resume_after_step=5)  # the checkpoint was taken at step 5
    new = random_weights(7)
    append_snapshot(writer, 2, 10, new)
    writer.close()
    with open_run(run_path) as run:
        assert run.epochs.tolist() == [0, 1, 2]
        assert run.steps.tolist() == [0, 5, 10]
        np.testing.assert_array_equal(run.weights("fc", 1), random_weights(1)["fc"])
        np.testing.assert_array_equal(run.weights("fc", 2), new["fc"])
        for spec in PARAMETERS:
            with h5py.File(run_path, "r") as file:
                group = file["parameters"][spec.name.replace("/", "|")]
                assert group["weights"].shape[0] == 3
                assert group["snapshot"][...].tolist() == [0, 1, 2]
        for layer in ANALYZED_LAYERS:
            assert run.metric("alpha", layer).shape == (3,)
        expected = {row.name: row for row in analyze(new)}
        np.testing.assert_array_equal(run.svals("conv", 2), expected["conv"].svals)


# -- reading a live run (SWMR) -----------------------------------------------------------------------
def test_reader_sees_new_committed_snapshots_only(run_path: Path) -> None:
    writer = open_writer(run_path)
    try:
        append_snapshot(writer, 0, 0, random_weights(0))
        with open_run(run_path) as run:
            assert run.epochs.tolist() == [0]
            assert run.metric("alpha", "fc").shape == (1,)

            append_snapshot(writer, 1, 5, random_weights(1), commit=False)
            assert run.epochs.tolist() == [0]
            assert run.metric("alpha", "fc").shape == (1,)
            assert run.snapshots()["status"].tolist() == ["analyzed", "captured"]

            writer.set_status(1, "analyzed")
            append_snapshot(writer, 2, 10, random_weights(2))
            assert run.epochs.tolist() == [0, 1, 2]
            assert run.metric("alpha", "fc").shape == (3,)
            np.testing.assert_array_equal(run.weights("conv", 2), random_weights(2)["conv"])
    finally:
        writer.close()


_READER_SCRIPT = textwrap.dedent(
    """
    import sys
    from spectral_callbacks import open_run

    run = open_run(sys.argv[1])
    print(run.epochs.tolist())
    for line in sys.stdin:
        print(run.epochs.tolist(), run.metric("alpha", "fc").shape[0], flush=True)
    """
)


def test_reader_in_another_process_follows_a_live_run(run_path: Path) -> None:
    writer = open_writer(run_path)
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER_SCRIPT, str(run_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "[]"
        append_snapshot(writer, 0, 0, random_weights(0))
        append_snapshot(writer, 1, 5, random_weights(1), commit=False)
        reader.stdin.write("next\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "[0] 1"
        writer.set_status(1, "analyzed")
        reader.stdin.write("next\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "[0, 1] 2"
    finally:
        writer.close()
        reader.stdin.close()
        reader.wait(timeout=30)
    assert reader.returncode == 0


# -- a writer that crashes ------------------------------------------------------------------------
_CRASHING_WRITER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from spectral_callbacks.analysis.model import analyze_weights
    from spectral_callbacks.runfile.store import ParameterSpec, RunWriter

    specs = [ParameterSpec("fc", "linear", (12, 10)), ParameterSpec("conv", "conv2d", (8, 3, 3, 3))]
    writer = RunWriter.open(
        sys.argv[1], run_id="crashing", parameters=specs, config_json=json.dumps({}),
        framework="test", weights_dtype="float32",
    )
    rng = np.random.default_rng(0)
    for epoch in range(3):
        arrays = {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in specs}
        writer.append_weights(arrays)
        if epoch == 2:
            break  # weights of epoch 2 written, never committed
        row = writer.append_index(epoch, 5 * epoch, "captured")
        for spectrum in analyze_weights([(s.name, arrays[s.name], s.kind) for s in specs]):
            writer.append_layer(row, spectrum)
        writer.set_status(row, "analyzed")
    print("ready", flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def crashed_run(run_path: Path) -> Path:
    """A run file whose writer process was killed (SIGKILL) while it held the file open."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, str(run_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
    finally:
        writer.kill()
        writer.wait(timeout=30)
    return run_path


def test_committed_snapshots_survive_a_writer_crash(crashed_run: Path) -> None:
    with open_run(crashed_run) as run:
        assert run.epochs.tolist() == [0, 1]
        assert run.metric("alpha", "fc").shape == (2,)
        assert run.weights("conv", 1).shape == (8, 3, 3, 3)


def test_resume_after_a_writer_crash(crashed_run: Path) -> None:
    """A crashed writer leaves the file flagged "open for SWMR write"; resuming (a checkpoint after
    preemption, or the worker's own restart) must still reopen it and append."""
    writer = RunWriter.open(
        crashed_run, run_id="crashing", parameters=PARAMETERS[:2], config_json="{}", framework="test",
        weights_dtype="float32", resume_after_step=5,
    )  # fmt: skip
    try:
        arrays = random_weights(2)
        writer.append_weights({name: arrays[name] for name in ("fc", "conv")})
        row = writer.append_index(2, 10, "captured")
        writer.set_status(row, "analyzed")
    finally:
        writer.close()
    with open_run(crashed_run) as run:
        assert run.snapshots()["epoch"].tolist() == [0, 1, 2]
        np.testing.assert_array_equal(run.weights("fc", 2), arrays["fc"])


def test_reader_is_a_context_manager(run_path: Path, written_run: dict) -> None:
    run = RunReader(run_path)
    with run:
        assert run.epochs.size == 3
    with pytest.raises((KeyError, ValueError, OSError, RuntimeError)):  # h5py's error for a closed file
        _ = run.epochs


def test_a_live_writer_is_waited_for_not_copied_over(run_path: Path) -> None:
    """HDF5 reports a live SWMR writer and a dead one alike; the writer lock tells them apart."""
    first = open_writer(run_path)
    with pytest.raises(RunFileBusyError, match=str(run_path)):
        open_writer(run_path, resume_after_step=0, lock_timeout=0.3)
    append_snapshot(first, 0, 0, random_weights(0))
    first.close()
    second = open_writer(run_path, resume_after_step=0, lock_timeout=0.3)
    second.close()
    with open_run(run_path) as run:
        assert run.epochs.tolist() == [0]  # the first writer's snapshot was kept, not copied over


def test_the_lock_of_a_killed_writer_is_released(crashed_run: Path) -> None:
    writer = RunWriter.open(
        crashed_run, run_id="crashing", parameters=PARAMETERS[:2], config_json="{}", framework="test",
        weights_dtype="float32", resume_after_step=5, lock_timeout=0.3,
    )  # fmt: skip
    writer.close()


def test_a_file_written_before_a_metric_existed_reads_it_as_nan(run_path: Path, written_run: dict) -> None:
    """Files keep the metric columns of the version that wrote them: a newer metric is NaN there,
    and the others (phases and statuses too) read as before."""
    with open_run(run_path) as run:
        alphas = run.metric_grid("alpha")
    with h5py.File(run_path, "r+") as file:
        for layer in file["layers"].values():
            names = [name for name in layer["metrics"].attrs["names"] if name != "relative_delta"]
            layer["metrics"].attrs["names"] = [*names, "a_metric_since_removed"]
    with open_run(run_path) as run:
        assert np.isnan(run.metric("relative_delta", "fc")).all()
        values, phases, statuses = run.metric_grid("relative_delta")
        assert np.isnan(values).all()
        np.testing.assert_array_equal(phases, alphas[1])
        np.testing.assert_array_equal(statuses, alphas[2])
        assert run.metric("alpha", "fc") == pytest.approx(alphas[0][0], nan_ok=True)


def test_alerts_round_trip_and_a_resume_cuts_those_after_its_step(run_path: Path) -> None:
    from spectral_callbacks.analysis.alerts import Alert

    writer = open_writer(run_path)
    for epoch in range(3):
        append_snapshot(writer, epoch, 5 * epoch, random_weights(epoch))
        writer.append_alert(epoch, Alert("alpha_range", "fc", epoch, 5 * epoch, "alpha", 1.5 + epoch, 3.0))
    writer.close()
    with open_run(run_path) as run:
        alerts = run.alerts()
    assert [(a["epoch"], a["step"], a["layer"], a["rule"], a["metric"]) for a in alerts] == [
        (epoch, 5 * epoch, "fc", "alpha_range", "alpha") for epoch in range(3)
    ]
    assert [a["value"] for a in alerts] == [1.5, 2.5, 3.5] and alerts[0]["previous"] == 3.0
    open_writer(run_path, resume_after_step=5).close()
    with open_run(run_path) as run:
        assert [a["epoch"] for a in run.alerts()] == [0, 1]
