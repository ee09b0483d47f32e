"""The split and the grid search of stage 2."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

from .errors import ClassifyError


class SplitError(ClassifyError, ValueError):
    """Labels that cannot be split as asked; the message is one line for the user."""


def class_name(label: int, label_names: Sequence[str] | None) -> str:
    """How errors name a class: ``'tulip'``, or its number in files without names."""
    if label_names is not None and 0 <= label < len(label_names):
        return repr(str(label_names[label]))
    return str(label)


def stratified_split(
    labels: np.ndarray,
    test_size: float = 0.25,
    seed: int = 42,
    label_names: Sequence[str] | None = None,
    *,
    allow_trailing_empty: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified train / test split, each sorted.

    The same labels, ``test_size`` and ``seed`` always give the same split, so runs of
    different models (or of the same model on another day) are scored on the same rows.

    With ``label_names``, errors name the class, and a named class without rows is refused too
    (an empty class folder, or one whose every image was skipped), except, with
    ``allow_trailing_empty``, the last classes of an unfinished file, which the extraction has
    not reached yet (rows are written in class order).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if label_names is not None:
        present = set(classes.tolist())
        last = int(classes.max()) if len(classes) else -1
        for label in range(len(label_names)):
            if label not in present and not (allow_trailing_empty and label > last):
                raise SplitError(
                    f"class {class_name(label, label_names)} has no rows; every class needs at "
                    "least 2 to appear in both the training and the test rows"
                )
    if len(classes) < 2:
        raise SplitError(f"only {len(classes)} class in the file; a classifier needs at least 2")
    if counts.min() < 2:
        smallest = int(classes[counts.argmin()])
        raise SplitError(
            f"class {class_name(smallest, label_names)} has {counts.min()} row; every class "
            "needs at least 2 to appear in both the training and the test rows"
        )
    try:
        train, test = train_test_split(
            np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
        )
    except ValueError as exc:
        raise SplitError(f"cannot split {len(labels)} rows with --test-size {test_size}: {exc}") from None
    return np.sort(train), np.sort(test)


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


def predict_rows(estimator: Any, X: np.ndarray, mirrored: np.ndarray | None = None) -> np.ndarray:
    """``estimator``'s classes for the rows ``X``; with ``mirrored`` (the same rows' mirrored
    features), test-time augmentation: the class of the mean of both rows' probabilities.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    >>> row, its_mirror = np.array([[0.2]]), np.array([[0.9]])
    >>> predict_rows(model, row).tolist(), predict_rows(model, row, its_mirror).tolist()
    ([0], [1])
    """
    if mirrored is None:
        return estimator.predict(X)
    proba = (estimator.predict_proba(X) + estimator.predict_proba(mirrored)) / 2
    return estimator.classes_[np.argmax(proba, axis=1)]


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


def mirrored_training(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``classify --augment`` trains on, given the file's training rows ``train``:
    ``image_ids`` (the file row of the image each one shows: ``train``, then ``train`` again)
    and ``mirrored`` (False for the first half, the images; True for the second, their
    mirrors). Test rows and their mirrors are never among them.

    Examples
    --------
    >>> ids, mirrored = mirrored_training(np.array([0, 2, 5]))
    >>> ids.tolist(), mirrored.tolist()
    ([0, 2, 5, 0, 2, 5], [False, False, False, True, True, True])
    """
    train = np.asarray(train)
    return np.concatenate([train, train]), np.repeat([False, True], len(train))


def mirrored_folds(cv: Any, y_train: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``cv``'s folds of the training images, for rows laid out as :func:`mirrored_training`
    lays them out (images, then their mirrors): each fold trains on its images and their
    mirrors and is scored on its held-out images only, never on a mirror, and no held-out
    image's mirror trains. The folds are the ones ``cv`` makes without mirrors.

    Examples
    --------
    >>> from sklearn.model_selection import KFold
    >>> [(fit.tolist(), score.tolist()) for fit, score in mirrored_folds(KFold(2), np.zeros(4))]
    [([2, 3, 6, 7], [0, 1]), ([0, 1, 4, 5], [2, 3])]
    """
    n = len(y_train)
    return [(np.concatenate([fit, fit + n]), score)
            for fit, score in cv.split(np.zeros((n, 1)), y_train)]


def run_search(
    name: str,
    estimator: BaseEstimator,
    grid: dict[str, list[Any]],
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    folds: int = 3,
    seed: int = 42,
    jobs: int | None = None,
    verbose: int = 0,
    row_space: bool = False,
    select: str = "accuracy",
    label_names: Sequence[str] | None = None,
    mirror: np.ndarray | None = None,
    augment: bool = False,
    tta: bool = False,
    c_path: bool = False,
) -> SearchResult:
    """Grid-search ``estimator`` with stratified k-fold CV on the training rows only, refit
    the best parameters on all training rows, and predict the test rows.

    ``mirror`` holds the features of each row's image mirrored left to right (row for row
    with ``X``). With ``augment`` the mirrors of the training rows train too, in every fold
    and in the final fit (:func:`mirrored_folds`); folds are still scored on images only, and
    an estimator whose ``fit`` takes ``image_ids`` and ``mirrored`` (the Keras models) is told
    which rows are mirrors, for its own validation slice. With ``tta`` each test image is
    scored by the mean of its and its mirror's probabilities (the folds' scores are not).

    With ``row_space`` (for L2-penalised linear models), when there are at least twice as many
    features as training rows, the search runs on the coordinates of the rows in the span of the centred
    training rows (a full, unwhitened PCA fitted once on them, labels unused).

    ``select`` is the cross-validated score that picks the best parameters: ``"accuracy"``,
    or ``"log_loss"`` (for models that output probabilities; accuracy is reported as well). For a model
    whose loss sees the weights only through ``X @ w + b`` and whose penalty is ``||w||²``, the
    optimal ``w`` lies in that span, and the PCA is an isometry on it, so every fit, on every
    fold, has the same optimum as on the raw features: 1,020 coordinates instead of 25,088,
    computed once for all folds and candidates. The returned estimator is the PCA followed
    by the fitted model, so it takes raw features.

    With ``c_path`` as well (the registry's :attr:`~classify.models.ModelSpec.c_path`), an
    L2 ``LogisticRegression`` whose grid varies only ``C`` is searched by warm-started
    regularisation paths on the Gram matrix of the training rows instead
    (:func:`classify.path.path_search`): the same folds, scores, choice and optimum, and a
    ``LogisticRegression`` on the raw features returned (``scripts/bench_classify.py``
    measures both). Without it (or for another grid, or narrower features), ``GridSearchCV``
    on the PCA coordinates, as before.

    ``label_names`` name the class in the error for a class with fewer than 2 training rows.
    """
    y_train = y[train]
    # Classes present in the training rows only: a class without rows (the unreached last
    # classes of an unfinished file) has no fold to be in.
    classes, counts = np.unique(y_train, return_counts=True)
    folds = min(folds, int(counts.min()))
    if folds < 2:
        smallest = int(classes[counts.argmin()])
        raise SplitError(
            f"class {class_name(smallest, label_names)} has fewer than 2 training rows; "
            "cross-validation needs 2 per class"
        )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if select not in ("accuracy", "log_loss"):
        raise ValueError(f"select must be 'accuracy' or 'log_loss', got {select!r}")
    if (augment or tta) and (mirror is None or np.shape(mirror) != np.shape(X)):
        raise ValueError("augment and tta need mirror, the mirrored features of every row of X")
    scoring = {"accuracy": "accuracy"}
    if select == "log_loss":
        scoring["log_loss"] = "neg_log_loss"
    fit_params: dict[str, np.ndarray] = {}
    if augment:
        y_fit = np.concatenate([y_train, y_train])
        splits: Any = mirrored_folds(cv, y_train)
        from sklearn.utils.validation import has_fit_parameter

        if has_fit_parameter(estimator, "mirrored"):
            image_ids, is_mirror = mirrored_training(train)
            fit_params = {"image_ids": image_ids, "mirrored": is_mirror}
    else:
        y_fit, splits = y_train, cv
    if c_path and row_space and X.shape[1] >= 2 * len(y_fit):
        from .path import path_eligible, path_search

        if path_eligible(estimator, grid):
            if not augment:
                splits = list(cv.split(np.zeros((len(y_train), 1)), y_train))
            return path_search(name, estimator, grid, X, y, train, test, splits, select=select,
                               mirror=mirror, augment=augment, tta=tta)
    if augment:
        X_fit = np.concatenate([X[train], mirror[train]])
    else:
        X_fit = X[train]
    X_test = X[test]
    M_test = mirror[test] if tta else None
    search = GridSearchCV(
        estimator, grid, cv=splits, n_jobs=jobs, scoring=scoring, refit=select, verbose=verbose
    )
    started = time.perf_counter()
    projection = None
    # Worth it only when it shrinks the problem several times (25,088 -> 1,020 for VGG16).
    if row_space and X.shape[1] >= 2 * len(X_fit):
        from sklearn.decomposition import PCA

        projection = PCA(svd_solver="full").fit(X_fit)
        X_fit, X_test = projection.transform(X_fit), projection.transform(X_test)
        M_test = projection.transform(M_test) if tta else None
    search.fit(X_fit, y_fit, **fit_params)
    seconds = time.perf_counter() - started
    best = search.best_estimator_
    test_pred = predict_rows(best, X_test, M_test)
    if projection is not None:
        from sklearn.pipeline import Pipeline

        best = Pipeline([("row_space", projection), ("model", best)])
    results = search.cv_results_
    cv_rows = [
        cv_row(results["params"][i], results["mean_test_accuracy"][i], results["std_test_accuracy"][i],
               -results["mean_test_log_loss"][i] if select == "log_loss" else None,
               results["mean_fit_time"][i])
        for i in range(len(results["params"]))
    ]
    chosen = search.best_index_
    return SearchResult(
        model=name,
        estimator=best,
        best_params=dict(search.best_params_),
        best_cv_score=cv_rows[chosen]["mean_test_score"],
        cv_results=cv_rows,
        search_seconds=seconds,
        test_pred=test_pred,
        dim=X_fit.shape[1],
        projected=projection is not None,
        selected_by=select,
        best_cv_log_loss=cv_rows[chosen].get("mean_log_loss"),
        refit_seconds=float(search.refit_time_),
        augment=augment,
        tta=tta,
        train_rows=len(X_fit),
    )
