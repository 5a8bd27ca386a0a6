"""How long the Spectra dashboard takes to open its overview on a large log directory.

The log directory: ``--runs`` run files (default 50) of ``--layers`` layers (100) and
``--snapshots`` analyzed snapshots (200), written by the library's own writer (one file, analyzed
from random 48x32 matrices, copied under ``run_<i>/spectra.h5``). The overview is what the page
loads first: the run listing, then every run's heatmap of alpha (the page asks for them four at a
time). Timed, each on a cold start (files not opened before by the process that answers):

* ``in process``: the plugin's endpoints called directly (no HTTP), one after the other;
* ``over HTTP``: a real ``tensorboard --logdir`` process, the same requests over HTTP, four at a
  time as the page makes them;
* ``browser``: the Spectra tab opened in headless Chromium (1280x800) on a fresh TensorBoard,
  from the page's load to TensorBoard's own page shown with the tab's frame in it (``TB's
  page``), to the tab's page shown (``page``: the plugin's modules loaded), to the heatmaps in
  view drawn (``first screen``) and, scrolled to the last run, to its heatmap drawn (``all``:
  the page loads heatmaps as they come into view); needs Debian's ``chromium`` and
  ``playwright``; ``tab switched``: the same from the switch to the tab in a TensorBoard page
  already open (at SCALARS), as a user opens it; ``tab alone``: the same for the plugin's page
  without TensorBoard's around it (``/data/plugin_entry.html?name=spectra``);
* ``h5py floor``: opening every file and reading the datasets the overview needs with h5py alone,
  no JSON: what reading all heatmaps cannot go below.

Without a browser, ``first screen`` is the listing and the first two heatmaps (what a 1280x800
window shows), ``all`` every run's heatmap; ``again`` is all of them asked a second time
(answers kept while files are unchanged). A TensorBoard process reads the listing and the first
three heatmaps as it starts, while the browser loads its page; ``in process`` reads everything
on request. Target: the overview opens (its first screen is drawn) in under 2 s.
Run: ``.venv/bin/python benchmarks/bench_dashboard.py [--runs 50 --layers 100 --snapshots 200]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
from common import load_average
from tensorboard.plugins import base_plugin
from werkzeug.test import Client
from werkzeug.wrappers import Response

from spectral_callbacks.dashboard.plugin import SpectraPlugin
from spectral_callbacks.runfile.store import ParameterSpec, RunWriter
from spectral_callbacks.spectra import analyze_matrix

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the clone's experiments package
from experiments.dashboard import (
    VIEWPORT,
    chromium_path,
    headless_chromium,
    spectra_frame,
    tensorboard,
)

TARGET_SECONDS = 2.0
PAGE_CONCURRENCY = 4  # the page's limit on simultaneous requests
FIRST_SCREEN_RUNS = 2  # heatmaps of 100 layers: a 1280x800 window shows the first two
DISTINCT_WEIGHTS = 8  # snapshots cycle through this many analyses (the values do not change the cost)


def write_template(path: Path, layers: int, snapshots: int) -> None:
    """One run file of ``layers`` 48x32 matrices and ``snapshots`` analyzed snapshots."""
    rng = np.random.default_rng(0)
    specs = [ParameterSpec(f"blocks.{i}.weight", "linear", (48, 32)) for i in range(layers)]
    analyses = [
        [analyze_matrix(rng.standard_normal(spec.shape), name=spec.name, kind=spec.kind) for spec in specs]
        for _ in range(DISTINCT_WEIGHTS)
    ]
    writer = RunWriter.open(
        path, run_id="bench", parameters=specs, config_json=json.dumps({"every_n_epochs": 1}),
        framework="lightning", weights_dtype=None,
    )  # fmt: skip
    try:
        for snapshot in range(snapshots):
            row = writer.append_index(snapshot, 10 * snapshot, "captured")
            writer.record_analysis(row, analyses[snapshot % DISTINCT_WEIGHTS])
    finally:
        writer.close()


def build_logdir(root: Path, runs: int, layers: int, snapshots: int) -> Path:
    template = root / "template.h5"
    write_template(template, layers, snapshots)
    logdir = root / "logs"
    for i in range(runs):
        (logdir / f"run_{i:02d}").mkdir(parents=True)
        shutil.copyfile(template, logdir / f"run_{i:02d}" / "spectra.h5")
    return logdir


def in_process(logdir: Path) -> dict[str, float]:
    started = time.perf_counter()
    apps = SpectraPlugin(base_plugin.TBContext(logdir=str(logdir)), prepare=False).get_plugin_apps()
    listing = json.loads(Client(apps["/runs"], Response).get("/runs").data)
    times = {"listing": time.perf_counter() - started}

    def overview(position: int, run: dict) -> None:
        response = Client(apps["/overview"], Response).get("/overview", query_string={"run": run["name"]})
        assert response.status_code == 200, response.data[:200]
        if position == FIRST_SCREEN_RUNS - 1 and "first screen" not in times:
            times["first screen"] = time.perf_counter() - started

    for position, run in enumerate(listing["runs"]):
        overview(position, run)
    times["all"] = time.perf_counter() - started
    again = time.perf_counter()
    for position, run in enumerate(listing["runs"]):
        overview(position, run)
    times["again"] = time.perf_counter() - again
    return times


def over_http(url: str) -> dict[str, float]:
    base = f"{url}/data/plugin/spectra"
    started = time.perf_counter()
    listing = json.loads(_get(f"{base}/runs"))
    times = {"listing": time.perf_counter() - started}
    urls = [f"{base}/overview?{urllib.parse.urlencode({'run': run['name']})}" for run in listing["runs"]]
    with ThreadPoolExecutor(PAGE_CONCURRENCY) as pool:
        first = list(pool.map(_get, urls[:FIRST_SCREEN_RUNS]))
        times["first screen"] = time.perf_counter() - started
        rest = list(pool.map(_get, urls[FIRST_SCREEN_RUNS:]))
        times["all"] = time.perf_counter() - started
        again = time.perf_counter()
        list(pool.map(_get, urls))
        times["again"] = time.perf_counter() - again
    print(f"  ({len(urls)} overviews over HTTP, {sum(map(len, first + rest)) / 1e6:.1f} MB of JSON)")
    return times


def in_browser(url: str, runs: int, *, start: str = "page") -> dict[str, float]:
    """Seconds to the Spectra tab's own page shown (the plugin's modules loaded), to the heatmaps
    in view drawn, and to the last run's drawn once scrolled to, counted from: ``"page"``, the
    load of TensorBoard's page at the tab; ``"tab"``, the switch to the tab in a TensorBoard page
    already open at SCALARS; ``"alone"``, the load of the plugin's page without TensorBoard's
    (``/data/plugin_entry.html?name=spectra``)."""
    times = {}
    with headless_chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(300_000)
        if start == "tab":
            page.goto(f"{url}/#scalars")
            page.wait_for_load_state("networkidle")
        started = time.perf_counter()
        if start == "alone":
            page.goto(f"{url}/data/plugin_entry.html?name=spectra")
            document, frame = "document", page
        else:
            if start == "tab":
                page.evaluate("() => { window.location.hash = '#spectra'; }")
            else:
                page.goto(f"{url}/#spectra")
            page.locator("iframe").wait_for(state="attached")
            times["TB's page"] = time.perf_counter() - started
            document, frame = 'document.querySelector("iframe")?.contentDocument', spectra_frame(page)
        frame.locator("header.spectra-header").wait_for()
        times["page"] = time.perf_counter() - started
        page.wait_for_function(
            f"""() => {{
              const doc = {document};
              const sections = [...(doc?.querySelectorAll("section.run-heatmap") ?? [])];
              const height = doc?.defaultView?.innerHeight ?? 0;
              const inView = sections.filter((s) => s.getBoundingClientRect().top < height);
              return inView.length > 0 && inView.every((s) => s.querySelector("canvas"));
            }}"""
        )
        times["first screen"] = time.perf_counter() - started
        last = frame.locator("section.run-heatmap").nth(runs - 1)
        last.scroll_into_view_if_needed()
        last.locator("canvas").wait_for(state="attached")
        times["all"] = time.perf_counter() - started
    return times


def h5py_floor(logdir: Path) -> float:
    started = time.perf_counter()
    for path in sorted(logdir.rglob("spectra.h5")):
        with h5py.File(path, "r", libver="latest", swmr=True) as file:
            file["index/status"][...]
            for group in file["layers"].values():
                for name in ("snapshot", "metrics", "phase", "status"):
                    group[name][...]
    return time.perf_counter() - started


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--snapshots", type=int, default=200)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as temporary:
        started = time.perf_counter()
        logdir = build_logdir(Path(temporary), args.runs, args.layers, args.snapshots)
        print(f"log directory: {args.runs} runs x {args.layers} layers x {args.snapshots} snapshots, "
              f"written in {time.perf_counter() - started:.1f} s; {load_average()}")  # fmt: skip
        floor = h5py_floor(logdir)
        rows["in process"] = in_process(logdir)
        with tensorboard(logdir, timeout=300) as url:
            rows["over HTTP"] = over_http(url)
        if chromium_path() is not None:
            with tensorboard(logdir, timeout=300) as url:
                rows["browser"] = in_browser(url, args.runs)
            with tensorboard(logdir, timeout=300) as url:
                rows["tab switched"] = in_browser(url, args.runs, start="tab")
            with tensorboard(logdir, timeout=300) as url:
                rows["tab alone"] = in_browser(url, args.runs, start="alone")
        rows["h5py floor"] = {"all": floor}
    columns = ("TB's page", "page", "listing", "first screen", "all", "again")
    print(
        f"{'seconds':<14}"
        + "".join(f"{name:>14}" for name in columns)
        + f"{'first / 2 s':>13}{'all / floor':>13}"
    )
    for name, times in rows.items():
        cells = "".join(f"{times[c]:>14.2f}" if c in times else f"{'':>14}" for c in columns)
        first = f"{times['first screen'] / TARGET_SECONDS:>13.2f}" if "first screen" in times else f"{'':>13}"
        print(f"{name:<14}{cells}{first}{times['all'] / floor:>13.1f}")


if __name__ == "__main__":
    main()
