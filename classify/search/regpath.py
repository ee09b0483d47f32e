"""Stage 2's logistic-regression search as warm-started regularisation paths in the span of
the training rows: the search ``run_search`` runs for a registry entry with ``c_path``.

It finds what ``GridSearchCV`` over ``C`` finds on the PCA coordinates of the training rows
(``run_search(..., c_path=False)``, the path of other models): the same folds, the same scores
per fold and ``C``, the same choice (mean over folds, first best in grid order), and the same
optimum, solved to :data:`PATH_TOL`, ten times tighter than the estimator's. What differs:

* one Gram matrix of the training rows, in float32 column chunks, no copy of the rows
  (:func:`classify.search.rowspace.centred_gram`); each fold's coordinates are the pivoted Cholesky
  factor of its rows' block of it (:func:`classify.search.rowspace.factor`; a basis of the fold's
  own span, without PCA's copies of the matrix and its ``d x n`` basis), and the rows it
  scores get theirs from their inner products with the fold's;
* for each fold, ``C`` in ascending order, each fit started from the previous solution; the
  final fit on all training rows started from the folds' mean at the chosen ``C``;
* Newton's method with preconditioned conjugate gradients (:meth:`_Multinomial.fit`): a
  handful of Newton steps per ``C``, each a few dozen Hessian products that cost what a
  gradient costs, where L-BFGS needs hundreds of gradients per ``C``;
* float32 matrix products for float32 features (the solver's state is float64);
* the final model maps back to the raw features: a plain ``LogisticRegression`` with
  ``coef_`` of the feature file's width, so saving, ``predict`` and ``export`` see what they
  see for a model fitted on raw features, and no projection runs at prediction time.

The objective is scikit-learn's (mean multinomial log-loss + ``||W||² / (2 C n)``, intercept
not penalised; a sigmoid for two classes). Own code rather than ``LogisticRegression``'s
solvers: its ``lbfgs`` (with ``warm_start``) needs hundreds of gradients per ``C`` (the
comparison in :meth:`_Multinomial.fit`), and its ``newton-cg`` has no preconditioner, which on
coordinates whose curvature spans decades is what keeps the conjugate gradients short.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rowspace import RowFactor, Source, centred_gram, compute_dtype, factor, rank_tolerance

#: Stopping tolerance (largest gradient entry of the mean loss, in orthonormal coordinates of
#: the span, as GridSearchCV's fits on the PCA coordinates see it): 10x tighter than
#: ``LogisticRegression``'s default 1e-4, so that what the search compares is the optimum, not
#: where a solver stopped.
PATH_TOL = 1e-5

#: Most Newton steps per fit (a bound far above what fits take; docs/logreg-path.md).
PATH_MAX_ITER = 100

#: Most conjugate-gradient iterations per Newton step (far above what steps take; docs/logreg-path.md).
CG_MAX_ITER = 250


def path_eligible(estimator: Any, grid: dict[str, list[Any]]) -> bool:
    """True when ``estimator`` is an L2-penalised ``LogisticRegression`` (lbfgs, with
    intercept, no class weights) and ``grid`` varies only ``C``: what :func:`path_search`
    reproduces exactly. Anything else keeps ``GridSearchCV``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> path_eligible(LogisticRegression(), {"C": [0.1, 1.0]})
    True
    >>> path_eligible(LogisticRegression(), {"tol": [1e-3]})
    False
    """
    from sklearn.linear_model import LogisticRegression

    if type(estimator) is not LogisticRegression or set(grid) != {"C"}:
        return False
    params = estimator.get_params()
    return (params["fit_intercept"] and params["class_weight"] is None and params["solver"] == "lbfgs"
            and params["penalty"] in ("deprecated", "l2") and params["l1_ratio"] in (0, 0.0, None)
            and not params["dual"] and all(float(c) > 0 for c in grid["C"]))


def _logits(z: np.ndarray, w: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """All ``k`` logits (float64) of rows ``z`` under weights ``w`` (products in ``z``'s
    precision) and intercepts ``b``; the first is 0 for a binary model."""
    out = (z @ w.astype(z.dtype).T).astype(np.float64) + b
    return np.hstack([np.zeros_like(out), out]) if k == 2 else out


class _Multinomial:
    """scikit-learn's logistic-regression objective on coordinates ``z`` (float32, ``n x r``)
    and labels ``y`` (``0 .. k-1``): multinomial for ``k > 2``, binomial (one weight row, a
    sigmoid) for ``k == 2``, as ``LogisticRegression`` fits them; minimised by Newton's method
    with conjugate gradients (:meth:`fit`)."""

    def __init__(self, z: np.ndarray, y: np.ndarray, k: int):
        self.z, self.y, self.k = z, y, k
        self.rows = 1 if k == 2 else k
        self.shape = (self.rows, z.shape[1])
        self.l2 = 0.0
        self._squares: np.ndarray | None = None

    def size(self) -> int:
        return self.rows * (self.shape[1] + 1)

    def split(self, wb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights (``(k or 1) x r``) and intercepts of a flat solution."""
        cut = self.rows * self.shape[1]
        return wb[:cut].reshape(self.shape), wb[cut:]

    def _own(self, per_class: np.ndarray) -> np.ndarray:
        """The columns of an ``n x k`` array that belong to weight rows (the second of two)."""
        return per_class[:, 1:] if self.k == 2 else per_class

    def _weights_side(self, per_row: np.ndarray, w: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
        """``per_rowᵀ z`` (float32 products) plus the penalty's ``l2 w``, then the intercepts'
        ``per_row`` sums, flat."""
        z = self.z if z is None else z
        side = (per_row.T.astype(z.dtype) @ z).astype(np.float64) + self.l2 * w
        return np.concatenate([side.ravel(), per_row.sum(axis=0)])

    def loss_grad(self, wb: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """The loss, its gradient and the probabilities (``n x k``) at ``wb``."""
        w, b = self.split(wb)
        n = len(self.y)
        proba = _logits(self.z, w, b, self.k)
        proba -= proba.max(axis=1, keepdims=True)
        np.exp(proba, out=proba)
        total = proba.sum(axis=1)
        picked = proba[np.arange(n), self.y]
        penalty = 0.5 * self.l2 * float(np.dot(w.ravel(), w.ravel()))
        loss = float(np.mean(np.log(total) - np.log(picked))) + penalty
        proba /= total[:, None]
        residual = proba.copy()
        residual[np.arange(n), self.y] -= 1.0
        residual /= n
        return loss, self._weights_side(self._own(residual), w), proba

    def hessian_times(self, proba: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian at probabilities ``proba`` times ``v``: two float32 products, as a
        gradient costs."""
        vw, vb = self.split(v)
        moved = _logits(self.z, vw, vb, self.k)
        moved = proba * (moved - np.sum(proba * moved, axis=1, keepdims=True))
        moved /= len(self.y)
        return self._weights_side(self._own(moved), vw)

    def hessian_diagonal(self, proba: np.ndarray) -> np.ndarray:
        """The Hessian's diagonal at ``proba`` (the preconditioner): ``Σ p(1 - p) z²`` per class
        and column, one product with the squared coordinates."""
        if self._squares is None:
            self._squares = np.square(self.z)
        curvature = self._own(proba * (1.0 - proba)) / len(self.y)
        w = np.zeros(self.shape)
        diagonal = self._weights_side(curvature, w, self._squares)
        cut = self.rows * self.shape[1]
        diagonal[:cut] += self.l2
        return np.maximum(diagonal, 1e-12)  # an intercept of a class with no row has none

    def fit(self, C: float, start: np.ndarray | None, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
        """The optimum at ``C`` from ``start`` (zeros when None), and the Newton steps taken:
        once the largest gradient entry is at most ``tol``, or when float rounding stops the
        loss from falling (two steps in a row), or after ``max_iter`` steps.

        Each step solves the Newton system by conjugate gradients preconditioned with the
        Hessian's diagonal, to a relative residual of ``min(0.5, √|g|)`` (superlinear
        convergence), or until its residual, the next gradient, is under ``tol / 2``; then a
        backtracking (Armijo) line search. A Newton step's few dozen Hessian products cost what
        as many gradients do, where L-BFGS needs hundreds of gradients per ``C`` to get as low
        (the comparison: docs/logreg-path.md).
        """
        self.l2 = 1.0 / (C * len(self.y))
        x = np.zeros(self.size()) if start is None else np.array(start, dtype=np.float64)
        loss, grad, proba = self.loss_grad(x)
        # The float32 products' rounding can hold the gradient above ``tol`` for ever, each
        # step lowering the loss by less than the products' precision: two such steps in a
        # row end the fit, as close as their rounding allows.
        precision = float(np.finfo(self.z.dtype).eps)
        steps = flat = 0
        while np.max(np.abs(grad), initial=0.0) > tol and steps < max_iter and flat < 2:
            precondition = 1.0 / self.hessian_diagonal(proba)
            norm = float(np.linalg.norm(grad))
            enough = min(0.5, np.sqrt(norm)) * norm
            direction = np.zeros_like(x)
            residual = -grad
            preconditioned = residual * precondition
            search = preconditioned.copy()
            product = float(residual @ preconditioned)
            for _ in range(CG_MAX_ITER):
                curved = self.hessian_times(proba, search)
                curvature = float(search @ curved)
                if curvature <= 0:  # flat to rounding: the direction so far is the step
                    break
                length = product / curvature
                direction += length * search
                residual -= length * curved
                if np.linalg.norm(residual) <= enough or np.max(np.abs(residual)) <= tol / 2:
                    break
                preconditioned = residual * precondition
                before, product = product, float(residual @ preconditioned)
                search = preconditioned + (product / before) * search
            slope = float(grad @ direction)
            if not slope < 0:
                break  # no descent left within rounding
            step = 1.0
            for _ in range(50):
                new = x + step * direction
                new_loss, new_grad, new_proba = self.loss_grad(new)
                if new_loss <= loss + 1e-4 * step * slope:
                    break
                step *= 0.5
            else:
                break  # no decrease within float precision: as close as it gets
            flat = flat + 1 if loss - new_loss <= precision * abs(loss) else 0
            x, loss, grad, proba = new, new_loss, new_grad, new_proba
            steps += 1
        if self.k > 2:
            # Shifting every intercept alike changes no probability; the preconditioned steps
            # drift along it, scikit-learn's gradient steps do not: its intercepts sum to 0.
            cut = self.rows * self.shape[1]
            x[cut:] -= x[cut:].mean()
        return x, steps


def logistic_path(z: np.ndarray, y: np.ndarray, k: int, Cs: Sequence[float], *, tol: float = PATH_TOL,
                  max_iter: int = PATH_MAX_ITER) -> list[tuple[np.ndarray, np.ndarray, int, float]]:
    """Fits at each ``C`` of ``Cs`` (ascending), each started from the one before: for each,
    ``(W, b, steps, seconds)``, ``W`` float64 ``(k or 1) x r``.

    Examples
    --------
    >>> z = np.array([[-2.0], [-1.0], [1.0], [2.0]], dtype=np.float32)
    >>> [(w.round(3).tolist(), steps > 0)
    ...  for w, b, steps, s in logistic_path(z, np.array([0, 0, 1, 1]), 2, [1.0])]
    [([[1.007]], True)]
    """
    problem = _Multinomial(np.ascontiguousarray(z), np.asarray(y), k)
    out, start = [], None
    for C in Cs:
        began = time.perf_counter()
        start, steps = problem.fit(float(C), start, tol, max_iter)
        w, b = problem.split(start)
        out.append((w.copy(), b.copy(), steps, time.perf_counter() - began))
    return out


def _scores(z: np.ndarray, y: np.ndarray, k: int, w: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Accuracy and log-loss of the fit ``(w, b)`` on rows ``z`` with labels ``y`` (``k``
    classes); the probabilities clipped to ``[eps, 1 - eps]`` of the features' precision, as
    ``log_loss`` clips those ``predict_proba`` gives on them."""
    logits = _logits(z, w, b, k)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y))
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    proba /= proba.sum(axis=1, keepdims=True)
    eps = float(np.finfo(z.dtype).eps)
    picked = np.clip(proba[np.arange(len(y)), y], eps, 1 - eps)
    return accuracy, float(-np.mean(np.log(picked)))


@dataclass
class _Fold:
    accuracy: list[float]
    log_loss: list[float]
    seconds: list[float]
    # At each C: the training rows the fit is a combination of, their coefficients, intercepts.
    duals: list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _fold_path(gram: np.ndarray, fit: np.ndarray, score: np.ndarray, labels: np.ndarray, k: int,
               Cs: Sequence[float], tol: float, max_iter: int, dtype: type) -> _Fold:
    """The path on one fold: fit on rows ``fit`` of the Gram ``gram``, scored on rows
    ``score``. The coordinates are the pivoted Cholesky factor of the fold's block of the
    Gram: its rows' own span, where the fold's optimum lies; the scored rows' coordinates
    are those of their projections on it, all that a weight there sees."""
    part = factor(gram[np.ix_(fit, fit)], tolerance=rank_tolerance(dtype))
    z_fit = part.coords(dtype)
    z_score = part.coordinates(gram[np.ix_(score, fit[part.basis_rows])], dtype)
    fold = _Fold([], [], [], [])
    for w, b, _, seconds in logistic_path(z_fit, labels[fit], k, Cs, tol=tol, max_iter=max_iter):
        accuracy, loss = _scores(z_score, labels[score], k, w, b)
        fold.accuracy.append(accuracy)
        fold.log_loss.append(loss)
        fold.seconds.append(seconds)
        rows, mixing = part.dual(w)
        fold.duals.append((fit[rows], mixing, b))
    return fold


def _predict_chunks(estimator: Any, X: np.ndarray, rows: np.ndarray, mirror: np.ndarray | None,
                    tta: bool, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``estimator``'s predictions and probabilities for ``X[rows]`` (with ``tta``, from the
    mean of its and ``mirror[rows]``'s probabilities), a chunk of rows at a time: no copy of
    all test rows."""
    from .result import predict_rows

    labels, proba = [], []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        chunk_labels, chunk_proba = predict_rows(estimator, X[part], mirror[part] if tta else None)
        labels.append(chunk_labels)
        proba.append(chunk_proba)
    if not labels:
        return (np.empty(0, dtype=np.asarray(estimator.classes_).dtype),
                np.empty((0, len(estimator.classes_))))
    return np.concatenate(labels), np.concatenate(proba)


def _refit(best: Any, gram: np.ndarray, mean: np.ndarray, folds: list[_Fold], at: int,
           sources: list[Source], encoded: np.ndarray, classes: np.ndarray, dtype: type, tol: float,
           max_iter: int) -> tuple[Any, int]:
    """``best`` (an unfitted ``LogisticRegression`` at the chosen ``C``, the ``at``-th of the
    ascending path) fitted on all training rows and mapped back to the raw features, and the
    dimension of the training rows' span."""
    whole: RowFactor = factor(gram, tolerance=rank_tolerance(dtype))
    # All training rows at the chosen C, started from the mean of the folds' fits there (as
    # LogisticRegressionCV starts its refit): near the optimum already. The folds' fits are
    # in their own coordinates; their dual weights on the training rows are common ground.
    dual = np.zeros((len(gram), folds[0].duals[at][1].shape[1]))
    for fold in folds:
        rows, mixing, _ = fold.duals[at]
        dual[rows] += mixing
    dual /= len(folds)
    intercept = np.mean([f.duals[at][2] for f in folds], axis=0)
    start = whole.coordinates((gram[whole.basis_rows] @ dual).T, np.float64)
    del dual
    problem = _Multinomial(whole.coords(dtype), encoded, len(classes))
    fitted, steps = problem.fit(float(best.C), np.concatenate([start.ravel(), intercept]), tol, max_iter)
    w, b = problem.split(fitted)
    del problem
    coef = whole.raw_weights(w, sources, mean)
    best.classes_ = classes
    best.coef_ = coef
    best.intercept_ = b - coef @ mean
    best.n_features_in_ = coef.shape[1]
    best.n_iter_ = np.array([steps], dtype=np.int32)
    return best, whole.rank


def path_search(
    name: str,
    estimator: Any,
    grid: dict[str, list[Any]],
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    *,
    select: str = "log_loss",
    mirror: np.ndarray | None = None,
    augment: bool = False,
    tta: bool = False,
    tol: float | None = None,
    max_iter: int | None = None,
) -> Any:
    """The search :func:`classify.search.grid.run_search` runs for ``c_path`` models: the same
    :class:`~classify.search.result.SearchResult` as ``GridSearchCV`` over ``grid["C"]`` in the
    span of the training rows, by warm-started paths (see the module's docstring).

    Each fit stops at ``tol`` (default: :data:`PATH_TOL`, or the estimator's ``tol`` where
    tighter), when rounding stops its progress, or after ``max_iter`` Newton steps (default:
    :data:`PATH_MAX_ITER`).

    ``splits`` are the folds as indices into the training rows (into training rows then their
    mirrors with ``augment``, :func:`classify.search.grid.mirrored_folds`); the folds run one after
    another, each product on every core (BLAS's threads): two folds at once in threads were
    slower than one after the other (docs/performance.md).

    Examples
    --------
    >>> result = path_search("logreg", LogisticRegression(), {"C": [0.1, 1.0]}, X, y, train, test,
    ...                      list(StratifiedKFold(3).split(X[train], y[train])))  # doctest: +SKIP
    >>> result.best_params, result.estimator.coef_.shape  # doctest: +SKIP
    ({'C': 1.0}, (17, 62720))
    """
    from sklearn.base import clone

    from .result import SearchResult, cv_row

    began = time.perf_counter()
    params = estimator.get_params()
    tol = min(PATH_TOL, float(params["tol"])) if tol is None else tol
    # Not the estimator's max_iter: that counts L-BFGS iterations, a hundred of which are
    # fewer than one Newton step's work.
    max_iter = PATH_MAX_ITER if max_iter is None else max_iter
    y_train = y[train]
    sources: list[Source] = [(X, train)] + ([(mirror, train)] if augment else [])
    labels_all = np.concatenate([y_train, y_train]) if augment else y_train
    classes, encoded = np.unique(labels_all, return_inverse=True)
    k = len(classes)
    values = [float(c) for c in grid["C"]]
    order = np.argsort(values, kind="stable")  # the path runs up C; results go back in grid order
    ascending = [values[i] for i in order]

    gram, mean = centred_gram(sources)
    dtype = compute_dtype(sources)  # float32 products for float32 features
    folds = [_fold_path(gram, np.asarray(fit), np.asarray(score), encoded, k, ascending, tol, max_iter, dtype)
             for fit, score in splits]
    back = np.argsort(order)  # ascending position of each grid entry
    accuracy = np.array([[f.accuracy[j] for j in back] for f in folds])
    log_loss = np.array([[f.log_loss[j] for j in back] for f in folds])
    seconds = np.array([[f.seconds[j] for j in back] for f in folds])
    # GridSearchCV's choice: the best mean over folds, the first in grid order among equals.
    chosen = int(np.argmax(accuracy.mean(axis=0)) if select == "accuracy"
                 else np.argmin(log_loss.mean(axis=0)))

    refit_began = time.perf_counter()
    best, dim = _refit(clone(estimator).set_params(C=grid["C"][chosen]), gram, mean, folds,
                       int(np.searchsorted(ascending, values[chosen])), sources, encoded, classes, dtype,
                       tol, max_iter)
    del gram, folds
    finished = time.perf_counter()
    test_pred, test_proba = _predict_chunks(best, X, np.asarray(test), mirror, tta)
    cv_rows = [
        cv_row({"C": grid["C"][i]}, accuracy[:, i].mean(), accuracy[:, i].std(),
               log_loss[:, i].mean() if select == "log_loss" else None, seconds[:, i].mean())
        for i in range(len(values))
    ]
    return SearchResult(
        model=name,
        estimator=best,
        best_params={"C": grid["C"][chosen]},
        best_cv_score=cv_rows[chosen]["mean_test_score"],
        cv_results=cv_rows,
        search_seconds=finished - began,
        test_pred=test_pred,
        dim=dim,
        projected=True,
        selected_by=select,
        best_cv_log_loss=cv_rows[chosen].get("mean_log_loss"),
        refit_seconds=finished - refit_began,
        augment=augment,
        tta=tta,
        train_rows=len(labels_all),
        test_proba=test_proba,
    )
