"""The local engine against the Ray engine with 1 and 2 CPU actors, on the same images.

Each configuration runs ``python -m extract`` as a user does, twice: on a small run and on the
full run, into fresh outputs. It prints, per configuration,

* the wall time of the whole command on the full run, and images / wall second;
* the marginal throughput, (full - small images) / (full - small seconds): the rate once the
  fixed costs (Python and TensorFlow start-up, model loading, starting Ray and its actors) are
  paid, which is what a large dataset sees;
* the fixed cost of the small run, and for Ray its overhead over the local engine's.

    python scripts/bench_ray.py                           # flowers17, VGG16 hed-bsds500, 224 px
    python scripts/bench_ray.py --images 512 --small 32 --shard-size 64

Ray runs on a local instance started by each command (all of this machine's CPUs); each CPU
actor reserves one CPU and runs its backbone on one thread, the local engine on all cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def subset(source: Path, dest: Path, images: int) -> Path:
    """A class-per-folder dataset of links to ``images`` images, taken evenly over the classes."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    files = {c: sorted(f for f in c.iterdir() if f.is_file()) for c in classes}
    chosen: list[Path] = []
    depth = 0
    while len(chosen) < images and any(depth < len(v) for v in files.values()):
        chosen += [v[depth] for v in files.values() if depth < len(v)][: images - len(chosen)]
        depth += 1
    for image in chosen:
        (dest / image.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / image.parent.name / image.name).symlink_to(image.resolve())
    return dest


def timed_run(data: Path, out: Path, extra: list[str]) -> float:
    argv = [sys.executable, "-m", "extract", "--dataset", str(data), "-o", str(out), "-q", *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"extract failed ({' '.join(extra)}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "flowers17")
    parser.add_argument("--images", type=int, default=256, help="images of the full run (default: 256)")
    parser.add_argument("--small", type=int, default=16, help="images of the small run (default: 16)")
    parser.add_argument("--weights", default="hed-bsds500")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--image-size", default="224")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--shard-size", default="64")
    args = parser.parse_args()

    common = ["--backbone", args.backbone, "--weights", args.weights, "--image-size", args.image_size,
              "--batch-size", args.batch_size]
    ray = ["--engine", "ray", "--shard-size", args.shard_size]
    configs = {
        "local engine": [],
        "ray, 1 CPU actor": [*ray, "--workers", "1"],
        "ray, 2 CPU actors": [*ray, "--workers", "2"],
    }
    print(f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"{args.backbone} {args.weights} {args.image_size} px, batch {args.batch_size}, "
          f"shards of {args.shard_size}")
    print(f"full run {args.images} images of {args.dataset}, small run {args.small}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        full = subset(args.dataset, tmp_path / "full" / "data", args.images)
        small = subset(args.dataset, tmp_path / "small" / "data", args.small)
        rows = []
        for name, extra in configs.items():
            t_small = timed_run(small, tmp_path / f"small-{len(rows)}.hdf5", common + extra)
            t_full = timed_run(full, tmp_path / f"full-{len(rows)}.hdf5", common + extra)
            marginal = (args.images - args.small) / (t_full - t_small)
            rows.append((name, t_full, args.images / t_full, marginal, t_small))
            print(f"  {name:18s} full {t_full:6.1f} s ({args.images / t_full:5.2f} img/s), "
                  f"marginal {marginal:5.2f} img/s, small run {t_small:5.1f} s", flush=True)
    local_small = rows[0][4]
    print("summary:")
    for name, _, rate, marginal, t_small in rows:
        overhead = "" if name == "local engine" else f", small-run overhead {t_small - local_small:+.1f} s"
        print(f"  {name:18s} {rate:5.2f} img/s end to end, {marginal:5.2f} img/s marginal, "
              f"{marginal / rows[0][3]:.2f}x local{overhead}")


if __name__ == "__main__":
    main()
