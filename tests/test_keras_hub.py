"""The keras_hub family (``--backbone keras_hub:PRESET``): for DINOv2, CLIP's vision encoder,
SigLIP and ViT, a tiny configuration with random weights saved as a local preset. Extracted
features equal keras_hub's own model output on the same images; every family runs extract ->
classify -> predict; a named block, provenance, offline refusals, bf16 and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import U32, run_module
from PIL import Image

from extract import SettingsError, extract_features
from extract.backbones import BackboneRequest, WeightsError, family_for, load_backbone, rebuild_arguments
from features import FeatureFile

SIDE = 32  # image side: 4 x 4 patches of 8 pixels
FAMILIES = ("dinov2", "clip", "siglip", "vit")
#: Tokens before the patch tokens: DINOv2's class token and 2 registers, CLIP's and ViT's class
#: token, none in SigLIP.
PREFIX = {"dinov2": 3, "clip": 1, "siglip": 0, "vit": 1}
LAYERS = 2


def _save_presets(root: Path) -> dict[str, Path]:
    """Each family's tiny backbone, random weights, with an image converter, as a preset."""
    import keras
    from keras_hub import layers, models

    keras.utils.set_random_seed(0)
    small = dict(patch_size=8, num_layers=LAYERS, num_heads=2)
    text = dict(vocabulary_size=50, embedding_dim=32, hidden_dim=32, num_layers=1, num_heads=2,
                intermediate_dim=64, max_sequence_length=8)
    imagenet = dict(scale=[1 / (255 * s) for s in (0.229, 0.224, 0.225)],
                    offset=[-m / s for m, s in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))])
    backbones = {
        "dinov2": (models.DINOV2Backbone(**small, hidden_dim=32, intermediate_dim=64, num_register_tokens=2,
                                         image_shape=(SIDE, SIDE, 3),
                                         position_embedding_shape=(SIDE, SIDE, 3)),
                   layers.DINOV2ImageConverter(image_size=(SIDE, SIDE), **imagenet)),
        "clip": (models.CLIPBackbone(models.CLIPVisionEncoder(**small, hidden_dim=32, intermediate_dim=64,
                                                              image_shape=(SIDE, SIDE, 3)),
                                     models.CLIPTextEncoder(**text), projection_dim=16),
                 layers.CLIPImageConverter(image_size=(SIDE, SIDE), **imagenet)),
        "siglip": (models.SigLIPBackbone(models.SigLIPVisionEncoder(**small, hidden_dim=32,
                                                                    intermediate_dim=64,
                                                                    image_shape=(SIDE, SIDE, 3)),
                                         models.SigLIPTextEncoder(**text)),
                   layers.SigLIPImageConverter(image_size=(SIDE, SIDE), scale=1 / 127.5, offset=-1.0)),
        "vit": (models.ViTBackbone(image_shape=(SIDE, SIDE, 3), hidden_dim=32, mlp_dim=64, **small),
                layers.ViTImageConverter(image_size=(SIDE, SIDE), scale=1 / 127.5, offset=-1.0)),
    }
    presets = {}
    for name, (backbone, converter) in backbones.items():
        backbone.save_to_preset(root / name)
        converter.save_to_preset(root / name)
        presets[name] = root / name
    return presets


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, Path]:
    return _save_presets(tmp_path_factory.mktemp("presets"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two classes of 6 random JPEGs at the models' own size (no resizing), the second class
    brighter so that a classifier has something to learn."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 128, (SIDE, SIDE, 3)) + 127 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.jpg", quality=95)
    return root


def _keras_hub_tokens(preset: Path, images: np.ndarray, layer: str | None = None) -> np.ndarray:
    """keras_hub's own computation: its image converter, then its backbone's token output
    (the vision encoder's for CLIP and SigLIP; SigLIP's tokens before its pooling head), or
    the output of the block named ``layer``."""
    import keras
    import keras_hub

    hub = keras_hub.models.Backbone.from_preset(str(preset))
    x = np.asarray(keras_hub.layers.ImageConverter.from_preset(str(preset))(images.astype(np.float32)))
    encoder = getattr(hub, "vision_encoder", hub)
    if layer is not None and isinstance(hub, keras_hub.models.DINOV2Backbone):
        out = hub.pyramid_outputs[layer]
    elif layer is not None or isinstance(hub, keras_hub.models.SigLIPBackbone):
        name = layer or "post_layer_norm"
        out = next(op.output for op in encoder.operations if op.name.endswith(name))
    else:
        out = encoder.outputs[0]
    return np.asarray(keras.Model(encoder.inputs, out).predict_on_batch(x))


def _pooled(tokens: np.ndarray, pooling: str, prefix: int) -> np.ndarray:
    mean = tokens[:, prefix:].mean(axis=1)
    both = np.concatenate([tokens[:, 0], mean], axis=1)
    return {"cls": tokens[:, 0], "mean": mean, "cls+mean": both}[pooling]


def _images(root: Path) -> tuple[list[str], np.ndarray]:
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    return paths, np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def _tolerance(expected: np.ndarray) -> float:
    """Two float32 computations of one transformer (another graph, batch or kernel) differ by
    rounding compounding over its blocks: about sqrt(K) u per matrix product of K <= 64 terms,
    a few products per block, over LAYERS blocks and the final norm; 64 u per block bounds it."""
    return 64 * (LAYERS + 1) * U32 * float(np.max(np.abs(expected)))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pooling", ["cls", "mean", "cls+mean"])
def test_features_equal_keras_hubs_own_output(presets, dataset, family, pooling, tmp_path):
    if family == "siglip" and pooling != "mean":
        with pytest.raises(SettingsError, match="needs a class token") as raised:
            load_backbone(f"keras_hub:{presets[family]}", "preset", pooling)
        assert "\n" not in str(raised.value)
        return
    loaded = load_backbone(f"keras_hub:{presets[family]}", "preset", pooling)
    paths, images = _images(dataset)
    expected = _pooled(_keras_hub_tokens(presets[family], images), pooling, PREFIX[family])
    rows = loaded.embed(images)
    assert rows.shape == expected.shape
    np.testing.assert_allclose(rows, expected, rtol=0, atol=_tolerance(expected))


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_extract_classify_predict_end_to_end(presets, dataset, family, tmp_path):
    pooling = "mean" if family == "siglip" else "cls"
    features, model = tmp_path / "f.hdf5", tmp_path / "m"
    result = run_module("extract", "--dataset", dataset, "--backbone", f"keras_hub:{presets[family]}",
                        "--pooling", pooling, "-o", features, "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    paths, images = _images(dataset)
    expected = _pooled(_keras_hub_tokens(presets[family], images), pooling, PREFIX[family])
    with FeatureFile(features) as ff:
        attrs = dict(ff.attrs)
        stored = dict(zip(ff.paths, ff.load_features(), strict=True))
    rows = np.stack([stored[str(Path(p).relative_to(dataset))] for p in paths])  # relative to the root
    np.testing.assert_allclose(rows, expected, rtol=0, atol=_tolerance(expected))
    assert attrs["backbone_family"] == "keras-hub" and attrs["weights"] == "preset"
    assert attrs["keras_hub_preset"] == str(presets[family].resolve())
    assert attrs["weights_sha256"] == _sha256(presets[family] / "model.weights.h5")
    assert json.loads(attrs["keras_hub_offset"]) and attrs["image_size"] == SIDE
    # Resized with the converter's filter unless --interpolation names another.
    assert attrs["interpolation"] == attrs["keras_hub_interpolation"] == "bilinear"
    result = run_module("classify", "-f", features, "-m", "logreg", "--save", model, "--grid",
                        '{"C": [1]}', "-j", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_module("classify", "predict", "--model", model, *paths[:2], "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == paths[:2]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("family, block", [("dinov2", "stage1"), ("clip", "encoder_block_0"),
                                           ("siglip", "encoder_block_0")])
def test_a_named_block(presets, dataset, family, block):
    loaded = load_backbone(f"keras_hub:{presets[family]}", "preset", "mean", layers=[block])
    _, images = _images(dataset)
    expected = _pooled(_keras_hub_tokens(presets[family], images, block), "mean", PREFIX[family])
    np.testing.assert_allclose(loaded.embed(images), expected, rtol=0, atol=_tolerance(expected))


def test_vit_blocks_called_again_give_keras_hubs_output(presets, dataset):
    """ViT's blocks are called again to name them: the last one, through keras_hub's final
    layer norm, is keras_hub's own output."""
    import keras_hub

    _, images = _images(dataset)
    name = f"transformer_block_{LAYERS}"
    last = load_backbone(f"keras_hub:{presets['vit']}", "preset", "flatten", layers=[name])
    tokens = last.embed(images).reshape(len(images), 1 + (SIDE // 8) ** 2, 32)
    norm = keras_hub.models.Backbone.from_preset(str(presets["vit"])).get_layer("vit_encoder").layer_norm
    expected = _keras_hub_tokens(presets["vit"], images)
    np.testing.assert_allclose(np.asarray(norm(tokens)), expected, rtol=0, atol=_tolerance(expected))


def test_provenance_rebuilds_the_same_backbone(presets, dataset):
    loaded = load_backbone(f"keras_hub:{presets['clip']}", "preset", "cls", layers=["vision_projection"])
    facts = loaded.family.provenance(loaded)
    assert facts["backbone"] == "keras_hub.clip" and facts["keras_hub_class"] == "CLIPBackbone"
    assert facts["weights_path"] == str((presets["clip"] / "model.weights.h5").resolve())
    assert loaded.dim == 16  # the projection's width
    again = load_backbone(**rebuild_arguments(facts))
    _, images = _images(dataset)
    assert np.array_equal(again.embed(images), loaded.embed(images))


def test_random_weights_from_a_handle_rebuild_from_the_handle():
    """What rebuild reads (as a model card's extraction holds it, without the keras_hub facts):
    the handle recorded as ``weights_path``, not the recorded name."""
    handle = "hf://org/dinov2_tiny"
    attrs = {"backbone": "keras_hub.org_dinov2_tiny", "backbone_family": "keras-hub", "weights": "none",
             "weights_path": handle, "layer": "layernorm", "pooling": "cls"}
    arguments = rebuild_arguments(attrs)
    assert arguments["name"] == f"keras_hub:{handle}" and arguments["weights"] is None


def test_offline_and_missing_presets_and_bad_settings_fail_in_one_line(presets, tmp_path):
    with pytest.raises(WeightsError) as raised:
        load_backbone(f"keras_hub:{tmp_path / 'nowhere'}", "preset", "cls")
    assert "\n" not in str(raised.value) and "save_to_preset" in str(raised.value)
    family = family_for("keras_hub:x", "w.h5")
    vit = f"keras_hub:{presets['vit']}"
    for request, setting in [(BackboneRequest("keras_hub:x", "w.h5", "cls"), "--weights"),
                             (BackboneRequest("keras_hub:", "preset", "cls"), "keras_hub:PRESET"),
                             (BackboneRequest(vit, "preset", "cls", 64), "--image-size")]:
        with pytest.raises(SettingsError, match=setting) as raised:
            family.check_settings(request)
        assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_a_named_preset_offline_says_how_to_get_it(monkeypatch, tmp_path):
    """Offline (an empty download cache, and kagglehub's download failing as without network),
    the error says what to do instead."""
    import kagglehub

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com' (no network)")

    monkeypatch.setattr(kagglehub, "model_download", offline)
    with pytest.raises(WeightsError) as raised:
        load_backbone("keras_hub:dinov2_small", "preset", "cls")
    message = str(raised.value)
    assert "\n" not in message and "save_to_preset" in message and "keras_hub:DIR" in message


def test_the_default_pooling_is_the_class_token_where_there_is_one_else_the_mean(presets, tmp_path):
    from extract.backbones import default_pooling
    from extract.settings import ExtractSettings

    expected = {"dinov2": "cls", "clip": "cls", "siglip": "mean", "vit": "cls"}
    assert {family: ExtractSettings(backbone=f"keras_hub:{presets[family]}").pooling
            for family in FAMILIES} == expected
    named = ("clip_vit_large_patch14", "siglip_so400m_patch14_384", "hf://org/unlisted",
             "kaggle://keras/siglip/keras/siglip_base_patch16_224/1")
    pooled = [default_pooling(f"keras_hub:{name}", "preset") for name in named]
    assert pooled == ["cls", "mean", "mean", "mean"]
    assert ExtractSettings().pooling == ExtractSettings(backbone="mobilenetv2").pooling == "flatten"
    assert ExtractSettings(backbone=f"keras_hub:{presets['clip']}", pooling="avg").pooling == "avg"


@pytest.mark.slow
@pytest.mark.parametrize("family, pooling", [("clip", "cls"), ("siglip", "mean")])
def test_an_extract_without_pooling_records_the_default_and_equals_the_explicit_run(
        presets, dataset, family, pooling, tmp_path):
    backbone = f"keras_hub:{presets[family]}"
    extract_features(dataset, output=tmp_path / "d.hdf5", backbone=backbone, progress=False)
    extract_features(dataset, output=tmp_path / "e.hdf5", backbone=backbone, pooling=pooling, progress=False)
    with FeatureFile(tmp_path / "d.hdf5") as by_default, FeatureFile(tmp_path / "e.hdf5") as explicit:
        assert by_default.attrs["pooling"] == explicit.attrs["pooling"] == pooling
        assert by_default.paths == explicit.paths
        assert np.array_equal(by_default.load_features(), explicit.load_features())
    # Resumed without --pooling, the file is found up to date: the same (resolved) settings.
    again = extract_features(dataset, output=tmp_path / "d.hdf5", backbone=backbone, progress=False)
    assert again.up_to_date and again.written == 0


def test_bf16_builds_under_the_bf16_policy(presets, dataset):
    loaded = load_backbone(f"keras_hub:{presets['dinov2']}", "preset", "cls", precision="bf16")
    names = {layer.dtype_policy.name for layer in loaded.model.layers[-1].layers if layer.weights}
    assert names == {"mixed_bfloat16"}
    _, images = _images(dataset)
    expected = _pooled(_keras_hub_tokens(presets["dinov2"], images), "cls", 1)
    # bf16 keeps 8 bits: each of the blocks' products is within 2^-8 relatively; loose, but a
    # wrong normalisation or layer would be off by the features' own size.
    np.testing.assert_allclose(loaded.embed(images), expected, rtol=0,
                               atol=(LAYERS + 1) * 2 ** -8 * 8 * float(np.max(np.abs(expected))))


@pytest.mark.slow
def test_resume_finds_a_hub_file_up_to_date(presets, dataset, tmp_path):
    out = tmp_path / "r.hdf5"
    kwargs = dict(output=out, backbone=f"keras_hub:{presets['vit']}", pooling="cls+mean", progress=False)
    extract_features(dataset, **kwargs)
    with FeatureFile(out) as ff:
        first = ff.load_features()
    again = extract_features(dataset, **kwargs)
    assert again.up_to_date and again.written == 0
    with FeatureFile(out) as ff:
        assert np.array_equal(ff.load_features(), first)


def test_finetune_refuses_a_hub_file_in_one_line():
    from classify.classifiers.finetune import check_extraction
    from classify.errors import ClassifyError

    ext = {"backbone": "keras_hub.vit", "backbone_family": "keras-hub", "weights": "preset",
           "pooling": "flatten", "layer": "transformer_block_1"}
    with pytest.raises(ClassifyError) as raised:
        check_extraction(ext, "f.hdf5")
    assert "\n" not in str(raised.value) and "keras_hub" in str(raised.value)


@pytest.mark.slow
def test_export_includes_the_converter_and_the_keras_hub_backbone(presets, dataset, tmp_path):
    import keras

    features, model, exported = tmp_path / "f.hdf5", tmp_path / "m", tmp_path / "e.keras"
    steps = [("extract", "--dataset", dataset, "--backbone", f"keras_hub:{presets['clip']}", "--pooling",
              "cls", "-o", features, "-q"),
             ("classify", "-f", features, "-m", "logreg", "--save", model, "--grid", '{"C": [1]}', "-j", "1"),
             ("classify", "export", "--model", model, "--output", exported)]
    for step in steps:
        result = run_module(*step)
        assert result.returncode == 0, result.stderr[-2000:]
    paths, images = _images(dataset)
    result = run_module("classify", "predict", "--model", model, *paths, "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = [float(line.split(",")[2]) for line in result.stdout.splitlines()[1:]]
    network = keras.models.load_model(exported, compile=False)
    probabilities = np.asarray(network.predict_on_batch(images.astype(np.float32))).max(axis=1)
    # predict prints 4 decimals (within 5e-5); both run the same float32 model, whose rounding
    # (features within _tolerance, a 2-class softmax of them) stays far below that.
    np.testing.assert_allclose(probabilities, printed, rtol=0, atol=5e-5 + 1e-5)


@pytest.mark.parametrize("family, layer", [("dinov2", "stage1"), ("clip", "vision_projection"),
                                           ("siglip", "head"), ("vit", None)])
def test_the_feature_model_saves_and_loads_back(presets, dataset, family, layer, tmp_path):
    """What ``classify export`` writes: the feature model, keras_hub's layers included, loads
    back from a .keras file and computes the same (the same float32 graph: bit-equal)."""
    import keras

    loaded = load_backbone(f"keras_hub:{presets[family]}", "preset", "mean" if family == "siglip" else "cls",
                           layers=[layer] if layer else None)
    loaded.model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    _, images = _images(dataset)
    x = images.astype(np.float32)
    assert np.array_equal(again.predict_on_batch(x), loaded.model.predict_on_batch(x))


@pytest.mark.slow
def test_export_of_a_vit_block_that_would_not_load_back_is_refused_in_one_line(presets, dataset, tmp_path):
    """keras_hub's ViT embedding cut out at a named block saves a config it cannot load: export
    says so and leaves no file, instead of writing a model that cannot be read."""
    features, model, exported = tmp_path / "f.hdf5", tmp_path / "m", tmp_path / "e.keras"
    steps = [("extract", "--dataset", dataset, "--backbone", f"keras_hub:{presets['vit']}", "--layer",
              f"transformer_block_{LAYERS}", "-o", features, "-q"),
             ("classify", "-f", features, "-m", "logreg", "--save", model, "--grid", '{"C": [1]}', "-j", "1")]
    for step in steps:
        result = run_module(*step)
        assert result.returncode == 0, result.stderr[-2000:]
    result = run_module("classify", "export", "--model", model, "--output", exported)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "does not load back" in lines[-1] and "classify predict" in lines[-1], lines
    assert not exported.exists() and not list(tmp_path.glob(".*partial*"))
