"""What resuming a killed extraction costs.

Starts ``python -m extract`` on a dataset, SIGKILLs it once half of the images are committed,
runs the same command again, and prints, for the fresh run and for the resumed one, the
seconds from starting the command to its first new committed row (``rows_committed`` of
the output growing), plus the resumed run's total time. The difference between the two
first-row times is the price of resuming: reading the existing file and planning the rest.

    python scripts/bench_resume.py                       # animals, VGG16, hed-bsds500 weights
    python scripts/bench_resume.py --backbone mobilenetv2 \\
        --weights ../shared/models/mobilenetv2_1.0_224_imagenet_notop.weights.h5

Rows are committed every --buffer-size rows (here one batch, so "first new row" is the first
batch's); with the default 1000 a kill loses at most the 999 rows not yet committed.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

REPO = Path(__file__).resolve().parent.parent


def committed(out: Path) -> int:
    try:
        with h5py.File(out, "r") as f:
            return int(f.attrs.get("rows_committed", 0))
    except (OSError, KeyError):
        return 0


def start(argv: list[str]) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, time.perf_counter()


def wait_rows(proc: subprocess.Popen, out: Path, rows: int, poll: float = 0.02) -> float:
    """Seconds (perf_counter) when ``out`` first holds more than ``rows`` committed rows."""
    while committed(out) <= rows:
        if proc.poll() is not None and committed(out) <= rows:
            sys.exit(f"extract ended early:\n{proc.stderr.read().decode()}")
        time.sleep(poll)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "animals"))
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--weights", default="hed-bsds500")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    n_images = sum(1 for p in Path(args.dataset).glob("*/*") if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.hdf5"
        argv = [
            sys.executable, "-m", "extract", "--dataset", args.dataset, "-o", str(out), "-q",
            "--backbone", args.backbone, "--weights", args.weights,
            "--batch-size", str(args.batch_size), "--buffer-size", str(args.batch_size),
        ]
        proc, t0 = start(argv)
        fresh_first = wait_rows(proc, out, 0) - t0
        wait_rows(proc, out, n_images // 2 - 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = committed(out)

        proc, t0 = start(argv)
        resume_first = wait_rows(proc, out, killed_at) - t0
        proc.wait()
        total = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"resumed run failed:\n{proc.stderr.read().decode()}")
        final = committed(out)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.backbone} ({args.weights}), "
          f"batch {args.batch_size}, {n_images} images in {args.dataset}")
    print(f"killed after {killed_at} committed rows; resumed run finished with {final} rows")
    print(f"fresh run:   {fresh_first:6.1f} s from start to first row")
    print(f"resumed run: {resume_first:6.1f} s from start to first new row "
          f"(resume costs {resume_first - fresh_first:+.1f} s), {total:.1f} s to finish "
          f"the remaining {final - killed_at} rows")


if __name__ == "__main__":
    main()
