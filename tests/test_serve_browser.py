"""The service's web page in a real headless browser (Debian's chromium via Playwright):
upload an image, see its overlay and score, keep a screenshot."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
uvicorn = pytest.importorskip("uvicorn", reason="the service needs uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package (pip install playwright)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_url():
    import torch

    from zsad.api import load
    from zsad.serve import create_app

    torch.manual_seed(0)
    detector = load("zeroshot", backbone="zsad-tiny", weights="random", image_size=64, device="cpu")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(detector, meta={"method": "zeroshot", "backbone": "zsad-tiny"}), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=30)


def test_page_shows_an_overlay_and_a_score_after_an_upload(served_url, tmp_path):
    image = np.full((96, 128, 3), 30, np.uint8)
    image[30:60, 40:90] = (220, 180, 40)
    upload = tmp_path / "part.png"
    Image.fromarray(image).save(upload)
    screenshot = tmp_path / "page.png"
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, viewport={"width": 900, "height": 700}
        )
        try:
            page = browser.new_page()
            page.goto(served_url)
            page.wait_for_function("document.getElementById('colourbar').style.background.includes('gradient')")
            page.set_input_files("#files", str(upload))
            overlay = page.wait_for_selector("img.overlay", timeout=60_000)
            page.wait_for_function("document.querySelector('img.overlay').naturalWidth > 0")
            size = page.evaluate(
                "[document.querySelector('img.overlay').naturalWidth, document.querySelector('img.overlay').naturalHeight]"
            )
            caption = page.inner_text("figcaption")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert overlay is not None and size == [128, 96]
    assert caption.startswith("part.png: score ") and ("normal" in caption or "anomalous" in caption)
    shot = np.asarray(Image.open(screenshot).convert("RGB"))
    assert shot.shape[0] > 100 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # a rendered page, not blank
