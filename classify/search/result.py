"""What one search gives back (:class:`SearchResult`), and the pieces every search shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator


@dataclass
class SearchResult:
    """What one search found, and how the best model did on the test rows."""

    model: str
    estimator: BaseEstimator
    best_params: dict[str, Any]
    best_cv_score: float
    cv_results: list[dict[str, Any]]
    search_seconds: float
    test_pred: np.ndarray
    dim: int = 0  # features the search saw: fewer than the file's after a row-space projection
    projected: bool = False  # searched in the span of the training rows
    selected_by: str = "accuracy"  # the cross-validated score that chose best_params
    best_cv_log_loss: float | None = None  # when selected by log-loss
    refit_seconds: float = 0.0  # the best parameters' fit on all training rows
    augment: bool = False  # the training rows' mirrors trained too
    tta: bool = False  # test rows scored by the mean of the image's and its mirror's probabilities
    train_rows: int = 0  # rows the final fit saw, mirrors included
    test_proba: np.ndarray | None = None  # the test rows' probabilities (columns: estimator.classes_)


def predict_rows(estimator: Any, X: np.ndarray, mirrored: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """``estimator``'s classes and probabilities for the rows ``X`` (None for a model without
    ``predict_proba``); with ``mirrored`` (the same rows' mirrored features), test-time
    augmentation: the mean of both rows' probabilities, and its most probable class.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    >>> row, its_mirror = np.array([[0.2]]), np.array([[0.9]])
    >>> predict_rows(model, row)[0].tolist(), predict_rows(model, row, its_mirror)[0].tolist()
    ([0], [1])
    >>> predict_rows(model, row)[1].shape
    (1, 2)
    """
    if mirrored is None:
        proba = estimator.predict_proba(X) if hasattr(estimator, "predict_proba") else None
        return estimator.predict(X), proba
    proba = (estimator.predict_proba(X) + estimator.predict_proba(mirrored)) / 2
    return estimator.classes_[np.argmax(proba, axis=1)], proba


def cv_row(params: dict[str, Any], mean_accuracy: float, std_accuracy: float,
           mean_log_loss: float | None, fit_seconds: float) -> dict[str, Any]:
    """One candidate's row of :attr:`SearchResult.cv_results`: its parameters, the mean and
    standard deviation of its folds' accuracies, their mean log-loss (when the search selects
    by it, else None: no such key), and its mean fit time."""
    return {
        "params": params,
        "mean_test_score": float(mean_accuracy),
        "std_test_score": float(std_accuracy),
        **({"mean_log_loss": float(mean_log_loss)} if mean_log_loss is not None else {}),
        "mean_fit_time": float(fit_seconds),
    }
