"""Fine-tuning from stored maps against fine-tuning through the frozen network, per training
image and epoch, on the same images, in one run.

For each backbone, the layers above the stored layer plus a dense head are trained with SGD
(a) from the stored maps of that layer (what ``--model finetune`` does) and (b) below the
frozen layers up to it, from the images (what the recipe does, augmentation aside). Both
train the same weights on the same batches; an untimed first epoch compiles the step, then
``--epochs`` epochs are timed. The maps are computed once beforehand, as extraction stores
them, and not counted. Prints seconds per training image per epoch and (b)/(a); the target is
(b)/(a) >= 4 (VGG16's block5 is about a ninth of its forward FLOPs). (c) is (a) with the
trained layers computing in bfloat16 (``--precision bf16``), and (a)/(c) its speed-up.

    python scripts/bench_finetune.py --images 96 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from extract.tf_logs import start_keras  # noqa: E402

SHARED = Path(os.environ.get("FEATUREBANK_SHARED", REPO.parent / "shared"))

# (backbone, weights, stored layer): VGG16's block5 above block4_pool, as in the recipe;
# MobileNetV2's last block and its 1x1 convolution above block_15_add.
CASES = [
    ("vgg16", "hed-bsds500", "block4_pool"),
    ("mobilenetv2", str(SHARED / "models" / "mobilenetv2_1.0_224_imagenet_notop.weights.h5"), "block_15_add"),
]


def images_of(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` Flowers-17 images (round-robin over the classes) at ``size``, and labels."""
    from extract.images import load_image

    root = SHARED / "datasets" / "flowers17"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [sorted((root / c).iterdir()) for c in classes]
    picked = [(files[i % len(classes)][i // len(classes)], i % len(classes)) for i in range(n)]
    images = np.stack([load_image(path, (size, size), "nearest") for path, _ in picked])
    return images, np.array([label for _, label in picked])


def seconds_per_image(model, x: np.ndarray, y: np.ndarray, batch: int, epochs: int) -> float:
    for start in range(0, len(x), batch):  # untimed: compiles the training step
        model.train_on_batch(x[start:start + batch], y[start:start + batch])
    began = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            model.train_on_batch(x[start:start + batch], y[start:start + batch])
    return (time.perf_counter() - began) / (epochs * len(x))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="training images (default: 96)")
    parser.add_argument("--size", type=int, default=224, help="image side (default: 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (default: 2)")
    args = parser.parse_args()

    start_keras()
    import keras

    from classify.classifiers.finetune import top_of_backbone
    from classify.classifiers.head import build_head
    from extract import load_backbone
    from extract.backbones import _layer_output

    images, labels = images_of(args.images, args.size)
    print(f"{platform.machine()}, {os.cpu_count()} cores, Keras {keras.__version__} "
          f"({keras.backend.backend()}); {args.images} Flowers-17 images at {args.size}, batches of "
          f"{args.batch_size}, {args.epochs} timed epochs")
    print(f"{'backbone':12} {'stored layer':14} {'(a) maps s/img':>15} {'(b) images s/img':>17} "
          f"{'(b)/(a)':>8} {'(c) maps bf16':>14} {'(a)/(c)':>8}")
    for name, weights, layer in CASES:
        timings = []
        # (a) from the maps, (b) through the frozen network, (c) as (a) with the trained layers
        # in bfloat16 (what classify --model finetune --precision bf16 does).
        for through_images, precision in ((False, "float32"), (True, "float32"), (False, "bf16")):
            loaded = load_backbone(name, weights, "avg", args.size, precision)
            top = top_of_backbone(loaded, layer)
            for sub in top.layers:
                sub.trainable = not isinstance(sub, keras.layers.BatchNormalization)
            head = build_head(int(top.output_shape[-1]), 17, hidden=256, dropout=0.5, seed=0)
            bottom = keras.Model(loaded.model.input, _layer_output(loaded.model, layer))
            if through_images:
                bottom.trainable = False
                inputs = keras.Input((args.size, args.size, 3))
                model = keras.Model(inputs, head(top(bottom(inputs))))
                x = loaded.backbone.preprocess_input(images.astype(np.float32))
            else:
                inputs = keras.Input(top.input_shape[1:])
                model = keras.Model(inputs, head(top(inputs)))
                x = np.concatenate([  # the stored maps, as extraction writes them
                    np.asarray(bottom.predict_on_batch(loaded.backbone.preprocess_input(
                        images[i:i + args.batch_size].astype(np.float32))))
                    for i in range(0, len(images), args.batch_size)])
            model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                          loss="sparse_categorical_crossentropy")
            timings.append(seconds_per_image(model, x, labels, args.batch_size, args.epochs))
        a, b, c = timings
        print(f"{name:12} {layer:14} {a:15.4f} {b:17.4f} {b / a:8.1f} {c:14.4f} {a / c:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
