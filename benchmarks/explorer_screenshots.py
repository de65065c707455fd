"""Screenshots of the explorer and the time its own requests take (issues 13 and 21).

    python -m benchmarks.explorer_screenshots                 # models in benchmarks/out/explorer-models
    python -m benchmarks.explorer_screenshots --models DIR --rounds 10
    python -m benchmarks.explorer_screenshots --zoo           # the zoo's deep nets (issue 21)

`--int8 REPOSITORY` (issue 22): serves a repository whose models have an int8 version
beside their float one and, for each, opens the page on a sample, clicks the bars of the
three layers int8 hurts most (the lowest SQNR over the held-out images) in the "int8 and
float" section, and records what the page shows: the bar's figures, the worst channel's
float and int8 maps side by side with their difference, and the note on this image
(explorer-int8-<model>-<layer>.png, explorer-int8.json).

`--zoo` (issue 21): imports three zoo models and a ResNet-50 at 224 px into
benchmarks/out/explorer-zoo-models (benchmarks/explorer_models.py; the zoo's training and
files cached in benchmarks/out/zoo-cache), serves them, and for each zoo model (resnet18,
mobilenet-v3-small, densenet121) saves explorer-zoo-<model>-{overview,block,channel,
explanation}.png: the whole page with a sample looked at, a block opened (a DenseNet's
stage, then a dense layer in it), a channel of a conv layer in that block with its top
images and their receptive-field boxes, and the explanation card. On resnet50-224 it times
the page's requests per image with the Resource Timing API (click -> the last map of the
rows on screen; the explanation apart), opening a block, and the page's height, with the
load average; explorer-zoo-timings.json has every figure.

Exports what is missing with the issue's commands (digits-tinyvgg: `python -m model_export`;
Fashion-MNIST alexnet-small: `--dataset fashion-mnist --arch alexnet-small --epochs 2
--batch-size 128 --max-train-samples 10000`), serves both with `python -m service`, and
drives the page in headless Chromium (Debian's `chromium`, through Playwright): pick a
sample, wait for the prediction, every layer and the explanation, open a channel of a
middle layer and wait for its top images. Writes to --out:

* explorer-<model>.png (the whole page) and explorer-<model>-channel.png (the channel);
* explorer-timings.json, and the same as a table on stdout: per sample, the page's requests
  (the Resource Timing API, from the click to the last response) and its drawing; and the
  predict answer for every layer in each encoding the page could have used, over HTTP.

The figures are wall-clock on this machine, shared with other jobs: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from service.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CHROMIUM = "/usr/bin/chromium"
MODELS = {
    "digits-tinyvgg": ["--name", "digits-tinyvgg"],
    "fashion-mnist-alexnet-small": ["--dataset", "fashion-mnist", "--arch", "alexnet-small", "--epochs", "2",
                                    "--batch-size", "128", "--max-train-samples", "10000"],
}
# The channel opened for the screenshots: a middle layer's most active channel.
MIDDLE = {"digits-tinyvgg": "features.8", "fashion-mnist-alexnet-small": "features.7"}
TIMED = "fashion-mnist-alexnet-small"
WAIT_MS = 120_000


def export_missing(models: Path) -> None:
    for name, args in MODELS.items():
        if list(models.glob(f"{name}/*/metadata.json")):
            continue
        command = [sys.executable, "-m", "model_export", *args, "--out", str(models)]
        print("exporting:", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)


def artifact_sizes(models: Path) -> dict[str, dict[str, Any]]:
    sizes = {}
    for name in MODELS:
        newest = max(models.glob(f"{name}/*/metadata.json"), key=lambda p: int(p.parent.name))
        meta = json.loads(newest.read_text())
        files = meta["files"]
        view = meta.get("channel_view") or {}
        sizes[name] = {
            "channel_view_bytes": files.get("channel_view.npz", {}).get("bytes"),
            "samples_bytes": files.get("samples.npz", {}).get("bytes"),
            "model_bytes": files["model.onnx"]["bytes"],
            "channel_view_seconds": view.get("seconds"),
            "ranked_images": view.get("images"),
        }
    return sizes


def encodings(url: str, models: Path, rounds: int) -> list[dict[str, Any]]:
    """The predict answer with every layer, per encoding: what the page chose from."""
    sample = httpx.get(f"{url}/v1/models/{TIMED}/samples/0").content
    rows = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for query in ("encoding=npy&dtype=float16", "encoding=npy&dtype=float32", "encoding=png", "encoding=stats"):
            path = f"/v1/models/{TIMED}/predict?top_k=10&layers=all&{query}"
            times, size, server = [], 0, []
            for _ in range(rounds + 1):
                started = time.perf_counter()
                response = client.post(path, content=sample, headers={"content-type": "image/png"})
                response.raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
                server.append(response.json()["timings_ms"]["total"])
                size = len(response.content)
            rows.append({"query": query, "bytes": size, "median_ms": statistics.median(times[1:]),
                         "server_median_ms": statistics.median(server[1:])})
    return rows


def explanation_methods(url: str, rounds: int) -> list[dict[str, Any]]:
    """Each method the model allows, as the page asks for it (png overlay, faithfulness on)."""
    base = f"/v1/models/{TIMED}"
    rows = []
    with httpx.Client(base_url=url, timeout=120) as client:
        sample = client.get(f"{base}/samples/4").content
        methods = client.get(f"{base}/layers").json()["explanations"]["methods"]
        for method in methods:
            times, body = [], {}
            for _ in range(max(1, rounds // 3)):
                started = time.perf_counter()
                response = client.post(f"{base}/explain?encoding=png&method={method}", content=sample,
                                       headers={"content-type": "image/png"})
                response.raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
                body = response.json()
            rows.append({"method": method, "median_ms": statistics.median(times), "passes": body["forward_passes"],
                         "deletion": body["faithfulness"]["deletion"],
                         "random_deletion": body["faithfulness"]["random_deletion"]})
    return rows


PAGE_REQUESTS = """(since) => performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= since)
    .map((e) => ({name: e.name.replace(location.origin, ""), start: e.startTime, end: e.responseEnd,
                  ms: e.duration, bytes: e.encodedBodySize}))"""


def done(page: Any, what: str, count: int) -> None:
    page.wait_for_function(f"window.convscope.timings.filter((t) => t.what === '{what}').length >= {count}",
                           timeout=WAIT_MS)


SETTLED = ("document.querySelector('#explain-status').textContent.trim() !== '' && "
           "!document.querySelector('#explain-status').textContent.startsWith('computing')")


def explains(page: Any) -> bool:
    """Wait for the explanation to finish or fail; whether this server offers them."""
    page.wait_for_function(SETTLED, timeout=WAIT_MS)
    return "does not offer" not in page.inner_text("#explain-status")


def shoot(browser: Any, url: str, model: str, out: Path) -> dict[str, Any]:
    page, errors, _ = open_page(browser, url, model)
    page.click(".sample >> nth=4")
    done(page, "image", 1)
    explains(page)
    page.click(f'.layer[data-layer="{MIDDLE[model]}"] .tile >> nth=0')
    page.wait_for_function("[...document.querySelectorAll('.detail .patch img')].every((i) => i.naturalWidth > 0) "
                           "&& document.querySelectorAll('.detail .patch img').length > 0", timeout=WAIT_MS)
    button = page.locator(".detail .filter-body button")
    if button.count():
        button.click()
    page.wait_for_timeout(300)
    page.screenshot(path=str(out / f"explorer-{model}.png"), full_page=True)
    page.locator(".detail").screenshot(path=str(out / f"explorer-{model}-channel.png"))
    page.close()
    return {"console_errors": errors}


def time_page(browser: Any, url: str, rounds: int) -> list[dict[str, Any]]:
    """Per sample: the page's own requests from the click (Resource Timing) and its drawing."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/")
    page.wait_for_function("window.convscope.ready", timeout=WAIT_MS)
    page.select_option("#model", TIMED)
    page.wait_for_selector(".sample img", timeout=WAIT_MS)
    results = []
    for i in range(rounds + 1):  # the first one warms up
        since = page.evaluate("performance.now()")
        page.click(f".sample >> nth={i % page.locator('.sample').count()}")
        done(page, "image", i + 1)
        with_explain = explains(page)
        requests = page.evaluate(PAGE_REQUESTS, since)
        image = page.evaluate("window.convscope.timings.filter((t) => t.what === 'image').at(-1)")
        explain = page.evaluate("window.convscope.timings.filter((t) => t.what === 'explain').at(-1)")
        predict = [r for r in requests if "/predict" in r["name"]]
        opened = page.evaluate("performance.now()")
        page.click(f'.layer[data-layer="{MIDDLE[TIMED]}"] .tile >> nth=1')
        page.wait_for_function("[...document.querySelectorAll('.detail .patch img')].length > 0 && "
                               "[...document.querySelectorAll('.detail .patch img')].every((i) => i.naturalWidth > 0)",
                               timeout=WAIT_MS)
        channel = page.evaluate(PAGE_REQUESTS, opened)
        results.append({
            "sample": i, "requests": len(requests), "channel_requests": len(channel),
            "predict_ms": predict[0]["ms"] if predict else None,
            "predict_bytes": predict[0]["bytes"] if predict else None,
            "shown_ms": image["predict_ms"] + image["draw_ms"],
            "draw_ms": image["draw_ms"],
            "explain_ms": explain["ms"] if with_explain and explain else None,
            "explain_passes": explain["passes"] if with_explain and explain else None,
            "image_requests_ms": max(r["end"] for r in requests) - since,
            "channel_ms": (max(r["end"] for r in channel) - opened) if channel else None,
        })
        page.click(".detail .close")
    page.close()
    return results[1:]


# --- issue 21: the zoo's deep nets ------------------------------------------------------------

ZOO_MODELS = OUT / "explorer-zoo-models"
ZOO_CACHE = OUT / "zoo-cache"
MAPS_DONE = ("window.convscope.mapsPending() === 0 && "
             "![...document.querySelectorAll('#layers .layer.waiting')].some((c) => !c.closest('[hidden]') && "
             "c.getBoundingClientRect().top < innerHeight && c.getBoundingClientRect().bottom > 0)")
TOP_IMAGES = ("document.querySelectorAll('.detail .patch img').length > 0 && "
              "[...document.querySelectorAll('.detail .patch img')].every((i) => i.complete && i.naturalWidth > 0)")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def open_page(browser: Any, url: str, model: str, samples_ms: float = WAIT_MS) -> tuple[Any, list[str], bool]:
    """The page on ``model``, the console's errors, and whether its samples came within
    ``samples_ms`` (an import made without samples has none)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_function("window.convscope.ready", timeout=WAIT_MS)
    page.select_option("#model", model)
    try:
        page.wait_for_selector(".sample img", timeout=samples_ms)
    except Exception:  # playwright's TimeoutError
        return page, errors, False
    return page, errors, True


def scroll_through(page: Any) -> None:
    """Scrolls down the page a screen at a time, each row's maps asked for and drawn as it
    comes into view, then back to the top: a whole-page screenshot then shows every row."""
    y = 0
    while y < page.evaluate("document.documentElement.scrollHeight"):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(50)  # the observer reports a frame later
        page.wait_for_function(MAPS_DONE, timeout=WAIT_MS)
        y += 800
    page.evaluate("window.scrollTo(0, 0)")


def open_rows(page: Any, layer: str) -> list[Any]:
    """Opens the rows that hold a layer (a stage, then its block) and waits for the maps of
    the cards on screen; the rows' locators, outermost first."""
    rows = []
    for row_id in page.evaluate("(layer) => window.convscope.rowPath(layer)", layer):
        rows.append(page.locator(f'.block[data-block="{row_id}"]'))
        rows[-1].locator(".block-toggle").first.click()
    assert rows, f"no row holds {layer}"
    rows[-1].scroll_into_view_if_needed()
    page.wait_for_function(MAPS_DONE, timeout=WAIT_MS)
    page.wait_for_timeout(200)
    return rows


def channel_layer(meta: dict[str, Any]) -> str:
    """The deepest conv layer whose receptive field is at most half the image: its boxes say
    something on the top images (deeper ones see the whole of a 64 px image)."""
    side = min(meta["input"]["size"])
    convs = [layer for layer in meta["layers"] if layer["kind"] == "conv" and layer["op"] == "Conv"
             and layer.get("receptive_field") and layer["receptive_field"] <= side // 2]
    return str(convs[-1]["name"])


def zoo_shots(browser: Any, url: str, model: str, meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """The overview, an opened block, a channel in it and the explanation of one sample."""
    page, errors, _ = open_page(browser, url, model)
    page.click(".sample >> nth=4")
    done(page, "image", 1)
    explains(page)
    page.wait_for_timeout(300)
    shot: dict[str, Any] = {"overview_height": page.evaluate("document.documentElement.scrollHeight"),
                            "explain_status": page.inner_text("#explain-status")}
    scroll_through(page)
    page.screenshot(path=str(out / f"explorer-zoo-{model}-overview.png"), full_page=True)
    page.locator(".explain-card").screenshot(path=str(out / f"explorer-zoo-{model}-explanation.png"))
    layer = channel_layer(meta)
    rows = open_rows(page, layer)
    block = rows[-1]
    shot["block"] = " > ".join(str(row.get_attribute("data-block")) for row in rows)
    shot["opened_height"] = page.evaluate("document.documentElement.scrollHeight")
    page.mouse.move(0, 0)  # no tile under the pointer (its number shows on hover)
    rows[0].screenshot(path=str(out / f"explorer-zoo-{model}-block.png"))  # a stage with its block open
    shot["channel_layer"] = layer
    block.locator(f'.layer.card[data-layer="{layer}"] .tile').first.click()
    page.wait_for_function(TOP_IMAGES, timeout=WAIT_MS)
    page.wait_for_timeout(300)
    page.mouse.move(0, 0)
    page.locator(".detail").screenshot(path=str(out / f"explorer-zoo-{model}-channel.png"))
    shot["boxes"] = page.locator(".detail .patch .box").count()
    shot["console_errors"] = errors
    page.close()
    return shot


def time_deep(browser: Any, url: str, model: str, rounds: int, block_layer: str) -> dict[str, Any]:
    """Per image on a deep net: the page's requests from the click until the rows on screen
    have their maps (Resource Timing), its drawing, the explanation apart; then opening a block."""
    page, errors, _ = open_page(browser, url, model)
    samples = page.locator(".sample").count()
    images = []
    for i in range(rounds + 1):  # the first one warms up
        since, before = page.evaluate("[performance.now(), window.convscope.timings.length]")
        page.click(f".sample >> nth={i % samples}")
        done(page, "image", i + 1)
        marks = page.evaluate("(from) => window.convscope.timings.slice(from)", before)
        mark = next(t for t in marks if t["what"] == "image")
        decoding = [t for t in marks if t["what"] == "maps"]
        requests = [r for r in page.evaluate(PAGE_REQUESTS, since) if "/predict" in r["name"]]
        explains(page)
        explain = page.evaluate("window.convscope.timings.filter((t) => t.what === 'explain').at(-1)")
        images.append({"sample": i, "requests": len(requests), "bytes": sum(r["bytes"] for r in requests),
                       "maps_ms": max(r["end"] for r in requests) - since, "shown_ms": mark["shown_ms"],
                       "first_predict_ms": requests[0]["ms"], "layers": mark["layers"],
                       "decode_ms": sum(d["decode_ms"] for d in decoding),
                       "server_ms": max(d["server_ms"] for d in decoding),
                       "explain_ms": explain["ms"] if explain else None, "explain_method": explain and explain["method"],
                       "explain_passes": explain and explain["passes"]})
    height = page.evaluate("document.documentElement.scrollHeight")
    since = page.evaluate("performance.now()")
    block = open_rows(page, block_layer)[-1]
    opened = page.evaluate(PAGE_REQUESTS, since)
    result = {"model": model, "images": images[1:], "page_height": height, "errors": errors,
              "block": {"name": block.get_attribute("data-block"), "requests": len(opened),
                        "bytes": sum(r["bytes"] for r in opened),
                        "ms": (max(r["end"] for r in opened) - since) if opened else 0,
                        "page_height": page.evaluate("document.documentElement.scrollHeight")}}
    page.close()
    return result


def main_zoo(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    from benchmarks import explorer_models

    args.out.mkdir(parents=True, exist_ok=True)
    explorer_models.prepare(args.zoo_models, args.zoo_cache)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--model-repository", str(args.zoo_models)]
    report: dict[str, Any] = {"load_average_before": load_average(), "cpus": os.cpu_count()}
    with ServerProcess(command, port=port, env=env, cwd=ROOT, log=args.out / "explorer-zoo-server.log", timeout=300) as server:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            report["deep"] = time_deep(browser, server.url, explorer_models.DEEP, args.rounds, "layer3.0.conv2")
            report["load_average_after_timing"] = load_average()
            report["screenshots"] = {}
            for model in explorer_models.ZOO:
                meta = httpx.get(f"{server.url}/v1/models/{model}").json()
                report["screenshots"][model] = zoo_shots(browser, server.url, model, meta, args.out)
            browser.close()
    report["load_average_after"] = load_average()
    (args.out / "explorer-zoo-timings.json").write_text(json.dumps(report, indent=2))
    print_zoo(report, args.out)
    return 0


def print_zoo(report: dict[str, Any], out: Path) -> None:
    deep = report["deep"]
    rows = deep["images"]
    print(f"\n{deep['model']} ({report['cpus']} CPUs, load average before {report['load_average_before']}, "
          f"after timing {report['load_average_after_timing']}), per image, median (max) over {len(rows)}:")
    labels = {"maps_ms": "click -> last map of the rows on screen (Resource Timing)",
              "first_predict_ms": "first predict (classes + first rows' maps)",
              "shown_ms": "click -> those rows drawn", "requests": "map requests", "bytes": "bytes",
              "decode_ms": "decoding the maps in the page (all requests)",
              "server_ms": "the server's own time (slowest request)",
              "layers": "layers fetched", "explain_ms": "explanation request (apart)"}
    for key, label in labels.items():
        print(f"  {label:60} {median(rows, key)}")
    print(f"  explanation: {rows[0]['explain_method']}, {rows[0]['explain_passes']} passes")
    print(f"  page height {deep['page_height']} px; opening {deep['block']['name']}: {deep['block']['requests']} requests, "
          f"{deep['block']['bytes']:,} bytes, {deep['block']['ms']:.0f} ms; then {deep['block']['page_height']} px")
    for model, shot in report["screenshots"].items():
        print(f"\n{model}: overview {shot['overview_height']} px, opened {shot['block']} -> {shot['opened_height']} px, "
              f"channel of {shot['channel_layer']} ({shot['boxes']} boxes), console errors {len(shot['console_errors'])}")
        print(f"  {shot['explain_status']}")
        print("  " + "  ".join(str(out / f"explorer-zoo-{model}-{part}.png")
                               for part in ("overview", "block", "channel", "explanation")))


# The channel card's float/int8 pair drawn for the layer asked for: its note names this image.
TWIN_DONE = """(layer) => {
  const twin = document.querySelector('.detail .twin');
  const detail = document.querySelector('.detail');
  return twin && !twin.hidden && detail.textContent.includes(layer)
    && twin.querySelector('.twin-note').textContent.includes('this image');
}"""


def int8_shots(browser: Any, url: str, model: str, record: dict[str, Any], out: Path,
               image: Path | None = None, sample: int = 4) -> dict[str, Any]:
    """What the explorer shows for the three layers int8 hurts most (issue 22), and for up to two
    layers the export kept float32: each one's bar
    in the "int8 and float" section, and, after a click on it, its worst channel's float and
    int8 maps on sample ``sample`` side by side with their difference (a screenshot of the
    channel card each, explorer-int8-<model>-<layer>.png). A model with no samples (an import
    made without them) is shown ``image``, chosen in the page's file picker."""
    page, errors, has_samples = open_page(browser, url, model, samples_ms=15_000)
    if has_samples:
        page.click(f".sample >> nth={sample}")
        shown = f"sample {sample}"
    elif image is not None:
        page.set_input_files("#file", str(image))
        shown = image.name
    else:
        raise SystemExit(f"{model} has no samples: give an image with --image")
    page.wait_for_selector("#predictions tr.best", timeout=WAIT_MS)
    page.wait_for_selector("#quantization-bars button.q-row", timeout=WAIT_MS)
    worst = sorted((r for r in record["layers"][:-1] if r["sqnr_db"] is not None), key=lambda r: r["sqnr_db"])[:3]
    # And up to two of the layers the export kept float32: their maps still differ (their input
    # came through int8 layers), and the card says so.
    kept = [r for r in record["layers"][:-1] if r["name"] in record.get("float_layers", []) and r not in worst][:2]
    layers = []
    for row in [*worst, *kept]:
        bar = page.locator(f'#quantization-bars .q-row[data-layer="{row["name"]}"]')
        bar_text = bar.inner_text().replace("\n", " ")
        bar.click()
        page.wait_for_function(TWIN_DONE, arg=row["name"], timeout=WAIT_MS)
        page.wait_for_timeout(200)
        shot = out / f"explorer-int8-{model}-{row['name']}.png"
        page.locator(".detail").screenshot(path=str(shot))
        layers.append({"layer": row["name"], "sqnr_db": row["sqnr_db"], "worst_channel": row.get("worst_channel"),
                       "bar": bar_text, "note": page.inner_text(".detail .twin-note"),
                       "difference": page.inner_text(".detail .twin-diff-cap"),
                       "captions": [page.inner_text(".detail .twin-float-cap"), page.inner_text(".detail .twin-int8-cap")],
                       "screenshot": shot.name})
    summary = page.inner_text("#quantization-summary")
    page.screenshot(path=str(out / f"explorer-int8-{model}.png"), full_page=True)
    page.close()
    return {"summary": summary, "layers": layers, "console_errors": errors, "image": shown}


def main_int8(args: argparse.Namespace) -> int:
    """Serves ``args.int8`` (a repository whose models have an int8 version beside their float
    one) and records what the explorer shows for each model's worst layers."""
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--model-repository", str(args.int8)]
    report: dict[str, Any] = {}
    with ServerProcess(command, port=port, env=env, cwd=ROOT, log=args.out / "explorer-int8-server.log", timeout=300) as server:
        listed = httpx.get(f"{server.url}/v1/models", timeout=30).json()["models"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for model in listed:
                int8 = [v["version"] for v in model["versions"] if v.get("precision") == "int8"]
                if not int8:
                    continue
                base = f"{server.url}/v1/models/{model['name']}/versions/{max(int8)}"
                record = httpx.get(f"{base}/quantization", timeout=30).json()
                report[model["name"]] = {"default_version": model["default_version"],
                                         **int8_shots(browser, server.url, model["name"], record, args.out,
                                                      args.image)}
            browser.close()
    (args.out / "explorer-int8.json").write_text(json.dumps(report, indent=2))
    for name, shot in report.items():
        print(f"\n{name} (the page on version {shot['default_version']}, {shot['image']}; "
              f"console errors {len(shot['console_errors'])})")
        for row in shot["layers"]:
            print(f"| {row['layer']} | {row['bar']} | {' / '.join(row['captions'])}: {row['difference']} | "
                  f"{row['note']} | {row['screenshot']} |")
    return 0


def median(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return f"{statistics.median(values):.0f} (max {max(values):.0f})" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=OUT / "explorer-models")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rounds", type=int, default=10, help="samples timed on the AlexNet-small model "
                                                                 "(--zoo: on resnet50-224)")
    parser.add_argument("--zoo", action="store_true", help="the zoo's deep nets and a ResNet-50 at 224 px (issue 21)")
    parser.add_argument("--zoo-models", type=Path, default=ZOO_MODELS)
    parser.add_argument("--zoo-cache", type=Path, default=ZOO_CACHE)
    parser.add_argument("--int8", type=Path, metavar="REPOSITORY",
                        help="issue 22: a repository whose models have an int8 version beside the float one; what the "
                             "explorer shows for each model's three worst layers")
    parser.add_argument("--image", type=Path, help="--int8: the image shown where a model has no samples")
    args = parser.parse_args(argv)
    if args.zoo:
        return main_zoo(args)
    if args.int8:
        return main_int8(args)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    export_missing(args.models)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--model-repository", str(args.models)]
    report: dict[str, Any] = {"sizes": artifact_sizes(args.models)}
    with ServerProcess(command, port=port, env=env, cwd=ROOT, log=args.out / "explorer-server.log", timeout=120) as server:
        report["encodings"] = encodings(server.url, args.models, args.rounds)
        report["explanations"] = explanation_methods(server.url, args.rounds)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            report["screenshots"] = {model: shoot(browser, server.url, model, args.out) for model in MODELS}
            report["page"] = time_page(browser, server.url, args.rounds)
            browser.close()
    (args.out / "explorer-timings.json").write_text(json.dumps(report, indent=2))
    print_report(report, args.out)
    return 0


def print_report(report: dict[str, Any], out: Path) -> None:
    print("\n| model | channel_view.npz | samples.npz | model.onnx | ranked | channel view at export |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, s in report["sizes"].items():
        print(f"| {name} | {s['channel_view_bytes'] / 1e3:.0f} KB | {s['samples_bytes'] / 1e3:.0f} KB | "
              f"{s['model_bytes'] / 1e6:.2f} MB | {s['ranked_images']} | {s['channel_view_seconds']} s |")
    print(f"\n{TIMED}, predict with layers=all (one sample, median over the rounds, over HTTP):")
    print("| query | bytes | ms | server ms |\n| --- | --- | --- | --- |")
    for row in report["encodings"]:
        print(f"| {row['query']} | {row['bytes']:,} | {row['median_ms']:.1f} | {row['server_median_ms']:.1f} |")
    print(f"\n{TIMED}, explain?encoding=png (sample 4, faithfulness on), over HTTP:")
    print("| method | passes | ms | deletion | random |\n| --- | --- | --- | --- | --- |")
    for row in report["explanations"]:
        print(f"| {row['method']} | {row['passes']} | {row['median_ms']:.0f} | {row['deletion']:.3f} | "
              f"{row['random_deletion']:.3f} |")
    rows = report["page"]
    print(f"\n{TIMED}, the page, per sample (median over {len(rows)}, max in brackets), ms:")
    labels = {
        "predict_ms": "predict request (all layers, float16 npy)",
        "draw_ms": "drawing every layer",
        "shown_ms": "click -> prediction and every layer shown",
        "explain_ms": "explanation request",
        "image_requests_ms": "click -> the image's last response (predict + explain)",
        "channel_ms": "channel click -> its last response (JSON, filter, top images)",
    }
    for key, label in labels.items():
        print(f"  {label:60} {median(rows, key)}")
    print(f"  predict bytes {rows[0]['predict_bytes']:,}; requests per image: {rows[0]['requests']}, "
          f"per channel: {rows[0]['channel_requests']}")
    for model, shot in report["screenshots"].items():
        print(f"\n{out / f'explorer-{model}.png'}  {out / f'explorer-{model}-channel.png'}  "
              f"console errors: {len(shot['console_errors'])}")


if __name__ == "__main__":
    sys.exit(main())
