"""A saved model applied to new images: :func:`predict` (``python -m classify predict``).

Features are extracted exactly as for the training file (backbone, weights, layer, pooling,
image size, interpolation, preprocessing and precision come from the model card saved beside
the model), so the classifier sees what it was trained on. A weights file whose SHA-256 differs
from the one recorded is refused. A model trained on fused files (:mod:`classify.fusion`) runs
each part's backbone on the images, multiplies each part's features by its recorded scale and
joins them in the recorded order.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import PredictError, check_count, first_line
from ..outputs.card import card_parts, card_path
from .rebuild import extraction_backbone


@dataclass(frozen=True)
class Prediction:
    """The class predicted for one image, or why it could not be.

    Attributes
    ----------
    path : str
        The image file, as found (under a folder given, or as given).
    predicted : str or None
        The most probable class; None for an image that could not be decoded.
    probability : float or None
        Its probability.
    top : list of (str, float)
        The most probable classes, most probable first, with their probabilities.
    error : str or None
        Why the image could not be decoded (``"empty file"``); None when it was.
    split : str or None
        The image's split, for an image of a split-folders tree (``train/``, ``val/``,
        ``test/``); None otherwise.
    label : str or None
        Its class folder in such a tree, the true class a report compares with.
    """

    path: str
    predicted: str | None
    probability: float | None
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    split: str | None = None
    label: str | None = None

    def csv_row(self, split: bool = False) -> list[str]:
        """The row ``python -m classify predict`` writes: path, (with ``split``, the split,)
        predicted, probability, top classes (``name:prob`` joined by ``;``), error
        (``skipped: <reason>``).

        Examples
        --------
        >>> Prediction("a.jpg", "daisy", 0.9, [("daisy", 0.9), ("tulip", 0.1)]).csv_row()
        ['a.jpg', 'daisy', '0.9000', 'daisy:0.9000;tulip:0.1000', '']
        >>> Prediction("b.jpg", None, None, [], "empty file", split="test").csv_row(split=True)
        ['b.jpg', 'test', '', '', '', 'skipped: empty file']
        """
        where = [self.path, self.split or ""] if split else [self.path]
        if self.error is not None:
            return [*where, "", "", "", f"skipped: {self.error}"]
        return [*where, str(self.predicted), f"{self.probability:.4f}",
                ";".join(f"{name}:{p:.4f}" for name, p in self.top), ""]


def csv_header(top: int = 3, split: bool = False) -> list[str]:
    """The CSV's header row.

    Examples
    --------
    >>> csv_header()
    ['path', 'predicted', 'probability', 'top3', 'error']
    """
    return ["path", *(["split"] if split else []), "predicted", "probability", f"top{top}", "error"]


def write_csv(predictions: Iterable[Prediction], out: TextIO, top: int = 3, split: bool = False) -> None:
    """Write ``predictions`` as ``python -m classify predict`` does, row by row as they come.

    Examples
    --------
    >>> import sys
    >>> from classify.inference.predict import Prediction, write_csv
    >>> write_csv([Prediction("a.jpg", "daisy", 0.9, [("daisy", 0.9), ("tulip", 0.1)])], sys.stdout)
    path,predicted,probability,top3,error
    a.jpg,daisy,0.9000,daisy:0.9000;tulip:0.1000,
    """
    writer = csv.writer(out)
    writer.writerow(csv_header(top, split))
    for prediction in predictions:
        writer.writerow(prediction.csv_row(split))


def image_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The image files named, and those under the folders named, in a fixed order (one path
    alone is taken as a list of one)."""
    return [file for file, _, _ in labelled_files(inputs)]


def labelled_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]
                   ) -> list[tuple[str, str | None, str | None]]:
    """:func:`image_files` as ``(file, class, split)``: the class folder and split of each
    image of a folder that a registered layout recognises (a split-folders tree:
    :func:`extract.layouts.detect_layout`), None elsewhere."""
    from extract.sources import IMAGE_EXTENSIONS

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[tuple[str, str | None, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(_folder_files(path, IMAGE_EXTENSIONS))
        elif path.is_file():
            found.append((str(path), None, None))
        else:
            raise PredictError(f"{os.fspath(item)}: no such file or folder")
    if not found:
        raise PredictError(f"no image files in {', '.join(map(os.fspath, inputs))}")
    return found


def _folder_files(path: Path, extensions: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    from extract.errors import DatasetError
    from extract.layouts import DEFAULT_LAYOUT, detect_layout

    layout = detect_layout(path)
    if layout.name == DEFAULT_LAYOUT or layout.reads != "folder":
        # A folder of new photos: every image under it, with no class to compare with.
        return [(str(p), None, None) for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in extensions]
    try:
        listing = layout.list_images(path)
    except DatasetError as exc:
        raise PredictError(str(exc)) from None
    splits = listing.splits if listing.splits is not None else [None] * len(listing.paths)
    found = [(str(path / p), listing.class_names[k], split)
             for p, k, split in zip(listing.paths, listing.labels, splits, strict=True)]
    # Images outside the class folders have no class to report on, but are predicted.
    found.extend((str(path / p), None, None) for p in listing.ignored
                 if Path(p).suffix.lower() in extensions)
    return found


def split_reports(predictions: Sequence[Prediction]) -> str:
    """The per-class precision / recall / F1 report of each split's predictions against their
    class folders (images of a split-folders tree; those that could not be decoded left out),
    in train, val, test order; empty when no prediction has a split.

    Examples
    --------
    >>> rows = [Prediction("t/a/1.jpg", "a", 0.9, split="test", label="a"),
    ...         Prediction("t/b/2.jpg", "a", 0.6, split="test", label="b")]
    >>> print(split_reports(rows).splitlines()[0])
    test: 2 images, accuracy 0.5000
    """
    from sklearn.metrics import accuracy_score, classification_report

    from extract.listing import SPLITS

    parts = []
    for split in SPLITS:
        mine = [p for p in predictions if p.split == split and p.error is None]
        if not mine:
            continue
        truth, guess = [p.label for p in mine], [p.predicted for p in mine]
        accuracy = accuracy_score(truth, guess)
        table = classification_report(truth, guess, labels=sorted(set(truth) | set(guess)), digits=4,
                                      zero_division=0)
        parts.append(f"{split}: {len(mine)} images, accuracy {accuracy:.4f}\n{table}")
    return "\n".join(parts)


def read_card(model_path: str | os.PathLike) -> dict[str, Any]:
    """The model card saved beside ``model_path``, with its extraction settings; else a
    one-line :class:`PredictError`.

    Examples
    --------
    >>> read_card("f17.head.keras")["extraction"]["backbone"]  # doctest: +SKIP
    'mobilenetv2'
    """
    card_file = card_path(model_path)
    try:
        card = json.loads(card_file.read_text())
        parts = card_parts(card)
        backbones = [ext.get("backbone") for ext, _ in parts]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
        raise PredictError(
            f"{model_path}: no model card {card_file.name} beside it; save the model again "
            "with python -m classify --save"
        ) from None
    if not all(backbones):
        raise PredictError(f"{model_path}: trained on features without extraction settings")
    return card


def load_backbones(card: dict[str, Any], model_path: str | os.PathLike,
                   weights: str | os.PathLike | None) -> list[Any]:
    """The backbone of each part of the card's features (:func:`~classify.outputs.card.card_parts`:
    one, or a fused model's), loaded as :func:`extraction_backbone` loads one.

    A fused model finds each weights file where its extraction read it: one ``weights`` cannot
    say which backbone it replaces, so it is refused.
    """
    parts = card_parts(card)
    if weights is not None and len(parts) > 1:
        raise PredictError(f"{model_path}: a fused model finds each of its {len(parts)} backbones' "
                           "weights where extraction read them, and one --weights cannot say whose; "
                           "leave it out (put the weights files back where the features recorded them)")
    # At the layer the model was trained on (fc2, block4_pool, ... as the file recorded).
    return [extraction_backbone(ext, model_path, weights) for ext, _ in parts]


def load_model(model_path: str | os.PathLike, weights: str | os.PathLike | None
               ) -> tuple[Any, dict, list[Any]]:
    """The estimator, its card, and the backbones its features need (loaded; one, or one per
    part of a fused model, in the order of the row's blocks).

    ``weights`` None finds named weights (``imagenet``, ``hed-bsds500``) by name, and a weights
    file where the feature file recorded it (``weights_path``) if it is unchanged there.
    """
    from extract.tf_logs import start_keras

    from ..outputs.model_files import load_estimator

    start_keras()  # without TensorFlow's C++ start-up lines (a no-op once Keras has started)
    if not Path(model_path).is_file():
        keras_file = Path(model_path).with_suffix(".keras")
        hint = f" (a head is saved as {keras_file.name}, which is there)" if keras_file.is_file() else ""
        raise PredictError(f"{model_path}: no such model file{hint}")
    card = read_card(model_path)
    try:
        estimator = load_estimator(model_path, card)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise PredictError(f"{model_path}: cannot load the model ({first_line(exc)})") from None
    return estimator, card, load_backbones(card, model_path, weights)


def stored_rows(features: np.ndarray, ext: dict[str, Any], scale: float | None) -> np.ndarray:
    """A backbone's features as the classifier saw them in training: rounded to the file's
    storage type, read back as float32, and (a fused part) times its recorded scale, the one
    float32 multiply :func:`classify.fusion.scaled` made."""
    from ..fusion import scaled

    rows = features.astype(ext.get("dtype") or "float32").astype(np.float32)
    return rows if scale is None else scaled(rows, scale)


def embedded_batches(card: dict[str, Any], backbones: Sequence[Any], listing: Any, batch_size: int
                     ) -> Iterator[tuple[Any, np.ndarray | None]]:
    """Each batch of ``listing``'s images (decoded at the first backbone's size) with the rows the
    classifier takes for its decoded images: each backbone's features of the images decoded at
    its own size and interpolation, as stored, scaled, side by side (None: none decoded)."""
    from extract.decoding import decoded_batches

    parts = card_parts(card)
    # One decoding per distinct size and resampling: parts that share them share the pixels.
    keys = [(loaded.image_size, ext.get("interpolation") or "nearest")
            for loaded, (ext, _) in zip(backbones, parts, strict=True)]
    distinct = list(dict.fromkeys(keys))
    streams = [decoded_batches(listing, range(len(listing.paths)), batch_size, size, interpolation)
               for size, interpolation in distinct]
    for batches in zip(*streams, strict=True):
        batch = batches[0]
        if not batch.decoded:
            yield batch, None
            continue
        blocks = [stored_rows(loaded.embed(batches[distinct.index(key)].images), ext, scale)
                  for loaded, (ext, scale), key in zip(backbones, parts, keys, strict=True)]
        yield batch, blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)


def _predictions(
    estimator: Any, card: dict, loaded: Sequence[Any], found: list[tuple[str, str | None, str | None]], *,
    batch_size: int, top: int, progress: bool,
) -> Iterator[Prediction]:
    from tqdm.auto import tqdm

    from extract.sources import ImageListing

    names = card["classes"]
    files = [file for file, _, _ in found]
    listing = ImageListing(Path(""), list(names), files, np.zeros(len(files), dtype=np.int32))
    with tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr, disable=not progress) as bar:
        for batch, feats in embedded_batches(card, loaded, listing, batch_size):
            done: dict[int, Prediction] = {
                i: Prediction(files[i], None, None, [], reason, found[i][2], found[i][1])
                for i, reason in batch.failed
            }
            if feats is not None:
                proba = estimator.predict_proba(feats)
                # Column k is the label classes_[k]: the labels the model saw, which are not
                # all of the card's classes when the last ones had no rows yet.
                labels = getattr(estimator, "classes_", np.arange(proba.shape[1]))
                for i, p in zip(batch.decoded, proba, strict=True):
                    order = np.argsort(-p)[:top]
                    ranked = [(names[int(labels[k])], float(p[k])) for k in order]
                    done[i] = Prediction(files[i], ranked[0][0], ranked[0][1], ranked, None, found[i][2],
                                         found[i][1])
            yield from (done[i] for i in batch.indices)  # in the order given
            bar.update(len(batch.indices))


class Predictions(Iterator[Prediction]):
    """What :func:`iter_predictions` returns: the predictions, one at a time as each batch is
    done, and whether any input image has a split (:attr:`with_splits`, which decides the CSV's
    split column before the first prediction is made).

    Examples
    --------
    >>> rows = Predictions(iter([Prediction("a.jpg", "daisy", 0.9)]), with_splits=False)
    >>> rows.with_splits, [p.path for p in rows]
    (False, ['a.jpg'])
    """

    def __init__(self, rows: Iterator[Prediction], with_splits: bool) -> None:
        self._rows = rows
        self.with_splits = with_splits

    def __next__(self) -> Prediction:
        return next(self._rows)


def iter_predictions(
    model_path: str | os.PathLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int = 32,
    top: int = 3,
    progress: bool = True,
) -> Predictions:
    """:func:`predict`, one :class:`Prediction` at a time as each batch is done.

    The model, its card, the weights and the inputs are checked at the call, before the first
    prediction is asked for; the arguments are :func:`predict`'s.

    Examples
    --------
    >>> from classify import iter_predictions
    >>> for p in iter_predictions("rf.joblib", "new_photos/"):  # doctest: +SKIP
    ...     print(p.path, p.predicted)
    """
    check_count("batch_size", batch_size)
    check_count("top", top)
    found = labelled_files(inputs)
    estimator, card, loaded = load_model(model_path, weights)
    rows = _predictions(estimator, card, loaded, found, batch_size=batch_size, top=top, progress=progress)
    return Predictions(rows, with_splits=any(split for _, _, split in found))


def predict(
    model_path: str | os.PathLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int = 32,
    top: int = 3,
    progress: bool = True,
) -> list[Prediction]:
    """Predict the class of new images with a model saved by ``--save`` (or
    :meth:`ModelResult.save <classify.ModelResult.save>`).

    Features are extracted as for the training file, with the settings recorded in the model
    card ``M.card.json`` beside the model.

    Parameters
    ----------
    model_path : path
        The saved model, ``M.joblib`` (a head: ``M.keras``); its card ``M.card.json`` must be
        beside it.
    inputs : path or sequence of paths
        Image files and folders (searched recursively for images). The images of a
        split-folders tree (``train/``, ``val/``, ``test/`` of class folders) carry their split
        and class folder, which :func:`split_reports` compares the predictions with.
    weights : path, optional
        The weights file the training features came from. Not needed for ``imagenet`` and
        ``hed-bsds500``, nor for a file still where extraction read it, unchanged.
    batch_size : int
        Images per backbone call.
    top : int
        How many of the most probable classes each :class:`Prediction` lists.
    progress : bool
        Show a progress bar (``tqdm.auto``: a widget in Jupyter, a line on a terminal's stderr).

    Returns
    -------
    list of Prediction
        One per image, in the order found; an image that cannot be decoded has ``error`` set.

    Raises
    ------
    PredictError
        No such input, no images, a model or card that cannot be read, weights that cannot be
        found or are not the training features' weights.
    SettingsError
        ``batch_size`` or ``top`` below 1.

    Examples
    --------
    >>> from classify import predict
    >>> for p in predict("rf.joblib", ["new_photos/", "one.jpg"], progress=False):  # doctest: +SKIP
    ...     print(p.path, p.predicted, round(p.probability, 2), p.top)
    new_photos/a.jpg daisy 0.93 [('daisy', 0.93), ('tulip', 0.04), ('crocus', 0.01)]
    """
    return list(iter_predictions(model_path, inputs, weights=weights, batch_size=batch_size,
                                 top=top, progress=progress))
