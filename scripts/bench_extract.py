"""How close stage 1 gets to the backbone's own speed, in each precision, and its memory.

For each --precision, in a process of its own, on the same images (an even spread over the
classes of the dataset):

  (a) the backbone alone: ``predict_on_batch`` on images decoded and preprocessed beforehand
  (b) the whole extract path: JPEG files to a finished HDF5 file (``extract.pipeline.extract``
      with the same loaded model: decoding, preprocessing, inference, commits, final file)
  (c) (b) / (a); (a) waits for each batch, (b) starts the next batch before it reads the last
      one's rows, so where the backend runs asynchronously (JAX, a GPU) (c) may exceed 1
  (d) peak resident memory of that process

and with --memory N [N ...], the peak resident memory of ``python -m extract`` runs (separate
processes) on the first N images of --memory-dataset, to show it does not grow with N.

    python scripts/bench_extract.py                                # VGG16 hed-bsds500, float32 and bf16
    python scripts/bench_extract.py --memory 500 1500 --precision float32
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

from extract.backbones import load_backbone  # noqa: E402
from extract.images import load_image  # noqa: E402
from extract.pipeline import extract  # noqa: E402
from extract.plan import plan_work  # noqa: E402
from extract.sources import ImageListing, list_images  # noqa: E402


def spread(listing: ImageListing, n: int) -> ImageListing:
    """``n`` images taken evenly across the listing (so every class is in)."""
    pick = np.linspace(0, len(listing) - 1, min(n, len(listing))).round().astype(int)
    return ImageListing(listing.root, listing.class_names, [listing.paths[i] for i in pick],
                        listing.labels[pick])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backbone_alone(loaded, listing: ImageListing, batch_size: int) -> float:
    size = loaded.image_size
    images = np.stack([load_image(listing.root / p, (size, size)) for p in listing.paths])
    batches = [loaded.backbone.preprocess_input(images[i : i + batch_size].astype(np.float32))
               for i in range(0, len(images), batch_size)]
    for x in (batches[0], batches[-1]):  # warm-up: tracing and compiling both batch shapes
        loaded.model.predict_on_batch(x)
    started = time.perf_counter()
    for x in batches:
        np.asarray(loaded.model.predict_on_batch(x), dtype=np.float32)
    return len(images) / (time.perf_counter() - started)


def warm_up(loaded, batch_size: int) -> None:
    """Trace (or compile) the model before (b), allocating as little as a run would not.

    (b) runs before (a): the decoding processes fork from this process, and memory that
    TensorFlow already holds at the fork is copied page by page when TensorFlow next writes it
    (copy on write). After (a), VGG16's cached batch-32 buffers cost about 300,000 page faults
    and 1 to 3 s per run, which ``python -m extract`` does not pay: it forks before its first
    batch (measured: 16.8 and 16.4 images/s with processes, 16.5 and 16.6 with threads, on
    510 images in fresh processes). On TensorFlow two tiny batches give a trace for any batch
    size; where every batch runs at one shape (JAX, a GPU) that shape is compiled.
    """
    from extract.backbones import fixed_shape_helps

    x = np.zeros((batch_size, loaded.image_size, loaded.image_size, 3), np.uint8)
    if fixed_shape_helps():
        loaded.embed_all(x[:1], pad_to=batch_size)
    else:
        loaded.embed_all(x[:1])
        loaded.embed_all(x[:2])


def full_path(loaded, listing: ImageListing, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        summary = extract(listing, loaded, Path(tmp) / "bench.hdf5", plan=plan_work(listing),
                          batch_size=batch_size, progress=False)
    return summary.images_per_second


def child_peak_rss(argv: list[str]) -> float:
    """Peak resident memory (MiB) of one ``python -m extract`` run."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"extract failed: {proc.stderr.read().decode()}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=str(SHARED / "datasets" / "flowers17"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--weights", default="hed-bsds500")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", nargs="+", default=["float32", "bf16"])
    parser.add_argument("--repeat", type=int, default=1,
                        help="go over the images this many times (fast GPUs need more work)")
    parser.add_argument("--memory", nargs="*", type=int, default=[], metavar="N")
    parser.add_argument("--memory-dataset", default=str(SHARED / "datasets" / "animals"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one precision, in this process
    args = parser.parse_args()

    listing = spread(list_images(Path(args.dataset)), args.images)
    if args.repeat > 1:
        listing = ImageListing(listing.root, listing.class_names, listing.paths * args.repeat,
                               np.tile(listing.labels, args.repeat))
    if args.one:
        loaded = load_backbone(args.backbone, args.weights, precision=args.one)
        warm_up(loaded, args.batch_size)
        whole = full_path(loaded, listing, args.batch_size)  # first: see warm_up
        alone = backbone_alone(loaded, listing, args.batch_size)
        print(alone, whole, peak_rss_mib())
        return
    print(f"{platform.machine()}, {os.cpu_count()} cores; {args.backbone} ({args.weights}), "
          f"batch {args.batch_size}, {len(listing)} images of {args.dataset}")
    speeds = {}
    for precision in args.precision:
        # Each precision in a fresh process: after another precision's (a), its buffers would
        # be copied on write in (b) (see warm_up), and each peak RSS is then its own.
        argv = [sys.executable, __file__, "--one", precision, "--dataset", args.dataset,
                "--images", str(args.images), "--backbone", args.backbone, "--weights",
                args.weights, "--batch-size", str(args.batch_size), "--repeat", str(args.repeat)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{precision} failed:\n{done.stderr[-3000:]}")
        alone, whole, rss = map(float, done.stdout.split())
        speeds[precision] = whole
        print(f"{precision:8} (a) backbone alone {alone:6.2f} images/s  (b) extract {whole:6.2f} images/s  "
              f"(c) b/a {whole / alone:.3f}  (d) peak RSS {rss:.0f} MiB", flush=True)
    if "float32" in speeds:
        for precision, whole in speeds.items():
            if precision != "float32":
                print(f"{precision} end to end: {whole / speeds['float32']:.2f}x float32")

    if args.memory:
        full = list_images(Path(args.memory_dataset))
        for n in args.memory:
            with tempfile.TemporaryDirectory() as tmp:
                subset = Path(tmp) / "data"
                for rel in full.paths[:: max(1, len(full) // n)][:n]:
                    (subset / rel).parent.mkdir(parents=True, exist_ok=True)
                    (subset / rel).symlink_to(full.root / rel)
                rss = child_peak_rss([
                    sys.executable, "-m", "extract", "--dataset", str(subset), "-q",
                    "-o", str(Path(tmp) / "out.hdf5"), "--backbone", args.backbone,
                    "--weights", args.weights, "--precision", args.precision[0],
                ])
            print(f"python -m extract on {n} images of {args.memory_dataset}: peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
