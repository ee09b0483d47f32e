"""The logistic-regression search as warm-started paths on the Gram matrix (classify.path)
finds what today's GridSearchCV on the PCA coordinates finds: the same C, the same scores,
the same test predictions, and a model on the raw features that predicts them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from classify.models import MODELS
from classify.search import run_search, stratified_split

GRID = MODELS["logreg"].grid


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
    train, test = stratified_split(y, 0.25, 42)
    before_estimator = MODELS["logreg"].make(42, None)
    if tight:
        before_estimator.set_params(tol=1e-9, max_iter=10_000)
    before = run_search("logreg", before_estimator, GRID, X, y, train, test, row_space=True,
                        select="log_loss", **kwargs)
    after = run_search("logreg", MODELS["logreg"].make(42, None), GRID, X, y, train, test,
                       row_space=True, select="log_loss", c_path=True, **kwargs)
    return before, after, test


def assert_same_search(before, after):
    assert after.best_params == before.best_params
    assert [row["params"] for row in after.cv_results] == [row["params"] for row in before.cv_results]
    for key in ("mean_test_score", "std_test_score"):
        np.testing.assert_allclose([r[key] for r in after.cv_results], [r[key] for r in before.cv_results],
                                   atol=1e-9)
    np.testing.assert_allclose([r["mean_log_loss"] for r in after.cv_results],
                               [r["mean_log_loss"] for r in before.cv_results], rtol=1e-3)
    np.testing.assert_array_equal(after.test_pred, before.test_pred)
    assert after.projected and before.projected and after.selected_by == "log_loss"
    assert after.train_rows == before.train_rows and after.dim <= before.dim


def test_path_finds_the_grid_searchs_c_scores_and_predictions():
    X, mirror, y = wide()
    before, after, test = both(X, y)
    assert_same_search(before, after)
    model = after.estimator  # a plain logistic regression on the raw features
    assert type(model) is LogisticRegression and model.coef_.shape == (5, X.shape[1])
    assert model.C == after.best_params["C"]
    np.testing.assert_array_equal(model.predict(X[test]), after.test_pred)
    np.testing.assert_allclose(model.predict_proba(X[test]), before.estimator.predict_proba(X[test]),
                               atol=1e-5)


def test_path_with_mirrors_trained_and_test_time_mirrors():
    X, mirror, y = wide()
    before, after, test = both(X, y, mirror=mirror, augment=True, tta=True)
    assert_same_search(before, after)
    assert after.augment and after.tta and after.train_rows == 2 * (len(y) - len(test))
    model = after.estimator
    proba = (model.predict_proba(X[test]) + model.predict_proba(mirror[test])) / 2
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], after.test_pred)


def test_float32_features_with_the_registrys_tolerance():
    """As classify runs it: float32 features, the estimator's own tolerance for today's search."""
    X, _, y = wide(dtype=np.float32, seed=1)
    before, after, _ = both(X, y, tight=False)
    assert after.best_params == before.best_params
    np.testing.assert_array_equal(after.test_pred, before.test_pred)


def test_two_classes_fit_one_sigmoid_as_logistic_regression_does():
    X, _, y = wide(rows=80, dim=600, classes=2)
    before, after, test = both(X, y)
    assert_same_search(before, after)
    assert after.estimator.coef_.shape == (1, 600)
    np.testing.assert_allclose(after.estimator.decision_function(X[test]),
                               before.estimator.decision_function(X[test]), atol=1e-4)


def test_other_grids_and_narrow_features_keep_the_grid_search():
    X, _, y = wide(rows=60, dim=400, classes=3)
    train, test = stratified_split(y, 0.25, 42)
    estimator = MODELS["logreg"].make(42, None)
    other = run_search("logreg", estimator, {"C": [0.1], "tol": [1e-4]}, X, y, train, test,
                       row_space=True, c_path=True)
    narrow = run_search("logreg", estimator, {"C": [0.1]}, X[:, :60], y, train, test,
                        row_space=True, c_path=True)
    assert type(other.estimator).__name__ == "Pipeline" and not narrow.projected


def test_the_path_model_exports_as_one_softmax_layer():
    from scipy.special import softmax

    from classify.export import linear_weights

    X, _, y = wide(rows=90, dim=500, classes=3)
    _, after, test = both(X, y)
    kernel, bias = linear_weights(after.estimator)
    np.testing.assert_allclose(softmax(X[test] @ kernel + bias, axis=1),
                               after.estimator.predict_proba(X[test]), atol=1e-10)


@pytest.mark.parametrize("augment", [False, True])
def test_the_gram_factor_coordinates_are_an_isometry_of_the_span(augment):
    from classify.rowspace import centred_gram, factor

    X, mirror, _ = wide(rows=40, dim=300)
    rows = np.arange(0, 40, 2)
    sources = [(X, rows)] + ([(mirror, rows)] if augment else [])
    stacked = np.concatenate([m[r] for m, r in sources])
    centred = stacked - stacked.mean(axis=0)
    gram, mean = centred_gram(sources, block_columns=64)
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
    from classify.path import _Multinomial

    X, _, y = wide(rows=90, dim=60, classes=3, dtype=np.float32)
    problem = _Multinomial(X - X.mean(axis=0), y, 3)
    solution, steps = problem.fit(0.1, None, tol=0.0, max_iter=100)
    assert steps < 100
    assert np.max(np.abs(problem.loss_grad(solution)[1])) < 1e-4
