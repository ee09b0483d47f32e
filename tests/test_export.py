"""``classify export``: one Keras model from images to class probabilities, loaded by plain Keras
in a process without featurebank, giving ``classify predict``'s probabilities."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import make_subset, run_module

from classify import ExportError, SettingsError, export_model, predict, read_metadata, train_and_evaluate
from classify.export import PREPROCESS_MODES, linear_weights, preprocess_layers, preprocess_mode
from extract.backbones import PREPROCESS_MODULES

CLASSES = ["crocus", "daisy", "sunflower"]
HEAD_GRID = {"hidden": [16], "dropout": [0.0], "learning_rate": [1e-2]}

# Run in a fresh interpreter: plain Keras loads the exported file and classifies the images;
# featurebank's packages must never be imported.
FRESH = """
import json, sys, zipfile
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1])
classes = json.loads(zipfile.ZipFile(sys.argv[1]).read("featurebank.json"))["classes"]
images = np.load(sys.argv[2])
np.save(sys.argv[3], model.predict(images, verbose=0))
np.save(sys.argv[4], model.predict(images.astype("float32"), verbose=0))
json.dump(classes, open(sys.argv[5], "w"))
leaked = [m for m in ("classify", "extract", "features") if m in sys.modules]
assert not leaked, leaked
"""


@pytest.mark.parametrize("module", [m for m in PREPROCESS_MODULES if m != "none"])
def test_preprocessing_layers_are_the_modules_preprocess_input(module, tmp_path):
    """For every preprocessing module of the registry, the layers (also once saved and loaded
    by plain Keras) give what the module's preprocess_input gives."""
    import keras

    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    expected = getattr(keras.applications, module).preprocess_input(images.astype(np.float32))
    layers = preprocess_layers(preprocess_mode(module))
    if not layers:  # the model normalises in its own layers: preprocess_input is the identity
        np.testing.assert_array_equal(expected, images.astype(np.float32))
        return
    inputs = keras.Input((5, 7, 3))
    x = inputs
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    model.save(tmp_path / "p.keras")
    for m in (model, keras.models.load_model(tmp_path / "p.keras")):
        np.testing.assert_allclose(np.asarray(m.predict(images, verbose=0)), expected, rtol=1e-6, atol=1e-5)


def test_every_preprocessing_mode_is_in_the_registry():
    from extract.backbones import BACKBONES

    assert {preprocess_mode(m) for m in PREPROCESS_MODULES} == {*PREPROCESS_MODES, "none"}
    for backbone in BACKBONES.values():  # the words recorded in files agree with the mode
        assert backbone.preprocess_mode == ("none" if backbone.preprocess_in_model
                                            else backbone.preprocessing.split("(")[1].split(":")[0])


@pytest.mark.parametrize("classes, whiten", [(2, False), (3, False), (3, True)])
def test_logistic_regression_folds_into_one_softmax_layer(classes, whiten):
    from scipy.special import softmax
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 60))
    y = np.arange(40) % classes
    X[np.arange(40), y] += 3
    projected = Pipeline([("row_space", PCA(20, whiten=whiten)),
                          ("model", LogisticRegression(max_iter=1000))])
    for model in (LogisticRegression(max_iter=1000).fit(X, y), projected.fit(X, y)):
        kernel, bias = linear_weights(model)
        assert kernel.shape == (60, classes)
        np.testing.assert_allclose(softmax(X @ kernel + bias, axis=1), model.predict_proba(X), atol=1e-10)


@pytest.fixture(scope="module")
def trained(flowers17, mobilenetv2_notop, tmp_path_factory):
    """Saved models on MobileNetV2 (ImageNet) features of 3 flower classes: a head (avg
    pooling), a logistic regression searched in the row space of flattened maps (11,520
    features, 22 training rows: a PCA folded in on export), one on 32 max-pooled features of
    an early layer stored as float16 (searched as they are), a forest and boosted trees."""
    from extract import extract_features

    tmp = tmp_path_factory.mktemp("export")
    data = make_subset(flowers17, tmp / "f17", CLASSES, per_class=10)
    avg, flat, early = tmp / "avg.hdf5", tmp / "flat.hdf5", tmp / "early.hdf5"
    common = {"backbone": "mobilenetv2", "weights": mobilenetv2_notop, "image_size": 96, "progress": False}
    extract_features(data, output=avg, pooling="avg", **common)
    extract_features(data, output=flat, pooling="flatten", **common)
    extract_features(data, output=early, pooling="max", layers=["block_5_add"], dtype="float16", **common)
    saved, projected = {}, {}
    runs = [("head", avg, "head", HEAD_GRID), ("logreg_projected", flat, "logreg", None),
            ("logreg", early, "logreg", None), ("rf", avg, "rf", {"max_features": ["sqrt"]}),
            ("xgb", avg, "xgb", {"learning_rate": [0.3]})]
    for key, features, model, grid in runs:
        result = train_and_evaluate(features, model, grid=grid, jobs=1)[model]
        saved[key] = result.save(tmp / f"{key}.joblib")
        projected[key] = result.search.projected
    assert projected["logreg_projected"] and not projected["logreg"]
    return data, saved


@pytest.mark.parametrize("key", ["head", "logreg_projected", "logreg"])
def test_exported_model_gives_predicts_probabilities_in_plain_keras(trained, key, tmp_path):
    from classify.prediction import image_files
    from extract.images import load_image

    data, saved = trained
    out = tmp_path / "model.keras"
    done = run_module("classify", "export", "--model", saved[key], "--output", out)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no TensorFlow start-up lines
    assert done.stdout.startswith(f"wrote {out}: mobilenetv2") and "3 class probabilities" in done.stdout
    files = image_files(data)
    predictions = predict(saved[key], data, top=3, progress=False)
    expected = np.array([[dict(p.top)[name] for name in CLASSES] for p in predictions])
    images = np.stack([load_image(f, (96, 96), "nearest") for f in files])
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", FRESH, out, tmp_path / "images.npy", tmp_path / "u8.npy",
         tmp_path / "f32.npy", tmp_path / "classes.json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "classes.json").read_text()) == CLASSES
    for name in ("u8.npy", "f32.npy"):
        got = np.load(tmp_path / name)
        assert got.shape == (30, 3)
        np.testing.assert_allclose(got, expected, atol=2e-5)
    assert read_metadata(out)["model"] == ("head" if key == "head" else "logreg")


@pytest.mark.parametrize("key, kind", [("rf", "random forest"), ("xgb", "gradient-boosted trees")])
def test_trees_are_refused_in_one_line(trained, key, kind, tmp_path):
    _, saved = trained
    with pytest.raises(ExportError, match=rf"{key}\.joblib: a model of kind {key} \({kind}\) has no "
                                          r"Keras layers to export; export works for logreg, head"):
        export_model(saved[key], tmp_path / "trees.keras")
    done = run_module("classify", "export", "--model", saved[key], "--output", tmp_path / "trees.keras")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("classify export: error: ") and not (tmp_path / "trees.keras").exists()


def test_output_must_be_a_keras_file(trained, tmp_path):
    _, saved = trained
    with pytest.raises(SettingsError, match=r"--output .*model\.h5 must end in \.keras"):
        export_model(saved["logreg"], tmp_path / "model.h5")
    done = run_module("classify", "export", "--model", saved["logreg"], "--output", tmp_path / "model.h5")
    assert done.returncode == 2 and "must end in .keras" in done.stderr


def test_export_replaces_an_existing_file_whole(trained, tmp_path):
    _, saved = trained
    out = tmp_path / "model.keras"
    out.write_bytes(b"an older export")
    exported = export_model(saved["logreg"], out)
    assert exported.classes == CLASSES and exported.input_shape == (96, 96, 3)
    assert zipfile.is_zipfile(out) and [p.name for p in tmp_path.iterdir()] == ["model.keras"]
