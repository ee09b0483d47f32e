"""Paired comparisons: McNemar's exact test equals statsmodels', the bootstrap is seeded, paired
and scikit-learn's metrics resample by resample, and the intervals reach the side-by-side
table, ``classify compare``, JSON and the result objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_module
from sklearn.metrics import f1_score

from classify import compare, train_and_evaluate
from classify.evaluation.significance import (
    mcnemar_exact,
    paired_significance,
    resample_counts,
    resampled_scores,
)
from features import FeatureWriter


def correctness(both: int, only_first: int, only_second: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    first = [True] * both + [True] * only_first + [False] * only_second + [False] * neither
    second = [True] * both + [False] * only_first + [True] * only_second + [False] * neither
    return np.array(first), np.array(second)


@pytest.mark.parametrize("table", [(50, 7, 1, 5), (300, 12, 19, 9), (10, 0, 0, 3), (5, 0, 6, 0),
                                   (100, 40, 40, 0), (0, 1, 0, 0)])
def test_mcnemar_equals_statsmodels_exact(table):
    from statsmodels.stats.contingency_tables import mcnemar

    both, b, c, neither = table
    ours = mcnemar_exact(*correctness(*table))
    theirs = mcnemar(np.array([[both, b], [c, neither]]), exact=True)
    assert (ours.only_first, ours.only_second) == (b, c)
    # Both are sums of the same binomial probabilities: equal but for float64 rounding.
    assert ours.p_value == pytest.approx(float(theirs.pvalue), rel=1e-9, abs=1e-15)


def test_resampled_scores_are_scikit_learns_on_each_resample():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 60)
    predicted = np.where(rng.random(60) < 0.7, y, rng.integers(0, 4, 60))
    y[:2], predicted[2] = 4, 5  # a class of 2 rows, often absent from a resample; one only predicted
    counts = next(resample_counts(len(y), 40, seed=1))
    accuracy, macro = resampled_scores(counts, y, predicted, 6)
    assert (counts[:, :2].sum(axis=1) == 0).any()  # the rare class is absent from some resamples
    for r in range(40):
        rows = np.repeat(np.arange(len(y)), counts[r].astype(int))
        assert accuracy[r] == pytest.approx(np.mean(y[rows] == predicted[rows]), rel=1e-12)
        assert macro[r] == pytest.approx(f1_score(y[rows], predicted[rows], average="macro", zero_division=0),
                                         rel=1e-12)


def toy_predictions(n: int = 200, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    noisy = {name: np.where(rng.random(n) < right, y, rng.integers(0, 4, n))
             for name, right in (("weak", 0.6), ("strong", 0.95), ("strong2", 0.95))}
    return y, noisy


def test_the_bootstrap_is_seeded_paired_and_holds_its_estimates():
    y, predictions = toy_predictions()
    one = paired_significance(y, predictions, 4, resamples=500, seed=7)
    assert one == paired_significance(y, predictions, 4, resamples=500, seed=7)
    other = paired_significance(y, predictions, 4, resamples=500, seed=8)
    assert one.intervals["weak"].accuracy != other.intervals["weak"].accuracy
    for name, iv in one.intervals.items():
        assert iv.accuracy.estimate == pytest.approx(np.mean(y == predictions[name]))
        for interval in (iv.accuracy, iv.macro_f1):
            assert interval.low <= interval.estimate <= interval.high
    pairs = {(p.first, p.second): p for p in one.pairs}
    assert list(pairs) == [("weak", "strong"), ("weak", "strong2"), ("strong", "strong2")]
    real = pairs["weak", "strong"]
    assert not real.accuracy_difference.spans_zero and real.mcnemar.p_value < 1e-6
    assert "accuracy: strong better" in real.verdict()
    assert "accuracy within noise" in pairs["strong", "strong2"].verdict()
    # Paired: a model against itself differs by exactly 0 on every resample.
    same = paired_significance(y, {"a": predictions["weak"], "b": predictions["weak"]}, 4, resamples=200)
    diff = same.pairs[0].accuracy_difference
    assert (diff.low, diff.high, same.pairs[0].mcnemar.p_value) == (0.0, 0.0, 1.0)


def blob_file(path, n_per_class=40, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(1.5 * k, 1.0, (n_per_class, dim)) for k in range(3)])
    y = np.repeat(np.arange(3), n_per_class)
    with FeatureWriter(path, dim=dim, label_names=["ant", "bee", "cow"], attrs={"backbone": "blobs"}) as w:
        w.add(X, y, [f"{['ant', 'bee', 'cow'][k]}/{i}.jpg" for i, k in enumerate(y)])
    return X, y


def test_intervals_reach_the_table_json_compare_and_the_results(tmp_path):
    blob_file(tmp_path / "f.hdf5")
    results = train_and_evaluate(tmp_path / "f.hdf5", ["logreg", "rf"], jobs=1, bootstrap=300,
                                 json=tmp_path / "r.json")
    from classify import side_by_side_table

    table = side_by_side_table(results)
    assert "95% bootstrap intervals (300 paired resamples, seed 42)" in table
    pair = results["logreg"].compare(results["rf"])
    assert pair.describe() in table and pair.verdict() in table
    doc = json.loads((tmp_path / "r.logreg.json").read_text())
    assert doc["intervals"] == results["logreg"].intervals().to_json()
    assert doc["settings"]["bootstrap"] == 300
    assert len(doc["test_probabilities"]) == len(doc["test_indices"])
    assert doc["test_paths"][0].endswith(".jpg")
    comparison = compare([tmp_path / "r.logreg.json", tmp_path / "r.rf.json"])
    assert comparison.significance.pairs[0].mcnemar == pair.mcnemar
    assert comparison.significance.pairs[0].accuracy_difference == pair.accuracy_difference
    assert "McNemar p =" in comparison.table
    printed = run_module("classify", "compare", tmp_path / "r.logreg.json", tmp_path / "r.rf.json",
                         "--json", tmp_path / "c.json")
    assert printed.returncode == 0, printed.stderr
    assert "r.rf - r.logreg:" in printed.stdout
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["pairs"][0]["mcnemar"]["p_value"] == pytest.approx(pair.mcnemar.p_value)
    assert set(written["intervals"]) == {"r.logreg", "r.rf"}


def test_bootstrap_below_100_is_refused(tmp_path):
    from classify import SettingsError

    blob_file(tmp_path / "f.hdf5")
    with pytest.raises(SettingsError, match=r"bootstrap \(--bootstrap\) must be .* at least 100"):
        train_and_evaluate(tmp_path / "f.hdf5", bootstrap=10)


def test_repeats_use_distinct_test_sets_and_pool_them_for_the_paired_test(tmp_path):
    blob_file(tmp_path / "f.hdf5")
    repeated = train_and_evaluate(tmp_path / "f.hdf5", ["logreg", "rf"], jobs=1, repeats=3, bootstrap=200,
                                  json=tmp_path / "rep.json")
    tests = [tuple(r.test_indices) for r in repeated["logreg"].results]
    assert len(set(tests)) == 3
    assert tests == [tuple(r.test_indices) for r in repeated["rf"].results]  # the same splits
    accuracies = [r.accuracy for r in repeated["logreg"].results]
    assert repeated["logreg"].accuracy == pytest.approx(np.mean(accuracies))
    assert repeated["logreg"].accuracy_std == pytest.approx(np.std(accuracies, ddof=1))
    from classify import side_by_side_table

    table = side_by_side_table(repeated)
    assert "over the same 3 splits" in table and f"{3 * len(tests[0])} test images" in table
    doc = json.loads((tmp_path / "rep.logreg.json").read_text())
    assert doc["splits"] == 3 and [tuple(run["test_indices"]) for run in doc["runs"]] == tests
    assert doc["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))


def test_outer_cv_tests_every_row_once_and_a_stored_split_is_kept(tmp_path, caplog):
    import logging

    _, y = blob_file(tmp_path / "f.hdf5")
    folds = train_and_evaluate(tmp_path / "f.hdf5", outer_cv=4, jobs=1, bootstrap=200)["logreg"]
    rows = np.concatenate([r.test_indices for r in folds.results])
    assert sorted(rows.tolist()) == list(range(len(y))) and len(folds.results) == 4
    with FeatureWriter(tmp_path / "s.hdf5", dim=2, label_names=["a", "b"], attrs={"backbone": "blobs"},
                       splits=True) as w:
        w.add(np.random.default_rng(0).normal(size=(20, 2)), np.tile([0, 1], 10),
              [f"{i}.jpg" for i in range(20)], splits=["test" if i % 4 == 0 else "train" for i in range(20)])
    with caplog.at_level(logging.WARNING, logger="classify"):
        kept = train_and_evaluate(tmp_path / "s.hdf5", repeats=3, jobs=1, bootstrap=200)["logreg"]
    assert "--repeats and --outer-cv need --resplit" in caplog.text
    assert kept.test_indices.tolist() == list(range(0, 20, 4))


@pytest.mark.parametrize("settings, message", [
    ({"repeats": 1}, r"repeats \(--repeats\) must be a whole number of at least 2"),
    ({"repeats": 3, "outer_cv": 3}, "two ways to repeat: give one"),
    ({"outer_cv": 3, "save": "m.joblib"}, r"save \(--save\) writes one split's model"),
])
def test_repeats_that_make_no_sense_are_refused(settings, message, tmp_path):
    from classify import SettingsError

    with pytest.raises(SettingsError, match=message):
        train_and_evaluate(tmp_path / "absent.hdf5", **settings)


def test_pooled_repeats_draw_images_not_appearances():
    y = np.array([0, 1] * 10)
    wrong = y.copy()
    wrong[:4] = 1 - wrong[:4]
    pooled = {"a": np.concatenate([y, y]), "b": np.concatenate([wrong, wrong])}
    images = np.concatenate([np.arange(20), np.arange(20)])
    by_image = paired_significance(np.concatenate([y, y]), pooled, 2, resamples=400, seed=0, groups=images)
    once = paired_significance(y, {"a": y, "b": wrong}, 2, resamples=400, seed=0)
    # Each image's two appearances move together: the differences are those of the images once.
    assert by_image.pairs[0].accuracy_difference == once.pairs[0].accuracy_difference
