"""The explorer page in a real headless Chromium (Debian's `chromium`, driven by Playwright
for Python; nothing is downloaded), against a real server holding the digits model: pick a
sample, see the prediction and the explanation, open a channel and its top images, with no
console error. Skipped, saying why, where Chromium or Playwright is missing; .ci/run
installs Chromium so CI always runs them."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.codecs import colormaps
from tests.support.exported import ExportedModel
from tests.support.images import png_bytes
from tests.support.live import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.timeout(180),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[dev]')")

KEY = "explorer-test-key-0123456789"
WAIT_MS = 60_000  # generous: two shared cores; the page itself is fast (benchmarks/explorer_screenshots.py)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(digits_artifact: ExportedModel, start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(digits_artifact.repository)


class Page:
    """A page that records every console error and uncaught exception."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def images_decoded(self, selector: str, count: int) -> None:
        self.page.wait_for_function(
            """([selector, count]) => {
                const images = [...document.querySelectorAll(selector)];
                return images.length === count && images.every((i) => i.complete && i.naturalWidth > 0);
            }""", arg=[selector, count])


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.page.close()


def test_a_sample_its_prediction_explanation_and_a_channel(page: Page, server: LiveServer,
                                                            digits_artifact: ExportedModel, tmp_path: Path) -> None:
    p = page.page
    p.goto(server.url + "/")
    samples = digits_artifact.metadata["samples"]["count"]
    page.images_decoded(".sample img", samples)
    p.click(".sample >> nth=3")
    best = p.locator("#predictions tr.best td").first
    best.wait_for()
    assert best.inner_text() in digits_artifact.classes
    # The explanation for the top class, with its faithfulness numbers.
    page.images_decoded("#overlay", 1)
    p.wait_for_selector("#faithfulness table")
    assert "deletion" in p.inner_text("#faithfulness")
    # Every layer drawn; open a channel of a deep conv layer.
    layers = [layer["name"] for layer in digits_artifact.metadata["layers"]]
    p.wait_for_selector(f'.layer[data-layer="{layers[-1]}"] .tile')
    assert p.locator(".layer").count() == len(layers)
    # The legend in the server's feature map colours, read from the layer catalogue.
    stops = colormaps.COLORMAP_STOPS[colormaps.FEATURE_COLORMAP]
    ramp = p.evaluate("getComputedStyle(document.querySelector('#feature-ramp')).backgroundImage")
    assert ramp == f"linear-gradient(90deg, {', '.join(f'rgb({r}, {g}, {b})' for r, g, b in stops)})"
    p.click('.layer[data-layer="features.8"] .tile >> nth=0')
    top_k = digits_artifact.metadata["channel_view"]["top_k"]
    page.images_decoded(".detail .patch img", top_k)
    assert p.locator(".detail .patch .box").count() == top_k  # each with its receptive field
    assert "receptive field" in p.inner_text(".detail .map-note")
    p.click(".detail .filter-body button")  # a deep channel's kernels, on demand
    p.wait_for_selector(".detail .filter-pair canvas")
    p.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
    assert page.errors == []


def test_the_keyboard_reaches_samples_and_channels(page: Page, server: LiveServer,
                                                   digits_artifact: ExportedModel) -> None:
    p = page.page
    p.goto(server.url + "/")
    page.images_decoded(".sample img", digits_artifact.metadata["samples"]["count"])
    p.focus(".sample >> nth=0")
    p.keyboard.press("Enter")
    p.wait_for_selector("#predictions tr.best")
    p.focus('.layer[data-layer="features.1"] .tile >> nth=0')
    p.keyboard.press("Enter")
    p.wait_for_selector(".detail")
    first = p.inner_text(".detail-title")
    p.keyboard.press("ArrowRight")
    p.wait_for_function("(t) => document.querySelector('.detail-title').textContent !== t", arg=first)
    p.keyboard.press("Escape")
    p.wait_for_selector(".detail", state="detached")
    assert p.evaluate("document.activeElement.classList.contains('tile')")
    assert page.errors == []


def test_the_user_s_own_image_by_file_picker_and_by_drop(page: Page, server: LiveServer,
                                                          digits_artifact: ExportedModel) -> None:
    p = page.page
    p.goto(server.url + "/")
    p.wait_for_function("window.convscope.ready")
    digit = png_bytes(np.kron(digits_artifact.images[0], np.ones((4, 4), dtype=np.uint8)))
    p.set_input_files("#file", files=[{"name": "mine.png", "mimeType": "image/png", "buffer": digit}])
    p.wait_for_function("document.querySelector('#input-note').textContent.startsWith('mine.png')")
    p.wait_for_selector("#predictions tr.best")
    dropped = p.evaluate_handle(
        """(b64) => {
            const transfer = new DataTransfer();
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            return transfer;
        }""", base64.b64encode(digit).decode())
    p.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    p.wait_for_function("document.querySelector('#input-note').textContent.startsWith('dropped.png')")
    assert page.errors == []


def test_with_api_keys_the_page_asks_for_one_and_loads_pictures_with_it(
        page: Page, start_server: Callable[..., LiveServer], digits_artifact: ExportedModel,
        tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(digits_artifact.path, root / digits_artifact.name / str(digits_artifact.version))
    server = start_server(root, api_keys=f"{KEY}:infer")
    p = page.page
    p.goto(server.url + "/")
    p.wait_for_selector("#keyform", state="visible")
    p.fill("#key", KEY)
    p.click("#keyform button")
    page.images_decoded(".sample img", digits_artifact.metadata["samples"]["count"])
    p.click(".sample >> nth=0")
    p.wait_for_selector("#predictions tr.best")
    p.click('.layer[data-layer="features.3"] .tile >> nth=0')
    page.images_decoded(".detail .patch img", digits_artifact.metadata["channel_view"]["top_k"])
    # The first 401 (before the key) is the only error the console saw.
    assert all("401" in error for error in page.errors), page.errors


def test_an_int8_version_beside_its_float_version(page: Page, start_server: Callable[..., LiveServer],
                                                  digits_artifact: ExportedModel, tmp_path: Path) -> None:
    from tests.support.export_cli import run_cli

    root = tmp_path / "models"
    shutil.copytree(digits_artifact.path, root / digits_artifact.name / "1")
    quantized = run_cli(["quantize", root / digits_artifact.name, "--quiet"])
    assert quantized.rc == 0, quantized.stderr
    server = start_server(root, default_precision="newest")  # the int8 version (2) on show first
    p = page.page
    p.goto(server.url + "/")
    p.wait_for_selector("#quantization", state="visible")
    layers = [layer["name"] for layer in digits_artifact.metadata["layers"]]
    p.wait_for_function("(n) => document.querySelectorAll('#quantization-bars .q-row').length === n",
                        arg=len(layers) + 1)  # one bar per tapped layer, then the class scores
    assert "Version 2 is version 1 in int8" in p.inner_text("#quantization-summary")
    assert "int8 (of v1)" in p.inner_text("#summary")
    assert p.locator("#version option").count() == 2
    page.images_decoded(".sample img", digits_artifact.metadata["samples"]["count"])
    p.click(".sample >> nth=5")
    p.wait_for_selector("#predictions tr.best")
    # A layer's bar opens its worst channel: the float and int8 maps side by side.
    p.click('#quantization-bars button.q-row[data-layer="features.8"]')
    p.wait_for_selector(".detail .twin", state="visible")
    assert p.inner_text(".detail .twin-float-cap") == "float32 · v1"
    assert p.inner_text(".detail .twin-int8-cap") == "int8 · v2"
    assert "dB from the float one" in p.inner_text(".detail .twin-note")
    p.screenshot(path=str(tmp_path / "int8.png"), full_page=True)
    # The float version, picked: the section stays (its int8 version is served), the pair swaps sides.
    p.select_option("#version", "1")
    p.wait_for_function("!document.querySelector('#summary').textContent.includes('int8')")
    p.wait_for_function("document.querySelector('#quantization-summary').textContent.includes('shows the float version')")
    assert page.errors == []
