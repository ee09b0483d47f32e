"""Stage 2: the split, the search, the reports and the command line."""

from __future__ import annotations

import json

import h5py
import joblib
import numpy as np
import pytest
from conftest import run_module
from sklearn.metrics import classification_report

from classify.search.split import SplitError, stratified_split
from features import FeatureWriter


def blobs_file(path, per_class=(20, 20, 20), dim=8, spread=3.0, seed=0):
    """Gaussian classes of unit variance, ``spread`` apart on every axis, as a feature file."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(spread * k, 1.0, (n, dim)) for k, n in enumerate(per_class)])
    y = np.repeat(np.arange(len(per_class)), per_class)
    names = ["ant", "bee", "cow"][: len(per_class)]
    with FeatureWriter(path, dim=dim, label_names=names, attrs={"backbone": "blobs"}) as w:
        w.add(X, y, [f"{names[label]}/{i}.jpg" for i, label in enumerate(y)])
    return X, y


def test_split_is_stratified_and_reproducible():
    y = np.repeat(np.arange(4), [40, 20, 12, 8])
    train, test = stratified_split(y, 0.25, 42)
    again = stratified_split(y, 0.25, 42)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(y)
    assert np.bincount(y[test]).tolist() == [10, 5, 3, 2]
    other = stratified_split(y, 0.25, 7)[1]
    assert not np.array_equal(test, other)


@pytest.mark.parametrize(
    "labels, message",
    [(np.zeros(10, dtype=int), "only 1 class"), (np.array([0, 0, 0, 1]), "class 1 has 1 row")],
)
def test_split_refuses_labels_it_cannot_split(labels, message):
    with pytest.raises(SplitError, match=message):
        stratified_split(labels)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 0, 0, 1, 2, 2], "class 'bee' has 1 row; every class needs at least 2"),
        ([0, 0, 2, 2], "class 'bee' has no rows; every class needs at least 2"),  # an empty folder
        ([0, 0, 1, 1], "class 'cow' has no rows; every class needs at least 2"),
    ],
)
def test_split_errors_name_the_class(labels, message):
    with pytest.raises(SplitError) as caught:
        stratified_split(np.array(labels), label_names=["ant", "bee", "cow"])
    assert str(caught.value) == message + " to appear in both the training and the test rows"


def test_split_of_an_unfinished_file_leaves_out_the_classes_not_reached_yet():
    labels = np.repeat([0, 1], 4)  # rows are written in class order: 'cow' not reached yet
    train, test = stratified_split(labels, 0.5, 0, ["ant", "bee", "cow"], allow_trailing_empty=True)
    assert sorted(labels[test].tolist()) == [0, 0, 1, 1] and len(train) == 4
    with pytest.raises(SplitError, match="class 'bee' has no rows"):  # not trailing: an empty class
        stratified_split(np.repeat([0, 2], 4), 0.5, 0, ["ant", "bee", "cow"], allow_trailing_empty=True)


def test_search_error_names_the_class_with_too_few_training_rows():
    from classify.classifiers import CLASSIFIERS
    from classify.search.grid import run_search

    y = np.array([0] * 6 + [1] * 6 + [2] * 2)
    X = np.random.default_rng(0).normal(size=(len(y), 3))
    train, test = np.arange(13), np.array([13])  # 'cow' keeps 1 training row
    with pytest.raises(SplitError) as caught:
        run_search("logreg", CLASSIFIERS["logreg"].make(0, None), {"C": [1.0]}, X, y, train, test,
                   label_names=["ant", "bee", "cow"])
    assert str(caught.value) == (
        "class 'cow' has fewer than 2 training rows; cross-validation needs 2 per class"
    )


def test_cli_report_json_and_saved_model(tmp_path):
    features = tmp_path / "blobs.hdf5"
    X, y = blobs_file(features)
    out_json, out_model = tmp_path / "m.json", tmp_path / "m.joblib"
    result = run_module("classify", "--features", features, "--grid", '{"C": [0.01, 1]}',
                        "--json", out_json, "--save", out_model, "--jobs", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(out_json.read_text())
    test = np.array(data["test_indices"])
    np.testing.assert_array_equal(test, stratified_split(y, 0.25, 42)[1])
    expected = classification_report(y[test], data["test_predictions"],
                                     target_names=["ant", "bee", "cow"], output_dict=True)
    for key, row in expected.items():
        assert data["report"][key] == pytest.approx(row), key
    assert data["best_params"]["C"] in (0.01, 1)
    assert data["accuracy"] == 1.0  # class means are 3 * sqrt(8) standard deviations apart
    assert data["provenance"]["backbone"] == "blobs"
    for line in ("precision    recall  f1-score   support", "macro avg", "weighted avg", "best parameters"):
        assert line in result.stdout
    model = joblib.load(out_model)
    np.testing.assert_array_equal(model.predict(X[test]), data["test_predictions"])


def test_two_runs_are_scored_on_the_same_rows(tmp_path):
    features = tmp_path / "blobs.hdf5"
    blobs_file(features, per_class=(30, 17, 13))
    runs = []
    for model, grid in (("logreg", '{"C": [1]}'), ("rf", '{"n_estimators": [20]}')):
        out = tmp_path / f"{model}.json"
        result = run_module("classify", "-f", features, "-m", model, "--grid", grid, "--json", out, "-j", "1")
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(out.read_text())["test_indices"])
    assert runs[0] == runs[1] and len(runs[0]) == 15


def test_xgboost_search_runs(tmp_path):
    features = tmp_path / "blobs.hdf5"
    blobs_file(features, spread=10.0)
    result = run_module("classify", "-f", features, "-m", "xgb", "--grid", '{"n_estimators": [10]}')
    assert result.returncode == 0, result.stderr
    assert "test accuracy: 1.0000" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: --features"),
        (["-f", "x.hdf5", "--model", "svm"], "unknown model (--model) 'svm'; choose from logreg, rf, xgb"),
        (["-f", "x.hdf5", "--engine", "spark"], "engine (--engine) must be one of local, ray, got 'spark'"),
        (["-f", "x.hdf5", "--test-size", "a"], "argument --test-size: not a number: 'a'"),
        (["-f", "x.hdf5", "--test-size", "1.5"], "must lie strictly between 0 and 1"),
        (["-f", "x.hdf5", "--folds", "1"], "must be at least 2"),
        (["-f", "x.hdf5", "--grid", "{C: 1}"], "--grid is not valid JSON"),
        (["-f", "x.hdf5", "--grid", '{"gamma": [1]}'], "--grid names unknown parameters: gamma"),
        (["-f", "x.hdf5", "--jobs", "0"], "must be -1 (all cores) or at least 1"),
    ],
)
def test_usage_errors_exit_2(args, message):
    result = run_module("classify", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def _one_class(path):
    with FeatureWriter(path, dim=2, label_names=["a"], attrs={}) as w:
        w.add(np.zeros((5, 2)), [0] * 5, list("abcde"))


def _missing_key(path):
    with h5py.File(path, "w") as f:
        f["features"] = np.zeros((3, 2))
        f["labels"] = np.zeros(3, dtype=int)


def _lengths(path):
    with h5py.File(path, "w") as f:
        f["features"] = np.zeros((3, 2))
        f["labels"] = np.zeros(4, dtype=int)
        f["label_names"] = ["a"]


def _truncated(path):
    blobs_file(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _partial(path):
    w = FeatureWriter(path, dim=2, label_names=["a", "b"], attrs={})
    w.add(np.zeros((4, 2)), [0, 1, 0, 1], list("abcd"))
    w.close(complete=False)


def _empty_class(path):
    """A class folder without images (or whose every image was skipped): a name without rows."""
    with FeatureWriter(path, dim=2, label_names=["ant", "bee", "cow"], attrs={}) as w:
        w.add(np.arange(16.0).reshape(8, 2), [0] * 4 + [2] * 4, list("abcdefgh"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello"), "not an HDF5 file"),
        (_missing_key, "missing label_names"),
        (_lengths, "3 feature rows but 4 labels"),
        (_truncated, "truncated or corrupt"),
        (_partial, "extraction did not finish"),
        (_one_class, "only 1 class"),
        (lambda p: blobs_file(p, per_class=(20, 1)), "class 'bee' has 1 row; every class needs"),
        (_empty_class, "class 'bee' has no rows; every class needs"),
    ],
)
def test_bad_feature_files_give_one_line_and_exit_1(tmp_path, make, message):
    path = tmp_path / "bad.hdf5"
    make(path)
    result = run_module("classify", "--features", path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], result.stderr


def test_no_such_file(tmp_path):
    result = run_module("classify", "--features", tmp_path / "absent.hdf5")
    assert result.returncode == 1 and "no such file" in result.stderr


def test_row_space_search_has_the_raw_features_optimum():
    """Logistic regression on the PCA coordinates of the training rows = on the raw features,
    when there are more features than rows: same decision function, on unseen rows too."""
    from sklearn.linear_model import LogisticRegression

    from classify.classifiers import CLASSIFIERS
    from classify.search.grid import run_search

    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 400))  # float64: in float32 the solvers stop at float32 precision
    y = np.repeat(np.arange(3), 30)
    X[:, :5] += 1.5 * y[:, None]  # a signal in a few of many dimensions
    train, test = stratified_split(y, 0.25, 0)
    # Both solved to a tight tolerance, so what is compared is the optimum, not the stopping point.
    estimator = CLASSIFIERS["logreg"].make(0, None).set_params(tol=1e-9, max_iter=10_000)
    result = run_search("logreg", estimator, {"C": [0.05]}, X, y, train, test, row_space=True)
    assert result.dim <= len(train) < X.shape[1] and type(result.estimator).__name__ == "Pipeline"
    raw = LogisticRegression(C=0.05, tol=1e-9, max_iter=10_000).fit(X[train], y[train])
    ours, theirs = result.estimator.decision_function(X[test]), raw.decision_function(X[test])
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    # Two solvers agree to that tolerance only: predictions are compared where it decides them.
    top2 = np.sort(theirs, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * (1e-4 + 1e-4 * np.abs(top2).max(axis=1))
    assert decided.mean() > 0.9
    np.testing.assert_array_equal(result.test_pred[decided], raw.predict(X[test])[decided])


def test_wide_features_model_is_saved_for_raw_features(tmp_path):
    features = tmp_path / "wide.hdf5"
    X, y = blobs_file(features, dim=200)  # 45 training rows, 200 features
    out_json, out_model = tmp_path / "m.json", tmp_path / "m.joblib"
    result = run_module("classify", "-f", features, "--json", out_json, "--save", out_model, "-j", "1")
    assert result.returncode == 0, result.stderr
    assert "span of the training rows" in result.stdout
    data = json.loads(out_json.read_text())
    # The span of 45 centred training rows: 44 dimensions (the path's pivoted factor finds them).
    assert data["search_dim"] == 44 and data["accuracy"] == 1.0
    model = joblib.load(out_model)
    test = np.array(data["test_indices"])
    np.testing.assert_array_equal(model.predict(X[test]), data["test_predictions"])  # raw features in


def _table_values(table: str, label: str) -> list[float]:
    line = next(row for row in table.splitlines() if row.startswith(label + " "))
    return [float(v.rstrip("*")) for v in line[len(label):].split()]


@pytest.mark.slow
def test_several_models_end_with_a_side_by_side_table(tmp_path):
    features = tmp_path / "blobs.hdf5"
    blobs_file(features, spread=1.0)  # overlapping classes: the models differ
    result = run_module("classify", "-f", features, "-m", "logreg", "rf",
                        "--json", tmp_path / "r.json", "-j", "1")
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("(* best of the row):\n")[1].split("\n\non the same")[0]
    runs = {m: json.loads((tmp_path / f"r.{m}.json").read_text()) for m in ("logreg", "rf")}
    assert runs["logreg"]["test_indices"] == runs["rf"]["test_indices"]
    y = np.array([0] * 20 + [1] * 20 + [2] * 20)
    test = runs["logreg"]["test_indices"]
    for label in ("ant", "bee", "cow", "macro avg", "weighted avg"):
        values = _table_values(table, label)
        for k, metric in enumerate(("precision", "recall", "f1-score")):
            for j, model in enumerate(("logreg", "rf")):
                expected = classification_report(
                    y[test], runs[model]["test_predictions"], target_names=["ant", "bee", "cow"],
                    output_dict=True, zero_division=0)[label][metric]
                assert values[2 * k + j] == pytest.approx(expected, abs=5e-5), (label, metric, model)
    accuracy = _table_values(table, "accuracy")
    assert accuracy == pytest.approx([runs["logreg"]["accuracy"], runs["rf"]["accuracy"]], abs=5e-5)
    best = max(accuracy)
    assert [v.endswith("*") for v in table.splitlines()[-3].split()[1:]] == [a == best for a in accuracy]


@pytest.mark.slow
def test_compare_saved_runs_and_refuse_other_splits(tmp_path):
    features = tmp_path / "blobs.hdf5"
    blobs_file(features, spread=1.0)
    for name, extra in (("a", ()), ("b", ("-m", "rf")), ("c", ("--seed", "7"))):
        run = run_module("classify", "-f", features, *extra, "--json", tmp_path / f"{name}.json", "-j", "1")
        assert run.returncode == 0, run.stderr
    ok = run_module("classify", "compare", tmp_path / "a.json", tmp_path / "b.json")
    assert ok.returncode == 0, ok.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["report"] for n in "ab")
    diff = _table_values(ok.stdout, "bee")[-1]
    assert diff == pytest.approx(b["bee"]["f1-score"] - a["bee"]["f1-score"], abs=5e-5)
    refused = run_module("classify", "compare", tmp_path / "a.json", tmp_path / "c.json")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "classify compare: error: c and a were scored on different test rows (other features, "
        "--test-size or --seed); pass --force to compare them anyway"
    ]
    forced = run_module("classify", "compare", tmp_path / "a.json", tmp_path / "c.json", "--force")
    assert forced.returncode == 0 and "weighted avg" in forced.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert "not a result written by" in run_module("classify", "compare", tmp_path / "a.json", bad).stderr
