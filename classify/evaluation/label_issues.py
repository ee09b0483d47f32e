"""Training images whose given label looks wrong: out-of-fold probabilities ranked by cleanlab.

Each training row is predicted by a copy of the chosen model fitted on the other folds (one
``cross_val_predict`` with the search's own folds and seed), so no row is scored by a model
that saw its label. A row is suspected when those probabilities prefer another class than its
label, or when cleanlab's ``find_label_issues`` flags it (its probabilities disagree with its
label beyond what its class's own confusion explains); the suspects are ranked by cleanlab's
label quality score (self-confidence: the probability of the given label), lowest first, and
say whether cleanlab flagged them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClassifyError


@dataclass(frozen=True)
class LabelIssue:
    """One suspected label error.

    Attributes
    ----------
    row : int
        The row in the feature file.
    path : str
        Its image, as the feature file records it.
    given, suggested : str
        The label it has, and the class the out-of-fold probabilities prefer.
    score : float
        cleanlab's label quality score in [0, 1]: lower is more suspect.
    flagged : bool
        Whether cleanlab's ``find_label_issues`` judges it a label error.
    """

    row: int
    path: str
    given: str
    suggested: str
    score: float
    flagged: bool

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "path": self.path, "given": self.given, "suggested": self.suggested,
                "score": self.score, "flagged": self.flagged}


def out_of_fold_probabilities(estimator: Any, X: np.ndarray, y: np.ndarray, *, folds: int, seed: int,
                              sample_weight: np.ndarray | None = None,
                              label_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's probabilities from a clone of ``estimator`` fitted on the other folds
    (stratified, shuffled by ``seed``, as the search's cross-validation), with the classes of
    the columns (those ``y`` has); ``label_names`` name a class too small for the folds.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = np.arange(12.0).reshape(6, 2), np.array([0, 0, 0, 1, 1, 1])
    >>> proba, classes = out_of_fold_probabilities(LogisticRegression(), X, y, folds=3, seed=0)
    >>> proba.shape, classes.tolist()
    ((6, 2), [0, 1])
    """
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_predict

    from ..search.grid import stratified_folds, weight_fit_params

    cv = stratified_folds(y, folds, seed, label_names)
    params = {} if sample_weight is None else weight_fit_params(estimator, sample_weight)
    proba = cross_val_predict(clone(estimator), X, y, cv=cv, method="predict_proba", params=params)
    return proba, np.unique(y)


def rank_label_issues(y: np.ndarray, proba: np.ndarray, classes: np.ndarray, rows: Sequence[int],
                      paths: Sequence[str] | None, label_names: Sequence[str]) -> list[LabelIssue]:
    """The suspected rows, most suspect first: those whose probabilities prefer another class,
    and those cleanlab flags.

    ``y`` holds the rows' labels (indices into ``label_names``), ``proba`` their out-of-fold
    probabilities with columns for ``classes``; ``rows`` and ``paths`` name them.

    Examples
    --------
    >>> y = np.array([0] * 10 + [1] * 10)
    >>> proba = np.where(np.eye(2)[y] > 0, 0.9, 0.1)
    >>> proba[3] = [0.05, 0.95]  # a 0 that looks like a 1
    >>> [(i.row, i.given, i.suggested, i.flagged) for i in rank_label_issues(
    ...     y, proba, np.array([0, 1]), range(20), None, ["a", "b"])]
    [(3, 'a', 'b', True)]
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    column = {int(c): k for k, c in enumerate(classes)}
    labels = np.array([column[int(label)] for label in y])
    scores = get_label_quality_scores(labels, proba)
    flagged = find_label_issues(labels, proba)
    preferred = np.argmax(proba, axis=1)
    suspects = np.flatnonzero(flagged | (preferred != labels))
    suspects = suspects[np.argsort(scores[suspects], kind="stable")]
    return [LabelIssue(int(rows[i]), paths[i] if paths is not None else f"row {rows[i]}",
                       label_names[int(y[i])], label_names[int(classes[preferred[i]])], float(scores[i]),
                       bool(flagged[i])) for i in suspects]


def write_label_issues(issues: Sequence[LabelIssue], path: str | os.PathLike) -> Path:
    """Write ``issues`` as CSV (path, row, given, suggested, score, flagged); a failure is one line.

    Examples
    --------
    >>> write_label_issues([LabelIssue(3, "a/1.jpg", "a", "b", 0.05, True)], "i.csv")  # doctest: +SKIP
    PosixPath('i.csv')
    """
    path = Path(path)
    try:
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["path", "row", "given", "suggested", "score", "flagged"])
            writer.writerows([i.path, i.row, i.given, i.suggested, f"{i.score:.6f}",
                              "yes" if i.flagged else "no"] for i in issues)
    except OSError as exc:
        raise ClassifyError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path
