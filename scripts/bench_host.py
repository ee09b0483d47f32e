"""The host path of stage 1 alone: how fast images reach a backbone and rows reach the file.

Runs ``extract.pipeline.extract`` over the same JPEG files with a null backbone (VGG16's own
``preprocess_input``, then a model that costs nothing: it returns three pixel values per
image), so what is measured is listing, decoding, resizing, preprocessing and writing a
finished HDF5 file. One run per decoder setting, side by side in one process:

  processes x 1           one decoding process
  processes x N           one per core (the default)
  threads x N             N threads in this process (the decoder before process decoding)

and prints images/s for each and the ratio to one process. Target: one per core >= 1.6x one
process on 2 cores, >= 10x on 16.

    python scripts/bench_host.py                          # ../shared flowers17 at 224
    python scripts/bench_host.py --dataset animals --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

from extract.backbones import BACKBONES, LoadedBackbone  # noqa: E402
from extract.decoding import default_workers  # noqa: E402
from extract.pipeline import extract  # noqa: E402
from extract.plan import plan_work  # noqa: E402
from extract.sources import list_images  # noqa: E402


class NullModel:
    """Stands in for a Keras model (the compiled predict step ``LoadedBackbone.start`` calls):
    three values per image, no work."""

    output_shape = (None, 3)

    def make_predict_function(self) -> None:
        pass

    def predict_function(self, data: list[tuple[np.ndarray]]) -> np.ndarray:
        return data[0][0][:, 0, 0, :].copy()

    # The same on JAX, where the step is ``stateless_call`` under ``jax.jit`` (a GPU machine
    # may have no TensorFlow).
    trainable_variables = non_trainable_variables = ()

    def stateless_call(self, trainable, non_trainable, x, training=False):
        return x[:, 0, 0, :] + 0, non_trainable


def run(root: Path, size: int, batch_size: int, decoder: str, workers: int, out: Path) -> float:
    """Images per second of one whole run, listing included."""
    started = time.perf_counter()
    listing = list_images(root)
    loaded = LoadedBackbone(BACKBONES["vgg16"], NullModel(), "none", "", ("null",), "flatten", size)
    summary = extract(listing, loaded, out, plan=plan_work(listing), batch_size=batch_size,
                      progress=False, decoder=decoder, decode_workers=workers)
    seconds = time.perf_counter() - started
    assert summary.rows == len(listing), (summary.rows, len(listing))
    return len(listing) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="flowers17", help="a folder of ../shared/datasets, or a path")
    parser.add_argument("--size", type=int, default=224, help="image size (default: 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each setting; the best counts")
    args = parser.parse_args()

    root = Path(args.dataset) if Path(args.dataset).is_dir() else SHARED / "datasets" / args.dataset
    cores = default_workers()
    settings = [("processes", 1), ("processes", cores), ("threads", cores)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "null.hdf5"
        run(root, args.size, args.batch_size, "threads", cores, out)  # the files into the page cache
        rates: dict[tuple[str, int], float] = {}
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
            for decoder, workers in settings:
                out.unlink(missing_ok=True)
                rate = run(root, args.size, args.batch_size, decoder, workers, out)
                rates[decoder, workers] = max(rate, rates.get((decoder, workers), 0.0))
    n = len(list_images(root))
    print(f"host path, null backbone: {root.name}, {n} images at {args.size}x{args.size}, batch "
          f"{args.batch_size}; {platform.machine()}, {os.cpu_count()} cores; best of {args.repeat}")
    one = rates["processes", 1]
    for (decoder, workers), rate in rates.items():
        print(f"  {decoder:9} x {workers:2}: {rate:8.1f} images/s  {rate / one:5.2f}x one process")


if __name__ == "__main__":
    main()
