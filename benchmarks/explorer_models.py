"""The models the explorer's zoo screenshots and deep-net timings use (issue 21).

* Three zoo entries (benchmarks/zoo.py: trained briefly, 64 px, TorchScript at opset 17), each
  imported with its held-out ImageFolder so it has a channel view and samples: a residual
  (resnet18), a depthwise (mobilenet_v3_small) and a densely connected one (densenet121).
* ``resnet50-224``: torchvision's ResNet-50 (53 conv layers, the "50-layer network" of the
  issue) at 224 px, untrained (no weights are downloaded) with its batch-norm statistics
  recomputed on the images it is shown, so its maps are not flat; imported with an
  ImageFolder of crops of scikit-learn's two bundled photos (china.jpg, flower.jpg). Its
  classes mean nothing: it is there for the page's size and timings at 224 px on a deep net.

Everything lands in one model repository (``prepare(models, cache)``), built once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import zoo

ROOT = Path(__file__).resolve().parents[1]
ZOO = {  # model name -> (arch, exporter, opset)
    "resnet18": ("resnet18", "torchscript", 17),
    "mobilenet-v3-small": ("mobilenet_v3_small", "torchscript", 17),
    "densenet121": ("densenet121", "torchscript", 17),
}
DEEP = "resnet50-224"
DEEP_SIZE = 224
PHOTO_CROPS = 12  # per photo


def _imported(models: Path, name: str) -> bool:
    return bool(list(models.glob(f"{name}/*/metadata.json")))


def _import(models: Path, onnx_file: Path, name: str, data_dir: Path, labels: Path, mean: list[float],
            std: list[float]) -> None:
    command = [sys.executable, "-m", "model_export", "import", str(onnx_file), "--name", name, "--data-dir", str(data_dir),
               "--labels", str(labels), "--out", str(models), "--quiet", "--if-missing",
               "--mean", *map(str, mean), "--std", *map(str, std)]
    print("importing:", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def prepare_zoo(models: Path, cache: Path) -> None:
    """The three zoo entries, built (cached) and imported with the held-out folder."""
    heldout = zoo.heldout(cache)
    mean, std = zoo.normalisation()
    labels = cache / "zoo-labels.txt"
    labels.write_text("\n".join(zoo.data().classes) + "\n")
    for name, (arch, exporter, opset) in ZOO.items():
        if _imported(models, name):
            continue
        _import(models, zoo.build(arch, exporter, opset, "plain", cache), name, heldout, labels, mean, std)


def photo_folder(cache: Path) -> Path:
    """An ImageFolder of square crops (224 px) of scikit-learn's two sample photos, one class each."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = cache / "photo-crops"
    if root.is_dir():
        return root
    photos = load_sample_images()
    rng = np.random.default_rng(0)
    for path, image in zip(photos.filenames, photos.images, strict=True):
        folder = root / Path(path).stem
        folder.mkdir(parents=True, exist_ok=True)
        h, w, _ = image.shape
        for n in range(PHOTO_CROPS):
            side = int(rng.integers(h // 2, h))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(image[top:top + side, left:left + side]).resize((DEEP_SIZE, DEEP_SIZE), Image.Resampling.BICUBIC)
            crop.save(folder / f"{n}.jpg", quality=90)
    return root


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def deep_onnx(cache: Path, folder: Path) -> Path:
    """ResNet-50 at 224 px, untrained, batch-norm statistics from the folder's images."""
    path = cache / "onnx" / f"{DEEP}.onnx"
    if path.is_file():
        return path
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None, num_classes=len(list(folder.iterdir())))
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255
                       for p in sorted(folder.glob("*/*.jpg"))])
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) - torch.tensor(IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(IMAGENET_STD)[:, None, None]
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(x), 8):
            net(x[i:i + 8])
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, (torch.zeros(2, 3, DEEP_SIZE, DEEP_SIZE),), str(tmp), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    tmp.replace(path)
    return path


def prepare_deep(models: Path, cache: Path) -> None:
    if _imported(models, DEEP):
        return
    folder = photo_folder(cache)
    labels = cache / "photo-labels.txt"
    labels.write_text("\n".join(sorted(p.name for p in folder.iterdir())) + "\n")
    _import(models, deep_onnx(cache, folder), DEEP, folder, labels, IMAGENET_MEAN, IMAGENET_STD)


def prepare(models: Path, cache: Path) -> None:
    models.mkdir(parents=True, exist_ok=True)
    prepare_zoo(models, cache)
    prepare_deep(models, cache)
