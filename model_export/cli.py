"""`python -m model_export` / `convscope-export`: train + export, or import an ONNX file.

    convscope-export [--arch tinyvgg] [--dataset digits] [--out models] ...
    convscope-export import FILE.onnx --name NAME [--labels FILE] ...
    convscope-export quantize models/NAME [--version N] [--method minmax] ...
    convscope-export channel-view MODELS/NAME --data-dir DIR [--version N] ...

Errors the user can fix print one `error: ...` line on stderr and exit with 2. Heavy
libraries (torch, onnx) are imported only once a command runs, so `--help` is quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from artifact import OutputKind

from .architectures import REGISTRY
from .channel_view import DEFAULT_IMAGES, DEFAULT_IMAGES_LARGE, DEFAULT_TOP_K
from .datasets import DATASETS
from .errors import ExportError
from .explanations import MeasureOptions
from .parity import DEFAULT_TOLERANCE

PRECISIONS = ("float32", "int8")
METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"  # = quantize.DEFAULT_METHOD (that module imports onnxruntime)
DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_MAX_FLOAT_LAYERS = 8  # = quantize.DEFAULT_MAX_FLOAT_LAYERS


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors follow the CLI's one-line `error: ...` rule, and
    option prefixes are not expanded (`--epoch` must not silently mean `--epochs`)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(allow_abbrev=False, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise ExportError(f"{message} (see {self.prog} --help)")


OUTPUT_KINDS = tuple(OutputKind)
MEASURED_IMAGES = MeasureOptions.images
MEASURED_SECONDS = MeasureOptions.seconds


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, not {text}")
    return value


def _layers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _common(parser: argparse.ArgumentParser, mean_default: str, std_default: str) -> None:
    parser.add_argument("--out", default="models", help="model repository root (default: ./models)")
    parser.add_argument(
        "--version", type=_positive_int, help="version to write (default: next free); never overwrites"
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing (exit 0) if the repository already holds a complete version of this model",
    )
    parser.add_argument(
        "--mean",
        type=float,
        nargs="+",
        help=f"per-channel mean after scaling (default: {mean_default})",
    )
    parser.add_argument(
        "--std",
        type=float,
        nargs="+",
        help=f"per-channel std after scaling (default: {std_default})",
    )
    parser.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), help="input size the image is resized to"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="parity tolerance: max|onnx - reference| <= tol * max(1, max|reference|) (default: 1e-3)",
    )


def _channel_view(parser: argparse.ArgumentParser, source: str) -> None:
    parser.add_argument(
        "--channel-images",
        type=_count,
        metavar="N",
        help=f"{source} images ranked for the channel view (the top images of every channel); "
        f"default: {DEFAULT_IMAGES}, {DEFAULT_IMAGES_LARGE} for inputs over 64x64 px; 0: no channel view",
    )
    parser.add_argument(
        "--channel-top-k",
        type=_positive_int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"images kept per channel in the channel view (default: {DEFAULT_TOP_K})",
    )


def _explanations(parser: argparse.ArgumentParser, source: str) -> None:
    parser.add_argument(
        "--explain-images",
        type=_count,
        default=MEASURED_IMAGES,
        metavar="N",
        help=f"{source} images each explanation method is measured on (how often its map beats a random map, "
        f"its passes and time); the default method is chosen from that (default: {MEASURED_IMAGES}; 0: none)",
    )
    parser.add_argument(
        "--explain-seconds",
        type=_positive_float,
        default=MEASURED_SECONDS,
        metavar="S",
        help=f"time for measuring the explanation methods, all together; each gets at least one image "
        f"(default: {MEASURED_SECONDS:g})",
    )


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def train_parser() -> argparse.ArgumentParser:
    archs = "\n".join(
        f"  {spec.name:14} {spec.size[0]}x{spec.size[1]}x{spec.channels}  {spec.description}"
        for spec in REGISTRY.values()
    )
    parser = _Parser(
        prog="convscope-export",
        description="Train a CNN and export it (ONNX + metadata) as a convscope model artifact.",
        epilog=(
            f"architectures:\n{archs}\n\n"
            "bring your own ONNX model:\n"
            "  convscope-export import FILE.onnx --name NAME [--labels FILE] ...\n"
            "  (see convscope-export import --help)\n\n"
            "an int8 version of a model (the next version):\n"
            "  convscope-export quantize models/NAME [--version N] ...\n"
            "  (see convscope-export quantize --help)\n\n"
            "a channel view, samples and measured explanations for an existing model (its next version):\n"
            "  convscope-export channel-view MODELS/NAME --data-dir DIR\n"
            "  (see convscope-export channel-view --help)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--arch", default="tinyvgg", choices=list(REGISTRY), help="architecture (default: tinyvgg)"
    )
    parser.add_argument(
        "--dataset", default="digits", choices=list(DATASETS), help="training data (default: digits)"
    )
    parser.add_argument(
        "--data-dir", help="dataset directory (fashion-mnist idx files, or an ImageFolder tree)"
    )
    parser.add_argument("--name", help="model name (default: <dataset>-<arch>)")
    parser.add_argument(
        "--epochs",
        type=int,
        help="training epochs (default: 10; 0 with --weights); 0 exports the untrained net",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="(default: 32)")
    parser.add_argument(
        "--lr", type=float, default=3e-3, help="Adam learning rate, cosine-decayed to 0 (default: 3e-3)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds initialisation, shuffling and the held-out split"
    )
    parser.add_argument(
        "--max-train-samples", type=_positive_int, metavar="N", help="train on a seeded subset of N images"
    )
    parser.add_argument(
        "--max-val-samples",
        type=_positive_int,
        metavar="N",
        help="evaluate on a seeded subset of N held-out images",
    )
    parser.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: the arch's)")
    parser.add_argument(
        "--layers",
        type=_layers,
        help="comma-separated module paths to tap (default: conv activations, pools, last feature layer)",
    )
    parser.add_argument(
        "--weights", help="local state dict to load (an ImageNet checkpoint keeps its 1000 labels)"
    )
    parser.add_argument(
        "--parity-images",
        type=_positive_int,
        default=32,
        help="held-out images for the parity check (default: 32)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        help="torch threads for training (default: 1 below 64 px, else one per core)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="int8: write the float32 version, then its int8 version as the next one (see "
        "convscope-export quantize --help; the gate's flags below apply)",
    )
    _quantize_options(parser)
    _channel_view(parser, "held-out")
    _explanations(parser, "held-out")
    measured = "measured on the training set; ImageNet's for an ImageNet checkpoint"
    _common(parser, measured, measured)
    return parser


def _quantize_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"int8 calibration: how each activation's range is chosen (default: {DEFAULT_METHOD}; "
        "docs/artifact.md says why)",
    )
    parser.add_argument(
        "--calibration-images",
        type=_positive_int,
        metavar="N",
        help="held-out images the int8 ranges are calibrated on (default: 256, 64 above 64x64 px; at most a "
        "third of the held-out images)",
    )
    parser.add_argument(
        "--evaluation-images",
        type=_positive_int,
        metavar="N",
        help="other held-out images the int8 version is judged on (default: 1000, 256 above 64x64 px)",
    )
    parser.add_argument(
        "--min-agreement",
        type=_share,
        default=DEFAULT_MIN_AGREEMENT,
        help="write the int8 version only if its top-1 class agrees with the float version's on at least "
        f"this share of the evaluation images (default: {DEFAULT_MIN_AGREEMENT}); else exit 2, nothing written; "
        "judged on at least 1 / (1 - it) images (100 at 0.99), else refused before quantizing",
    )
    parser.add_argument(
        "--max-float-layers",
        type=_count,
        default=DEFAULT_MAX_FLOAT_LAYERS,
        metavar="N",
        help="when int8 everywhere misses --min-agreement: try again keeping the layers that add the most "
        "quantization noise in float32, 2, 4, ... at most N of them and a quarter of the layers (default: "
        f"{DEFAULT_MAX_FLOAT_LAYERS}; 0: never); the artifact names them",
    )


def quantize_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convscope-export quantize",
        description="Write the next version of a model as int8 (static QDQ, int8 weights per channel, "
        "activations calibrated on held-out images), if it agrees with its float version; every layer's "
        "error against the float version is stored with it.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the model's directory, <repository>/<name>")
    parser.add_argument(
        "--version", type=_positive_int, help="the float32 version to quantize (default: the newest)"
    )
    parser.add_argument(
        "--data-dir",
        help="a model trained here: where its data set lies when not in its default place (Fashion-MNIST's "
        "idx files; the ImageFolder tree, required), its held-out split found again; an imported model "
        "(required): images it did not learn from, an ImageFolder tree of labelled ones or a flat folder",
    )
    _quantize_options(parser)
    _explanations(parser, "held-out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def import_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convscope-export import",
        description="Write a convscope artifact for an ONNX model exported elsewhere (either torch.onnx "
        "exporter, tf2onnx, ...): float32 NCHW input with a dynamic batch, the class output's kind decided "
        "from the graph, every conv, activation, pool and block output added as a layer named from the "
        "exporter's scopes, parity checked against the original.",
    )
    parser.add_argument("file", help="the .onnx file")
    parser.add_argument("--name", required=True, help="model name ([a-z0-9][a-z0-9._-]*)")
    parser.add_argument("--labels", help="class names: one per line, or a JSON list (default: class_0..N-1)")
    parser.add_argument(
        "--scale", type=float, default=1 / 255, help="pixel scale before mean/std (default: 1/255)"
    )
    parser.add_argument("--output", help="the class-score output (default: the first graph output)")
    parser.add_argument(
        "--output-kind",
        choices=[k.value for k in OUTPUT_KINDS],
        help="what the class output holds (default: from the graph: probabilities after a final Softmax, "
        "log_probabilities after LogSoftmax, multilabel after Sigmoid, else logits)",
    )
    parser.add_argument(
        "--input-layout",
        choices=("NCHW", "NHWC"),
        help="the input's layout (default: from the graph; NHWC is rewritten to take NCHW)",
    )
    parser.add_argument(
        "--layers",
        type=_layers,
        help="comma-separated patterns of the layers to keep, matched against names and blocks: globs "
        "('layer4.*', 'features.1[0-2]*') or 're:REGEX' (full match) (default: every layer)",
    )
    parser.add_argument(
        "--data-dir",
        help="images the model did not learn from: an ImageFolder (<class>/<image>; its val/ when it has "
        "train/ and val/) or a flat folder of images (captioned with the model's own top-1): a channel view "
        "and samples are stored from them, and the explanation methods measured on them (default: none of it)",
    )
    _channel_view(parser, "--data-dir")
    _explanations(parser, "--data-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    # An import has no training set to measure statistics on: without these flags the
    # model gets pixel * scale as it is, and the run says so on stderr.
    _common(parser, "0, no centring; a warning says so", "1, no rescaling; a warning says so")
    return parser


def derive_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convscope-export channel-view",
        description="Give an existing model a channel view, samples and measured explanations from a folder of "
        "images: writes the model's NEXT version with the same model.onnx (published versions never change) "
        "and records which version it came from.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the model's directory, models/<name>")
    parser.add_argument(
        "--data-dir",
        required=True,
        help="images the model did not learn from: an ImageFolder (<class>/<image>; its val/ when it has "
        "train/ and val/) or a flat folder of images (captioned with the model's own top-1 and its probability)",
    )
    parser.add_argument(
        "--version", type=_positive_int, help="the version to start from (default: the newest complete one)"
    )
    _channel_view(parser, "--data-dir")
    _explanations(parser, "--data-dir")
    parser.add_argument("--seed", type=int, default=0, help="seeds which images are used (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _already_there(out: str, name: str) -> bool:
    from .staging import check_name, complete_versions

    versions = complete_versions(Path(out) / check_name(name))
    if versions:
        print(
            f"{Path(out) / name} already holds version {versions[-1]}; nothing to do (--if-missing)",
            file=sys.stderr,
        )
    return bool(versions)


def _run_train(argv: Sequence[str]) -> Path | None:
    args = train_parser().parse_args(argv)
    from .pipeline import TrainOptions, export_trained

    name = args.name or f"{args.dataset}-{args.arch}"
    if args.if_missing and _already_there(args.out, name):
        return None
    written = export_trained(
        TrainOptions(
            arch=args.arch,
            dataset=args.dataset,
            data_dir=args.data_dir,
            out=args.out,
            name=name,
            version=args.version,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            max_train_samples=args.max_train_samples,
            max_val_samples=args.max_val_samples,
            size=tuple(args.size) if args.size else None,
            channels=args.channels,
            mean=args.mean,
            std=args.std,
            layers=args.layers,
            weights=args.weights,
            tolerance=args.tolerance,
            parity_images=args.parity_images,
            progress=not args.quiet,
            threads=args.threads,
            channel_images=args.channel_images,
            channel_top_k=args.channel_top_k,
            explain_images=args.explain_images,
            explain_seconds=args.explain_seconds,
        )
    )
    if args.precision == "int8":
        print(written)  # the float version stays written whatever the gate says
        return _quantize(args, str(written.parent), int(written.name), args.data_dir)
    return written


def _quantize(args: argparse.Namespace, model_dir: str, version: int | None, data_dir: str | None) -> Path:
    from artifact import CalibrationMethod

    from .quantize import QuantizeOptions, quantize

    return quantize(
        QuantizeOptions(
            model_dir=model_dir,
            version=version,
            data_dir=data_dir,
            method=CalibrationMethod(args.method),
            calibration_images=args.calibration_images,
            evaluation_images=args.evaluation_images,
            min_agreement=args.min_agreement,
            max_float_layers=args.max_float_layers,
            progress=not args.quiet,
            explain_images=args.explain_images,
            explain_seconds=args.explain_seconds,
        )
    )


def _run_quantize(argv: Sequence[str]) -> Path:
    args = quantize_parser().parse_args(argv)
    return _quantize(args, args.model_dir, args.version, args.data_dir)


def _run_import(argv: Sequence[str]) -> Path | None:
    args = import_parser().parse_args(argv)
    from .onnx_import import ImportOptions, import_onnx

    if args.if_missing and _already_there(args.out, args.name):
        return None
    return import_onnx(
        ImportOptions(
            file=args.file,
            name=args.name,
            out=args.out,
            version=args.version,
            labels=args.labels,
            mean=args.mean,
            std=args.std,
            size=tuple(args.size) if args.size else None,
            scale=args.scale,
            output=args.output,
            output_kind=OutputKind(args.output_kind) if args.output_kind else None,
            input_layout=args.input_layout,
            layers=args.layers,
            tolerance=args.tolerance,
            data_dir=args.data_dir,
            channel_images=args.channel_images,
            channel_top_k=args.channel_top_k,
            explain_images=args.explain_images,
            explain_seconds=args.explain_seconds,
            progress=not args.quiet,
        )
    )


def _run_derive(argv: Sequence[str]) -> Path | None:
    args = derive_parser().parse_args(argv)
    from .derive import DeriveOptions, add_views

    return add_views(
        DeriveOptions(
            model_dir=args.model_dir,
            data_dir=args.data_dir,
            version=args.version,
            channel_images=args.channel_images,
            channel_top_k=args.channel_top_k,
            explain_images=args.explain_images,
            explain_seconds=args.explain_seconds,
            progress=not args.quiet,
            seed=args.seed,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "import":
            written = _run_import(argv[1:])
        elif argv and argv[0] == "quantize":
            written = _run_quantize(argv[1:])
        elif argv and argv[0] == "channel-view":
            written = _run_derive(argv[1:])
        else:
            written = _run_train(argv[1:] if argv and argv[0] == "train" else argv)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if written is not None:
        print(written)
    return 0
