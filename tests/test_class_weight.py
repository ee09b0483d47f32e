"""``--class-weight balanced``: scikit-learn's meaning, as sample weights in every model's fit,
recorded; a warning for classes that differ by more than 3:1; a file's stored split, in
classify, from a feature file written here."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_sample_weight

from classify import train_and_evaluate
from classify.errors import SettingsError
from features import FeatureWriter


def imbalanced_file(path, per_class=(60, 12, 12), dim=6, seed=0, splits=None):
    """Overlapping Gaussian classes, the first five times the others, as a feature file."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(1.2 * k, 1.0, (n, dim)) for k, n in enumerate(per_class)])
    y = np.repeat(np.arange(len(per_class)), per_class)
    with FeatureWriter(path, dim=dim, label_names=["ant", "bee", "cow"], attrs={"backbone": "blobs"},
                       splits=splits is not None) as w:
        w.add(X, y, [f"{k}.jpg" for k in range(len(y))], splits=splits)
    return X, y


@pytest.mark.parametrize("model", ["logreg", "rf", "xgb", "head"])
def test_balanced_weights_change_the_fitted_model_and_are_recorded(model, tmp_path):
    imbalanced_file(tmp_path / "f.hdf5")
    grid = {"logreg": {"C": [1.0]}, "rf": {"n_estimators": [20]}, "xgb": {"n_estimators": [20]},
            "head": {"epochs": [5]}}[model]
    plain = train_and_evaluate(tmp_path / "f.hdf5", model, grid=grid, jobs=1)[model]
    weighted = train_and_evaluate(tmp_path / "f.hdf5", model, grid=grid, jobs=1, class_weight="balanced",
                                  json=tmp_path / "w.json")[model]
    assert list(plain.test_indices) == list(weighted.test_indices)
    X_test = np.asarray(json.loads((tmp_path / "w.json").read_text())["test_indices"])
    assert json.loads((tmp_path / "w.json").read_text())["settings"]["class_weight"] == "balanced"
    from features import FeatureFile

    with FeatureFile(tmp_path / "f.hdf5") as ff:
        rows = ff.load_features()[X_test]
    assert not np.allclose(plain.estimator.predict_proba(rows), weighted.estimator.predict_proba(rows))


def test_logreg_weights_are_scikit_learns_balanced_class_weight(tmp_path):
    from features import FeatureFile

    _, y = imbalanced_file(tmp_path / "f.hdf5")
    with FeatureFile(tmp_path / "f.hdf5") as ff:
        X = ff.load_features()  # float32, as classify reads it (and as scikit-learn then solves)
    tight = {"C": [1.0], "tol": [1e-10], "max_iter": [10_000]}  # optima compared, not stopping points
    result = train_and_evaluate(tmp_path / "f.hdf5", grid=tight, jobs=1, class_weight="balanced")["logreg"]
    train = np.setdiff1d(np.arange(len(y)), result.test_indices)
    own = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000, tol=1e-10)
    own.fit(X[train], y[train])
    weighted = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10).fit(
        X[train], y[train], sample_weight=compute_sample_weight("balanced", y[train]))
    np.testing.assert_allclose(weighted.coef_, own.coef_, rtol=1e-6, atol=1e-8)  # the weights we pass
    # Both solved to a gradient of 1e-10: the probabilities agree far below 1e-6.
    np.testing.assert_allclose(result.estimator.predict_proba(X[result.test_indices]),
                               own.predict_proba(X[result.test_indices]), atol=1e-6)


def test_imbalance_is_warned_of_and_a_model_without_weights_is_refused(tmp_path, caplog):
    imbalanced_file(tmp_path / "f.hdf5")
    with caplog.at_level(logging.WARNING, logger="classify"):
        train_and_evaluate(tmp_path / "f.hdf5", grid={"C": [1.0]}, jobs=1)
    assert "the training classes differ by more than 3:1 (ant: 45 rows, bee: 9)" in caplog.text
    from sklearn.neighbors import KNeighborsClassifier

    from classify import Classifier, register_classifier, unregister_classifier

    register_classifier(Classifier("knn-w", "nearest neighbours", lambda seed, jobs: KNeighborsClassifier(),
                                   {"n_neighbors": [3]}))
    try:
        with pytest.raises(SettingsError, match="knn-w takes no sample weights in fit"):
            train_and_evaluate(tmp_path / "f.hdf5", "knn-w", jobs=1, class_weight="balanced")
    finally:
        unregister_classifier("knn-w")
    with pytest.raises(SettingsError, match="class_weight .--class-weight. must be balanced"):
        train_and_evaluate(tmp_path / "f.hdf5", class_weight="even")


def test_a_pipeline_is_weighted_through_its_last_step(tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from classify import Classifier, register_classifier, unregister_classifier

    X, y = imbalanced_file(tmp_path / "f.hdf5")
    register_classifier(Classifier(
        "scaled", "scaled logistic regression",
        lambda seed, jobs: make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000, tol=1e-10)),
        {"logisticregression__C": [1.0]}))
    try:
        result = train_and_evaluate(tmp_path / "f.hdf5", "scaled", jobs=1, class_weight="balanced")["scaled"]
    finally:
        unregister_classifier("scaled")
    X = X.astype(np.float32)
    train = np.setdiff1d(np.arange(len(y)), result.test_indices)
    own = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=10_000,
                                                             tol=1e-10)).fit(X[train], y[train])
    # Both solved to a gradient of 1e-10 on the same scaled rows.
    np.testing.assert_allclose(result.estimator.predict_proba(X[result.test_indices]),
                               own.predict_proba(X[result.test_indices]), atol=1e-6)


def test_a_stored_split_is_searched_on_train_and_reported_on_test(tmp_path):
    splits = ["train"] * 40 + ["test"] * 20 + ["train"] * 8 + ["test"] * 4 + ["train"] * 8 + ["test"] * 4
    imbalanced_file(tmp_path / "s.hdf5", splits=splits)
    result = train_and_evaluate(tmp_path / "s.hdf5", grid={"C": [1.0]}, jobs=1)["logreg"]
    assert list(result.test_indices) == [k for k, s in enumerate(splits) if s == "test"]
    with pytest.raises(SettingsError, match="which resplit .--resplit. sets aside: choose one"):
        train_and_evaluate(tmp_path / "s.hdf5", resplit=True, use_val=True)
    with pytest.raises(ValueError, match="chooses on the val split, and its stored split has none"):
        train_and_evaluate(tmp_path / "s.hdf5", use_val=True, jobs=1)
    with pytest.raises(SettingsError, match="own split: test_size .--test-size. does not"):
        train_and_evaluate(tmp_path / "s.hdf5", test_size=0.3)
    imbalanced_file(tmp_path / "plain.hdf5")
    with pytest.raises(SettingsError, match="chooses on a stored val split, and .*plain.hdf5 has none"):
        train_and_evaluate(tmp_path / "plain.hdf5", use_val=True)


def test_an_unfinished_file_with_a_stored_split_says_so(tmp_path):
    rng = np.random.default_rng(0)
    w = FeatureWriter(tmp_path / "u.hdf5", dim=4, label_names=["ant", "bee"], attrs={"backbone": "blobs"},
                      splits=True)
    w.add(rng.normal(size=(8, 4)), [0, 1] * 4, [f"{k}.jpg" for k in range(8)], splits=["train"] * 8)
    w.close(complete=False)  # killed before its val and test rows
    with pytest.raises(ValueError, match="u.hdf5 is unfinished: .*run extract again to finish it, or pass "
                                         "--resplit"):
        train_and_evaluate(tmp_path / "u.hdf5", allow_partial=True, jobs=1)
