"""What checksums cost: write and read throughput of a feature file with and without them.

Writes a synthetic flatten-sized feature file (default: Caltech-101's 8,677 rows x 62,720
float32, VGG16 flatten at 224 pixels; 2.2 GB) twice, in batches of 32 rows with the default
--buffer-size of 1000, as ``extract``'s writer does:

* *baseline*: the feature store of ``--baseline REV`` (default :data:`BASELINE`, the commit
  before checksums; ``git show REV:features/``, loaded as a package of its own): contiguous
  part files, no Fletcher-32, no digests;
* *checksums*: this checkout's ``features`` (Fletcher-32 on chunked part files, xxh3 block
  digests of the finished file's feature rows, read by ``features.digests.READ_THREADS``
  threads, SHA-256 block digests of paths and splits, HDF5 1.10 metadata checksums).

Then reads each back as ``classify`` does (``FeatureFile`` then ``load_features``; the
checksummed file also with one reading thread), and times
``verify_file`` (what ``extract --verify`` and every extract run on an existing file do), and
prints the figures side by side with their ratios. Reads come from the page cache (the file
was just written): the worst case for the checksums' share.

    python scripts/bench_checksums.py                 # 8,677 rows: needs ~5 GB of disk
    python scripts/bench_checksums.py --rows 2000 --repeats 3

With ``--extract DATASET --weights FILE`` it also times ``python -m extract`` end to end
(MobileNetV2 flatten at 224: 62,720 features a row) on the first ``--images`` images of the
dataset, with this checkout and with the baseline's whole tree (``git archive REV``),
alternating.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BATCH = 32
#: The commit before checksums: what they are measured against.
BASELINE = "2d4b853"


def today_package(folder: Path, rev: str) -> str:
    """The ``features`` package of commit ``rev``, written to ``folder/features_today``; its
    module name."""
    dest = folder / "features_today"
    dest.mkdir()
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "features/"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:
        text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout
        (dest / Path(name).name).write_text(text)
    sys.path.insert(0, str(folder))
    return "features_today"


def write(package, path: Path, rows: int, dim: int, block: np.ndarray) -> float:
    """Seconds to write ``rows`` rows (batches of ``block``'s rows) and finish the file."""
    paths = [f"class_{i % 101:03d}/image_{i:05d}.jpg" for i in range(rows)]
    labels = np.arange(rows, dtype=np.int32) % 101
    names = [f"class_{k:03d}" for k in range(101)]
    start = time.perf_counter()
    with package.FeatureWriter(path, dim=dim, label_names=names, attrs={"backbone": "vgg16"}) as w:
        for at in range(0, rows, BATCH):
            n = min(BATCH, rows - at)
            w.add(block[:n], labels[at : at + n], paths[at : at + n])
    return time.perf_counter() - start


def read(package, path: Path) -> float:
    """Seconds to open and load the whole file as ``classify`` does."""
    start = time.perf_counter()
    with package.FeatureFile(path) as ff:
        X = ff.load_features()
        assert X.shape[0] == ff.n_rows
    return time.perf_counter() - start


def extract_seconds(tree: Path, data: Path, weights: Path, out: Path) -> float:
    """Seconds of one ``python -m extract`` run from the source ``tree`` (fresh output)."""
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "extract", "--dataset", str(data), "-o", str(out), "--backbone",
            "mobilenetv2", "--weights", str(weights), "--pooling", "flatten", "-q"]
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_extract(work: Path, dataset: Path, weights: Path, images: int, repeats: int, rev: str) -> None:
    """``python -m extract`` end to end, commit ``rev``'s tree against this checkout's."""
    head = work / "head"
    head.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(head)], input=archive, check=True)
    data = work / "data"
    files = sorted(p for p in dataset.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".png"))
    for image in files[:images]:
        link = data / image.relative_to(dataset)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(image.resolve())
    seconds: dict[str, list[float]] = {"today": [], "checksums": []}
    for _ in range(repeats):
        for label, tree in (("today", head), ("checksums", REPO)):
            seconds[label].append(extract_seconds(tree, data, weights.resolve(), work / f"{label}.hdf5"))
    a, b = min(seconds["today"]), min(seconds["checksums"])
    n = min(images, len(files))
    print(f"| extract, {n} images, end to end | {a:.2f} s ({n / a:.1f} images/s) | {b:.2f} s "
          f"({n / b:.1f} images/s) | {b / a:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8677, help="rows (default: Caltech-101's 8,677)")
    parser.add_argument("--dim", type=int, default=62720, help="features per row (default: VGG16 flatten)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating (best kept)")
    parser.add_argument("--reads", type=int, default=3, help="reads of each written file (best kept)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temp one)")
    parser.add_argument("--extract", type=Path, metavar="DATASET", help="also time python -m extract on it")
    parser.add_argument("--weights", type=Path, help="with --extract: MobileNetV2 weights without the top")
    parser.add_argument("--images", type=int, default=400, help="with --extract: images (default: 400)")
    parser.add_argument("--baseline", default=BASELINE, metavar="REV",
                        help=f"the commit to compare with (default: {BASELINE}, the one before checksums)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_checksums_", dir=args.dir))
    try:
        now = importlib.import_module("features")
        from features import verify_file
        today = importlib.import_module(today_package(work, args.baseline))
        block = np.random.default_rng(0).standard_normal((BATCH, args.dim)).astype(np.float32)
        gb = args.rows * args.dim * 4 / 1e9
        times: dict[str, dict[str, list[float]]] = {"today": {}, "checksums": {}}
        for _ in range(args.repeats):
            for label, package in (("today", today), ("checksums", now)):
                path = work / f"{label}.hdf5"
                times[label].setdefault("write", []).append(write(package, path, args.rows, args.dim, block))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for _ in range(args.reads):
                        times[label].setdefault("read", []).append(read(package, path))
                if label == "checksums":
                    threads, now.digests.READ_THREADS = now.digests.READ_THREADS, 1
                    for _ in range(args.reads):
                        times[label].setdefault("read1", []).append(read(package, path))
                    now.digests.READ_THREADS = threads
                    start = time.perf_counter()
                    assert not verify_file(path).damaged
                    times[label].setdefault("verify", []).append(time.perf_counter() - start)
                path.unlink()
        print(f"{platform.processor() or platform.machine()}, {args.rows} x {args.dim} float32 "
              f"({gb:.2f} GB), best of {args.repeats} (reads: of {args.repeats * args.reads})")
        print(f"| step | {args.baseline} | with checksums | ratio |")
        print("|---|---|---|---|")
        for step in ("write", "read"):
            a, b = min(times["today"][step]), min(times["checksums"][step])
            print(f"| {step} | {a:.2f} s ({gb / a:.2f} GB/s) | {b:.2f} s ({gb / b:.2f} GB/s) | {b / a:.3f} |")
        a, b = min(times["today"]["read"]), min(times["checksums"]["read1"])
        print(f"| read, one thread | {a:.2f} s ({gb / a:.2f} GB/s) | {b:.2f} s ({gb / b:.2f} GB/s) "
              f"| {b / a:.3f} |")
        v = min(times["checksums"]["verify"])
        print(f"| verify (extract --verify) | - | {v:.2f} s ({gb / v:.2f} GB/s) | - |")
        if args.extract:
            bench_extract(work, args.extract, args.weights, args.images, args.repeats, args.baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
