"""How close reduced-scale decoding stays to a full decode + resize (issue 14), on a trained
model and real photos enlarged to camera sizes.

The model: trained here (once, into ``benchmarks/out/agreement/``) on random crops of the
real photos that ship with scikit-learn and scikit-image (china, flower, astronaut,
coffee, chelsea, rocket, hubble_deep_field, immunohistochemistry, retina), one class per
photo. The test set: other crops and the whole photos, enlarged (bicubic) to camera sizes
and encoded as a client sends them: 12 MP JPEG, 12 MP JPEG stored sideways with an EXIF
rotation, 4K PNG, 16 MP JPEG at quality 80 and an odd-sized JPEG (not a multiple of 8).

Each image goes through the service's own preprocessing twice or more: the exact path
(``reducing_gap=None``, setting ``CONVSCOPE_FULL_RESOLUTION_DECODE=true``) and the reduced
path for each gap; the model's softmax is compared: top-1 agreement, largest probability
difference, and decode+preprocess time.

    python -m benchmarks.photo_agreement                  # alexnet-small at 64 px, ~3 min
    python -m benchmarks.photo_agreement --arch alexnet --size 224 --epochs 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "agreement"
GAPS = (1.5, 2.0, 3.0)
# (width, height, format, quality, EXIF orientation): what phones and cameras send.
CAMERA_FORMS = (
    (4032, 3024, "JPEG", 90, 1),
    (4032, 3024, "JPEG", 90, 6),  # stored sideways, displayed upright
    (3840, 2160, "PNG", None, 1),
    (4608, 3456, "JPEG", 80, 1),
    (4001, 2999, "JPEG", 90, 1),  # not a multiple of the DCT scale
)


def photos() -> dict[str, np.ndarray]:
    """Real photos that ship with the installed packages (no download)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    found = {Path(name).stem: image for name, image in zip(bunch.filenames, bunch.images)}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"):
        found[name] = getattr(skimage.data, name)()
    return found


def random_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    side = rng.uniform(0.35, 1.0) * min(h, w)
    ch = int(np.clip(side * rng.uniform(0.8, 1.25), 16, h))
    cw = int(np.clip(side * rng.uniform(0.8, 1.25), 16, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[y:y + ch, x:x + cw]


def write_training_tree(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, image in photos().items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            crop = Image.fromarray(random_crop(image, rng)).resize((96, 96), Image.Resampling.BILINEAR)
            crop.save(folder / f"{i:03d}.png")


def train(args: argparse.Namespace) -> Path:
    """Export a model trained on photo crops, once; returns the repository/<name> folder."""
    name = f"photos-{args.arch}-{args.size}"
    repository = OUT / "models"
    if not any((repository / name).glob("*/metadata.json")):
        tree = OUT / "crops"
        if not tree.exists():
            write_training_tree(tree, args.per_class, seed=1)
        cmd = [sys.executable, "-m", "model_export", "--arch", args.arch, "--dataset", "imagefolder",
               "--data-dir", str(tree), "--size", str(args.size), str(args.size), "--channels", "3",
               "--epochs", str(args.epochs), "--name", name, "--out", str(repository), "--quiet", "--if-missing"]
        print(f"training {name} ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    return repository / name


def encode(pixels: np.ndarray, form: tuple[int, int, str, int | None, int]) -> bytes:
    width, height, fmt, quality, orientation = form
    image = Image.fromarray(pixels).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    params: dict[str, object] = {"quality": quality} if quality else {}
    if orientation == 6:
        # Stored rotated a quarter turn; the EXIF tag says how to show it upright.
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        params["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_set(crops_per_photo: int, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    items = []
    for name, image in photos().items():
        for i in range(crops_per_photo + 1):
            pixels = image if i == 0 else random_crop(image, rng)
            form = CAMERA_FORMS[(len(items)) % len(CAMERA_FORMS)]
            items.append((f"{name}#{i} {form[0]}x{form[1]} {form[2]}", encode(pixels, form)))
    return items


@dataclass
class PathResult:
    label: str
    probabilities: np.ndarray  # [N, classes]
    ms: list[float]


def run_path(model: object, items: list[tuple[str, bytes]], gap: float | None) -> PathResult:
    from service.inference.dataplane import softmax
    from service.inference.preprocessing import decode, preprocess

    spec = replace(model.spec, reducing_gap=gap)  # type: ignore[attr-defined]
    tensors, times = [], []
    for _, data in items:
        t0 = time.perf_counter()
        tensors.append(preprocess(decode(data, max_pixels=100_000_000, spec=spec), spec))
        times.append(1000.0 * (time.perf_counter() - t0))
    logits = np.concatenate([model.run(t[None], (model.output_name,))[0] for t in tensors])  # type: ignore[attr-defined]
    return PathResult("full resolution (exact)" if gap is None else f"reducing_gap {gap:g}", softmax(logits), times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.photo_agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="alexnet-small")
    parser.add_argument("--size", type=int, default=64, help="model input side (px)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=80, help="training crops per photo")
    parser.add_argument("--crops", type=int, default=7, help="test crops per photo (plus the whole photo)")
    parser.add_argument("--model-dir", type=Path, help="use this trained model (repository/<name>) instead")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    from service.models.repository import load_artifact, scan
    from service.models.runtime import RuntimeOptions, load_model

    model_dir = args.model_dir or train(args)
    ref = max((r for r in scan(model_dir.parent) if r.name == model_dir.name), key=lambda r: r.version)
    model = load_model(load_artifact(ref), RuntimeOptions(providers=["CPUExecutionProvider"]))
    items = test_set(args.crops, seed=2)
    print(f"{len(items)} photos at camera sizes; model {model.artifact.name} ({model.spec.width} px)", file=sys.stderr)
    exact = run_path(model, items, None)
    results = [run_path(model, items, gap) for gap in GAPS]
    truth_top1 = exact.probabilities.argmax(axis=1)
    lines = [
        f"Model `{model.artifact.name}` ({args.arch if not args.model_dir else 'given'}, {model.spec.width} px input, "
        f"{len(model.labels)} classes); {len(items)} photos at camera sizes "
        f"({', '.join(f'{w}x{h} {f}' for w, h, f, _, _ in CAMERA_FORMS)}).",
        "",
        "| path | top-1 agreement with exact | max prob. difference | mean of per-photo max diff "
        "| decode+preprocess ms (median) | speed-up |",
        "|---|---|---|---|---|---|",
        f"| {exact.label} | – | – | – | {statistics.median(exact.ms):.1f} | 1.0x |",
    ]
    for r in results:
        diff = np.abs(r.probabilities - exact.probabilities)
        agree = float(np.mean(r.probabilities.argmax(axis=1) == truth_top1))
        lines.append(f"| {r.label} | {agree:.1%} ({int(round(agree * len(items)))}/{len(items)}) | "
                     f"{diff.max():.4f} | {diff.max(axis=1).mean():.4f} | {statistics.median(r.ms):.1f} | "
                     f"{statistics.median(exact.ms) / statistics.median(r.ms):.1f}x |")
    confidence = exact.probabilities.max(axis=1)
    lines += ["", f"Exact path's top-1 probability: median {np.median(confidence):.3f}, "
                  f"min {confidence.min():.3f} (how far from saturated the compared outputs are)."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
