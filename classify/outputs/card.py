"""The model card saved beside a model: what it was trained on, and how well it did."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..fusion import is_fused
from ..inference.rebuild import EXTRACTION_KEYS
from .document import library_versions


def card_path(model_path: str | os.PathLike) -> Path:
    """``M.joblib`` → ``M.card.json``.

    Examples
    --------
    >>> card_path("f17.head.keras")
    PosixPath('f17.head.card.json')
    """
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".card.json")


def model_card(result: Any) -> dict[str, Any]:
    """A small JSON-ready description of the saved model of ``result`` (a
    :class:`~classify.evaluation.results.ModelResult`): what ``predict`` and ``export`` read.

    A fused run's card has ``extraction`` None and ``fusion``: each part's extraction
    settings, width and scale (:func:`fusion_parts`)."""
    from ..classifiers import get_classifier

    search, evaluation = result.search, result.evaluation
    # The labels of predict_proba's columns: all classes, but for an unfinished file whose
    # last classes had no rows yet.
    labels = getattr(search.estimator, "classes_", np.arange(len(result.label_names)))
    card = {
        "model": search.model,
        "file_format": get_classifier(search.model).file_format,
        "classes": list(result.label_names),
        "labels": [int(label) for label in labels],
        "best_params": search.best_params,
        "test_accuracy": evaluation.accuracy,
        "test_macro_f1": evaluation.macro_f1,
        "test_images": len(evaluation.y_test),
        # Which rows trained and which were reported on: the file's own split, or a random one.
        "split": result.settings.get("split"),
        "use_val": result.settings.get("use_val", False),
        "class_weight": result.settings.get("class_weight"),
        # How it was trained and scored: predict scores each image once, without its mirror.
        "augment": search.augment,
        "tta": search.tta,
        "features": os.fspath(result.features_path),
        "extraction": {k: result.provenance.get(k) for k in EXTRACTION_KEYS},
        "provenance": result.provenance,
        "versions": library_versions(search.model),
    }
    if is_fused(result.provenance):
        # One backbone per part, in the order of the fused row's blocks: predict runs each.
        card["extraction"] = None
        card["fusion"] = fusion_parts(result.provenance)
    return card


def fusion_parts(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """A fused run's parts as its model card records them: each file, its extraction settings,
    the width of its block and the factor its features are multiplied by before joining.

    Examples
    --------
    >>> fusion_parts({"fused": [{"backbone": "vgg16"}], "features": ["a.hdf5"], "dims": [512],
    ...               "scales": [0.03]})[0]["scale"]
    0.03
    """
    return [{"features": path, "extraction": {k: attrs.get(k) for k in EXTRACTION_KEYS},
             "dim": int(dim), "scale": float(scale)}
            for attrs, path, dim, scale in zip(provenance["fused"], provenance["features"],
                                               provenance["dims"], provenance["scales"], strict=True)]


def card_parts(card: dict[str, Any]) -> list[tuple[dict[str, Any], float | None]]:
    """Each backbone a saved model's features come from, as ``(extraction settings, scale)`` in
    the order of the row's blocks: one with scale None (used as extracted), or a fused model's.

    Examples
    --------
    >>> card_parts({"extraction": {"backbone": "vgg16"}})
    [({'backbone': 'vgg16'}, None)]
    >>> card_parts({"extraction": None, "fusion": [{"extraction": {"backbone": "mobilenet"},
    ...                                                "scale": 0.03}]})
    [({'backbone': 'mobilenet'}, 0.03)]
    """
    if card.get("fusion"):
        return [(part["extraction"], float(part["scale"])) for part in card["fusion"]]
    return [(card["extraction"], None)]
