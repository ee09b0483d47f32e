"""Fusion: several feature files of the same images joined on path, each block scaled to unit
mean row norm (recorded), side by side; every model, the reports, save, predict and export on
the fused rows; files that do not match refused in one line naming the first differing image."""

from __future__ import annotations

import csv
import json

import joblib
import numpy as np
import pytest
from conftest import U32, assert_classes_of_stored_rows, run_module

from classify import SettingsError, export_model, train_and_evaluate
from classify.api import read_features
from classify.fusion import FeatureData, FusionError, fuse, read_file
from features import FeatureWriter

NAMES = ["ant", "bee", "cow"]
PER_CLASS = 12


def write(path, X, y, paths, names=NAMES, backbone="blobs", splits=None):
    """A feature file of rows ``X`` with labels ``y`` and image paths ``paths``."""
    with FeatureWriter(path, dim=X.shape[1], label_names=names, attrs={"backbone": backbone},
                       splits=splits is not None) as w:
        w.add(X, y, paths, splits=splits)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two files of the same 36 images: ``a`` (8 features, in class order) and ``b`` (5 other
    features of another scale, its rows in reverse order), each with its rows by path."""
    tmp = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), PER_CLASS)
    paths = [f"{NAMES[label]}/{i:02d}.jpg" for i, label in enumerate(y)]
    Xa = (rng.normal(0, 1, (len(y), 8)) + 2.0 * y[:, None]).astype(np.float32)
    Xb = (40 * rng.normal(0, 1, (len(y), 5)) + 60.0 * y[:, None]).astype(np.float32)
    back = np.arange(len(y))[::-1]
    a = write(tmp / "a.hdf5", Xa, y, paths)
    b = write(tmp / "b.hdf5", Xb[back], y[back], [paths[i] for i in back], backbone="other")
    return {"a": a, "b": b, "Xa": Xa, "Xb": Xb, "y": y, "paths": paths, "tmp": tmp}


def test_joined_rows_are_the_files_rows_side_by_side_after_the_recorded_scaling(pair):
    data = read_features([str(pair["a"]), str(pair["b"])], allow_partial=False, mirrors=False)
    scales = data.provenance["scales"]
    # The block is the file's float32 rows times the recorded factor, one float32 multiply: exact.
    expected = np.concatenate([pair["Xa"] * np.float32(scales[0]), pair["Xb"] * np.float32(scales[1])],
                              axis=1)
    np.testing.assert_array_equal(data.X, expected)
    assert data.X.dtype == np.float32 and data.paths == pair["paths"]
    np.testing.assert_array_equal(data.y, pair["y"])
    assert data.provenance["dims"] == [8, 5] and data.provenance["scale_rows"] == "all"
    assert data.provenance["features"] == [str(pair["a"]), str(pair["b"])]
    assert [p["backbone"] for p in data.provenance["fused"]] == ["blobs", "other"]
    for X, scale in zip((pair["Xa"], pair["Xb"]), scales, strict=True):
        exact = 1.0 / np.linalg.norm(X.astype(np.float64), axis=1).mean()
        # The recorded factor is 1 / mean norm rounded once to float32 (half an ulp: u relative),
        # and a float32 number, so its JSON text is the number multiplied.
        assert abs(scale - exact) <= U32 * exact and float(np.float32(scale)) == scale
        # Scaled, the block's mean norm is 1 but for that rounding and each product's (u each).
        norms = np.linalg.norm((X * np.float32(scale)).astype(np.float64), axis=1)
        assert abs(norms.mean() - 1.0) <= 3 * U32


def test_a_reordered_second_file_joins_on_path(pair):
    """b's rows are stored in reverse: each joined row holds the same image's features."""
    data = read_features([str(pair["b"]), str(pair["a"])], allow_partial=False, mirrors=False)
    assert data.paths == pair["paths"][::-1]
    sb, sa = data.provenance["scales"]
    np.testing.assert_array_equal(data.X[:, 5:], pair["Xa"][::-1] * np.float32(sa))
    np.testing.assert_array_equal(data.X[:, :5], pair["Xb"][::-1] * np.float32(sb))


@pytest.mark.parametrize("fault, image", [
    ("missing", "ant/00.jpg"), ("extra", "zzz/99.jpg"), ("label", "bee/13.jpg"), ("classes", "cow/24.jpg"),
    ("split", "ant/01.jpg"),
])
def test_files_that_differ_are_refused_in_one_line_naming_the_first_differing_image(pair, fault, image):
    tmp, y, paths, X = pair["tmp"], pair["y"].copy(), list(pair["paths"]), pair["Xb"]
    names, splits, first = NAMES, None, pair["a"]
    if fault == "missing":
        X, y, paths = X[1:], y[1:], paths[1:]
    elif fault == "extra":
        X, y, paths = np.vstack([X, X[:1]]), np.append(y, 0), [*paths, image]
    elif fault == "label":
        y[13] = 2
    elif fault == "classes":
        names = ["ant", "bee", "cat"]
    else:  # the same images, another split
        splits = ["test" if i == 1 else "train" for i in range(len(y))]
        first = write(tmp / f"split_{fault}.hdf5", pair["Xa"], pair["y"], pair["paths"],
                      splits=["train"] * len(y))
    other = write(tmp / f"bad_{fault}.hdf5", X, y, paths, names=names, splits=splits)
    with pytest.raises(FusionError) as caught:
        train_and_evaluate([first, other], jobs=1)
    message = str(caught.value)
    assert "\n" not in message and str(first) in message and str(other) in message
    assert image in message


def test_a_file_without_paths_or_named_twice_is_refused(pair):
    with pytest.raises(FusionError, match="twice"):
        train_and_evaluate([pair["a"], pair["a"]], jobs=1)
    with pytest.raises(FusionError, match="records no image paths"):
        fuse([read_file(str(pair["a"]), allow_partial=False, mirrors=False),
              FeatureData("nopaths.hdf5", pair["Xb"], pair["y"], None, NAMES, {}, True)])


def test_finetune_and_augment_without_mirrors_are_refused_in_one_line(pair):
    with pytest.raises(SettingsError, match="finetune trains the top layers of one backbone"):
        train_and_evaluate([pair["a"], pair["b"]], "finetune")
    with pytest.raises(Exception, match="holds no mirrored features") as caught:
        train_and_evaluate([pair["a"], pair["b"]], augment=True, jobs=1)
    assert "\n" not in str(caught.value)


def test_every_model_trains_on_fused_rows_and_records_the_scales(pair, tmp_path):
    results = train_and_evaluate([pair["a"], pair["b"]], ["logreg", "rf"], jobs=1,
                                 grid=None, json=tmp_path / "f.json", save=tmp_path / "f.joblib")
    data = read_features([str(pair["a"]), str(pair["b"])], allow_partial=False, mirrors=False)
    for name, result in results.items():
        assert result.features_path == f"{pair['a']} + {pair['b']}"
        doc = json.loads((tmp_path / f"f.{name}.json").read_text())
        assert doc["provenance"]["scales"] == data.provenance["scales"]  # exact through JSON
        card = json.loads((tmp_path / f"f.{name}.card.json").read_text())
        assert card["extraction"] is None
        assert [(p["features"], p["dim"], p["scale"]) for p in card["fusion"]] == \
            list(zip(data.provenance["features"], [8, 5], data.provenance["scales"], strict=True))
        # The saved model scores the fused test rows as the run did.
        model = joblib.load(tmp_path / f"f.{name}.joblib")
        np.testing.assert_array_equal(model.predict(data.X[result.test_indices]), result.test_predictions)
    # The default C grid of a linear model reaches the C that unit-norm rows need.
    assert max(row["params"]["C"] for row in results["logreg"].search.cv_results) >= 1e4


def test_label_issues_of_a_fused_run_read_the_fused_rows_again(pair):
    result = train_and_evaluate([pair["a"], pair["b"]], jobs=1)["logreg"]
    issues = result.label_issues()
    train_paths = {pair["paths"][i] for i in result.train_indices}
    assert all(issue.path in train_paths for issue in issues)


def test_label_issues_refuse_fused_files_changed_since_the_run(pair, tmp_path):
    b = write(tmp_path / "b.hdf5", pair["Xb"], pair["y"], pair["paths"], backbone="other")
    result = train_and_evaluate([pair["a"], b], jobs=1, models=["logreg"])["logreg"]
    b.unlink()  # extracted again, otherwise
    write(b, 2 * pair["Xb"], pair["y"], pair["paths"], backbone="other")
    with pytest.raises(FusionError, match="the files changed since the run") as raised:
        result.label_issues()
    assert "\n" not in str(raised.value)


def test_predict_refuses_one_weights_file_for_a_fused_model_and_export_one_input_size():
    from classify import PredictError
    from classify.inference.export import ExportError, check_fusable
    from classify.inference.predict import load_backbones

    card = {"extraction": None, "fusion": [{"extraction": {"backbone": "mobilenetv2"}, "scale": 0.5},
                                           {"extraction": {"backbone": "mobilenet"}, "scale": 0.25}]}
    with pytest.raises(PredictError, match="one --weights cannot say whose"):
        load_backbones(card, "m.joblib", "w.weights.h5")
    with pytest.raises(ExportError, match="96, 224 pixels, and an exported model has one input"):
        check_fusable([224, 96], ["nearest", "nearest"], "m.joblib")
    # MobileNetV2 resized with nearest and a keras_hub preset with bilinear, both at 224.
    refusal = r"different filters \(nearest, bilinear\).*--interpolation"
    with pytest.raises(ExportError, match=refusal) as raised:
        check_fusable([224, 224], ["nearest", "bilinear"], "m.joblib")
    assert "\n" not in str(raised.value)
    assert check_fusable([224, 224], ["bilinear", "bilinear"], "m.joblib") == 224


def test_a_single_file_run_records_nothing_new(pair):
    result = train_and_evaluate(pair["a"], jobs=1)["logreg"]
    assert "fused" not in result.provenance and "fusion" not in result.model_card()
    assert result.model_card()["extraction"]["backbone"] == "blobs"
    assert result.features_path == str(pair["a"])


def test_command_line_fuses_several_files_and_refuses_a_mismatch(pair, tmp_path):
    out = tmp_path / "fused.json"
    done = run_module("classify", "--features", pair["a"], pair["b"], "--json", out, "-j", "1")
    assert done.returncode == 0, done.stderr
    assert "13 features" in done.stderr
    doc = json.loads(out.read_text())
    assert doc["features"] == f"{pair['a']} + {pair['b']}" and len(doc["provenance"]["scales"]) == 2
    bad = write(tmp_path / "bad.hdf5", pair["Xb"][1:], pair["y"][1:], pair["paths"][1:])
    refused = run_module("classify", "--features", pair["a"], bad, "-j", "1")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"classify: error: {pair['a']} and {bad} hold different images: ant/00.jpg is in {pair['a']} only; "
        "fuse files extracted from the same images"]


# -- real backbones: MobileNetV2 and MobileNet v1 (../shared/models) on a flowers17 subset ------

@pytest.fixture(scope="module")
def fused_flowers(mnv2_flowers, mobilenet_notop, tmp_path_factory):
    """mnv2_flowers' pooled MobileNetV2 rows fused with MobileNet v1's (ImageNet, 96 pixels,
    avg) of the same 30 images, a logistic regression trained and saved on them."""
    from extract import extract_features

    tmp = tmp_path_factory.mktemp("fused_flowers")
    v1 = tmp / "v1.hdf5"
    extract_features(mnv2_flowers["data"], output=v1, backbone="mobilenet", weights=mobilenet_notop,
                     image_size=96, pooling="avg", progress=False)
    files = [mnv2_flowers["avg"], v1]
    result = train_and_evaluate(files, jobs=1)["logreg"]
    saved = result.save(tmp / "fused.joblib")
    data = read_features([str(f) for f in files], allow_partial=False, mirrors=False)
    return mnv2_flowers["data"], files, result, saved, data


@pytest.mark.slow
def test_mobilenets_fused_on_flowers(fused_flowers):
    _, files, result, _, data = fused_flowers
    a = read_file(str(files[0]), allow_partial=False, mirrors=False)
    b = read_file(str(files[1]), allow_partial=False, mirrors=False)
    sa, sb = result.provenance["scales"]
    side_by_side = np.concatenate([a.X * np.float32(sa), b.X * np.float32(sb)], axis=1)
    np.testing.assert_array_equal(data.X, side_by_side)
    assert data.X.shape == (30, 1280 + 1024)
    assert result.search.dim < 30  # searched in the span of the training rows, not 2,304 wide
    assert [p["backbone"] for p in result.provenance["fused"]] == ["mobilenetv2", "mobilenet"]


@pytest.mark.slow
def test_predict_on_a_fused_model_gives_the_test_rows_classes(fused_flowers, tmp_path):
    """predict runs both backbones on the test images, scales and joins their features: the
    classes are those the run gave the stored test rows, but for near ties of float32."""
    folder, _, result, saved, data = fused_flowers
    out = tmp_path / "pred.csv"
    images = [str(folder / data.paths[i]) for i in result.test_indices]
    done = run_module("classify", "predict", "--model", saved, *images, "--output", out, "-q")
    assert done.returncode == 0, done.stderr
    by_path = {row["path"]: row["predicted"] for row in csv.DictReader(out.open())}
    labels = [result.label_names.index(by_path[image]) for image in images]
    # The stored test rows' classes are the run's test predictions; predict's equal them but
    # where float32 recomputation of the features could tip a near tie.
    np.testing.assert_array_equal(result.estimator.predict(data.X[result.test_indices]),
                                  result.test_predictions)
    assert_classes_of_stored_rows(result.estimator, data.X[result.test_indices], labels)


@pytest.mark.slow
def test_export_of_a_fused_model_is_one_keras_model(fused_flowers, tmp_path):
    """Images -> each backbone -> its scale -> joined -> softmax: the stored rows' classes."""
    import keras
    from PIL import Image

    folder, _, result, saved, data = fused_flowers
    exported = export_model(saved, tmp_path / "fused.keras")
    assert exported.metadata["backbone"] == "mobilenetv2 + mobilenet"
    assert [part["scale"] for part in exported.metadata["fusion"]] == result.provenance["scales"]
    model = keras.models.load_model(tmp_path / "fused.keras")
    images = np.stack([np.asarray(Image.open(folder / p).convert("RGB").resize((96, 96), Image.NEAREST))
                       for p in data.paths])
    P = model.predict(images, verbose=0)
    labels = np.asarray(exported.classes)[P.argmax(axis=1)]
    assert_classes_of_stored_rows(result.estimator, data.X,
                                  [result.label_names.index(label) for label in labels])


def test_features_named_twice_on_the_command_line_are_all_fused():
    from classify.__main__ import build_parser

    parser = build_parser()
    assert parser.parse_args(["-f", "a.hdf5", "-f", "b.hdf5"]).features == ["a.hdf5", "b.hdf5"]
    assert parser.parse_args(["--features", "a.hdf5", "b.hdf5"]).features == ["a.hdf5", "b.hdf5"]


def test_the_html_report_of_a_fused_run_names_every_file(pair, tmp_path):
    from classify.outputs.html import to_html

    results = train_and_evaluate([pair["a"], pair["b"]], jobs=1, models=["logreg"])
    page = to_html(results, tmp_path / "r.html").read_text()
    assert "featurebank: logreg on a.hdf5 + b.hdf5" in page
