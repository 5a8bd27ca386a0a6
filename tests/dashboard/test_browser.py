"""The Spectra tab in a real TensorBoard, driven in headless Chromium.

The log directory is what a user would have after running the README demo twice (two seeds and
weight decays: an MLP and a CNN whose convolutions are also analyzed as operators, per run) plus
a post-hoc results file of the real all-MiniLM-L6-v2 checkpoint (``experiments.dashboard``).
TensorBoard runs as its own process and finds the plugin through the installed package's entry
point; the page is driven with Playwright's Python client on Debian's ``chromium``. Without a
browser the tests skip, unless ``SPECTRAL_CALLBACKS_REQUIRE_BROWSER=1`` (set by CI) makes that
a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments.dashboard import (
    POSTHOC_NAME,
    VIEWPORT,
    build_logdir,
    chromium_path,
    click_cell,
    fetch,
    headless_chromium,
    spectra_frame,
    tensorboard,
)
from spectral_callbacks import open_run

pytestmark = pytest.mark.slow
EPOCHS = 2
TIMEOUT_MS = 20_000
DEMO_RUN_NAMES = ["wd_0.005/cnn", "wd_0.005/mlp", "wd_0/cnn", "wd_0/mlp"]
DISTINCT_COLOURS = """(canvas) => {
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const seen = new Set();
  for (let i = 0; i < pixels.length; i += 4) seen.add(`${pixels[i]},${pixels[i + 1]},${pixels[i + 2]}`);
  return seen.size;
}"""


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    if chromium_path() is None:
        message = "no chromium: install Debian's chromium (apt-get install chromium) for the browser tests"
        if os.environ.get("SPECTRAL_CALLBACKS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = build_logdir(tmp_path_factory.mktemp("dashboard_logs"), epochs=EPOCHS)
    (root / "stray.h5").write_bytes(b"not an HDF5 file, whatever its name says")
    return root


@pytest.fixture(scope="module")
def server(logdir: Path) -> Iterator[str]:
    with tensorboard(logdir) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[object]:
    with headless_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, server: str) -> Iterator[object]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server}/#spectra")
    yield page
    context.close()
    assert errors == []
    # the page asks nothing of the network: every request (scripts, styles, data) is TensorBoard's
    assert [url for url in requests if not url.startswith((server, "data:", "blob:"))] == []


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def run_file(logdir: Path, name: str) -> Path:
    return next((logdir / name).rglob("spectra.h5"))


def test_the_tab_appears_and_the_heatmaps_show_every_run_layer_and_epoch(page, logdir) -> None:
    expect(page.locator("body")).to_contain_text("Spectra")  # TensorBoard's tab bar
    frame = spectra_frame(page)
    sections = frame.locator("section.run-heatmap")
    sections.nth(len(DEMO_RUN_NAMES)).wait_for()
    names = sorted(sections.evaluate_all("(nodes) => nodes.map((n) => n.dataset.run)"))
    assert names == sorted([*DEMO_RUN_NAMES, POSTHOC_NAME])
    expect(frame.locator("#unreadable")).to_contain_text("stray")
    for name in DEMO_RUN_NAMES:
        with open_run(run_file(logdir, name)) as run:
            layers, epochs = len(run.layers), run.epochs.size
        assert epochs == EPOCHS + 1
        canvas = frame.locator(f'section.run-heatmap[data-run="{name}"] canvas')
        canvas.wait_for()
        drawn = (int(canvas.get_attribute("data-layers")), int(canvas.get_attribute("data-snapshots")))
        assert drawn == (layers, epochs)
        assert canvas.evaluate(DISTINCT_COLOURS) >= 3  # cells in several colours, not a blank canvas


def test_clicking_a_cell_opens_its_esd_with_the_fit_and_moving_on_changes_the_plot(page, logdir) -> None:
    with open_run(run_file(logdir, "wd_0/mlp")) as run:
        layer = run.layers[0]
        alpha = run.metric("alpha", layer)[1]
    click_cell(page, "wd_0/mlp", 0, 1)
    frame = spectra_frame(page)
    title = frame.locator("#esd-title")
    expect(title).to_contain_text("epoch 1")
    assert layer in title.inner_text()
    plot = frame.locator("svg#esd-plot")
    plot.locator("path.fit").wait_for()
    before = plot.locator("path.esd").first.get_attribute("d")
    assert before and len(before) > 20
    expect(frame.locator("#fit-table")).to_contain_text(f"{alpha:.4g}")
    frame.locator("body").press("ArrowRight")
    expect(title).to_contain_text("epoch 2")
    expect(plot.locator("path.esd").first).not_to_have_attribute("d", before)


def test_two_runs_overlay_and_the_conv_operator_spectrum_shows(page) -> None:
    click_cell(page, "wd_0/cnn", 0, 2)
    frame = spectra_frame(page)
    expect(frame.locator("#esd-title")).to_contain_text("epoch 2")
    frame.locator("svg#operator-plot").wait_for()
    frame.locator('#overlay-runs input[value="wd_0.005/cnn"]').check()
    plot = frame.locator("svg#esd-plot")
    plot.locator('path.esd[data-run="wd_0.005/cnn"]').wait_for()
    assert plot.locator("path.esd").count() == 2


def test_the_post_hoc_results_file_opens(page) -> None:
    click_cell(page, POSTHOC_NAME, 3, 0)
    frame = spectra_frame(page)
    expect(frame.locator("#esd-title")).to_contain_text("model.safetensors")
    frame.locator("svg#esd-plot path.esd").first.wait_for()


def test_compare_plots_one_point_per_run_with_the_parameter(page) -> None:
    frame = spectra_frame(page)
    frame.locator('button[data-view="compare"]').click()
    frame.locator("#compare-param").select_option("weight_decay")
    points = frame.locator("svg#compare-plot circle.point")
    points.nth(len(DEMO_RUN_NAMES) - 1).wait_for()
    assert sorted(points.evaluate_all("(nodes) => nodes.map((n) => n.dataset.run)")) == DEMO_RUN_NAMES
    expect(frame.locator("#compare-missing")).to_contain_text(POSTHOC_NAME)


def test_a_path_as_run_name_gets_a_400(server: str) -> None:
    status, body = fetch(f"{server}/data/plugin/spectra/esd?run=../../etc/passwd&layer=x")
    assert status == 400
    assert "Unknown run" in json.loads(body)["error"]
    status, body = fetch(f"{server}/data/plugin/spectra/..%2F..%2Fetc%2Fpasswd")
    assert status in (400, 404) and b"root:" not in body
