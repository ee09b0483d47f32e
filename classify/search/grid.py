"""The cross-validated grid search of stage 2 on the training rows, with mirrors where asked."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, PredefinedSplit, StratifiedKFold

from .result import SearchResult, cv_row, predict_rows
from .split import SplitError, class_name


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
    val_fold: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
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
    features as training rows, the search runs on the coordinates of the rows in the span of
    the centred training rows (a full, unwhitened PCA fitted once on them, labels unused).

    ``select`` is the cross-validated score that picks the best parameters: ``"accuracy"``,
    or ``"log_loss"`` (for models that output probabilities; accuracy is reported as well). For a
    model whose loss sees the weights only through ``X @ w + b`` and whose penalty is ``||w||²``, the
    optimal ``w`` lies in that span, and the PCA is an isometry on it, so every fit, on every
    fold, has the same optimum as on the raw features: 1,020 coordinates instead of 25,088,
    computed once for all folds and candidates. The returned estimator is the PCA followed
    by the fitted model, so it takes raw features.

    With ``c_path`` as well (the registry entry's
    :attr:`~classify.classifiers.Classifier.regularisation_path`), an L2 ``LogisticRegression``
    whose grid varies only ``C`` is searched by warm-started regularisation paths on the Gram
    matrix of the training rows instead (:func:`classify.search.regpath.path_search`): the same
    folds, scores, choice and optimum, and a ``LogisticRegression`` on the raw features
    returned (``scripts/bench_classify.py`` measures both). Without it (or for another grid,
    or narrower features), ``GridSearchCV`` on the PCA coordinates (:func:`grid_search`).

    ``val_fold`` (positions in ``train``) replaces the cross-validation folds by one fold:
    those rows score, the others fit (a dataset's own val split); the refit is on all of
    ``train``.

    ``sample_weight`` (one per training row) weighs the rows in every fit, folds and refit
    (a mirror as its image); the regularisation path, which has no weights, is then left out.

    ``label_names`` name the class in the error for a class with fewer than 2 training rows.
    """
    if select not in ("accuracy", "log_loss"):
        raise ValueError(f"select must be 'accuracy' or 'log_loss', got {select!r}")
    if (augment or tta) and (mirror is None or np.shape(mirror) != np.shape(X)):
        raise ValueError("augment and tta need mirror, the mirrored features of every row of X")
    y_train = y[train]
    if val_fold is None:
        cv: Any = stratified_folds(y_train, folds, seed, label_names)
    else:
        cv = given_fold(y_train, val_fold)
    if augment:
        y_fit = np.concatenate([y_train, y_train])
        splits: Any = mirrored_folds(cv, y_train)
    else:
        y_fit, splits = y_train, list(cv.split(np.zeros((len(y_train), 1)), y_train))
    if c_path and sample_weight is None and row_space and X.shape[1] >= 2 * len(y_fit):
        from .regpath import path_eligible, path_search

        if path_eligible(estimator, grid):
            return path_search(name, estimator, grid, X, y, train, test, splits, select=select,
                               mirror=mirror, augment=augment, tta=tta)
    X_fit = np.concatenate([X[train], mirror[train]]) if augment else X[train]
    fit_params = mirror_fit_params(estimator, train) if augment else {}
    if sample_weight is not None:
        weights = np.concatenate([sample_weight] * (2 if augment else 1))  # a mirror as its image
        fit_params.update(weight_fit_params(estimator, weights))
    return grid_search(name, estimator, grid, X_fit, y_fit, X[test], mirror[test] if tta else None,
                       splits, jobs=jobs, verbose=verbose, select=select, row_space=row_space,
                       fit_params=fit_params, augment=augment)


def given_fold(y_train: np.ndarray, val_fold: np.ndarray) -> PredefinedSplit:
    """One fold: the rows at ``val_fold`` score, the others fit.

    Examples
    --------
    >>> [(a.tolist(), b.tolist()) for a, b in given_fold(np.zeros(4), np.array([1, 3])).split()]
    [([0, 2], [1, 3])]
    """
    test_fold = np.full(len(y_train), -1)
    test_fold[np.asarray(val_fold)] = 0
    return PredefinedSplit(test_fold)


def stratified_folds(y_train: np.ndarray, folds: int, seed: int,
                     label_names: Sequence[str] | None = None) -> StratifiedKFold:
    """Shuffled, stratified folds of the training labels, no more than the smallest class has
    rows; a class with fewer than 2 training rows is refused in one line.

    Examples
    --------
    >>> stratified_folds(np.array([0, 0, 1, 1, 1]), 3, 0).get_n_splits()
    2
    """
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
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def _weighted_step(estimator: BaseEstimator) -> tuple[str, BaseEstimator]:
    """The ``fit`` parameter prefix and the estimator that takes the weights: a ``Pipeline``'s
    last step (scikit-learn names its steps' fit parameters ``<step>__<param>``)."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        step, last = estimator.steps[-1]
        prefix, inner = _weighted_step(last)
        return f"{step}__{prefix}", inner
    return "", estimator


def takes_sample_weight(estimator: BaseEstimator) -> bool:
    """Whether ``estimator``'s ``fit`` (a ``Pipeline``'s: its last step's) takes ``sample_weight``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> takes_sample_weight(make_pipeline(StandardScaler(), LogisticRegression()))
    True
    >>> takes_sample_weight(KNeighborsClassifier())
    False
    """
    from sklearn.utils.validation import has_fit_parameter

    return has_fit_parameter(_weighted_step(estimator)[1], "sample_weight")


def weight_fit_params(estimator: BaseEstimator, sample_weight: np.ndarray) -> dict[str, np.ndarray]:
    """``fit``'s keyword for one weight per row: ``sample_weight``, or for a ``Pipeline``
    ``<last step>__sample_weight``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> list(weight_fit_params(make_pipeline(StandardScaler(), LogisticRegression()), np.ones(3)))
    ['logisticregression__sample_weight']
    """
    prefix, _ = _weighted_step(estimator)
    return {f"{prefix}sample_weight": sample_weight}


def mirror_fit_params(estimator: BaseEstimator, train: np.ndarray) -> dict[str, np.ndarray]:
    """``fit``'s ``image_ids`` and ``mirrored`` for an estimator that takes them (the Keras
    models, for their own validation slice); nothing for the others."""
    from sklearn.utils.validation import has_fit_parameter

    if not has_fit_parameter(estimator, "mirrored"):
        return {}
    image_ids, is_mirror = mirrored_training(train)
    return {"image_ids": image_ids, "mirrored": is_mirror}


def grid_search(name: str, estimator: BaseEstimator, grid: dict[str, list[Any]], X_fit: np.ndarray,
                y_fit: np.ndarray, X_test: np.ndarray, M_test: np.ndarray | None, splits: Any, *,
                jobs: int | None, verbose: int, select: str, row_space: bool,
                fit_params: dict[str, np.ndarray], augment: bool) -> SearchResult:
    """``GridSearchCV`` over ``splits`` of the rows ``X_fit`` (in the span of the training rows
    with ``row_space``, when that shrinks them), refit, and the test rows predicted (``M_test``:
    their mirrors, for test-time augmentation)."""
    scoring = {"accuracy": "accuracy", **({"log_loss": "neg_log_loss"} if select == "log_loss" else {})}
    search = GridSearchCV(estimator, grid, cv=splits, n_jobs=jobs, scoring=scoring, refit=select,
                          verbose=verbose)
    started = time.perf_counter()
    projection = None
    # Worth it only when it shrinks the problem several times (25,088 -> 1,020 for VGG16).
    if row_space and X_fit.shape[1] >= 2 * len(X_fit):
        from sklearn.decomposition import PCA

        projection = PCA(svd_solver="full").fit(X_fit)
        X_fit, X_test = projection.transform(X_fit), projection.transform(X_test)
        M_test = projection.transform(M_test) if M_test is not None else None
    search.fit(X_fit, y_fit, **fit_params)
    seconds = time.perf_counter() - started
    best = search.best_estimator_
    test_pred, test_proba = predict_rows(best, X_test, M_test)
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
        model=name, estimator=best, best_params=dict(search.best_params_),
        best_cv_score=cv_rows[chosen]["mean_test_score"], cv_results=cv_rows, search_seconds=seconds,
        test_pred=test_pred, dim=X_fit.shape[1], projected=projection is not None, selected_by=select,
        best_cv_log_loss=cv_rows[chosen].get("mean_log_loss"), refit_seconds=float(search.refit_time_),
        augment=augment, tta=M_test is not None, train_rows=len(X_fit), test_proba=test_proba,
    )
