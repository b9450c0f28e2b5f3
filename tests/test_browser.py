"""Notebook 04 in a real browser: JupyterLab started here, driven by headless Chromium (Playwright for Python with
the system's Chromium, `apt-get install chromium`; `make test` installs it where it can).

The notebooks are meant to be stepped through in JupyterLab; papermill (tests/test_notebook_series.py) runs their
code but never renders a page. Here JupyterLab serves a copy of 04_train.ipynb with the `ci` profile on the real
data (TINYCONV_PROFILE / TINYCONV_DATA_DIR / TINYCONV_RUN_DIR, which the notebooks' first cells read), the page
starts the notebook's own `tinyconv` kernel, runs every cell from the Run menu, and must show:
- the live training curves as an image in the page while the training cell is still running;
- every cell done, no error output, and the final figures rendered as images;
and the two screenshots it takes (docs/figures/jupyterlab-04-*.png when TINYCONV_SCREENSHOTS names that folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "04_train.ipynb"
CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def jupyterlab(real_data_dir, tmp_path):
    """JupyterLab serving a copy of notebook 04 (the committed file stays as it is): yields (url, run_dir)."""
    root, run_dir = tmp_path / "lab", tmp_path / "runs"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    port, token = _free_port(), "tinyconv-browser-test"
    env = {**os.environ, "TINYCONV_PROFILE": "ci", "TINYCONV_DATA_DIR": str(real_data_dir),
           "TINYCONV_RUN_DIR": str(run_dir), "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    # no "would you like news?" toast over the page (and its screenshots)
    notification = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env.pop("KERAS_BACKEND", None)  # the notebooks' CPU path: TensorFlow
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", f"--ServerApp.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1", "--allow-root", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "JupyterLab exited at start"
                assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}", run_dir
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


# Installed in the page before Run All: notes when an image appears in the output of the training cell (the one
# whose code makes LiveCurves) while that cell's prompt still says it runs ('[*]:'), i.e. a curve drawn live.
_WATCH_LIVE_CURVES = """() => {
    window.__liveCurves = false;
    const cell = [...document.querySelectorAll('.jp-CodeCell')].find(c => c.textContent.includes('callbacks=[LiveCurves'));
    if (!cell) { window.__liveCurves = 'no training cell'; return; }
    cell.setAttribute('data-training-cell', '1');
    new MutationObserver(() => {
        const running = cell.querySelector('.jp-InputPrompt').textContent.includes('[*]');
        if (running && cell.querySelector('.jp-OutputArea-output img')) window.__liveCurves = true;
    }).observe(cell, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def _cells_state(page) -> dict:
    """What the page shows: prompts of the code cells ('[*]:' running, '[ ]:' queued or not run, '[n]:' done),
    images in outputs, error outputs."""
    return page.evaluate("""() => {
        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());
        const images = document.querySelectorAll('.jp-OutputArea-output img').length;
        const errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
            .map(e => e.textContent).filter(t => t.includes('Traceback') || t.includes('Error'));
        return {prompts, images, errors};
    }""")


def test_notebook_04_runs_in_jupyterlab_and_its_curves_render_live(jupyterlab, tmp_path):
    assert CHROMIUM, ("no Chromium on this machine: `apt-get install chromium` (make test does this as root); "
                      "the browser test drives the system's Chromium through Playwright")
    from playwright.sync_api import sync_playwright

    url, run_dir = jupyterlab
    shots = Path(os.environ.get("TINYCONV_SCREENSHOTS") or tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
            # the notebook names its kernel (metadata.kernelspec "tinyconv"): the page starts that one; a kernel
            # dialog, if JupyterLab shows one, is answered with its default (the notebook's kernel)
            deadline = time.monotonic() + 120
            while "Python (tinyconv)" not in page.inner_text(".jp-Toolbar-kernelName"):
                if page.locator(".jp-Dialog .jp-mod-accept").count():
                    page.click(".jp-Dialog .jp-mod-accept")
                if time.monotonic() > deadline:
                    page.screenshot(path=str(tmp_path / "no-kernel.png"))
                    raise AssertionError(f"the notebook's kernel did not start: {page.inner_text('.jp-Toolbar-kernelName')!r}")
                time.sleep(0.5)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)

            page.evaluate(_WATCH_LIVE_CURVES)
            page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
            page.click("li.lm-Menu-item:has-text('Run All Cells')")

            shot_live = False
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                state = _cells_state(page)
                assert not state["errors"], state["errors"][0][-1500:]
                if page.evaluate("window.__liveCurves") is True and not shot_live:
                    page.locator("[data-training-cell] .jp-OutputArea-output img").last.scroll_into_view_if_needed()
                    page.screenshot(path=str(shots / "jupyterlab-04-live.png"))
                    shot_live = True
                running = any(prompt.startswith("[*]") for prompt in state["prompts"])
                if not running and all(prompt[1:-2].strip().isdigit() for prompt in state["prompts"]):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"the notebook did not finish within 600 s: {_cells_state(page)['prompts']}")

            live = page.evaluate("window.__liveCurves")
            assert live is True, f"the training curves did not show in the page while the training cell ran ({live})"
            final = _cells_state(page)
            assert final["images"] >= 2, final  # the final curves and the figures after them
            assert (run_dir / "train" / "history.csv").is_file()  # it trained, where the page's kernel was told
            page.locator(".jp-OutputArea-output img").last.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "jupyterlab-04-done.png"))
        finally:
            browser.close()
    for name in ("jupyterlab-04-live.png", "jupyterlab-04-done.png"):
        assert (shots / name).stat().st_size > 10_000, name  # a page, not a blank
