"""Fusion on Flowers-17: MobileNetV2 and MobileNet v1 (the ImageNet weights in ../shared/models),
each alone and fused, on the same 340 test images, with the paired comparison.

Runs the commands below (printed as it runs them; extraction is skipped for a file that is
already there), then prints each run's test accuracy and macro F1 with their bootstrap 95%
intervals, and ``classify compare``'s table: per class, the intervals, McNemar's exact test and
the intervals of the differences for every pair.

    python scripts/fusion_comparison.py --out /tmp/fusion

The same from the command line:

    python -m extract --dataset flowers17 --data-dir ../shared/datasets --backbone mobilenetv2 \\
        --weights ../shared/models/mobilenetv2_1.0_224_imagenet_notop.weights.h5 --pooling avg \\
        -o f17_mnv2.hdf5
    python -m extract --dataset flowers17 --data-dir ../shared/datasets --backbone mobilenet \\
        --weights ../shared/models/mobilenet_1.0_224_imagenet_notop.weights.h5 --pooling avg \\
        -o f17_mnv1.hdf5
    python -m classify --features f17_mnv2.hdf5 --json mnv2.json
    python -m classify --features f17_mnv1.hdf5 --json mnv1.json
    python -m classify --features f17_mnv2.hdf5 f17_mnv1.hdf5 --json fused.json
    python -m classify compare mnv2.json mnv1.json fused.json --json comparison.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FEATUREBANK_SHARED", REPO.parent / "shared"))

#: File stem -> (backbone, weights file in ../shared/models).
BACKBONES = {
    "f17_mnv2": ("mobilenetv2", "mobilenetv2_1.0_224_imagenet_notop.weights.h5"),
    "f17_mnv1": ("mobilenet", "mobilenet_1.0_224_imagenet_notop.weights.h5"),
}

#: Run name -> the feature files it reads, in order.
RUNS = {"mnv2": ["f17_mnv2"], "mnv1": ["f17_mnv1"], "fused": ["f17_mnv2", "f17_mnv1"]}


def run(*args: str) -> None:
    """Run ``python -m args`` from the repository, printing the command; stop on a failure."""
    print("$ python -m " + shlex.join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): python -m {shlex.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/fusion"), help="folder for the files")
    parser.add_argument("--data-dir", type=Path, default=SHARED / "datasets")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for stem, (backbone, weights) in BACKBONES.items():
        if not (args.out / f"{stem}.hdf5").is_file():
            run("extract", "--dataset", "flowers17", "--data-dir", str(args.data_dir), "--backbone", backbone,
                "--weights", str(SHARED / "models" / weights), "--pooling", "avg", "-q",
                "-o", str(args.out / f"{stem}.hdf5"))
    for name, stems in RUNS.items():
        run("classify", "--features", *(str(args.out / f"{s}.hdf5") for s in stems),
            "--json", str(args.out / f"{name}.json"))
    jsons = [str(args.out / f"{name}.json") for name in RUNS]
    run("classify", "compare", *jsons, "--json", str(args.out / "comparison.json"))
    print("\nsummary (test rows: 340 images, the default split, seed 42):")
    for name in RUNS:
        doc = json.loads((args.out / f"{name}.json").read_text())
        iv = doc["intervals"]
        print(f"  {name:6} C={doc['best_params']['C']:<8g} accuracy {doc['accuracy']:.4f} "
              f"{fmt(iv['accuracy'])}  macro F1 {doc['report']['macro avg']['f1-score']:.4f} "
              f"{fmt(iv['macro_f1'])}")


def fmt(interval: dict) -> str:
    """``[low, high]`` of an interval as the JSON records it."""
    return f"[{interval['low']:.4f}, {interval['high']:.4f}]"


if __name__ == "__main__":
    main()
