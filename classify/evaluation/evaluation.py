"""One model's evaluation on the test rows, computed once: :class:`Evaluation`.

Every output (the text report, the ``--json`` document, the model card, the plots, side-by-side
tables) reads its numbers from here instead of computing them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, repr=False)
class Evaluation:
    """Per-class metrics, confusion matrix, test rows and probabilities of one model.

    Attributes
    ----------
    label_names : list of str
        The classes; labels are indices into it.
    test_indices : ndarray of int
        The test rows of the feature file, sorted.
    y_test : ndarray of int
        Their true labels.
    predictions : ndarray of int
        The model's label for each test row.
    probabilities : ndarray of float or None
        ``(n_test, len(classes))`` probabilities (the mean of the image's and its mirror's with
        test-time augmentation), columns in the order of ``classes``; None for a model without
        ``predict_proba``.
    classes : ndarray of int
        The labels of the probabilities' columns (the labels the model saw).
    per_class : dict
        scikit-learn's ``classification_report(..., output_dict=True)`` over every class.
    accuracy, macro_f1 : float
        On the test rows.
    confusion : ndarray of int
        ``(n_classes, n_classes)`` counts, row = true class, column = predicted, in
        ``label_names`` order.

    Examples
    --------
    >>> e = Evaluation.of(np.array([0, 1, 1]), np.array([0, 1, 0]), np.arange(3), ["a", "b"])
    >>> round(e.accuracy, 4), e.confusion.tolist(), round(e.per_class["b"]["recall"], 2)
    (0.6667, [[1, 0], [1, 1]], 0.5)
    """

    label_names: list[str]
    test_indices: np.ndarray
    y_test: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: np.ndarray
    per_class: dict[str, Any]
    accuracy: float
    macro_f1: float
    confusion: np.ndarray

    @classmethod
    def of(cls, y_test: np.ndarray, predictions: np.ndarray, test_indices: np.ndarray,
           label_names: Sequence[str], probabilities: np.ndarray | None = None,
           classes: np.ndarray | None = None) -> Evaluation:
        """The evaluation of ``predictions`` against the true labels ``y_test``."""
        from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

        labels = np.arange(len(label_names))
        per_class = classification_report(y_test, predictions, labels=labels, target_names=list(label_names),
                                          output_dict=True, zero_division=0)
        return cls(
            label_names=list(label_names), test_indices=np.asarray(test_indices), y_test=np.asarray(y_test),
            predictions=np.asarray(predictions), probabilities=probabilities,
            classes=labels if classes is None else np.asarray(classes), per_class=per_class,
            accuracy=float(accuracy_score(y_test, predictions)),
            macro_f1=float(f1_score(y_test, predictions, average="macro", zero_division=0)),
            confusion=confusion_matrix(y_test, predictions, labels=labels),
        )

    def __repr__(self) -> str:
        return f"Evaluation(accuracy={self.accuracy:.4f}, test_images={len(self.y_test)})"
