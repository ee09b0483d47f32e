"""The logistic-regression search as warm-started paths on the Gram matrix (classify.search.regpath)
finds what today's GridSearchCV on the PCA coordinates finds: the same C, the same scores,
the same test predictions, and a model on the raw features that predicts them.

Both searches stop near the same optimum, each where its gradient is small enough; they agree
to what those tolerances allow, and no closer. The reference is that optimum itself, solved by
Newton's method to float64 precision on the same PCA coordinates (:class:`Problem`); at first
order a fit whose gradient is ``g`` lies ``H⁺g`` from it (``H`` the Hessian), which bounds how
far any logit difference can move (``|dᵀH⁺g| ≤ ‖H⁺d‖·‖g‖``, Cauchy-Schwarz), hence the
probabilities (``|Δp_c| ≤ p_c(1 - p_c)·R·e^R`` for a move ``R`` of every logit difference), the
log-loss (``≤ (1 - p_y)·R·e^R``) and which rows may change class (the top probability less its
move below another's plus its move).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import class_moves, may_change_class
from scipy.linalg import cho_factor, cho_solve
from scipy.special import logsumexp, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from classify.classifiers import CLASSIFIERS
from classify.search.grid import mirrored_folds, run_search
from classify.search.regpath import PATH_TOL
from classify.search.split import stratified_split

GRID = CLASSIFIERS["logreg"].grid
SEED, FOLDS = 42, 3  # run_search's
#: The bounds are first order in the gradient: twice the linear term covers the rest.
SAFETY = 2.0
#: A mean or standard deviation of three fold scores in float64: its rounding is far below this.
SCORE_ROUNDING = 1e-12
#: What a float32 fit's gradient reaches: the registry's tolerance for scikit-learn, and where
#: rounding stops the path's (test_a_fit_ends_when_rounding_stops_its_progress).
FLOAT32_TOL = 1e-4


def wide(rows: int = 150, dim: int = 2000, classes: int = 5, dtype: type = np.float64, seed: int = 0):
    """Non-negative, ReLU-like rows with a class signal in 20 latent directions: wide
    (features >= 2x rows), hard enough that C matters (accuracy about 0.5)."""
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % classes
    latent = rng.normal(size=(classes, 20))[y] + 3.0 * rng.normal(size=(rows, 20))
    X = np.maximum(latent @ rng.normal(size=(20, dim)) / 4 + rng.normal(size=(rows, dim)) - 0.5, 0)
    mirror = np.maximum(X[:, ::-1] + 0.1 * rng.normal(size=(rows, dim)), 0)
    return X.astype(dtype), mirror.astype(dtype), y


def both(X, y, *, tight: bool = True, **kwargs):
    """Today's search (solved tightly, so that its optimum is compared) and the path's."""
    train, test = stratified_split(y, 0.25, SEED)
    before_estimator = CLASSIFIERS["logreg"].make(SEED, None)
    if tight:
        before_estimator.set_params(tol=1e-9, max_iter=10_000)
    before = run_search("logreg", before_estimator, GRID, X, y, train, test, row_space=True,
                        select="log_loss", **kwargs)
    after = run_search("logreg", CLASSIFIERS["logreg"].make(SEED, None), GRID, X, y, train, test,
                       row_space=True, select="log_loss", c_path=True, **kwargs)
    return before, after, train, test


class Problem:
    """The objective both searches minimise, on coordinates ``Z`` of the rows: scikit-learn's
    mean log-loss + ``‖W‖²/(2Cn)``, intercepts unpenalised, one sigmoid for two classes.
    Parameters ``theta`` are ``(k, q)``: a row per logit (one for two classes), intercept last."""

    def __init__(self, Z: np.ndarray, y: np.ndarray, C: float):
        self.A = rows_of(Z)
        self.classes = np.unique(y)
        self.Y = (np.asarray(y)[:, None] == self.classes).astype(np.float64)
        self.n, self.q = self.A.shape
        self.k = 1 if len(self.classes) == 2 else len(self.classes)
        self.penalty = np.r_[np.full(self.q - 1, 1 / (C * self.n)), 0.0]

    def logits(self, theta, A=None):
        s = (self.A if A is None else A) @ theta.T
        return np.column_stack([np.zeros(len(s)), s]) if self.k == 1 else s

    def proba(self, theta, A=None):
        return softmax(self.logits(theta, A), axis=1)

    def loss(self, theta):
        s = self.logits(theta)
        log_p = s - logsumexp(s, axis=1, keepdims=True)
        return -np.mean(np.sum(log_p * self.Y, axis=1)) + 0.5 * np.sum(self.penalty * theta**2)

    def gradient(self, theta):
        residual = (self.proba(theta) - self.Y)[:, -self.k:]
        return residual.T @ self.A / self.n + self.penalty * theta

    def hessian(self, theta):
        P = self.proba(theta)[:, -self.k:]
        k, q = self.k, self.q
        H = np.empty((k, q, k, q))
        for c in range(k):
            for d in range(c, k):
                H[c, :, d, :] = (self.A * (P[:, c] * ((c == d) - P[:, d]))[:, None]).T @ self.A / self.n
                H[d, :, c, :] = H[c, :, d, :]  # each block is symmetric
        H = H.reshape(k * q, k * q)
        H[np.diag_indices_from(H)] += np.tile(self.penalty, k)
        return H

    def null(self):
        """Shifting every intercept alike moves no probability: the Hessian's null direction
        (k > 1), along which no gradient and no difference of two logits has a part. Adding
        ``null nullᵀ`` to the Hessian makes it invertible without changing its inverse there."""
        v = np.zeros((self.k, self.q))
        if self.k > 1:
            v[:, -1] = 1 / np.sqrt(self.k)
        return v.ravel()

    def optimum(self, start=None):
        """Newton's method with backtracking, to a gradient float64 rounding allows."""
        theta = np.zeros((self.k, self.q)) if start is None else start
        null = self.null()
        for _ in range(100):
            g = self.gradient(theta)
            if np.abs(g).max() < 1e-11:
                return theta
            factor = cho_factor(self.hessian(theta) + np.outer(null, null))
            step = -cho_solve(factor, g.ravel()).reshape(g.shape)
            f, t = self.loss(theta), 1.0
            while t > 1e-8 and self.loss(theta + t * step) > f + 1e-4 * t * np.sum(g * step) + 1e-14 * abs(f):
                t /= 2
            theta = theta + t * step
        raise AssertionError(f"Newton did not converge: gradient {np.abs(g).max():.2g}")

    def moves(self, theta, A, tol: float, params: int):
        """For each row of ``A``: the most any logit difference of a fit whose gradient
        entries are below ``tol`` differs from ``theta``'s, at first order, with SAFETY. The
        solvers measure their gradients on ``params`` coordinates (orthonormal, as these are):
        there, and so here, ``‖g‖ ≤ √params·tol``."""
        k = self.k
        null = self.null()
        factor = cho_factor(self.hessian(theta) + np.outer(null, null))
        # Column (c, i): the inverse applied to class c's logit of row i; differences of two
        # classes' columns are those of the logit differences.
        per_class = [cho_solve(factor, np.kron(np.eye(k)[:, [c]], A.T)) for c in range(k)]
        if k == 1:
            spread = np.linalg.norm(per_class[0], axis=0)
        else:
            spread = np.max([np.linalg.norm(per_class[c] - per_class[d], axis=0)
                             for c in range(k) for d in range(c + 1, k)], axis=0)
        return SAFETY * np.sqrt(params) * tol * spread


def rows_of(Z):
    return np.hstack([Z, np.ones((len(Z), 1))]).astype(np.float64)


class Span:
    """Orthonormal coordinates of the span of the centred rows ``Z`` that a fit sees. Both
    solvers' weights lie in it (every gradient they step along does), as the optimum's do, so
    a row's part outside it moves no logit of either, and the bounds leave it out."""

    def __init__(self, Z: np.ndarray):
        Z = np.asarray(Z, dtype=np.float64)
        self.mean = Z.mean(axis=0)
        _, s, vt = np.linalg.svd(Z - self.mean, full_matrices=False)
        self.basis = vt[s > s[0] * 1e-10].T

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        return (np.asarray(Z, dtype=np.float64) - self.mean) @ self.basis

    def parameters(self, model, projection) -> np.ndarray:
        """A fitted model's parameters on these coordinates: a Pipeline's on ``projection``'s
        coordinates (``z``), a raw-feature model's through ``x = mean + z @ components``."""
        if hasattr(model, "steps"):
            model = model.steps[-1][1]
            coef, intercept = model.coef_, model.intercept_
        else:
            coef = model.coef_ @ projection.components_.T
            intercept = model.intercept_ + model.coef_ @ projection.mean_
        coef = np.asarray(coef, dtype=np.float64)
        return np.hstack([coef @ self.basis, (intercept + coef @ self.mean)[:, None]])


def assert_same_search(before, after, X, y, train, test, *, tol_before=PATH_TOL, tol_after=PATH_TOL,
                       mirror=None, augment=False, tta=False):
    """Each search's scores, choice of C, model and test predictions are the optimum's, to
    what its tolerance allows; so they are each other's."""
    assert [row["params"] for row in after.cv_results] == [row["params"] for row in before.cv_results]
    assert after.projected and before.projected and after.selected_by == "log_loss"
    assert after.train_rows == before.train_rows and after.dim <= before.dim
    projection = before.estimator.steps[0][1]  # the PCA GridSearchCV's fits saw
    y_train = y[train]
    X_fit = np.concatenate([X[train], mirror[train]]) if augment else X[train]
    y_fit = np.concatenate([y_train, y_train]) if augment else y_train
    Z = projection.transform(X_fit)
    cv = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    folds = mirrored_folds(cv, y_train) if augment else list(cv.split(np.zeros((len(y_train), 1)), y_train))
    tol = max(tol_before, tol_after)
    params = (len(np.unique(y)) if len(np.unique(y)) > 2 else 1) * (Z.shape[1] + 1)  # GridSearchCV's

    # (1) Per C, the folds' scores at the optimum, and how far each search's may lie from them.
    optimum_loss, loss_moves = [], []
    spans = [Span(Z[fit]) for fit, _ in folds]
    thetas = [None] * len(folds)  # each fold's optimum at the last C, to start the next from
    for row_before, row_after in zip(before.cv_results, after.cv_results, strict=True):
        accuracy, changeable, log_loss, log_loss_move = [], [], [], []
        for f, (fit, held) in enumerate(folds):
            span = spans[f]
            problem = Problem(span(Z[fit]), y_fit[fit], row_before["params"]["C"])
            theta = thetas[f] = problem.optimum(thetas[f])
            A = rows_of(span(Z[held]))
            P, R = problem.proba(theta, A), problem.moves(theta, A, tol, params)
            truth = np.searchsorted(problem.classes, y_fit[held])
            p_true = P[np.arange(len(held)), truth]
            accuracy.append(np.mean(P.argmax(axis=1) == truth))
            changeable.append(np.mean(may_change_class(P, class_moves(P, R))))
            log_loss.append(-np.mean(np.log(p_true)))
            # |Δ log p_y| ≤ (1 - p_y) R e^R, as conftest.class_moves bounds |Δp|
            log_loss_move.append(np.mean((1 - p_true) * R * np.exp(np.minimum(R, 50.0))))
        for row in (row_before, row_after):
            assert abs(row["mean_test_score"] - np.mean(accuracy)) <= np.mean(changeable) + SCORE_ROUNDING
            assert (abs(row["std_test_score"] - np.std(accuracy))
                    <= np.sqrt(np.mean(np.square(changeable))) + SCORE_ROUNDING)
            assert abs(row["mean_log_loss"] - np.mean(log_loss)) <= np.mean(log_loss_move) + SCORE_ROUNDING
        optimum_loss.append(np.mean(log_loss))
        loss_moves.append(np.mean(log_loss_move))
    # (2) Each search chooses the C of least log-loss; another than the optimum's only where
    # the tolerances cannot tell the two apart (as a test row may change class, below).
    optimum_loss, loss_moves = np.array(optimum_loss), np.array(loss_moves)
    best = int(np.argmin(optimum_loss))
    for result in (before, after):
        chosen = [row["params"] for row in result.cv_results].index(result.best_params)
        assert optimum_loss[chosen] - loss_moves[chosen] <= optimum_loss[best] + loss_moves[best]

    # (3) The final fits on all training rows, and the test rows' probabilities and classes.
    span = Span(Z)
    raw_views = [X[test]] + ([mirror[test]] if tta else [])
    views = [rows_of(span(projection.transform(v))) for v in raw_views]
    decided, achieved = [], []
    for result, tol_result in ((before, tol_before), (after, tol_after)):
        problem = Problem(span(Z), y_fit, result.best_params["C"])
        theta = problem.optimum()
        gradient = np.linalg.norm(problem.gradient(span.parameters(result.estimator, projection)))
        assert gradient <= np.sqrt(params) * tol_result  # it stopped within its tolerance
        # Here its own gradient is known: it bounds the fit nearer than the tolerance does.
        achieved.append(gradient / np.sqrt(params))
        probas = [problem.proba(theta, A) for A in views]
        spreads = [problem.moves(theta, A, 1.0, params) for A in views]  # per unit of tolerance
        reference = np.mean(probas, axis=0)
        moves = np.mean([class_moves(P, achieved[-1] * R) for P, R in zip(probas, spreads, strict=True)],
                        axis=0)
        proba = np.mean([result.estimator.predict_proba(v) for v in raw_views], axis=0)
        assert np.all(np.abs(proba - reference) <= moves + SCORE_ROUNDING)
        changeable = may_change_class(reference, moves)
        assert np.all((result.test_pred == problem.classes[reference.argmax(axis=1)]) | changeable)
        assert changeable.mean() <= 0.2  # the bounds leave the comparison its teeth
        decided.append(~changeable)
    if after.best_params != before.best_params:
        return None
    both_decided = decided[0] & decided[1]
    np.testing.assert_array_equal(after.test_pred[both_decided], before.test_pred[both_decided])
    return sum(achieved) * spreads[0]  # how far the test rows' logit differences may differ


@pytest.mark.slow
def test_path_finds_the_grid_searchs_c_scores_and_predictions():
    X, mirror, y = wide()
    before, after, train, test = both(X, y)
    assert_same_search(before, after, X, y, train, test)
    model = after.estimator  # a plain logistic regression on the raw features
    assert type(model) is LogisticRegression and model.coef_.shape == (5, X.shape[1])
    assert model.C == after.best_params["C"]
    np.testing.assert_array_equal(model.predict(X[test]), after.test_pred)


@pytest.mark.slow
def test_path_with_mirrors_trained_and_test_time_mirrors():
    X, mirror, y = wide(rows=100)  # 75 training images and their 75 mirrors, still 2,000 features
    before, after, train, test = both(X, y, mirror=mirror, augment=True, tta=True)
    assert_same_search(before, after, X, y, train, test, mirror=mirror, augment=True, tta=True)
    assert after.augment and after.tta and after.train_rows == 2 * (len(y) - len(test))
    model = after.estimator
    proba = (model.predict_proba(X[test]) + model.predict_proba(mirror[test])) / 2
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], after.test_pred)


def test_float32_features_with_the_registrys_tolerance():
    """As classify runs it: float32 features, the estimator's own tolerance for today's search."""
    X, _, y = wide(dtype=np.float32, seed=1)
    before, after, train, test = both(X, y, tight=False)
    assert_same_search(before, after, X, y, train, test, tol_before=FLOAT32_TOL, tol_after=FLOAT32_TOL)


def test_two_classes_fit_one_sigmoid_as_logistic_regression_does():
    X, _, y = wide(rows=80, dim=600, classes=2)
    before, after, train, test = both(X, y)
    logit_moves = assert_same_search(before, after, X, y, train, test)
    assert after.estimator.coef_.shape == (1, 600)
    if logit_moves is not None:  # the same C
        difference = after.estimator.decision_function(X[test]) - before.estimator.decision_function(X[test])
        assert np.all(np.abs(difference) <= logit_moves)


def test_other_grids_and_narrow_features_keep_the_grid_search():
    X, _, y = wide(rows=60, dim=400, classes=3)
    train, test = stratified_split(y, 0.25, 42)
    estimator = CLASSIFIERS["logreg"].make(42, None)
    other = run_search("logreg", estimator, {"C": [0.1], "tol": [1e-4]}, X, y, train, test,
                       row_space=True, c_path=True)
    narrow = run_search("logreg", estimator, {"C": [0.1]}, X[:, :60], y, train, test,
                        row_space=True, c_path=True)
    assert type(other.estimator).__name__ == "Pipeline" and not narrow.projected


def test_the_path_model_exports_as_one_softmax_layer():
    from classify.classifiers.linear import linear_weights

    X, _, y = wide(rows=90, dim=500, classes=3)
    train, test = stratified_split(y, 0.25, SEED)  # the path's model alone: no GridSearchCV to compare
    after = run_search("logreg", CLASSIFIERS["logreg"].make(SEED, None), GRID, X, y, train, test,
                       row_space=True, select="log_loss", c_path=True)
    assert type(after.estimator) is LogisticRegression
    kernel, bias = linear_weights(after.estimator)
    np.testing.assert_allclose(softmax(X[test] @ kernel + bias, axis=1),
                               after.estimator.predict_proba(X[test]), atol=1e-10)


@pytest.mark.parametrize("augment", [False, True])
def test_the_gram_factor_coordinates_are_an_isometry_of_the_span(augment):
    from classify.search.rowspace import centred_gram, factor

    X, mirror, _ = wide(rows=40, dim=300)
    rows = np.arange(0, 40, 2)
    sources = [(X, rows)] + ([(mirror, rows)] if augment else [])
    stacked = np.concatenate([m[r] for m, r in sources])
    centred = stacked - stacked.mean(axis=0)
    gram, mean = centred_gram(sources, block_columns=64)
    # float64 sums of 300 products of values up to about 15: rounding below 1e-10, under these.
    np.testing.assert_allclose(gram, centred @ centred.T, atol=1e-8)
    parts = factor(gram)
    z = parts.coords(np.float64)
    assert parts.rank == len(stacked) - 1  # centring takes one dimension
    np.testing.assert_allclose(z @ z.T, gram, atol=1e-7)
    # Other rows' coordinates from their inner products with the basis rows: their projection.
    other = np.maximum(X[1::2] - mean, 0) - 0.5
    projected = parts.coordinates(other @ centred[parts.basis_rows].T, np.float64)
    basis = np.linalg.qr(centred.T)[0][:, : parts.rank]  # an orthonormal basis of the span
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1),
                               np.linalg.norm(other @ basis, axis=1), rtol=1e-8)
    weights = np.random.default_rng(0).normal(size=(3, parts.rank))
    raw = parts.raw_weights(weights, sources, mean, block_columns=64)
    np.testing.assert_allclose(centred @ raw.T, z @ weights.T, atol=1e-8)
    np.testing.assert_allclose(other @ raw.T, projected @ weights.T, atol=1e-8)


def test_a_fit_ends_when_rounding_stops_its_progress():
    """float32 products cannot bring the gradient to 0: with no tolerance at all the fit still
    ends, at the optimum to float32 precision, long before its step limit."""
    from classify.search.regpath import _Multinomial

    X, _, y = wide(rows=90, dim=60, classes=3, dtype=np.float32)
    problem = _Multinomial(X - X.mean(axis=0), y, 3)
    solution, steps = problem.fit(0.1, None, tol=0.0, max_iter=100)
    assert steps < 100
    assert np.max(np.abs(problem.loss_grad(solution)[1])) < 1e-4
