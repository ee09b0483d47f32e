"""The trained classifier put to use: model card, predict on new images, plots."""

from __future__ import annotations

import csv
import io
import json

import joblib
import numpy as np
import pytest
from conftest import assert_classes_of_stored_rows, make_subset, run_module
from PIL import Image

from features import FeatureFile

CLASSES = ["crocus", "daisy", "sunflower"]
EXTRACT = ("--image-size", "64", "-q")


@pytest.fixture(scope="module")
def trained(flowers17, tmp_path_factory):
    """A logistic regression trained on hed-bsds500 VGG16 features of a small subset."""
    tmp = tmp_path_factory.mktemp("trained")
    data = make_subset(flowers17, tmp / "f17", CLASSES, per_class=8)
    features = tmp / "f17.hdf5"
    result = run_module("extract", "--dataset", data, "-o", features, "--weights", "hed-bsds500", *EXTRACT)
    assert result.returncode == 0, result.stderr
    model = tmp / "m.joblib"
    result = run_module("classify", "-f", features, "--save", model, "--grid", '{"C": [1]}', "-j", "1")
    assert result.returncode == 0, result.stderr
    return data, features, model


@pytest.mark.slow
@pytest.mark.needs_shared
def test_model_card_is_written_beside_the_model(trained):
    _, features, model = trained
    card = json.loads(model.with_name("m.card.json").read_text())
    assert card["classes"] == CLASSES and card["model"] == "logreg" and card["best_params"] == {"C": 1}
    assert card["extraction"]["backbone"] == "vgg16" and card["extraction"]["weights"] == "hed-bsds500"
    assert card["extraction"]["image_size"] == 64 and 0 <= card["test_accuracy"] <= 1
    with FeatureFile(features) as ff:
        assert card["extraction"]["weights_sha256"] == ff.attrs["weights_sha256"]
    assert "scikit-learn" in card["versions"]


@pytest.mark.slow
@pytest.mark.needs_shared
def test_predict_gives_the_labels_of_the_stored_features(trained, tmp_path):
    data, features, model = trained
    out = tmp_path / "pred.csv"
    result = run_module("classify", "predict", "--model", model, data, "--output", out, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no TensorFlow start-up lines, no bar with -q
    rows = list(csv.DictReader(out.open()))
    with FeatureFile(features) as ff:
        X, paths = ff.load_features(), ff.paths
    by_path = {row["path"]: row for row in rows}
    assert len(rows) == len(paths) == 24
    # predict computes the features again: the stored rows' classes, but for near ties.
    assert_classes_of_stored_rows(joblib.load(model), X,
                                  [CLASSES.index(by_path[str(data / p)]["predicted"]) for p in paths])
    for row in rows:
        top = row["top3"].split(";")
        assert len(top) == 3 and top[0].startswith(row["predicted"] + ":")
        assert float(row["probability"]) == pytest.approx(float(top[0].split(":")[1]))


@pytest.mark.slow
@pytest.mark.needs_shared
def test_predict_one_image_and_a_bad_one_to_stdout(trained, tmp_path):
    data, _, model = trained
    image = sorted((data / "daisy").iterdir())[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    result = run_module("classify", "predict", "--model", model, image, bad, "-q")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["path", "predicted", "probability", "top3", "error"]
    assert rows[1][0] == str(image) and rows[1][1] in CLASSES
    assert rows[2] == [str(bad), "", "", "", "skipped: empty file"]


@pytest.mark.slow
@pytest.mark.needs_shared
def test_predict_refuses_features_from_other_weights(flowers17, mobilenetv2_notop, tmp_path):
    import keras

    from classify import train_and_evaluate
    from extract import extract_features

    data = make_subset(flowers17, tmp_path / "f17", CLASSES[:2], per_class=4)
    features, model = tmp_path / "mn.hdf5", tmp_path / "mn.joblib"
    extract_features(data, output=features, backbone="mobilenetv2", weights=mobilenetv2_notop,
                     pooling="avg", image_size=64, progress=False)
    train_and_evaluate(features, grid={"C": [1]}, jobs=1, save=model)
    # Other weights of the same architecture: one kernel changed, saved as a valid file.
    net = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3),
                                         pooling="avg")
    net.load_weights(mobilenetv2_notop)
    kernel = net.layers[1].get_weights()
    kernel[0] = kernel[0] * 1.01
    net.layers[1].set_weights(kernel)
    other = tmp_path / "other.weights.h5"
    net.save_weights(other)

    result = run_module("classify", "predict", "--model", model, data, "--weights", other, "-q")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]  # TensorFlow's start-up lines come before
    assert last.startswith("classify predict: error: ") and "(sha256 " in last
    assert last.endswith("pass the weights (--weights) they came from")
    # VGG16 weights for a MobileNetV2 model: another backbone's features.
    result = run_module("classify", "predict", "--model", model, data, "--weights", "hed-bsds500", "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hed-bsds500 holds VGG16 layers" in result.stderr.strip().splitlines()[-1]
    result = run_module("classify", "predict", "--model", model, data, "--weights", mobilenetv2_notop, "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_plots_are_valid_images(tmp_path):
    from test_classify import blobs_file

    features = tmp_path / "blobs.hdf5"
    blobs_file(features, spread=1.0)
    plots = tmp_path / "new" / "plots"  # not there yet: created, with its parent
    result = run_module("classify", "-f", features, "-m", "logreg", "rf", "--plots", plots,
                        "--json", tmp_path / "r.json", "-j", "1")
    assert result.returncode == 0, result.stderr
    for name in ("confusion_logreg.png", "confusion_rf.png", "precision.png"):
        with Image.open(plots / name) as img:
            img.verify()
        with Image.open(plots / name) as img:
            assert img.format == "PNG" and img.width >= 400 and img.height >= 400
    with Image.open(plots / "confusion_logreg.png") as img:
        assert img.size == (600, 600)  # 6 x 6 inches at 100 dpi for 3 classes
    again = tmp_path / "again"
    result = run_module("classify", "compare", tmp_path / "r.logreg.json", tmp_path / "r.rf.json",
                        "--plots", again)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in again.iterdir()) == ["confusion_r.logreg.png", "confusion_r.rf.png",
                                                       "precision.png"]


def test_confusion_matrix_of_101_classes_is_readable(tmp_path):
    from classify.outputs.plots import confusion_png

    names = [f"class_{i:03d}" for i in range(101)]
    y = np.repeat(np.arange(101), 3)
    path = confusion_png(y, np.roll(y, 1), names, tmp_path / "cm.png")
    with Image.open(path) as img:
        assert img.size[0] >= 2400  # about 0.22 inch, 22 pixels, per class


def test_plots_folder_that_cannot_be_made_is_one_line(tmp_path):
    from test_classify import blobs_file

    features = tmp_path / "blobs.hdf5"
    blobs_file(features)
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    result = run_module("classify", "-f", features, "--plots", taken / "plots", "-j", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"classify: error: {taken / 'plots'}: cannot create the folder for --plots (Not a directory)"
    )


@pytest.mark.slow
@pytest.mark.needs_shared
def test_predict_finds_the_weights_file_where_extraction_read_it(flowers17, mobilenetv2_notop, tmp_path):
    """A model trained on features from a weights file needs no --weights while the file is
    where extraction read it, unchanged; moved or changed, predict asks for --weights in one line."""
    import shutil

    from classify import PredictError, predict, train_and_evaluate
    from extract import extract_features

    weights = tmp_path / "models" / "mnv2.weights.h5"
    weights.parent.mkdir()
    shutil.copy(mobilenetv2_notop, weights)
    data = make_subset(flowers17, tmp_path / "f17", CLASSES[:2], per_class=4)
    features, model = tmp_path / "mn.hdf5", tmp_path / "mn.joblib"
    extract_features(data, output=features, backbone="mobilenetv2", weights=weights, pooling="avg",
                     image_size=64, progress=False)
    with FeatureFile(features) as ff:
        assert ff.attrs["weights_path"] == str(weights.resolve())  # recorded by extract
    train_and_evaluate(features, grid={"C": [1]}, jobs=1, save=model)
    card_file = model.with_name("mn.card.json")
    assert json.loads(card_file.read_text())["extraction"]["weights_path"] == str(weights.resolve())

    done = run_module("classify", "predict", "--model", model, data, "-q")  # no --weights
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 8 and all(row["predicted"] in CLASSES[:2] for row in rows)

    moved = tmp_path / "elsewhere.weights.h5"
    weights.rename(moved)
    done = run_module("classify", "predict", "--model", model, data, "-q")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"classify predict: error: {model}: the features came from the weights file "
        f"{weights.resolve()}, which is no longer there (moved or deleted); pass --weights PATH "
        "to that file"
    )
    with pytest.raises(PredictError, match="which is no longer there"):
        predict(model, data, progress=False)
    assert len(predict(model, data, weights=moved, progress=False)) == 8

    weights.write_bytes(moved.read_bytes() + b"\0")  # back, but not the same file
    with pytest.raises(PredictError, match=r"which has changed since \(other SHA-256\); pass --weights PATH"):
        predict(model, data, progress=False)

    card = json.loads(card_file.read_text())  # a model trained on a file from before the path was recorded
    del card["extraction"]["weights_path"]
    card_file.write_text(json.dumps(card))
    with pytest.raises(PredictError) as caught:
        predict(model, data, progress=False)
    assert str(caught.value) == (
        f"{model}: the features came from the weights file mnv2.weights.h5, whose place was not "
        "recorded; pass --weights PATH to that file"
    )
