"""The ``--json`` document of one model: everything needed to compare it with another run."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .registry import Output, register_output


def library_versions(model: str) -> dict[str, str]:
    """The versions of Python, scikit-learn and the libraries that fit registry model ``model``.

    Examples
    --------
    >>> sorted(library_versions("xgb"))
    ['python', 'scikit-learn', 'xgboost']
    """
    import importlib

    import sklearn

    from ..classifiers import get_classifier

    versions = {"python": platform.python_version(), "scikit-learn": sklearn.__version__}
    for library in get_classifier(model).libraries:
        try:
            versions[library] = getattr(importlib.import_module(library), "__version__", "unknown")
        except ImportError:  # another Keras backend than TensorFlow, say
            versions[library] = "not installed"
    return versions


def json_document(result: Any) -> dict[str, Any]:
    """The document of ``result`` (a :class:`~classify.evaluation.results.ModelResult`):
    metrics, best parameters, timings, provenance, settings, and the test rows."""
    search, evaluation = result.search, result.evaluation
    return {
        "model": search.model,
        "features": os.fspath(result.features_path),
        "provenance": result.provenance,
        "settings": result.settings,
        "best_params": search.best_params,
        "best_cv_score": search.best_cv_score,
        "selected_by": search.selected_by,
        "best_cv_log_loss": search.best_cv_log_loss,
        "cv_results": search.cv_results,
        "search_seconds": search.search_seconds,
        "refit_seconds": search.refit_seconds,
        "search_dim": search.dim,
        "augment": search.augment,
        "tta": search.tta,
        "train_rows": search.train_rows,
        "accuracy": evaluation.accuracy,
        "report": evaluation.per_class,
        "label_names": evaluation.label_names,
        "test_indices": [int(i) for i in evaluation.test_indices],
        "test_labels": [int(t) for t in evaluation.y_test],
        "test_predictions": [int(p) for p in evaluation.predictions],
        "test_paths": result.test_paths,
        # Rounded: the HTML report ranks and shows them; 1e-6 is far below what it shows.
        "test_probabilities": None if evaluation.probabilities is None
        else np.round(evaluation.probabilities, 6).tolist(),
        "probability_classes": [int(c) for c in evaluation.classes],
        "intervals": result.intervals().to_json(),
        "label_issues": None if result.found_label_issues is None
        else [issue.to_json() for issue in result.found_label_issues],
        "versions": library_versions(search.model),
    }


class JsonDocument(Output):
    """``json=`` / ``--json``: each model's :func:`json_document`, one file per model."""

    name = "json"

    def write(self, result: Any, destination: Path, several: bool) -> Path:
        path = self.per_model(destination, result.name, several)
        result.to_json(path)
        return path


register_output(JsonDocument())
