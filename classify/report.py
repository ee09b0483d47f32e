"""Reports of a search: text for people, JSON for machines."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report

from .search import SearchResult


def text_report(result: SearchResult, y_test: np.ndarray, label_names: list[str]) -> str:
    """Best parameters, search time and scikit-learn's per-class report on the test rows."""
    report = classification_report(
        y_test,
        result.test_pred,
        labels=np.arange(len(label_names)),
        target_names=label_names,
        digits=4,
        zero_division=0,
    )
    lines = [
        f"model: {result.model}",
        f"best parameters: {json.dumps(result.best_params, default=str)} "
        f"(cross-validated accuracy {result.best_cv_score:.4f}"
        + (
            f", log-loss {result.best_cv_log_loss:.4f}; chosen by log-loss)"
            if result.selected_by == "log_loss" else ")"
        ),
        f"search time: {result.search_seconds:.1f} s for {len(result.cv_results)} candidates"
        + (f" (in the {result.dim}-dim span of the training rows)" if result.projected else "")
        + f"; final fit on all training rows {result.refit_seconds:.1f} s"
        + (f" ({result.train_rows // 2} images and their mirrors)" if result.augment else ""),
        f"test accuracy: {accuracy_score(y_test, result.test_pred):.4f} on {len(y_test)} images"
        + (" (mean probabilities of each image and its mirror)" if result.tta else ""),
        "",
        report,
    ]
    return "\n".join(lines)


def per_class_report(result: SearchResult, y_test: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """scikit-learn's ``classification_report`` of the test rows, as a dict."""
    return classification_report(
        y_test,
        result.test_pred,
        labels=np.arange(len(label_names)),
        target_names=label_names,
        output_dict=True,
        zero_division=0,
    )


def library_versions(model: str) -> dict[str, str]:
    """The versions of Python, scikit-learn and the libraries that fit registry model ``model``.

    Examples
    --------
    >>> sorted(library_versions("xgb"))
    ['python', 'scikit-learn', 'xgboost']
    """
    import importlib

    import sklearn

    from .models import MODELS

    versions = {"python": platform.python_version(), "scikit-learn": sklearn.__version__}
    for library in MODELS[model].libraries:
        try:
            versions[library] = getattr(importlib.import_module(library), "__version__", "unknown")
        except ImportError:  # another Keras backend than TensorFlow, say
            versions[library] = "not installed"
    return versions


def json_report(
    result: SearchResult,
    y_test: np.ndarray,
    test_indices: np.ndarray,
    label_names: list[str],
    *,
    features_path: str,
    provenance: dict[str, Any],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to compare this run with another on the same rows."""
    per_class = per_class_report(result, y_test, label_names)
    return {
        "model": result.model,
        "features": os.fspath(features_path),
        "provenance": provenance,
        "settings": settings,
        "best_params": result.best_params,
        "best_cv_score": result.best_cv_score,
        "selected_by": result.selected_by,
        "best_cv_log_loss": result.best_cv_log_loss,
        "cv_results": result.cv_results,
        "search_seconds": result.search_seconds,
        "refit_seconds": result.refit_seconds,
        "search_dim": result.dim,
        "augment": result.augment,
        "tta": result.tta,
        "train_rows": result.train_rows,
        "accuracy": float(accuracy_score(y_test, result.test_pred)),
        "report": per_class,
        "label_names": label_names,
        "test_indices": [int(i) for i in test_indices],
        "test_labels": [int(t) for t in y_test],
        "test_predictions": [int(p) for p in result.test_pred],
        "versions": library_versions(result.model),
    }
