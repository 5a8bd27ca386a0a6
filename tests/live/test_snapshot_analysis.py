"""SnapshotAnalyzer: what the worker does per snapshot, its catch-up after a crash, and write errors."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from run_files import PARAMETERS, RUN_ID, open_writer, random_weights

from spectral_callbacks import analyze_matrix, open_run
from spectral_callbacks.analysis.options import SpectrumOptions
from spectral_callbacks.live.snapshot_analysis import SnapshotAnalyzer
from spectral_callbacks.runfile.store import RunWriter


def make_analyzer(
    writer: RunWriter, messages: list, weights_dtype: str | None = "float32"
) -> SnapshotAnalyzer:
    return SnapshotAnalyzer(
        writer,
        PARAMETERS,
        SpectrumOptions(),
        report=lambda kind, text: messages.append((kind, text)),
        weights_dtype=weights_dtype,
    )


@pytest.fixture
def started(tmp_path: Path) -> tuple[RunWriter, SnapshotAnalyzer, list]:
    """A run with snapshot 0 written; the messages the analyzer reports."""
    messages: list = []
    writer = open_writer(tmp_path / "run.h5")
    analyzer = make_analyzer(writer, messages)
    analyzer.add(0, 0, 0.0, random_weights(0))
    return writer, analyzer, messages


def test_added_snapshots_are_analyzed_like_analyze_matrix(tmp_path: Path) -> None:
    messages: list = []
    writer = open_writer(tmp_path / "run.h5")
    analyzer = make_analyzer(writer, messages)
    snapshots = {epoch: random_weights(epoch) for epoch in range(3)}
    for epoch, arrays in snapshots.items():
        analyzer.add(epoch, 10 * epoch, 0.0, arrays)
    writer.close()
    with open_run(tmp_path / "run.h5") as run:
        assert run.epochs.tolist() == [0, 1, 2]
        for epoch, arrays in snapshots.items():
            expected = analyze_matrix(arrays["fc"].astype(np.float64))
            assert run.metric("alpha", "fc")[epoch] == pytest.approx(expected.alpha, rel=1e-12)
            np.testing.assert_array_equal(run.weights("fc", epoch), arrays["fc"])
    # the 4x3 parameter has too few eigenvalues: it never becomes a layer, so nothing is skipped
    assert messages == []


def test_catch_up_analyzes_what_a_dead_worker_left_captured(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    writer = open_writer(path)
    arrays = random_weights(7)
    writer.append_weights(arrays)
    writer.append_index(4, 40, "captured")  # the worker died here, before analyzing
    writer.close()
    with open_run(path) as run:
        assert run.epochs.tolist() == []

    messages: list = []
    writer = open_writer(path, resume_after_step=np.iinfo(np.int64).max)
    assert make_analyzer(writer, messages).catch_up() == 1
    writer.close()
    with open_run(path) as run:
        assert run.epochs.tolist() == [4]
        expected = analyze_matrix(arrays["conv"].astype(np.float64), kind="conv2d")
        assert run.metric("log_norm", "conv")[0] == pytest.approx(expected.log_norm, rel=1e-6)
        assert run.snapshots()["status"].tolist() == ["analyzed"]


def test_catch_up_without_saved_weights_marks_the_snapshot_failed(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    writer = RunWriter.open(
        path, run_id=RUN_ID, parameters=PARAMETERS, config_json=json.dumps({}),
        framework="test", weights_dtype=None,
    )  # fmt: skip
    writer.append_index(2, 20, "captured")
    assert make_analyzer(writer, [], weights_dtype=None).catch_up() == 0
    writer.close()
    with open_run(path) as run:
        index = run.snapshots()
        assert index["status"].tolist() == ["failed"]
        assert "weights not saved" in index["reason"][0]


def test_catch_up_of_a_snapshot_whose_weights_the_budget_did_not_keep_says_so(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    writer = open_writer(path)  # a run that saves weights
    writer.append_index(3, 30, "captured")  # ... but kept none for this snapshot
    assert make_analyzer(writer, []).catch_up() == 0
    writer.close()
    with open_run(path) as run:
        index = run.snapshots()
        assert index["status"].tolist() == ["failed"]
        assert "weights not kept (max_run_file_bytes)" in index["reason"][0]


def test_disk_full_is_reported_and_earlier_snapshots_stay_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: tuple
) -> None:
    writer, analyzer, messages = started

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "append_weights", disk_full)
    analyzer.add(1, 10, 0.0, random_weights(1))  # must not raise
    analyzer.record_dropped([(2, 20, 0.0, "worker behind")])  # index writes still work
    monkeypatch.undo()
    analyzer.add(3, 30, 0.0, random_weights(3))  # space again: recording resumes
    writer.close()

    assert [kind for kind, _ in messages] == ["write-error"]
    assert "No space left" in messages[0][1] and "intact" in messages[0][1]
    with open_run(tmp_path / "run.h5") as run:
        assert run.epochs.tolist() == [0, 3]
        assert run.dropped == [(2, 20, "worker behind")]
        np.testing.assert_array_equal(run.weights("fc", 0), random_weights(0)["fc"])


def test_a_failing_analysis_is_recorded_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import spectral_callbacks.live.snapshot_analysis as module

    def broken(*args: object, **kwargs: object) -> list:
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(module, "analyze_weights", broken)
    messages: list = []
    writer = open_writer(tmp_path / "run.h5")
    make_analyzer(writer, messages).add(0, 0, 0.0, random_weights(0))
    writer.close()
    assert messages and messages[0][0] == "warning" and "SVD did not converge" in messages[0][1]
    with open_run(tmp_path / "run.h5") as run:
        index = run.snapshots()
        assert index["status"].tolist() == ["failed"]
        assert "LinAlgError" in index["reason"][0]
        np.testing.assert_array_equal(run.weights("fc", 0), random_weights(0)["fc"])  # weights kept


def test_a_snapshot_without_room_on_disk_is_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: tuple
) -> None:
    """HDF5 can lose chunk writes on a full disk without raising, so free space is checked first."""
    import collections

    import spectral_callbacks.live.snapshot_analysis as module

    writer, analyzer, messages = started
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(module.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 5000, 5000))
    analyzer.add(1, 10, 0.0, random_weights(1))
    writer.close()
    assert [kind for kind, _ in messages] == ["write-error"]
    assert "5000 bytes free" in messages[0][1]
    with open_run(tmp_path / "run.h5") as run:
        assert run.snapshots()["epoch"].tolist() == [0]  # nothing half-written for epoch 1
