"""The model card saved beside a model: what it was trained on, and how well it did."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

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
    :class:`~classify.evaluation.results.ModelResult`): what ``predict`` and ``export`` read."""
    from ..classifiers import get_classifier

    search, evaluation = result.search, result.evaluation
    # The labels of predict_proba's columns: all classes, but for an unfinished file whose
    # last classes had no rows yet.
    labels = getattr(search.estimator, "classes_", np.arange(len(result.label_names)))
    return {
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
