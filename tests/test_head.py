"""The dense head on the frozen base (``--model head``): a scikit-learn estimator trained with
Keras on stored features, the same training as the frozen base with the head on images, in the
search, the reports, compare, save and predict."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from conftest import (
    MNV2_CLASSES,
    U32,
    assert_classes_of_stored_rows,
    assert_same_features,
    features_atol,
    run_module,
)
from sklearn.base import clone
from test_classify import blobs_file

os.environ.setdefault("MPLBACKEND", "Agg")

from classify import CLASSIFIERS, compare, predict, side_by_side_table, train_and_evaluate  # noqa: E402
from classify.classifiers.head import DenseHead, build_head, compile_head  # noqa: E402
from features import FeatureFile  # noqa: E402

CLASSES = MNV2_CLASSES
SMALL_GRID = {"hidden": [16], "dropout": [0.0, 0.5], "learning_rate": [1e-2]}


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(3.0 * k, 1.0, (30, 6)) for k in range(3)]).astype(np.float32)
    y = np.repeat([3, 7, 9], 30)  # labels need not be 0..C-1
    return X, y


def test_head_is_a_scikit_learn_classifier(blobs):
    X, y = blobs
    head = DenseHead(hidden=8, dropout=0.0, learning_rate=1e-2, random_state=1)
    assert head.get_params()["hidden"] == 8 and clone(head).get_params() == head.get_params()
    assert head.set_params(dropout=0.25).dropout == 0.25
    head.fit(X, y)
    assert head.classes_.tolist() == [3, 7, 9] and head.n_features_in_ == 6
    proba = head.predict_proba(X)
    assert proba.shape == (90, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert set(head.predict(X)) <= {3, 7, 9}
    assert head.score(X, y) >= 0.95  # three classes 3 standard deviations apart
    assert 1 <= head.best_epoch_ <= head.epochs_ <= head.epochs
    names = [layer.name for layer in head.model_.layers]
    assert names == ["features", "scaling", "hidden", "dropout", "probabilities"]
    assert not getattr(head.model_, "compiled", False)  # the head alone, without training state


@pytest.mark.parametrize("scaling", ["rms", "standard", "none"])
def test_scaling_is_fitted_on_the_training_rows_and_saved_with_the_head(blobs, scaling, tmp_path):
    X, y = blobs
    X = X * 100.0  # features of a large range
    head = DenseHead(hidden=8, scaling=scaling, validation_fraction=0.0, epochs=3).fit(X, y)
    first = head.model_.layers[1]
    if scaling == "rms":
        assert first.scale == pytest.approx(1 / np.sqrt(np.mean(X.astype(np.float64) ** 2)), rel=1e-6)
    elif scaling == "standard":
        scaled = np.asarray(first(X))
        # float32 statistics of values near 500 spread by 100: off by about u·(500/100)² relatively.
        np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-3)
    else:
        assert first.name == "hidden"
    loaded = DenseHead.load(head.save(tmp_path / "h.keras"), head.classes_)
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))


@pytest.mark.slow
def test_head_training_is_repeatable_and_seeded(blobs):
    X, y = blobs
    a, b = (DenseHead(hidden=8, learning_rate=1e-2, random_state=5).fit(X, y) for _ in range(2))
    for wa, wb in zip(a.model_.get_weights(), b.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    c = DenseHead(hidden=8, learning_rate=1e-2, random_state=6).fit(X, y)
    assert not np.array_equal(a.model_.get_weights()[0], c.model_.get_weights()[0])


@pytest.mark.parametrize("bad, message", [
    ({"optimizer": "adagrad"}, "optimizer must be one of rmsprop, adam, sgd"),
    ({"dropout": 1.0}, "dropout must lie in"),
    ({"hidden": -1}, "hidden must be"),
    ({"epochs": 0}, "epochs must be"),
    ({"scaling": "minmax"}, "scaling must be one of rms, standard, none"),
])
def test_bad_head_parameters_are_one_line(blobs, bad, message):
    with pytest.raises(ValueError, match=message):
        DenseHead(**bad).fit(*blobs)


def test_a_fold_too_small_to_hold_rows_out_trains_every_epoch():
    X = np.eye(4, dtype=np.float32)
    head = DenseHead(hidden=4, dropout=0.0, epochs=7, learning_rate=1e-2).fit(X, [0, 1, 2, 3])
    assert head.epochs_ == 7 and head.best_epoch_ == 7  # one row per class: no validation slice


@pytest.mark.parametrize("grid, message", [
    ('{"dropout": [0.5, 1.5]}', "--grid: dropout must lie in [0, 1), got 1.5"),
    ('{"optimizer": ["adagrad"]}', "--grid: optimizer must be one of rmsprop, adam, sgd, got 'adagrad'"),
])
def test_a_bad_grid_value_is_one_line_before_the_search(blob_file, grid, message):
    from classify import SettingsError

    with pytest.raises(SettingsError) as caught:
        train_and_evaluate(blob_file, "head", grid=grid)
    assert str(caught.value) == message
    done = run_module("classify", "--features", blob_file, "--model", "head", "--grid", grid)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(message)


def test_head_is_in_the_registry_with_its_grid():
    spec = CLASSIFIERS["head"]
    assert spec.file_format == "keras" and spec.exports and spec.select == "log_loss"
    assert set(spec.grid) == {"hidden", "dropout", "learning_rate"}
    assert all(len(values) >= 2 for values in spec.grid.values())
    assert set(spec.grid) <= set(spec.make(0, None).get_params())


@pytest.mark.slow
@pytest.mark.needs_shared
def test_training_on_stored_features_is_training_the_frozen_base_with_the_head(mnv2_flowers,
                                                                              mobilenetv2_notop):
    """The same head, same initial weights, same batches, no dropout: trained (a) on the rows of
    the feature file, (b) as Model(frozen base -> head) on the images. Equal weights after, to
    what the float32 features of the two paths allow."""
    import keras

    from extract.backbones import load_backbone
    from extract.images import load_image

    data = mnv2_flowers["data"]
    with FeatureFile(mnv2_flowers["avg"]) as ff:
        X, y, paths = ff.load_features(), ff.labels, ff.paths
        interpolation = ff.attrs["interpolation"]
    images = np.stack([load_image(data / p, (96, 96), interpolation) for p in paths])

    loaded = load_backbone("mobilenetv2", mobilenetv2_notop, "avg", 96)
    base = loaded.model
    base.trainable = False  # the recipe: BatchNormalization runs in inference mode too
    base_before = [w.copy() for w in base.get_weights()]

    # Standardised with statistics of the stored rows: a fixed layer of the head either way.
    shape = {"hidden": 32, "dropout": 0.0, "seed": 3, "scaling": "standard", "rows": X}
    head_a, head_c = (compile_head(build_head(X.shape[1], 3, **shape), "rmsprop", 1e-3) for _ in range(2))
    head_b = build_head(X.shape[1], 3, **shape)
    inputs = keras.Input((96, 96, 3))
    whole = compile_head(keras.Model(inputs, head_b(base(inputs))), "rmsprop", 1e-3)
    initial = head_a.get_weights()
    for wa, wb in zip(initial, head_b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)

    pixels = loaded.backbone.preprocess_input(images.astype(np.float32))
    batches = np.array_split(np.random.default_rng(0).permutation(len(y)), 3)  # 3 steps of 10 images
    # The frozen base, called as a training step calls it, gives the stored rows (float32 along
    # another path): BatchNormalization in inference mode.
    for batch in batches:
        assert_same_features(np.asarray(base(pixels[batch], training=True)), X[batch])
    # Rows that far from the stored ones (every one, either way) train head_c: how far those
    # differences carry into the weights in nine RMSprop steps.
    shifted = X + features_atol(X) * np.random.default_rng(1).choice([-1.0, 1.0], X.shape).astype(np.float32)
    for _ in range(3):  # epochs
        for batch in batches:
            head_a.train_on_batch(X[batch], y[batch])
            head_c.train_on_batch(shifted[batch], y[batch])
            whole.train_on_batch(pixels[batch], y[batch])

    trained = head_a.get_weights()
    assert max(np.abs(t - i).max() for t, i in zip(trained, initial, strict=True)) > 1e-3  # it learnt
    for wa, wb, wc in zip(trained, head_b.get_weights(), head_c.get_weights(), strict=True):
        # The base's rows lie within that shift, mostly far inside it: 4x what it moved covers them;
        # float32 rounding of the weights themselves besides.
        bound = 4 * np.max(np.abs(wa - wc)) + 4 * U32 * np.max(np.abs(wa))
        assert np.max(np.abs(wa - wb)) <= bound, (wa.shape, np.max(np.abs(wa - wb)), bound)
    for before, after in zip(base_before, base.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # the base stayed frozen


@pytest.fixture(scope="module")
def blob_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("head") / "blobs.hdf5"
    blobs_file(path, per_class=(24, 24, 24), dim=8, spread=1.5)
    return path


@pytest.mark.slow
def test_head_sits_in_the_table_and_in_compare(blob_file, tmp_path):
    results = train_and_evaluate(blob_file, ["logreg"], json=tmp_path / "logreg.json")
    results.update(train_and_evaluate(blob_file, ["head"], grid=SMALL_GRID, json=tmp_path / "head.json"))
    head = results["head"]
    assert head.best_params["hidden"] == 16 and len(head.search.cv_results) == 2
    assert np.array_equal(head.test_indices, results["logreg"].test_indices)
    assert head.accuracy >= 0.6
    table = side_by_side_table(results)
    assert "F1 logreg" in table and "F1 head" in table
    assert "model: head" in head.report and "final fit on all training rows" in head.report
    doc = json.loads((tmp_path / "head.json").read_text())
    assert doc["model"] == "head" and doc["versions"]["keras"] and doc["refit_seconds"] > 0
    comparison = compare([tmp_path / "logreg.json", tmp_path / "head.json"])
    assert "head" in comparison.table and "logreg" in comparison.table


@pytest.mark.slow
def test_head_on_the_command_line_is_saved_as_a_keras_file(blob_file, tmp_path):
    done = run_module("classify", "--features", blob_file, "--model", "head", "--grid",
                      json.dumps(SMALL_GRID), "--save", tmp_path / "m.joblib", "--plots", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model: head" in done.stdout
    assert (tmp_path / "m.keras").is_file() and not (tmp_path / "m.joblib").exists()
    card = json.loads((tmp_path / "m.card.json").read_text())
    assert card["model"] == "head" and card["file_format"] == "keras" and card["labels"] == [0, 1, 2]
    assert (tmp_path / "confusion_head.png").is_file()


@pytest.mark.slow
@pytest.mark.needs_shared
def test_saved_head_predicts_what_it_predicts_from_the_stored_features(mnv2_flowers, mnv2_models, tmp_path):
    import keras

    data = mnv2_flowers["data"]
    result, saved, features = mnv2_models["head"]  # the session's head, trained on the "avg" file
    assert saved.name == "head.keras"  # saved as head.joblib: a head is a Keras file
    assert isinstance(keras.models.load_model(saved), keras.Model)  # plain Keras reads it
    with FeatureFile(features) as ff:
        X, paths = ff.load_features(), ff.paths
    by_path = {p.path: p for p in predict(saved, data, progress=False)}
    # predict computes the features again: the stored rows' classes, but for near ties.
    assert_classes_of_stored_rows(result.estimator, X,
                                  [CLASSES.index(by_path[str(data / p)].predicted) for p in paths])
    out = tmp_path / "pred.csv"
    done = run_module("classify", "predict", "--model", saved, data, "--output", out, "-q")
    assert done.returncode == 0, done.stderr
    rows = {row["path"]: row["predicted"] for row in csv.DictReader(out.open())}
    assert [rows[str(data / p)] for p in paths] == [by_path[str(data / p)].predicted for p in paths]
