"""One deployable Keras model from a saved classifier: :func:`export_model`
(``python -m classify export``).

The exported model takes a batch of RGB images at the backbone's input size (uint8, or float
in [0, 255]) and returns the probabilities of the classes: the backbone's preprocessing as
Keras layers, the backbone with its weights up to the trained layer, its pooling (or
flattening), then the classifier: the trained head as it is, or a logistic regression as a
softmax Dense layer whose weights have the row-space projection folded in. It holds only
Keras' own layers, so plain ``keras.models.load_model`` reads it, in a process that has never
imported featurebank. Its class names, and how it was made, are in the same file (a
``featurebank.json`` member of the ``.keras`` zip, see :func:`read_metadata`).

Random forests and boosted trees have no Keras layer and are refused.

A model trained on fused files (:mod:`classify.fusion`) is exported as one model too: the
images go through each part's preprocessing and backbone, each part's features are multiplied
by its recorded scale (a ``Rescaling`` layer: the same float32 multiply) and concatenated in
order, then the classifier. Its backbones must take one input size (one input); else it is
refused.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classifiers import CLASSIFIERS
from ..errors import ClassifyError, SettingsError, first_line
from ..outputs.card import card_parts

#: The member of the ``.keras`` zip that records the class names and the model's making.
METADATA_MEMBER = "featurebank.json"

# keras.applications.imagenet_utils.preprocess_input's three modes as one affine map per
# channel: out[..., c] = x[..., ORDER[c]] * SCALE[c] + OFFSET[c] (values from its source).
_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREPROCESS_MODES: dict[str, tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]] = {
    # RGB to BGR, minus the ImageNet mean (BGR), no scaling.
    "caffe": ((2, 1, 0), (1.0, 1.0, 1.0), tuple(-m for m in _MEAN_BGR)),
    # x / 127.5 - 1.
    "tf": ((0, 1, 2), (1 / 127.5,) * 3, (-1.0,) * 3),
    # x / 255, minus the ImageNet mean, over its std.
    "torch": ((0, 1, 2), tuple(1 / (255 * s) for s in _TORCH_STD),
              tuple(-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD, strict=True))),
}


class ExportError(ClassifyError):
    """A model that cannot be exported, or an output that cannot be written; one line."""


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_model` wrote.

    Attributes
    ----------
    path : Path
        The ``.keras`` file.
    classes : list of str
        The class of each output column, in order.
    input_shape : tuple of int
        ``(height, width, 3)`` of the images it takes.
    metadata : dict
        What the file records besides the model (:func:`read_metadata`).
    """

    path: Path
    classes: list[str]
    input_shape: tuple[int, int, int]
    metadata: dict[str, Any]

    def line(self) -> str:
        """The summary ``python -m classify export`` prints."""
        m = self.metadata
        h, w, _ = self.input_shape
        return (f"wrote {self.path}: {m['backbone']} ({m['layer']}, {m['pooling']}) + {m['model']} -> "
                f"{len(self.classes)} class probabilities; input (n, {h}, {w}, 3) RGB in [0, 255]")


def preprocess_mode(module: str | None) -> str:
    """The ``imagenet_utils`` mode of ``keras.applications.<module>.preprocess_input``
    (``caffe``, ``tf``, ``torch``), or ``none`` where it returns its input unchanged (the
    model normalises in its own layers), as the backbone registry records it.

    Examples
    --------
    >>> preprocess_mode("vgg16"), preprocess_mode("mobilenet_v2"), preprocess_mode("efficientnet")
    ('caffe', 'tf', 'none')
    """
    from extract.backbones import MODULE_PREPROCESS_MODES

    if module is None:
        return "none"
    if module not in MODULE_PREPROCESS_MODES:
        raise ValueError(f"no keras.applications module {module!r} in the backbone registry")
    return MODULE_PREPROCESS_MODES[module]


def preprocess_layers(mode: str, prefix: str = "") -> list[Any]:
    """``preprocess_input``'s mode ``mode`` as frozen Keras layers, from RGB in [0, 255] (any
    dtype) to the backbone's input; none for ``none``.

    Scale and offset are a ``Rescaling`` layer (per channel for ``torch``). Caffe's RGB-to-BGR
    swap is a ``Dense(3)`` on the channel axis whose kernel is the permutation: no Keras
    layer reorders channels, and a kernel of ones and zeros moves each value exactly (on a
    GPU's TF32 matmuls too, for inputs that are whole numbers up to 255).

    ``prefix`` starts the layers' names (a fused model's parts each have their own).

    Examples
    --------
    >>> [layer.name for layer in preprocess_layers("caffe")]  # doctest: +SKIP
    ['preprocess_rgb_to_bgr', 'preprocess_caffe']
    """
    import keras

    if mode == "none":
        return []
    order, scale, offset = PREPROCESS_MODES[mode]
    layers = []
    if order != (0, 1, 2):
        swap = keras.layers.Dense(3, use_bias=False, name=f"{prefix}preprocess_rgb_to_bgr", trainable=False,
                                  dtype="float32")
        swap.build((None, None, None, 3))
        swap.set_weights([np.eye(3, dtype=np.float32)[:, list(order)]])
        layers.append(swap)
    same = len(set(scale)) == 1 and len(set(offset)) == 1
    layers.append(keras.layers.Rescaling(
        scale[0] if same else list(scale), offset[0] if same else list(offset),
        name=f"{prefix}preprocess_{mode}", dtype="float32",
    ))
    return layers


def exported_model(model_path: str | os.PathLike, *, weights: str | os.PathLike | None = None
                   ) -> tuple[Any, dict[str, Any]]:
    """The Keras model :func:`export_model` writes, and its metadata, without writing them.

    Examples
    --------
    >>> network, metadata = exported_model("f17.head.keras")  # doctest: +SKIP
    >>> network.predict(images).shape, metadata["classes"][:2]  # doctest: +SKIP
    ((8, 17), ['bluebell', 'buttercup'])
    """
    from .predict import load_model, read_card

    card = read_card(model_path)
    model = card.get("model")
    entry = CLASSIFIERS.get(model)
    if entry is None or not entry.exports:
        exportable = ", ".join(name for name, known in CLASSIFIERS.items() if known.exports)
        what = f"{model} ({entry.kind})" if entry is not None else f"{model!r}"
        raise ExportError(f"{model_path}: a model of kind {what} has no Keras layers to export; "
                          f"export works for {exportable}")
    estimator, card, backbones = load_model(model_path, weights)  # starts Keras quietly
    import keras

    parts = card_parts(card)
    classes = [card["classes"][int(label)] for label in estimator.classes_]
    size = check_fusable([loaded.image_size for loaded in backbones],
                         [resize_of(ext) for ext, _ in parts], model_path)
    images = keras.Input((size, size, 3), name="images")
    if len(parts) == 1:
        features = part_features(images, backbones[0], parts[0][0])
    else:  # each part scaled as training scaled it (one float32 multiply), joined in order
        blocks = [keras.layers.Rescaling(scale, name=f"fusion_scale_{i}", dtype="float32")(
                  part_features(images, loaded, ext, prefix=f"part{i}_", flat=True))
                  for i, (loaded, (ext, scale)) in enumerate(zip(backbones, parts, strict=True))]
        features = keras.layers.Concatenate(name="fusion_concat", dtype="float32")(blocks)
    probabilities = entry.exported_probabilities(estimator, features)
    probabilities = keras.layers.Activation("linear", name="probabilities", dtype="float32")(probabilities)
    name = "_".join(ext["backbone"] for ext, _ in parts)
    network = keras.Model(images, probabilities, name=f"featurebank_{name}_{model}")
    network.trainable = False
    return network, export_metadata(card, backbones, classes, size, model_path)


def export_metadata(card: dict[str, Any], backbones: list[Any], classes: list[str], size: int,
                    model_path: str | os.PathLike) -> dict[str, Any]:
    """What the exported file records besides the model (:func:`read_metadata`); a fused model's
    backbone, layer, pooling and preprocessing are its parts' joined by ``" + "``, and
    ``fusion`` lists each part's, with its scale."""
    parts = card_parts(card)

    def described(loaded: Any, ext: dict[str, Any]) -> dict[str, Any]:
        return {"backbone": ext["backbone"], "layer": loaded.layer, "pooling": ext["pooling"],
                "preprocessing": loaded.backbone.preprocess_mode,
                # Where files were on this machine means nothing where the model is deployed.
                "extraction": {**ext, "weights_path": ext.get("weights_path")
                               and Path(ext["weights_path"]).name}}

    each = [described(loaded, ext) for loaded, (ext, _) in zip(backbones, parts, strict=True)]
    resize = list(dict.fromkeys(resize_of(ext) for ext, _ in parts))  # one: check_fusable
    metadata = {
        "classes": classes,
        "model": card.get("model"),
        "input": {"shape": [size, size, 3], "channels": "RGB", "range": [0, 255],
                  "dtype": "uint8 or float32", "resize": " + ".join(resize)},
        **{key: " + ".join(str(part[key]) for part in each)
           for key in ("backbone", "layer", "pooling", "preprocessing")},
        "extraction": each[0]["extraction"] if len(each) == 1 else None,
        "best_params": card.get("best_params"),
        "test_accuracy": card.get("test_accuracy"),
        "source": Path(model_path).name,
    }
    if len(parts) > 1:
        metadata["fusion"] = [{**part, "scale": scale} for part, (_, scale) in zip(each, parts, strict=True)]
    return metadata


def resize_of(extraction: dict[str, Any]) -> str:
    """The resize filter a part's images got (files that predate the setting: ``nearest``).

    Examples
    --------
    >>> resize_of({"interpolation": "bilinear"}), resize_of({})
    ('bilinear', 'nearest')
    """
    return str(extraction.get("interpolation") or "nearest")


def check_fusable(sizes: list[int], resizes: list[str], model_path: str | os.PathLike) -> int:
    """The one input size of a model's backbones (each part's image size and resize filter);
    a fused model whose parts take different sizes, or resize with different filters, is
    refused in one line: an exported model has one input, which a caller resizes one way.

    Examples
    --------
    >>> check_fusable([224, 224], ["nearest", "nearest"], "m.joblib")
    224
    """
    if len(set(sizes)) > 1:
        raise ExportError(f"{model_path}: its fused backbones take images of "
                          f"{', '.join(map(str, sorted(set(sizes))))} pixels, and an exported model has "
                          "one input; use classify predict, which resizes for each, or fuse files "
                          "extracted at one --image-size")
    if len(set(resizes)) > 1:
        raise ExportError(f"{model_path}: its fused files were resized with different filters "
                          f"({', '.join(dict.fromkeys(resizes))}), and an exported model's input is "
                          "resized one way; use classify predict, which resizes for each, or fuse files "
                          "extracted with one --interpolation")
    return sizes[0]


def part_features(images: Any, loaded: Any, ext: dict[str, Any], prefix: str = "", flat: bool = False) -> Any:
    """One backbone's features of ``images`` as the classifier saw them: preprocessing layers,
    the backbone, its storage rounding (float16), and with ``flat`` maps flattened to rows."""
    import keras

    x = images
    for layer in preprocess_layers(loaded.backbone.preprocess_mode, prefix):
        x = layer(x)
    network = loaded.model
    if prefix:  # each part under a name of its own: a layer's name is unique in a Keras model
        outputs = network.outputs[0] if len(network.outputs) == 1 else network.outputs
        network = keras.Model(network.inputs, outputs, name=f"{prefix}backbone")
    features = network(x)
    if (ext.get("dtype") or "float32") == "float16":
        # The classifier was trained on features stored as float16: round them as storing did.
        features = keras.layers.Activation("linear", dtype="float16", name=f"{prefix}stored_as_float16")(
            features)
    if flat and len(features.shape) > 2:  # a fused row holds each part's maps flattened
        features = keras.layers.Flatten(name=f"{prefix}flatten", dtype="float32")(features)
    return features


def export_model(model_path: str | os.PathLike, output: str | os.PathLike, *,
                 weights: str | os.PathLike | None = None) -> ExportedModel:
    """Write a saved classifier and its backbone as one Keras model, from images to class
    probabilities.

    Parameters
    ----------
    model_path : path
        A model saved by ``python -m classify --save`` (``head`` or ``logreg``), with its model
        card beside it.
    output : path
        The ``.keras`` file to write (replaced whole: a file that is there stays intact until
        the new one is complete).
    weights : path, optional
        The backbone's weights file, as for :func:`classify.predict`, when it is no longer where
        extraction read it.

    Returns
    -------
    ExportedModel
        The file, its classes and input shape.

    Raises
    ------
    ExportError
        A random forest or XGBoost model (no Keras layers), or an output that cannot be written.
    PredictError
        A model, card or weights file that cannot be used (as for ``predict``).
    SettingsError
        An output whose name does not end in ``.keras``.

    Examples
    --------
    >>> from classify import export_model
    >>> export_model("f17.head.keras", "f17_classifier.keras").classes[:2]  # doctest: +SKIP
    ['bluebell', 'buttercup']

    Then, anywhere Keras is installed (no featurebank):

    >>> import keras, zipfile, json  # doctest: +SKIP
    >>> model = keras.models.load_model("f17_classifier.keras")  # doctest: +SKIP
    >>> archive = zipfile.ZipFile("f17_classifier.keras")  # doctest: +SKIP
    >>> names = json.loads(archive.read("featurebank.json"))["classes"]  # doctest: +SKIP
    >>> probabilities = model.predict(images_uint8_224x224)  # doctest: +SKIP
    """
    output = Path(output)
    if output.suffix != ".keras":
        raise SettingsError(f"--output {output} must end in .keras, the Keras model file that "
                            "keras.models.load_model reads")
    try:
        network, metadata = exported_model(model_path, weights=weights)
    except ClassifyError:
        raise
    except (ValueError, AttributeError, TypeError) as exc:  # a model Keras or the fold cannot take
        raise ExportError(f"{model_path}: cannot build the Keras model ({first_line(exc)})") from None
    # Written beside the output and renamed over it once complete, so an interrupted export
    # leaves no half-written model under the output's name (Keras writes in place).
    partial = output.with_name(f".{output.stem}.partial.keras")
    try:
        network.save(partial)
        loads_back(partial, output)
        with zipfile.ZipFile(partial, "a") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, default=str) + "\n")
        os.replace(partial, output)
    except OSError as exc:
        raise ExportError(f"{output}: cannot write ({exc.strerror or exc})") from None
    except (ValueError, TypeError) as exc:  # Keras cannot serialise a layer of the backbone
        raise ExportError(f"{output}: Keras cannot save the model ({first_line(exc)})") from None
    finally:
        partial.unlink(missing_ok=True)
    size = metadata["input"]["shape"]
    return ExportedModel(output, metadata["classes"], (size[0], size[1], 3), metadata)


def loads_back(written: Path, output: Path) -> None:
    """Refuse (one line) a written model that Keras cannot load again: a file that exports
    but does not load is of no use where it is deployed. Some layers save a config their own
    constructor refuses (keras_hub's ViT embedding, cut out of its backbone at a named block).
    The caller removes ``written``."""
    import keras

    try:
        keras.saving.load_model(written, compile=False)
    except Exception as exc:  # Keras raises TypeError, ValueError or its own errors from a config
        raise ExportError(f"{output}: the exported model does not load back ({first_line(exc)}); "
                          "export one extracted from the backbone's default layer, or use classify "
                          "predict") from None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The class names and making of a model written by :func:`export_model` (the zip's
    ``featurebank.json``; ``json.loads(zipfile.ZipFile(path).read("featurebank.json"))`` does the
    same without featurebank).

    Examples
    --------
    >>> read_metadata("f17_classifier.keras")["classes"][:2]  # doctest: +SKIP
    ['bluebell', 'buttercup']
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(METADATA_MEMBER))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not a model written by classify export ({exc})") from None
