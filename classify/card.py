"""The model card saved beside a model: what it was trained on, and how well it did."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .search import SearchResult

#: Feature-file attributes that ``predict`` must reproduce to extract comparable features.
#: ``weights_path`` (where extraction read a weights file; absent in older files and for named
#: weights) lets ``predict`` find that file again without ``--weights``.
EXTRACTION_KEYS = (
    "backbone", "weights", "weights_sha256", "weights_path", "layer", "pooling", "image_size",
    "interpolation", "preprocessing", "precision", "dtype", "with_top",
)


def card_path(model_path: str | os.PathLike) -> Path:
    """``M.joblib`` → ``M.card.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".card.json")


def model_card(
    result: SearchResult,
    y_test: np.ndarray,
    label_names: list[str],
    *,
    features_path: str | os.PathLike,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """A small JSON-ready description of a saved model."""
    from .models import MODELS
    from .report import library_versions

    # The labels of predict_proba's columns: all classes, but for an unfinished file whose
    # last classes had no rows yet.
    labels = getattr(result.estimator, "classes_", np.arange(len(label_names)))
    return {
        "model": result.model,
        "file_format": MODELS[result.model].file_format,
        "classes": list(label_names),
        "labels": [int(label) for label in labels],
        "best_params": result.best_params,
        "test_accuracy": float(accuracy_score(y_test, result.test_pred)),
        "test_macro_f1": float(f1_score(y_test, result.test_pred, average="macro", zero_division=0)),
        "test_images": len(y_test),
        # How it was trained and scored: predict scores each image once, without its mirror.
        "augment": result.augment,
        "tta": result.tta,
        "features": os.fspath(features_path),
        "extraction": {k: provenance.get(k) for k in EXTRACTION_KEYS},
        "provenance": provenance,
        "versions": library_versions(result.model),
    }
