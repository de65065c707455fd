"""The explorer page in a real headless Chromium (Debian's `chromium`, driven by Playwright
for Python; nothing is downloaded), against a real server holding the digits model: pick a
sample, see the prediction and the explanation, open a channel and its top images, with no
console error; and against an imported net with blocks (tests/support/blocky.py): one row
per block, the server asked only for their outputs, a block opened to its layers and closed.
Skipped, saying why, where Chromium or Playwright is missing; .ci/run installs Chromium so
CI always runs them."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from service.codecs import colormaps
from tests.support import blocky
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
        try:
            self.page.wait_for_function(
                """([selector, count]) => {
                    const images = [...document.querySelectorAll(selector)];
                    return images.length === count && images.every((i) => i.complete && i.naturalWidth > 0);
                }""", arg=[selector, count])
        except sync_api.TimeoutError:
            # Say which pictures never arrived and what the console saw: a picture that
            # failed once stays broken, and the wait alone only says it timed out.
            images = self.page.eval_on_selector_all(
                selector, "(images) => images.map((i) => [i.src.slice(0, 120), i.complete, i.naturalWidth])")
            raise AssertionError(f"{selector}: wanted {count} decoded pictures; have {images}; "
                                 f"console errors: {self.errors}") from None


def gradient(stops: Any) -> str:
    return f"linear-gradient(90deg, {', '.join(f'rgb({r}, {g}, {b})' for r, g, b in stops)})"


# A canvas's pixels, summed per channel (RGB), and the input's as the overlay draws it at opacity 0.
PIXELS = """(selector) => {
    const c = document.querySelector(selector), d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    return sum;
}"""
PIXELS_OF_INPUT = """() => {
    const overlay = document.querySelector("#overlay"), input = document.querySelector("#input");
    const c = document.createElement("canvas");
    c.width = overlay.width; c.height = overlay.height;
    const ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = overlay.width === input.width;
    ctx.drawImage(input, 0, 0, c.width, c.height);
    const d = ctx.getImageData(0, 0, c.width, c.height).data, sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    return sum;
}"""


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
    # The explanation for the top class, with its faithfulness numbers, painted over the
    # input in the server's saliency colours (the legend), as opaque as the control says.
    p.wait_for_selector("#overlay[data-method]:not([hidden])")
    p.wait_for_selector("#faithfulness table")
    assert "deletion" in p.inner_text("#faithfulness")
    saliency = colormaps.COLORMAP_STOPS[colormaps.SALIENCY_COLORMAP]
    assert p.evaluate("getComputedStyle(document.querySelector('#saliency-ramp')).backgroundImage") == gradient(saliency)
    shown = p.evaluate(PIXELS, "#overlay")
    p.fill("#opacity", "0")  # no heat: the input as the model saw it, enlarged
    bare = p.evaluate(PIXELS, "#overlay")
    assert p.inner_text("#opacity-value") == "0%" and bare != shown
    assert bare == p.evaluate(PIXELS_OF_INPUT)
    # Every layer drawn; open a channel of a deep conv layer.
    layers = [layer["name"] for layer in digits_artifact.metadata["layers"]]
    p.wait_for_selector(f'.layer[data-layer="{layers[-1]}"] .tile')
    assert p.locator(".layer").count() == len(layers)
    # The legend in the server's feature map colours, read from the layer catalogue.
    ramp = p.evaluate("getComputedStyle(document.querySelector('#feature-ramp')).backgroundImage")
    assert ramp == gradient(colormaps.COLORMAP_STOPS[colormaps.FEATURE_COLORMAP])
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


# --- a net with blocks ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blocky_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tests/support/blocky.py's net imported with a channel view: its repository and metadata."""
    from model_export.cli import main

    root = tmp_path_factory.mktemp("blocky")
    onnx_file = blocky.export_blocky(root / "blocky.onnx")
    images = blocky.image_folder(root / "images")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["import", str(onnx_file), "--name", "blocky", "--data-dir", str(images), "--out", str(root / "models"),
                   "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25", "--quiet"])
    assert rc == 0
    (metadata,) = (root / "models").glob("blocky/*/metadata.json")
    return {"repository": root / "models", "metadata": json.loads(metadata.read_text())}


@pytest.fixture(scope="module")
def blocky_server(blocky_model: dict[str, Any], start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(blocky_model["repository"])


def runs(layers: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The catalogue's blocks: consecutive layers of one group, (group, layer names)."""
    out: list[tuple[str, list[str]]] = []
    for layer in layers:
        if out and out[-1][0] == layer["group"]:
            out[-1][1].append(layer["name"])
        else:
            out.append((layer["group"], [layer["name"]]))
    return out


# The layers each predict the page made asked for, in order.
ASKED = """() => performance.getEntriesByType("resource").filter((e) => e.name.includes("/predict?"))
    .map((e) => e.name)"""


def asked_layers(urls: list[str]) -> list[set[str]]:
    return [set(",".join(parse_qs(urlsplit(url).query).get("layers", [""])).split(",")) - {""} for url in urls]


def look_at_a_sample(page: Page, url: str, samples: int) -> None:
    p = page.page
    p.goto(url + "/")
    page.images_decoded(".sample img", samples)
    p.click(".sample >> nth=1")
    p.wait_for_function("window.convscope.timings.some((t) => t.what === 'image') && window.convscope.mapsPending() === 0")


def test_a_net_with_blocks_shows_one_row_per_block_and_asks_only_for_their_outputs(
        page: Page, blocky_server: LiveServer, blocky_model: dict[str, Any]) -> None:
    p, meta = page.page, blocky_model["metadata"]
    look_at_a_sample(page, blocky_server.url, meta["samples"]["count"])
    blocks = runs(meta["layers"])
    assert [group for group, _ in blocks] == ["stem", "act", "block1", "block2", "mixed", "pool"]
    rows = p.locator("#layers > .block")
    assert [rows.nth(i).get_attribute("data-block") for i in range(rows.count())] == [group for group, _ in blocks]
    assert "block by block" in p.inner_text("#inside-h")
    # closed: each row shows its output's channels on one line, no layer inside has a card
    for group, names in blocks:
        row = p.locator(f'.block[data-block="{group}"]')
        assert row.locator(".block-toggle").get_attribute("aria-expanded") == "false"
        assert row.locator(f'.strip[data-layer="{names[-1]}"] .tile').count() >= 1
    assert p.locator("#layers .layer.card").count() == 0
    assert "3 layers: 2 conv · 1 merge" in p.inner_text('.block[data-block="mixed"] .block-info')
    # the server was asked for the outputs only (the classes with the first of them)
    asked = asked_layers(p.evaluate(ASKED))
    assert set().union(*asked) == {names[-1] for _, names in blocks}
    assert page.errors == []


def test_a_block_opens_to_its_layers_and_closes(page: Page, blocky_server: LiveServer,
                                                 blocky_model: dict[str, Any]) -> None:
    p, meta = page.page, blocky_model["metadata"]
    look_at_a_sample(page, blocky_server.url, meta["samples"]["count"])
    (names,) = [names for group, names in runs(meta["layers"]) if group == "block1"]
    before = len(p.evaluate(ASKED))
    block = p.locator('.block[data-block="block1"]')
    block.locator(".block-toggle").click()
    assert block.locator(".block-toggle").get_attribute("aria-expanded") == "true"
    p.wait_for_function("window.convscope.mapsPending() === 0 && !document.querySelector('.block-layers .layer.waiting')")
    cards = block.locator(".block-layers .layer.card")
    assert [cards.nth(i).get_attribute("data-layer") for i in range(cards.count())] == names
    assert all(cards.nth(i).locator(".tile").count() >= 1 for i in range(cards.count()))
    assert block.locator(".strip").is_hidden()
    # opening asked for the block's inner layers, once, and nothing else
    opened = asked_layers(p.evaluate(ASKED)[before:])
    assert set().union(*opened) == set(names[:-1])
    # a channel of an inner conv layer: its card under that layer, its top images boxed
    p.click('.layer.card[data-layer="block1.conv2"] .tile >> nth=0')
    top_k = meta["channel_view"]["top_k"]
    page.images_decoded(".detail .patch img", top_k)
    assert p.locator(".detail .patch .box").count() == top_k
    assert p.evaluate("document.querySelector('.detail').previousElementSibling.dataset.layer") == "block1.conv2"
    assert "receptive field" in p.inner_text(".detail .top-note")
    # closing the block takes its layers and the channel's card away; its strip is back
    block.locator(".block-toggle").click()
    p.wait_for_selector(".detail", state="detached")
    assert cards.count() == 0
    assert block.locator(".strip .tile").count() >= 1
    assert block.locator(".block-toggle").get_attribute("aria-expanded") == "false"
    assert page.errors == []
