"""``python -m classify predict``: a saved model applied to new images.

Features are extracted exactly as for the training file (backbone, weights, layer, pooling,
image size, interpolation, preprocessing and precision come from the model card saved beside
the model), so the classifier sees what it was trained on. A weights file whose SHA-256 differs
from the one recorded is refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .card import card_path

DESCRIPTION = """\
Predict the class of new images with a model saved by `python -m classify --save M.joblib`.
Prints (or writes with --output) a CSV: path, predicted class, its probability, and the top 3
classes with theirs. Folders are searched for images recursively.
"""


class PredictError(Exception):
    """A model or input that cannot be used; the message is one line for the user."""


def image_files(inputs: Sequence[str]) -> list[str]:
    """The image files named, and those under the folders named, in a fixed order."""
    from extract.sources import IMAGE_EXTENSIONS

    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(
                str(p) for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif path.is_file():
            found.append(str(path))
        else:
            raise PredictError(f"{item}: no such file or folder")
    if not found:
        raise PredictError(f"no image files in {', '.join(inputs)}")
    return found


def load_model(model_path: str, weights: str | None):
    """The estimator, its card, and the backbone its features need."""
    import joblib

    from extract.backbones import NAMED_WEIGHTS, WeightsError, load_backbone

    card_file = card_path(model_path)
    try:
        estimator = joblib.load(model_path)
    except (OSError, EOFError, ValueError) as exc:
        raise PredictError(f"{model_path}: cannot load the model ({exc})") from None
    try:
        card = json.loads(card_file.read_text())
        ext = card["extraction"]
    except (OSError, json.JSONDecodeError, KeyError):
        raise PredictError(
            f"{model_path}: no model card {card_file.name} beside it; save the model again "
            "with python -m classify --save"
        ) from None
    if not ext.get("backbone"):
        raise PredictError(f"{model_path}: trained on features without extraction settings")
    wanted = weights or ext.get("weights")
    if wanted not in NAMED_WEIGHTS and weights is None:
        raise PredictError(
            f"{model_path}: trained on features from the weights file {ext.get('weights')}; "
            "pass --weights PATH to that file"
        )
    try:
        loaded = load_backbone(ext["backbone"], wanted, ext["pooling"], int(ext["image_size"]),
                               ext.get("precision") or "float32")
    except (WeightsError, ValueError) as exc:  # ValueError: weights of another backbone
        raise PredictError(f"{model_path}: {exc}") from None
    if loaded.weights_sha256 != ext.get("weights_sha256") or loaded.layer != ext.get("layer"):
        raise PredictError(
            f"{model_path}: trained on {ext['backbone']} features from weights "
            f"{ext.get('weights')} (sha256 {str(ext.get('weights_sha256'))[:12]}...), not from "
            f"{loaded.weights} (sha256 {loaded.weights_sha256[:12]}...); features would not match"
        )
    return estimator, card, loaded


def predict_rows(
    estimator, card: dict, loaded, files: list[str], *, batch_size: int = 32, top: int = 3,
    progress: bool = True,
) -> Iterator[list[str]]:
    """CSV rows ``path, predicted, probability, top-k`` (or an error) for ``files``."""
    from tqdm import tqdm

    from extract.pipeline import decoded_batches
    from extract.sources import ImageListing

    ext = card["extraction"]
    classes = card["classes"]
    listing = ImageListing(Path(""), list(classes), files, np.zeros(len(files), dtype=np.int32))
    stored = ext.get("dtype") or "float32"
    with tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr, disable=not progress) as bar:
        for batch in decoded_batches(listing, range(len(files)), batch_size, loaded.image_size,
                                     ext.get("interpolation") or "nearest"):
            good = [(i, img) for i, img in batch if not isinstance(img, str)]
            rows: dict[int, list[str]] = {
                i: [files[i], "", "", "", f"skipped: {img}"] for i, img in batch if isinstance(img, str)
            }
            if good:
                feats = loaded.embed(np.stack([img for _, img in good]))
                # The classifier was trained on features as stored in the file.
                feats = feats.astype(stored).astype(np.float32)
                proba = estimator.predict_proba(feats)
                for (i, _), p in zip(good, proba, strict=True):
                    order = np.argsort(-p)[:top]
                    rows[i] = [files[i], classes[order[0]], f"{p[order[0]]:.4f}",
                               ";".join(f"{classes[k]}:{p[k]:.4f}" for k in order), ""]
            yield from (rows[i] for i, _ in batch)  # in the order given
            bar.update(len(batch))


def predict_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m classify predict", description=DESCRIPTION)
    parser.add_argument("--model", required=True, metavar="M.joblib",
                        help="a model saved with --save (its M.card.json must be beside it)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--weights", metavar="PATH",
                        help="the weights file the training features came from, when they came "
                             "from a file (imagenet and hed-bsds500 are found by name)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the CSV here (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")

    def fail(message: str) -> int:
        print(f"classify predict: error: {message}", file=sys.stderr)
        return 1

    try:
        files = image_files(args.inputs)
        estimator, card, loaded = load_model(args.model, args.weights)
    except PredictError as exc:
        return fail(str(exc))
    try:
        out = open(args.output, "w", newline="") if args.output else sys.stdout
    except OSError as exc:
        return fail(f"{args.output}: cannot write ({exc.strerror or exc})")
    try:
        writer = csv.writer(out)
        writer.writerow(["path", "predicted", "probability", "top3", "error"])
        for row in predict_rows(estimator, card, loaded, files, batch_size=args.batch_size,
                                progress=not args.quiet):
            writer.writerow(row)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
