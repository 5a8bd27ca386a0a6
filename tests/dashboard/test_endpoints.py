"""The dashboard's JSON answers against the run files they read, and every refused request."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from dashboard_client import client_of, write_run
from run_files import ANALYZED_LAYERS
from tensorboard.plugins import base_plugin
from werkzeug.test import Client
from werkzeug.wrappers import Response

from spectral_callbacks import open_run
from spectral_callbacks.dashboard.plugin import SpectraPlugin
from spectral_callbacks.dashboard.queries import listed_metrics
from spectral_callbacks.reporting.compare import model_average
from spectral_callbacks.runfile.store import PHASE_CODES
from spectral_callbacks.spectra import METRIC_NAMES
from spectral_callbacks.spectra.analyze import OPTION_COLUMNS

RUNS = ["wd_0.0001", "wd_0.01"]


def same(a: object, b: float) -> bool:
    """A JSON number (None for NaN) equals a stored float."""
    return (a is None and not math.isfinite(b)) or (a is not None and math.isclose(a, b, rel_tol=1e-5))


def test_the_listing_names_the_runs_as_compare_does_and_lists_the_foreign_file(get) -> None:
    status, listing = get("/runs")
    assert status == 200
    assert [run["name"] for run in listing["runs"]] == RUNS
    assert [run["snapshots"] for run in listing["runs"]] == [4, 4]
    # hparams.yaml's settings, and the number in the run's name under the word before it
    assert listing["runs"][1]["params"] == {"wd": 0.01, "weight_decay": 0.01}
    assert listing["params"] == ["wd", "weight_decay"]
    assert [entry["name"] for entry in listing["unreadable"]] == ["checkpoint"]
    assert "not a readable HDF5 run file" in listing["unreadable"][0]["reason"]
    # the columns of WeightWatcher's options are left out when no run had them on
    hidden = {"cka", *(column for columns in OPTION_COLUMNS.values() for column in columns)}
    assert listing["metrics"] == [name for name in METRIC_NAMES if name not in hidden]
    assert {"alpha", "relative_delta", "lambda_min"} <= set(listing["metrics"])


def test_the_metrics_of_an_option_a_run_had_on_are_listed() -> None:
    runs = [{"options": ["randomize"]}, {"options": []}]
    listed = listed_metrics({option for run in runs for option in run["options"]})
    assert "num_traps" in listed and "rand_distance" in listed
    assert "raw_alpha" not in listed and "detX_num" not in listed


def test_the_overview_holds_every_layer_at_every_snapshot_as_the_reader_reads_it(get, logdir) -> None:
    status, overview = get("/overview", run="wd_0.01", metric="stable_rank")
    assert status == 200
    with open_run(logdir / "wd_0.01" / "version_0" / "spectra.h5") as run:
        assert overview["layers"] == run.layers == ANALYZED_LAYERS
        assert [s["epoch"] for s in overview["snapshots"]] == run.epochs.tolist() == [0, 1, 2, 3]
        assert [s["label"] for s in overview["snapshots"]] == ["epoch 0", "epoch 1", "epoch 2", "epoch 3"]
        for row, layer in enumerate(run.layers):
            expected = run.metric("stable_rank", layer)
            assert all(same(a, b) for a, b in zip(overview["values"][row], expected, strict=True))
            phases = [overview["phase_names"][code] for code in overview["phases"][row]]
            assert phases == run.phases(layer)
            statuses = [overview["status_names"][code] for code in overview["status"][row]]
            assert statuses == [status for status, _ in run.layer_status(layer)]
    finite = [v for row in overview["values"] for v in row if v is not None]
    assert overview["range"] == pytest.approx([min(finite), max(finite)], rel=1e-5)
    assert overview["phase_names"] == list(PHASE_CODES)


def test_the_esd_is_the_runs_with_its_fit_and_mp_edge(get, logdir) -> None:
    status, esd = get("/esd", run="wd_0.0001", layer="conv", epoch=2)
    assert status == 200
    assert (esd["epoch"], esd["step"]) == (2, 14)
    with open_run(logdir / "wd_0.0001" / "version_0" / "spectra.h5") as run:
        evals = run.esd("conv", 2)
        metrics = {name: values[2] for name, values in run.metrics("conv").items()}
    np.testing.assert_array_equal(esd["evals"], evals)
    assert esd["fit"]["alpha"] == metrics["alpha"] and esd["fit"]["xmin"] == metrics["xmin"]
    assert esd["fit"]["num_tail"] == int(np.sum(evals >= metrics["xmin"])) > 0
    assert esd["mp"]["lambda_plus"] == metrics["lambda_plus"]
    assert esd["info"] == {"kind": "conv2d", "N": 8, "M": 3, "Q": pytest.approx(8 / 3)}
    assert esd["operator"] is None


@pytest.mark.parametrize("layer", ANALYZED_LAYERS)
def test_the_spike_threshold_separates_exactly_the_counted_spikes(get, layer) -> None:
    for epoch in range(4):
        esd = get("/esd", run="wd_0.01", layer=layer, epoch=epoch)[1]
        above = sum(value > esd["mp"]["spike_threshold"] for value in esd["evals"])
        assert above == esd["metrics"]["num_spikes"]
        assert esd["mp"]["spike_threshold"] > esd["mp"]["lambda_plus"]


def test_the_esd_by_step_and_by_default_the_last_snapshot(get) -> None:
    assert get("/esd", run="wd_0.01", layer="fc", step=7)[1]["epoch"] == 1
    assert get("/esd", run="wd_0.01", layer="fc")[1]["epoch"] == 3


def test_compare_gives_one_point_per_run_with_the_model_average(get, logdir) -> None:
    status, answer = get("/compare", metric="alpha", param="weight_decay", epoch=2)
    assert status == 200
    assert [(p["run"], p["x"], p["epoch"]) for p in answer["points"]] == [
        ("wd_0.0001", 0.0001, 2),
        ("wd_0.01", 0.01, 2),
    ]
    for point, run_name in zip(answer["points"], RUNS, strict=True):
        with open_run(logdir / run_name / "version_0" / "spectra.h5") as run:
            assert point["y"] == pytest.approx(model_average(run, "alpha")[2])
    layer = get("/compare", metric="alpha", param="weight_decay", layer="fc")[1]
    with open_run(logdir / "wd_0.01" / "version_0" / "spectra.h5") as run:
        assert layer["points"][1]["y"] == run.metric("alpha", "fc")[-1]
    missing = get("/compare", metric="alpha", param="weight_decay", epoch=9)[1]
    assert missing["points"] == [] and all("epoch 9" in m["reason"] for m in missing["missing"])


@pytest.mark.parametrize(
    ("route", "parameters", "message"),
    [
        ("/esd", {"run": "../../etc/passwd", "layer": "fc"}, "Unknown run: '../../etc/passwd'"),
        ("/overview", {"run": "/etc/passwd"}, "Unknown run"),
        ("/esd", {"run": "wd_0.01", "layer": "../fc"}, "Unknown layer in run 'wd_0.01'"),
        ("/esd", {"run": "wd_0.01", "layer": "fc", "step": "1; rm"}, "'step' must be an integer"),
        ("/esd", {"run": "wd_0.01", "layer": "fc", "step": 7, "epoch": 1}, "either 'step' or 'epoch'"),
        ("/esd", {"run": "wd_0.01", "layer": "fc", "epoch": 12}, "no analyzed snapshot at epoch 12"),
        ("/esd", {"run": "wd_0.01"}, "Missing parameter 'layer'"),
        ("/overview", {"run": "wd_0.01", "metric": "__class__"}, "Unknown metric"),
        ("/overview", {"run": "wd_0.01", "path": "/etc/passwd"}, "Unknown parameter 'path'"),
        ("/overview", {"run": ["wd_0.01", "wd_0.0001"]}, "given 2 times"),
        ("/overview", {"run": "x" * 5000}, "not a name the run files could hold"),
        ("/compare", {"metric": "alpha", "param": "../secret"}, "Unknown run parameter"),
        ("/runs", {"run": "wd_0.01"}, "Unknown parameter 'run'"),
    ],
)
def test_bad_requests_get_a_400_that_says_what_is_wrong(get, route, parameters, message) -> None:
    status, answer = get(route, **parameters)
    assert status == 400
    assert message in answer["error"]


def test_a_listed_unreadable_file_gets_a_422_with_its_reason(get) -> None:
    status, answer = get("/run", run="checkpoint")
    assert status == 422
    assert "cannot be read now" in answer["error"] and "not a readable HDF5 run file" in answer["error"]


def test_a_run_file_that_breaks_after_the_scan_gets_a_422_not_a_500(logdir: Path) -> None:
    get = client_of(logdir)
    assert get("/overview", run="wd_0.01")[0] == 200
    path = logdir / "wd_0.01" / "version_0" / "spectra.h5"
    path.write_bytes(path.read_bytes()[:1000])
    status, answer = get("/overview", run="wd_0.01")
    assert status == 422
    assert "cannot be read now" in answer["error"]
    # and once the catalog has looked again (an unknown name makes it look at once)
    assert get("/run", run="no such run")[0] == 400
    status, answer = get("/overview", run="wd_0.01")
    assert status == 422
    assert "cannot be read now" in answer["error"] and "truncated" in answer["error"]


@pytest.mark.timeout(120)
def test_a_run_file_corrupt_in_the_middle_is_listed_as_unreadable_at_once(logdir: Path) -> None:
    """Its header and size intact, its metadata garbage: read in SWMR mode, HDF5 would retry every
    failed checksum for minutes, holding Python's lock (and so the whole TensorBoard)."""
    path = logdir / "wd_0.01" / "version_0" / "spectra.h5"
    content = bytearray(path.read_bytes())
    content[4096:] = b"\xff" * (len(content) - 4096)
    path.write_bytes(bytes(content))
    started = time.monotonic()
    status, listing = client_of(logdir)("/runs")
    assert status == 200 and time.monotonic() - started < 10
    assert [run["name"] for run in listing["runs"]] == ["wd_0.0001"]
    assert "wd_0.01" in [entry["name"] for entry in listing["unreadable"]]


def test_a_growing_run_is_read_again_and_a_new_run_appears(logdir: Path, tmp_path: Path) -> None:
    get = client_of(logdir)
    assert len(get("/overview", run="wd_0.01")[1]["snapshots"]) == 4
    path = logdir / "wd_0.01" / "version_0" / "spectra.h5"
    longer = tmp_path / "longer.h5"
    write_run(longer, seed=1, epochs=5)
    shutil.copyfile(longer, path)
    assert len(get("/overview", run="wd_0.01")[1]["snapshots"]) == 6
    write_run(logdir / "wd_1" / "version_0" / "spectra.h5", seed=5)
    assert get("/run", run="wd_1")[0] == 200  # an unknown name makes the catalog look again


def test_a_symlink_out_of_the_log_directory_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "spectra.h5"
    write_run(outside, seed=3)
    logdir = tmp_path / "logs"
    write_run(logdir / "mine" / "spectra.h5", seed=4)
    (logdir / "sneaky.h5").symlink_to(outside)
    names = [run["name"] for run in client_of(logdir)("/runs")[1]["runs"]]
    assert names == ["mine"]


def test_the_page_is_served_with_its_content_types(logdir: Path) -> None:
    apps = SpectraPlugin(base_plugin.TBContext(logdir=str(logdir)), prepare=False).get_plugin_apps()
    static = [route for route in apps if "." in route]
    assert "/index.js" in static and "/spectra.css" in static
    for route in static:
        response = Client(apps[route], Response).get(route)
        assert response.status_code == 200 and response.data
        expected = {"js": "text/javascript", "css": "text/css"}[route.rsplit(".", 1)[1]]
        assert response.mimetype == expected


def test_the_tab_is_active_only_with_a_run_file(tmp_path: Path) -> None:
    assert not SpectraPlugin(base_plugin.TBContext(logdir=str(tmp_path)), prepare=False).is_active()
    assert not SpectraPlugin(base_plugin.TBContext(logdir="")).is_active()
    (tmp_path / "junk.h5").write_bytes(b"junk")
    assert not SpectraPlugin(base_plugin.TBContext(logdir=str(tmp_path)), prepare=False).is_active()
    write_run(tmp_path / "run" / "spectra.h5", seed=0)
    assert SpectraPlugin(base_plugin.TBContext(logdir=str(tmp_path)), prepare=False).is_active()


def test_the_listing_and_first_heatmaps_are_read_before_the_page_asks(logdir: Path) -> None:
    plugin = SpectraPlugin(base_plugin.TBContext(logdir=str(logdir)))
    plugin.preparing.join(timeout=60)
    assert not plugin.preparing.is_alive()
    # each run's line in the listing, and both runs' heatmaps of the default metric
    assert len(plugin._answers) == 2 + 2
    apps = plugin.get_plugin_apps()
    fresh = client_of(logdir)
    for route, query in (("/runs", {}), ("/overview", {"run": "wd_0.01"})):
        kept = Client(apps[route], Response).get(route, query_string=query)
        assert json.loads(kept.data) == fresh(route, **query)[1]


def test_a_change_layer_s_esd_is_at_its_own_snapshots_and_none_at_the_first(tmp_path: Path) -> None:
    """A change layer of deltas="previous" has rows from the second snapshot on: its ESD there is
    the analysis of the change (its row, not the run's snapshot position), and at the first a
    400 that says why."""
    import dataclasses

    from run_files import PARAMETERS, open_writer, random_weights

    from spectral_callbacks.analysis.model import analyze_weights
    from spectral_callbacks.analysis.options import SpectrumOptions
    from spectral_callbacks.live.snapshot_analysis import SnapshotAnalyzer

    path = tmp_path / "logs" / "deltas" / "spectra.h5"
    path.parent.mkdir(parents=True)
    (path.parent / "hparams.yaml").write_text("lr: 0.1\n")
    spectrum = SpectrumOptions()
    config = {"every_n_epochs": 1, "deltas": "previous", **dataclasses.asdict(spectrum)}
    writer = open_writer(path, run_id="deltas", config=config, weights_dtype=None, deltas="previous")
    snapshots = [random_weights(seed) for seed in range(3)]
    analyzer = SnapshotAnalyzer(
        writer, PARAMETERS, spectrum, report=lambda kind, text: None, weights_dtype=None, deltas="previous"
    )
    try:
        for epoch, arrays in enumerate(snapshots):
            analyzer.add(epoch, 10 * epoch, float(epoch), arrays)
    finally:
        writer.close()
    get = client_of(tmp_path / "logs")
    for epoch in (1, 2):
        status, esd = get("/esd", run="deltas", layer="fc.delta_previous", epoch=epoch)
        assert status == 200 and esd["epoch"] == epoch
        change = snapshots[epoch]["fc"] - snapshots[epoch - 1]["fc"]
        (expected,) = analyze_weights([("fc", change, "linear")])
        np.testing.assert_allclose(esd["evals"], np.sort(expected.evals), rtol=1e-12)
        assert esd["metrics"]["alpha"] == pytest.approx(expected.alpha, rel=1e-12)
    for epoch in (1, 2):
        point = get("/compare", metric="alpha", param="lr", layer="fc.delta_previous", epoch=epoch)[1]
        with open_run(path) as run:
            expected = run.metric("alpha", "fc.delta_previous")[epoch - 1]
        assert point["points"] == [{"run": "deltas", "x": 0.1, "y": expected, "epoch": epoch}]
    missing = get("/compare", metric="alpha", param="lr", layer="fc.delta_previous", epoch=0)[1]
    assert missing["points"] == [] and "undefined at epoch 0" in missing["missing"][0]["reason"]
    status, answer = get("/esd", run="deltas", layer="fc.delta_previous", epoch=0)
    assert status == 400
    assert "has no spectrum at epoch 0" in answer["error"] and str(tmp_path) not in answer["error"]
    with open_run(path) as run:
        assert run.layer_steps("fc.delta_previous").tolist() == [10, 20]
        assert run.layer_steps("fc").tolist() == [0, 10, 20]
        with pytest.raises(KeyError, match=r"'fc\.delta_previous' has no row at step 0"):
            run.esd("fc.delta_previous", step=0)
