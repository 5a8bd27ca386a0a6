"""Run files damaged or forged after they were written: the tab answers, fast, for every run.

Each case edits one run of the log directory with h5py the way a damaged disk or a forger could,
keeping the file a valid HDF5 file. The listing must still answer (the other run intact), and a
request about the damaged run a 422 with the reason: never a 500, a hang, or memory filled.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from dashboard_client import client_of

from spectral_callbacks import open_run

DAMAGED = "wd_0.01"


def forge_gigabytes_of_metrics(file: h5py.File) -> None:
    """4 GB claimed, nothing stored: memory would allow it, and fill it with fill values."""
    file["layers/fc/metrics"].resize((1 << 24, file["layers/fc/metrics"].shape[1]))


def forge_huge_index(file: h5py.File) -> None:
    file["index/status"].resize((1 << 40,))


def metrics_of_strings(file: h5py.File) -> None:
    names = file["layers/fc/metrics"].attrs["names"]
    del file["layers/fc/metrics"]
    file["layers/fc"].create_dataset(
        "metrics", data=np.array([[b"x"] * len(names)] * 4), maxshape=(None, None)
    )
    file["layers/fc/metrics"].attrs["names"] = names


def phase_missing(file: h5py.File) -> None:
    del file["layers/conv/phase"]


def config_not_json(file: h5py.File) -> None:
    file.attrs["config"] = "{not json"


def snapshot_ids_out_of_range(file: h5py.File) -> None:
    file["layers/fc/snapshot"][...] = np.array([10**9, -5, 3, 2**40])[: file["layers/fc/snapshot"].shape[0]]


def phase_codes_out_of_range(file: h5py.File) -> None:
    file["layers/fc/phase"][...] = 120


CASES: dict[str, Callable[[h5py.File], None]] = {
    "gigabytes of metrics": forge_gigabytes_of_metrics,
    "huge index": forge_huge_index,
    "metrics of strings": metrics_of_strings,
    "phase missing": phase_missing,
    "config not JSON": config_not_json,
    "snapshot ids out of range": snapshot_ids_out_of_range,
    "phase codes out of range": phase_codes_out_of_range,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_run_gets_a_422_and_the_others_still_answer(logdir: Path, case: str) -> None:
    path = logdir / DAMAGED / "version_0" / "spectra.h5"
    with h5py.File(path, "r+", libver="latest") as file:
        CASES[case](file)
    get = client_of(logdir)
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    status, listing = get("/runs")
    assert status == 200
    assert "wd_0.0001" in [run["name"] for run in listing["runs"] if "error" not in run]
    answers = [
        get("/overview", run=DAMAGED),
        get("/overview", run=DAMAGED, metric="stable_rank"),
        get("/esd", run=DAMAGED, layer="fc"),
        get("/esd", run=DAMAGED, layer="conv"),
        get("/run", run=DAMAGED),
    ]
    assert get("/overview", run="wd_0.0001")[0] == 200
    assert get("/compare", metric="alpha", param="weight_decay")[0] == 200
    assert time.monotonic() - started < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before < 500_000  # kB
    statuses = {code for code, _ in answers}
    assert statuses <= {200, 400, 422}, answers
    assert 422 in statuses or statuses == {200}
    for code, answer in answers:
        if code != 200:
            assert answer["error"]
        else:
            json.dumps(answer, allow_nan=False)


def test_a_forged_shape_is_refused_by_the_reader_without_reading_it(logdir: Path) -> None:
    path = logdir / DAMAGED / "version_0" / "spectra.h5"
    with h5py.File(path, "r+", libver="latest") as file:
        forge_gigabytes_of_metrics(file)
    with open_run(path) as run:
        with pytest.raises(ValueError, match=r"claims .* bytes .* damaged or forged"):
            run.metric_grid("alpha")
        with pytest.raises(ValueError, match="damaged or forged"):
            run.metric("alpha", "fc")
        assert run.metric("alpha", "conv").size == 4  # the other layers still read
