"""Stage 1 on a GPU: featurebank's backbone against a compiled PyTorch model, and the whole
extract path against the backbone.

For each --models entry (at 224x224) and each --precisions entry, one after another on the
same device, each part in a process of its own (so no framework holds the GPU for another):

  (a) anchor: torchvision's model of the same architecture with random weights, its
      convolutional part only (what featurebank keeps: no top), channels_last, autocast to
      the precision, ``torch.compile``; a batch already on the device; the model only
  (b) backbone: featurebank's ``LoadedBackbone`` (random weights) run as extract runs it:
      ``start`` on a host batch of model inputs, the next batch started before the last
      one's rows are read back
  (c) end to end: ``extract.pipeline.extract`` with that backbone, from JPEG files to a
      finished HDF5 file (decoding processes, the background writer), once the model is compiled

and prints images/s of each with the ratios (c)/(b) (target >= 0.9) and (b)/(a) (target
>= 0.7); the target for (c) is >= 5,000 images/s for VGG16 in bf16 on an H100/H200. The same
--batch-size everywhere (default 128, featurebank's GPU default), and extract's own default
--pooling (flatten: VGG16's 25,088 values a row, which (c) writes to the file as float32).

Keras runs on the backend KERAS_BACKEND names: jax or torch where TensorFlow is not
installed; the anchor (and the device's name) need torch and torchvision whatever the
backend. The JPEGs: --images files, those of the --image-dirs (default: the ../shared flowers17
and animals folders, or shared/datasets/... inside the checkout) linked in turn into a
temporary class-per-folder tree, so that (c) runs long enough to time. With --device cpu every
part runs on the CPU (the GPU is hidden from the parts' processes).

    KERAS_BACKEND=jax python scripts/bench_gpu.py
    KERAS_BACKEND=torch python scripts/bench_gpu.py --models vgg16 --precisions bf16
    python scripts/bench_gpu.py --device cpu --models mobilenetv2 --precisions bf16 \\
        --batch-size 8 --images 64 --iterations 3      # the script itself, checked on a CPU

On a machine without Keras, install it from wheels first (Keras 3 needs absl-py, h5py,
ml-dtypes, namex, numpy, optree, packaging and rich).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = next((p for p in (REPO.parent / "shared", REPO / "shared") if p.is_dir()), REPO.parent / "shared")

#: The anchor of each model: torchvision's network without its classifier.
ANCHORS = {
    "vgg16": lambda tv: tv.models.vgg16().features,
    "resnet50": lambda tv: __import__("torch").nn.Sequential(*list(tv.models.resnet50().children())[:-2]),
    "mobilenetv2": lambda tv: tv.models.mobilenet_v2().features,
}
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
SIZE = 224


def anchor(model: str, precision: str, batch_size: int, iterations: int, device: str) -> float:
    """(a): images/s of the compiled torchvision model on a batch already on ``device``."""
    import torch
    import torchvision

    net = ANCHORS[model](torchvision).eval().to(device, memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, SIZE, SIZE, device=device).to(memory_format=torch.channels_last)
    compiled = torch.compile(net)
    dtype = getattr(torch, TORCH_DTYPES[precision])
    with torch.inference_mode(), torch.autocast(device_type=device, dtype=dtype):
        for _ in range(3):  # compiling, then the autotuner's choices settle
            compiled(x)
        _sync(device)
        started = time.perf_counter()
        for _ in range(iterations):
            compiled(x)
        _sync(device)
    return iterations * batch_size / (time.perf_counter() - started)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def backbone(model: str, precision: str, batch_size: int, iterations: int, pooling: str) -> float:
    """(b): images/s of featurebank's backbone on host batches of model inputs, pipelined as
    :func:`extract.pipeline.extract_layers` runs it."""
    from extract.backbones import load_backbone

    loaded = load_backbone(model, weights=None, pooling=pooling, image_size=SIZE, precision=precision)
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, SIZE, SIZE, 3), np.uint8)
    x = loaded.backbone.preprocess_input(pixels.astype(np.float32))
    for _ in range(3):  # tracing and compiling
        loaded.start(x, preprocessed=True).rows()
    started = time.perf_counter()
    previous = None
    for _ in range(iterations):
        running = loaded.start(x, preprocessed=True)
        if previous is not None:
            previous.rows()
        previous = running
    previous.rows()
    return iterations * batch_size / (time.perf_counter() - started)


def end_to_end(model: str, precision: str, batch_size: int, root: Path, pooling: str) -> float:
    """(c): images/s of a whole extract run, JPEG files to a finished file, once warm."""
    from bench_extract import warm_up  # this folder is on sys.path when a script runs

    from extract.backbones import load_backbone
    from extract.pipeline import extract
    from extract.plan import plan_work
    from extract.sources import list_images

    loaded = load_backbone(model, weights=None, pooling=pooling, image_size=SIZE, precision=precision)
    listing = list_images(root)
    warm_up(loaded, batch_size)  # compiled before the run, as bench_extract's (b) (see there)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        started = time.perf_counter()
        summary = extract(listing, loaded, Path(tmp) / "bench.hdf5", plan=plan_work(listing),
                          batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - started
    assert summary.rows == len(listing), (summary.rows, len(listing))
    return len(listing) / seconds


def link_images(dest: Path, n: int, dirs: list[Path]) -> Path:
    """A class-per-folder tree of ``n`` links to the images of the class-per-folder ``dirs``,
    taken in turn."""
    sources = sorted(p.resolve() for d in dirs for p in d.glob("*/*") if p.is_file())
    if not sources:
        sys.exit(f"no images in {', '.join(map(str, dirs))}: give --image-dirs")
    for i in range(n):
        source = sources[i % len(sources)]
        folder = dest / source.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}{source.suffix}").symlink_to(source)
    return dest


def part(args: argparse.Namespace) -> None:
    """One part in this process: prints its images/s as a JSON line."""
    if args.part == "device":
        print(json.dumps({"part": args.part, "rate": 0.0, "name": device_name(args.device)}))
        return
    if args.part == "anchor":
        rate = anchor(args.model, args.precision, args.batch_size, args.iterations, args.device)
    elif args.part == "backbone":
        rate = backbone(args.model, args.precision, args.batch_size, args.iterations, args.pooling)
    else:
        rate = end_to_end(args.model, args.precision, args.batch_size, Path(args.root), args.pooling)
    print(json.dumps({"part": args.part, "rate": rate}))


def run_part(name: str, model: str, precision: str, args: argparse.Namespace, root: Path) -> dict:
    """One part in a process of its own: what it printed."""
    argv = [sys.executable, __file__, "--part", name, "--model", model, "--precision", precision,
            "--batch-size", str(args.batch_size), "--iterations", str(args.iterations),
            "--device", args.device, "--root", str(root), "--pooling", args.pooling]
    env = dict(os.environ)
    if args.device == "cpu":  # every part on the CPU, the GPU hidden from torch and JAX
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{name} {model} {precision} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(ANCHORS), choices=list(ANCHORS))
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp16"], choices=list(TORCH_DTYPES))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=50, help="batches timed in (a) and (b)")
    parser.add_argument("--images", type=int, default=20_000, help="JPEG files (c) extracts")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where the parts run")
    parser.add_argument("--pooling", default="flatten", choices=["flatten", "avg", "max"])
    parser.add_argument("--image-dirs", nargs="+", type=Path, metavar="DIR",
                        default=[SHARED / "datasets" / "flowers17", SHARED / "datasets" / "animals"],
                        help="class-per-folder image folders (default: ../shared flowers17, animals)")
    # One part, run by main in a process of its own.
    parser.add_argument("--part", choices=["device", "anchor", "backbone", "end_to_end"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        part(args)
        return

    import keras

    with tempfile.TemporaryDirectory() as tmp:
        root = link_images(Path(tmp) / "images", args.images, args.image_dirs)
        name = run_part("device", "", "", args, root)["name"]  # no CUDA context in this process
        print(f"stage 1 on {name}: Keras {keras.__version__} on {keras.backend.backend()}, batch "
              f"{args.batch_size}, {SIZE}x{SIZE}, pooling {args.pooling}, (c) over {args.images} "
              f"JPEG files")
        print(f"{'model':12} {'precision':9} {'(a) anchor':>11} {'(b) backbone':>13} "
              f"{'(c) end to end':>15} {'(c)/(b)':>8} {'(b)/(a)':>8}")
        for model in args.models:
            for precision in args.precisions:
                a, b, c = (run_part(part, model, precision, args, root)["rate"]
                           for part in ("anchor", "backbone", "end_to_end"))
                print(f"{model:12} {precision:9} {a:11.1f} {b:13.1f} {c:15.1f} {c / b:8.2f} "
                      f"{b / a:8.2f}", flush=True)


if __name__ == "__main__":
    main()
