"""``classify export``: one Keras model from images to class probabilities, loaded by plain Keras
in a process without featurebank, giving ``classify predict``'s probabilities."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import (
    MNV2_CLASSES,
    U32,
    class_moves,
    features_atol,
    logit_moves,
    may_change_class,
    run_module,
    softmax_rounding,
)

from classify import ExportError, SettingsError, export_model, predict, read_metadata
from classify.classifiers.linear import linear_weights
from classify.inference.export import PREPROCESS_MODES, preprocess_layers, preprocess_mode
from extract.backbones import PREPROCESS_MODULES
from features import FeatureFile

CLASSES = MNV2_CLASSES

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
if len(sys.argv) > 6:  # also the backbone's output (the first model inside) beside them, in one pass
    x = inputs = keras.Input(model.input_shape[1:])
    features = None
    for layer in model.layers[1:]:  # a chain: preprocessing, backbone, classifier
        x = layer(x)
        if features is None and isinstance(layer, keras.Model):
            features = x
    both = keras.Model(inputs, [x, features]).predict(images, verbose=0)
    np.savez(sys.argv[6], probabilities=both[0], features=both[1])
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
        # A few float32 operations on values up to 255, each within u of its exact result.
        np.testing.assert_allclose(np.asarray(m.predict(images, verbose=0)), expected, rtol=0,
                                   atol=4 * U32 * 255)


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
def trained(mnv2_flowers, mnv2_models):
    """The session's saved models on MobileNetV2 features of 3 flower classes (conftest's
    mnv2_models): a head, a logistic regression with a PCA to fold in, one on float16
    features, a forest and boosted trees; with the images and each model's feature file."""
    searches = {key: result.search for key, (result, _, _) in mnv2_models.items()}
    assert searches["logreg_projected"].projected and not searches["logreg"].projected
    saved = {key: path for key, (_, path, _) in mnv2_models.items()}
    features = {key: file for key, (_, _, file) in mnv2_models.items()}
    return mnv2_flowers["data"], saved, features


@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("key", ["head", "logreg_projected", "logreg"])
def test_exported_model_gives_predicts_probabilities_in_plain_keras(trained, key, tmp_path):
    """Exported network = extraction's backbone + the classifier, to what float32 (and float16
    storage) allow: (1) its backbone gives the stored features; (2) on its own features it
    gives what the saved classifier gives; (3) so it gives ``predict``'s probabilities."""
    from classify.inference.predict import image_files, read_card
    from classify.outputs.model_files import load_estimator
    from extract.images import load_image

    data, saved, feature_files = trained
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
         tmp_path / "f32.npy", tmp_path / "classes.json", tmp_path / "inside.npz"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "classes.json").read_text()) == CLASSES
    assert read_metadata(out)["model"] == ("head" if key == "head" else "logreg")

    estimator = load_estimator(saved[key], read_card(saved[key]))
    with FeatureFile(feature_files[key]) as ff:
        by_path = dict(zip((str(data / p) for p in ff.paths), ff.load_features(), strict=True))
        stored_dtype = ff.attrs["dtype"]
    stored = np.stack([by_path[str(f)] for f in files])
    inside = np.load(tmp_path / "inside.npz")
    ours = inside["features"].reshape(len(files), -1)  # the exported backbone's
    # (1) The backbone's features, stored as extraction stored them.
    atol = features_atol(stored)
    rounding = 0.0 if stored_dtype == "float32" else np.spacing(np.abs(stored).astype(stored_dtype)) / 2
    assert np.all(np.abs(ours - stored) <= atol + rounding)
    # (2) On those features, rounded as stored, the saved classifier (float64 or float32) gives
    # what the exported layers (float32) give.
    rounded = ours.astype(stored_dtype).astype(np.float32)
    on_ours = estimator.predict_proba(rounded)
    own = logit_moves(estimator, rounded)  # one float32 evaluation's rounding; two compared
    rounding = 2 * softmax_rounding(on_ours)  # each side's float32 softmax
    assert np.all(np.abs(inside["probabilities"] - on_ours) <= class_moves(on_ours, 2 * own) + rounding)
    # (3) predict's features are within 2·atol of the exported backbone's (each is within atol
    # of the exact ones); stored as float16, each rounds to one of the values those bounds round to.
    if stored_dtype == "float32":
        shift = 2 * atol
    else:
        lo, hi = ((ours + s).astype(np.float32).astype(stored_dtype).astype(np.float64)
                  for s in (-2 * atol, 2 * atol))
        shift = hi - lo
    for name in ("u8.npy", "f32.npy"):
        got = np.load(tmp_path / name)
        assert got.shape == (30, 3)
        moves = class_moves(expected, logit_moves(estimator, rounded, shift) + 2 * own) + rounding
        assert np.all(np.abs(got - expected) <= moves)
        changeable = may_change_class(expected, moves)
        assert changeable.mean() <= 0.2  # the bounds leave the comparison its teeth
        np.testing.assert_array_equal(got.argmax(axis=1)[~changeable], expected.argmax(axis=1)[~changeable])


@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("key, kind", [("rf", "random forest"), ("xgb", "gradient-boosted trees")])
def test_trees_are_refused_in_one_line(trained, key, kind, tmp_path):
    _, saved, _ = trained
    with pytest.raises(ExportError, match=rf"{key}\.joblib: a model of kind {key} \({kind}\) has no "
                                          r"Keras layers to export; export works for logreg, head"):
        export_model(saved[key], tmp_path / "trees.keras")
    done = run_module("classify", "export", "--model", saved[key], "--output", tmp_path / "trees.keras")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("classify export: error: ") and not (tmp_path / "trees.keras").exists()


@pytest.mark.slow
@pytest.mark.needs_shared
def test_output_must_be_a_keras_file(trained, tmp_path):
    _, saved, _ = trained
    with pytest.raises(SettingsError, match=r"--output .*model\.h5 must end in \.keras"):
        export_model(saved["logreg"], tmp_path / "model.h5")
    done = run_module("classify", "export", "--model", saved["logreg"], "--output", tmp_path / "model.h5")
    assert done.returncode == 2 and "must end in .keras" in done.stderr


@pytest.mark.slow
@pytest.mark.needs_shared
def test_export_replaces_an_existing_file_whole(trained, tmp_path):
    _, saved, _ = trained
    out = tmp_path / "model.keras"
    out.write_bytes(b"an older export")
    exported = export_model(saved["logreg"], out)
    assert exported.classes == CLASSES and exported.input_shape == (96, 96, 3)
    assert zipfile.is_zipfile(out) and [p.name for p in tmp_path.iterdir()] == ["model.keras"]
