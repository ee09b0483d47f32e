"""A pretrained backbone used as it is, as an ImageNet classifier: :func:`imagenet_predict`
(``python -m classify predict --imagenet``).

The backbone is built *with* its top (the 1,000-class classifier) at its native input size;
its softmax output is decoded into ImageNet classes as Keras'
``keras.applications.imagenet_utils.decode_predictions`` does, with the same order and ties,
but from the class index shipped in this package (``classify/imagenet_class_index.json``, the
file Keras downloads on first use), so nothing is downloaded. No model trained by
``python -m classify`` is involved.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import PredictError, SettingsError, check_count, named
from .predict import image_files

#: Number of ImageNet classes (outputs of every backbone's top).
IMAGENET_CLASSES = 1000
#: The class index shipped with the package: Keras' ``imagenet_class_index.json``.
CLASS_INDEX_FILE = Path(__file__).resolve().parent / "imagenet_class_index.json"

ClassIndex = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class ImagenetPrediction:
    """The most probable ImageNet classes of one image, or why it could not be decoded.

    Attributes
    ----------
    path : str
        The image file, as found (under a folder given, or as given).
    top : list of (str, str, float)
        ``(wnid, class, probability)``, most probable first: the tuples of Keras'
        ``decode_predictions`` (WordNet id such as ``"n02510455"``, class name such as
        ``"giant_panda"``), with the probability as a Python float.
    error : str or None
        Why the image could not be decoded (``"empty file"``); None when it was.
    """

    path: str
    top: list[tuple[str, str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def predicted(self) -> str | None:
        """The most probable class name; None for an image that could not be decoded."""
        return self.top[0][1] if self.top else None

    @property
    def wnid(self) -> str | None:
        """The WordNet id of the most probable class."""
        return self.top[0][0] if self.top else None

    @property
    def probability(self) -> float | None:
        """The probability of the most probable class."""
        return self.top[0][2] if self.top else None

    def csv_row(self, top: int | None = None) -> list[str]:
        """The row ``python -m classify predict --imagenet`` writes (see :func:`csv_header`);
        ``top`` is the number of ranks of the CSV (default: as many as this prediction has).

        Examples
        --------
        >>> ImagenetPrediction("a.jpg", [("n02510455", "giant_panda", 0.98),
        ...                              ("n02509815", "lesser_panda", 0.01)]).csv_row()
        ['a.jpg', 'giant_panda', '0.980000', 'n02510455', 'lesser_panda', '0.010000', 'n02509815', '']
        >>> ImagenetPrediction("b.jpg", [], "empty file").csv_row(top=1)
        ['b.jpg', '', '', '', 'skipped: empty file']
        """
        top = len(self.top) if top is None else top
        if self.error is not None:
            return [self.path, *[""] * (3 * top), f"skipped: {self.error}"]
        cells = [cell for wnid, name, p in self.top[:top] for cell in (name, f"{p:.6f}", wnid)]
        return [self.path, *cells, *[""] * (3 * top - len(cells)), ""]


def csv_header(top: int = 5) -> list[str]:
    """The header of ``python -m classify predict --imagenet``'s CSV: the path, then for each
    rank k the class name, its probability and its WordNet id, then the reason an image was
    skipped.

    Examples
    --------
    >>> csv_header(2)
    ['path', 'class_1', 'probability_1', 'wnid_1', 'class_2', 'probability_2', 'wnid_2', 'error']
    """
    ranks = [f"{col}_{k}" for k in range(1, top + 1) for col in ("class", "probability", "wnid")]
    return ["path", *ranks, "error"]


def write_csv(predictions: Iterable[ImagenetPrediction], out: TextIO, top: int = 5) -> None:
    """Write ``predictions`` as ``python -m classify predict --imagenet`` does, row by row as
    they come.

    Examples
    --------
    >>> import sys
    >>> write_csv([ImagenetPrediction("a.jpg", [("n02510455", "giant_panda", 0.98)])], sys.stdout, top=1)
    path,class_1,probability_1,wnid_1,error
    a.jpg,giant_panda,0.980000,n02510455,
    """
    writer = csv.writer(out)
    writer.writerow(csv_header(top))
    for prediction in predictions:
        writer.writerow(prediction.csv_row(top))


def load_class_index(path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The 1,000 ImageNet classes as ``(wnid, name)``, by output index.

    Parameters
    ----------
    path : path, optional
        A JSON file laid out as Keras' ``imagenet_class_index.json``:
        ``{"0": ["n01440764", "tench"], ..., "999": [...]}``. Default: the copy shipped with
        this package.

    Raises
    ------
    PredictError
        A file that cannot be read or is not such an index (one line).

    Examples
    --------
    >>> index = load_class_index()
    >>> len(index), index[0], index[388]
    (1000, ('n01440764', 'tench'), ('n02510455', 'giant_panda'))
    """
    path = CLASS_INDEX_FILE if path is None else Path(path)
    what = f"{os.fspath(path)}: not an ImageNet class index"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PredictError(f"{os.fspath(path)}: no such class index file") from None
    except OSError as exc:
        raise PredictError(f"{os.fspath(path)}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictError(f"{what} (not JSON: {str(exc).splitlines()[0]})") from None
    expected = {str(i) for i in range(IMAGENET_CLASSES)}
    if not isinstance(data, dict) or set(data) != expected:
        raise PredictError(
            f'{what} (expected a JSON object with the keys "0" to "{IMAGENET_CLASSES - 1}", '
            'each ["wnid", "name"], as Keras\' imagenet_class_index.json)'
        )
    index = []
    for i in range(IMAGENET_CLASSES):
        entry = data[str(i)]
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(s, str) for s in entry)):
            raise PredictError(f'{what} (entry "{i}" is not ["wnid", "name"]: {json.dumps(entry)[:80]})')
        index.append((entry[0], entry[1]))
    return index


def _check_top(top: Any) -> None:
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= IMAGENET_CLASSES:
        raise SettingsError(
            f"{named('top')} must be a whole number from 1 to {IMAGENET_CLASSES}, got {top!r}"
        )


def decode_predictions(
    preds: Any, top: int = 5, class_index: str | os.PathLike | ClassIndex | None = None
) -> list[list[tuple[str, str, float]]]:
    """Keras' ``keras.applications.imagenet_utils.decode_predictions``, without its download.

    The same result, in the same order, ties included: per row, the indices
    ``pred.argsort()[-top:][::-1]``, then a stable sort by descending probability.

    Parameters
    ----------
    preds : array-like, shape (n, 1000)
        Class probabilities, one row per image.
    top : int
        How many classes per row, from 1 to 1,000.
    class_index : path or list of (str, str), optional
        A class index file (see :func:`load_class_index`), or the list it returns. Default:
        the one shipped with this package.

    Returns
    -------
    list of list of (str, str, float)
        Per row, ``(wnid, class name, probability)``, most probable first.

    Raises
    ------
    SettingsError
        ``preds`` not of shape (n, 1000), or ``top`` out of range.
    PredictError
        A class index file that cannot be used.

    Examples
    --------
    >>> import numpy as np
    >>> preds = np.full((1, 1000), 0.0001, dtype=np.float32)
    >>> preds[0, 388], preds[0, 387] = 0.8, 0.1
    >>> decode_predictions(preds, top=2)
    [[('n02510455', 'giant_panda', 0.800000011920929), ('n02509815', 'lesser_panda', 0.10000000149011612)]]
    """
    _check_top(top)
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != IMAGENET_CLASSES:
        raise SettingsError(
            f"decode_predictions expects class probabilities of shape (samples, {IMAGENET_CLASSES}), "
            f"got {preds.shape}"
        )
    index = class_index if isinstance(class_index, (list, tuple)) else load_class_index(class_index)
    results = []
    for pred in preds:
        # Keras' own steps, so that ties come out as they do there.
        top_indices = pred.argsort()[-top:][::-1]
        result = [(*index[i], float(pred[i])) for i in top_indices]
        result.sort(key=lambda x: x[2], reverse=True)
        results.append(result)
    return results


def load_classifier(backbone: str, weights: str | os.PathLike) -> Any:
    """The backbone with its top, loaded with ``weights`` (``imagenet`` or a weights file of
    the model with its top): an :class:`extract.backbones.LoadedBackbone` whose ``embed``
    gives the 1,000 class probabilities.

    Raises :class:`SettingsError` for an unknown backbone (or weights that make no sense with
    it) and :class:`PredictError` for weights that cannot be had or have no top.
    """
    from extract.backbones import BACKBONES, load_backbone
    from extract.errors import ExtractError
    from extract.errors import SettingsError as ExtractSettingsError
    from extract.tf_logs import start_keras

    if backbone not in BACKBONES:
        raise SettingsError(f"unknown {named('backbone')} {backbone!r}; choose from {', '.join(BACKBONES)}")
    weights = os.fspath(weights)
    if weights not in ("imagenet", "hed-bsds500") and not Path(weights).expanduser().is_file():
        raise PredictError(f"{weights}: no such weights file (give imagenet, or a weights file of "
                           f"{backbone} with its top)")
    start_keras()  # without TensorFlow's C++ start-up lines (a no-op once Keras has started)
    try:
        # Keras prints its download messages and bar on stdout, which may be the CSV's.
        with contextlib.redirect_stdout(sys.stderr):
            # The top's last layer: "predictions", or ConvNeXt's "<name>_head_dense".
            loaded = load_backbone(backbone, weights, layers=[BACKBONES[backbone].classifier_layer])
    except ExtractSettingsError as exc:
        raise SettingsError(str(exc)) from None
    except (ExtractError, ValueError) as exc:  # WeightsError: not there, no top, another backbone
        message = str(exc)
        if weights == "imagenet" and "; offline" in message:
            # extract's hint names hed-bsds500, which has no top.
            message = (f"{message.split('; offline')[0]}; offline, use --weights PATH to a weights "
                       f"file of {backbone} with its top (Keras' {BACKBONES[backbone].imagenet_top_file})")
        elif weights not in ("imagenet", "hed-bsds500") and _lacks_classifier(weights):
            message = (f"{weights}: has no top (the 1,000-class classifier): use the weights file "
                       f"with the top, e.g. {_top_file_hint(weights, BACKBONES[backbone])}")
        raise PredictError(message) from None
    if loaded.dim != IMAGENET_CLASSES:
        raise PredictError(
            f"{backbone} with weights {loaded.weights}: the classifier gives {loaded.dim} outputs, "
            f"not the {IMAGENET_CLASSES} ImageNet classes"
        )
    return loaded


def _lacks_classifier(path: str) -> bool:
    """True when ``path`` is an HDF5 weights file without any tensor of 1,000 outputs: the
    weights of a model without its top. Asked only once loading has failed, to say why."""
    import h5py

    found = []

    def visit(_name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.shape and obj.shape[-1] == IMAGENET_CLASSES:
            found.append(obj)

    try:
        with h5py.File(Path(path).expanduser(), "r") as f:
            f.visititems(visit)
    except (OSError, ValueError):  # not HDF5: say what loading said
        return False
    return not found


def _top_file_hint(path: str, backbone: Any) -> str:
    """The weights file with the top to suggest: ``X.weights.h5`` beside ``X_notop.weights.h5``
    when it is there, else the name of Keras' own file."""
    file = Path(path).expanduser()
    for tag in ("_notop", "_no_top", "-notop", "-no-top"):
        if tag in file.name:
            beside = file.with_name(file.name.replace(tag, "", 1))
            if beside.is_file():
                return beside.name
    return f"{backbone.imagenet_top_file} (Keras' ImageNet file), or --weights imagenet"


def _imagenet_predictions(
    loaded: Any, index: ClassIndex, files: list[str], *, batch_size: int, top: int, progress: bool
) -> Iterator[ImagenetPrediction]:
    from tqdm.auto import tqdm

    from extract.decoding import decoded_batches
    from extract.sources import ImageListing

    listing = ImageListing(Path(""), [], files, np.zeros(len(files), dtype=np.int32))
    with tqdm(total=len(files), unit="img", desc="imagenet", file=sys.stderr, disable=not progress) as bar:
        for batch in decoded_batches(listing, range(len(files)), batch_size, loaded.image_size, "nearest"):
            done: dict[int, ImagenetPrediction] = {
                i: ImagenetPrediction(files[i], [], reason) for i, reason in batch.failed
            }
            if batch.decoded:
                proba = loaded.embed(batch.images)
                for i, ranked in zip(batch.decoded, decode_predictions(proba, top, index), strict=True):
                    done[i] = ImagenetPrediction(files[i], ranked)
            yield from (done[i] for i in batch.indices)  # in the order given
            bar.update(len(batch.indices))


def iter_imagenet_predictions(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    backbone: str = "vgg16",
    weights: str | os.PathLike = "imagenet",
    top: int = 5,
    batch_size: int = 32,
    class_index: str | os.PathLike | None = None,
    progress: bool = True,
) -> Iterator[ImagenetPrediction]:
    """:func:`imagenet_predict`, one :class:`ImagenetPrediction` at a time as each batch is done.

    The settings, the class index, the inputs and the weights are checked at the call, before
    the first prediction is asked for; the arguments are :func:`imagenet_predict`'s.

    Examples
    --------
    >>> from classify import iter_imagenet_predictions
    >>> for p in iter_imagenet_predictions("photos/", backbone="mobilenetv2"):  # doctest: +SKIP
    ...     print(p.path, p.predicted, p.probability)
    """
    _check_top(top)
    check_count("batch_size", batch_size)
    index = load_class_index(class_index)
    files = image_files(inputs)
    loaded = load_classifier(backbone, weights)
    return _imagenet_predictions(loaded, index, files, batch_size=batch_size, top=top, progress=progress)


def imagenet_predict(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    backbone: str = "vgg16",
    weights: str | os.PathLike = "imagenet",
    top: int = 5,
    batch_size: int = 32,
    class_index: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[ImagenetPrediction]:
    """Classify images into the 1,000 ImageNet classes with a pretrained backbone as it is
    (its own top), as ``python -m classify predict --imagenet`` does.

    Each image is decoded and resized to the backbone's native size (224 for VGG16 and
    MobileNetV2; ``nearest``, as ``keras.utils.load_img``), given the backbone's own
    ``preprocess_input``, and the softmax output is decoded as Keras'
    ``decode_predictions`` does (:func:`decode_predictions`), from the class index shipped
    with this package: nothing is downloaded but ``weights="imagenet"`` itself.

    Parameters
    ----------
    inputs : path or sequence of paths
        Image files and folders (searched recursively for images).
    backbone : str
        A backbone of ``extract.backbones.BACKBONES`` (``vgg16``, ``mobilenetv2``, ...).
    weights : str or path
        ``"imagenet"`` (Keras' weights with the top, downloaded once into Keras' cache) or a
        weights file of the model *with* its top (a file without it is refused).
    top : int
        How many of the most probable classes each prediction lists (1 to 1,000).
    batch_size : int
        Images per backbone call.
    class_index : path, optional
        Another class index file laid out as Keras' ``imagenet_class_index.json``.
    progress : bool
        Show a progress bar (``tqdm.auto``: a widget in Jupyter, a line on a terminal's stderr).

    Returns
    -------
    list of ImagenetPrediction
        One per image, in the order found; ``.top`` holds ``(wnid, class, probability)``
        tuples; an image that cannot be decoded has ``error`` set and an empty ``top``.

    Raises
    ------
    PredictError
        No such input, no images, a class index that cannot be used, weights that cannot be
        had or have no top (the 1,000-class classifier).
    SettingsError
        An unknown backbone, ``top`` or ``batch_size`` out of range, weights that make no
        sense with the backbone.

    Examples
    --------
    >>> from pathlib import Path
    >>> from classify import imagenet_predict
    >>> W = "../shared/models/mobilenetv2_1.0_224_imagenet.weights.h5"
    >>> for p in imagenet_predict("../shared/datasets/animals/panda/", backbone="mobilenetv2",
    ...                           weights=W, progress=False):  # doctest: +SKIP
    ...     print(Path(p.path).name, p.predicted, round(p.probability, 4), p.top[1])
    panda_00001.jpg giant_panda 1.0 ('n02509815', 'lesser_panda', 6.07...e-06)
    """
    return list(iter_imagenet_predictions(inputs, backbone=backbone, weights=weights, top=top,
                                          batch_size=batch_size, class_index=class_index,
                                          progress=progress))
