"""Fine-tuning from stored maps (groundwork): the layers above a stored layer, trained on the
stored maps, take the same step as through the whole frozen-below network on the images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    MNV2_CLASSES,
    U32,
    assert_same_classes,
    assert_same_features,
    features_atol,
    make_subset,
    recomputed_moves,
)

from classify import SettingsError
from classify.classifiers.finetune import stored_maps, top_of_backbone
from features import FeatureFile

CLASSES = MNV2_CLASSES
LAYER = "block_15_add"  # MobileNetV2: the last two blocks (16 and the 1x1 conv) lie above it


@pytest.mark.slow
@pytest.mark.needs_shared
def test_one_step_from_stored_maps_is_the_step_through_the_network(mnv2_flowers, mobilenetv2_notop):
    import keras

    from extract import load_backbone
    from extract.images import load_image

    data = mnv2_flowers["data"]
    with FeatureFile(mnv2_flowers["maps"]) as ff:  # LAYER's maps, flattened
        rows, y, paths = ff.load_features(), ff.labels, ff.paths
    images = np.stack([load_image(data / p, (96, 96), "nearest") for p in paths])

    def head_on(top):
        inputs = keras.Input(top.input_shape[1:])
        dense = keras.layers.Dense(3, activation="softmax",
                                   kernel_initializer=keras.initializers.GlorotUniform(7))
        return keras.Model(inputs, dense(top(inputs)))

    # (a) the layers above LAYER and a head, on the stored maps
    a = load_backbone("mobilenetv2", mobilenetv2_notop, "avg", 96)
    top_a = top_of_backbone(a, LAYER)
    maps = stored_maps(rows, top_a.input_shape[1:])
    model_a = head_on(top_a)
    # (b) the same, below a frozen copy of the layers up to LAYER, on the images
    b = load_backbone("mobilenetv2", mobilenetv2_notop, "avg", 96)
    top_b = top_of_backbone(b, LAYER)
    bottom = keras.Model(b.model.input, b.model.get_layer(LAYER).output)
    bottom.trainable = False
    images_in = keras.Input((96, 96, 3))
    model_b = keras.Model(images_in, head_on(top_b)(bottom(images_in)))
    assert [w.shape for w in model_a.trainable_weights] == [w.shape for w in model_b.trainable_weights]
    pixels = b.backbone.preprocess_input(images.astype(np.float32))
    # The frozen layers below, as the training step calls them, give the stored maps (float32
    # along another path).
    assert_same_features(np.asarray(bottom(pixels, training=True)), maps)

    def trained_part(model, top):  # the top block's weights and the head's
        return top.get_weights() + model.layers[-1].get_weights()

    def part_of_b():
        return top_b.get_weights() + model_b.layers[-1].layers[-1].get_weights()

    def step(model, inputs):
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss="sparse_categorical_crossentropy")
        model.train_on_batch(inputs, y)

    for wa, wb in zip(trained_part(model_a, top_a), part_of_b(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    before = trained_part(model_a, top_a)
    step(model_a, maps)
    step(model_b, pixels)
    after = trained_part(model_a, top_a)
    moved = [np.abs(new - old).max() for new, old in zip(after[:len(top_a.weights)], before, strict=False)]
    assert max(moved) > 1e-4  # the step changed the top block, not only the head
    # The same step from maps shifted as far as the two paths' maps may differ (every value,
    # either way): how far such differences carry into the weights.
    n_top = len(top_a.get_weights())
    top_a.set_weights(before[:n_top])
    model_a.layers[-1].set_weights(before[n_top:])
    shift = features_atol(maps) * np.random.default_rng(1).choice([-1.0, 1.0], maps.shape)
    step(model_a, (maps + shift).astype(np.float32))
    for wa, wb, wc in zip(after, part_of_b(), trained_part(model_a, top_a), strict=True):
        # The images' maps lie within that shift, mostly far inside it: 4x what it moved covers
        # them; float32 rounding of the weights themselves besides.
        bound = 4 * np.max(np.abs(wa - wc)) + 4 * U32 * np.max(np.abs(wa))
        assert np.max(np.abs(wa - wb)) <= bound, (wa.shape, np.max(np.abs(wa - wb)), bound)


def test_a_layer_inside_a_residual_block_is_refused_in_one_line():
    from extract import load_backbone

    loaded = load_backbone("mobilenetv2", None, "avg", 32)
    with pytest.raises(SettingsError, match=r"layer 'block_15_project_BN' of mobilenetv2 is inside a block"):
        top_of_backbone(loaded, "block_15_project_BN")  # block_15_add also takes block_14_add


def test_rows_that_are_not_maps_are_refused():
    with pytest.raises(SettingsError, match="extract the layer with --pooling flatten"):
        stored_maps(np.zeros((2, 160), dtype=np.float32), (3, 3, 160))


@pytest.fixture(scope="module")
def maps_file(mnv2_flowers):
    """The session's LAYER maps of 10 images of 3 flower classes at 96 pixels, and the images."""
    return mnv2_flowers["data"], mnv2_flowers["maps"]


@pytest.mark.slow
@pytest.mark.needs_shared
def test_finetune_trains_saves_predicts_and_exports(maps_file, tmp_path):
    import json
    import subprocess
    import sys

    from test_export import FRESH

    from classify import export_model, predict, train_and_evaluate
    from extract.images import load_image

    data, features = maps_file
    grid = {"learning_rate": [0.01], "warmup_epochs": [2], "epochs": [3]}
    result = train_and_evaluate(features, "finetune", grid=grid)["finetune"]
    tuned = result.estimator
    assert tuned.extraction["layer"] == LAYER and tuned.epochs_[0] >= 1 and tuned.epochs_[1] >= 1
    assert "model: finetune" in result.report
    saved = result.save(tmp_path / "ft.joblib")
    assert saved.suffix == ".keras"
    with FeatureFile(features) as ff:
        rows, paths = ff.load_features(), ff.paths
    by_path = {p.path: p for p in predict(saved, data, top=3, progress=False)}
    # predict computes the maps again, and so the top block's pooled output, which feeds the
    # head: the stored rows' classes and probabilities, to what float32 allows.
    import keras

    top, head = (layer for layer in tuned.model_.layers if isinstance(layer, keras.Model))
    pooled = np.asarray(top(stored_maps(rows, top.input_shape[1:])))
    proba = tuned.predict_proba(rows)
    moves = recomputed_moves(head, pooled, proba)
    assert_same_classes([CLASSES.index(by_path[str(data / p)].predicted) for p in paths], proba, moves,
                        tuned.classes_)

    out = tmp_path / "ft_export.keras"
    assert export_model(saved, out).classes == CLASSES
    images = np.stack([load_image(data / p, (96, 96), "nearest") for p in paths])
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run([sys.executable, "-c", FRESH, out, tmp_path / "images.npy", tmp_path / "u8.npy",
                           tmp_path / "f32.npy", tmp_path / "classes.json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "classes.json").read_text()) == CLASSES
    got = np.load(tmp_path / "u8.npy")
    want = np.array([[dict(by_path[str(data / p)].top)[c] for c in CLASSES] for p in paths])
    # predict's and the exported network's pooled features: each within features_atol of the
    # exact ones, as the stored rows' are.
    assert np.all(np.abs(got - want) <= recomputed_moves(head, pooled, want))


@pytest.mark.slow
@pytest.mark.needs_shared
def test_finetune_refuses_files_without_maps_above_in_one_line(flowers17, mobilenetv2_notop, tmp_path):
    from classify import ClassifyError, train_and_evaluate
    from extract import extract_features

    data = make_subset(flowers17, tmp_path / "f17", CLASSES, per_class=3)
    last = tmp_path / "last.hdf5"
    extract_features(data, output=last, backbone="mobilenetv2", weights=mobilenetv2_notop,
                     pooling="flatten", image_size=32, progress=False)
    with pytest.raises(ClassifyError, match=r"out_relu is mobilenetv2's last feature layer, with nothing"):
        train_and_evaluate(last, "finetune")
    inside = tmp_path / "inside.hdf5"
    extract_features(data, output=inside, backbone="mobilenetv2", weights=mobilenetv2_notop,
                     pooling="flatten", image_size=32, layers=["block_15_project_BN"], progress=False)
    with pytest.raises(ClassifyError) as caught:
        train_and_evaluate(inside, "finetune")
    assert not isinstance(caught.value, SettingsError)  # the file's fault: exit status 1
    assert str(caught.value).startswith(f"{inside}: layer 'block_15_project_BN' of mobilenetv2 is inside")


@pytest.mark.slow
@pytest.mark.needs_shared
def test_bf16_fine_tunes_the_top_in_bfloat16_and_the_head_in_float32(maps_file, tmp_path):
    from classify import SettingsError as Refused
    from classify import predict, train_and_evaluate

    data, features = maps_file
    grid = {"learning_rate": [0.01], "warmup_epochs": [1], "epochs": [2]}
    plain = train_and_evaluate(features, "finetune", grid=grid, folds=2)["finetune"]
    result = train_and_evaluate(features, "finetune", grid=grid, folds=2, precision="bf16")["finetune"]
    assert result.settings["precision"] == "bf16"
    model = result.estimator.model_
    computes = {layer.name: layer.dtype_policy.compute_dtype for layer in model.layers[1].layers}
    assert computes["Conv_1"] == "bfloat16"  # a trained layer of the top block
    head = model.layers[-1]
    assert all(w.dtype == "float32" for w in model.weights)  # weights stay float32
    assert {layer.dtype_policy.compute_dtype for layer in head.layers} == {"float32"}
    # By default the file's own precision (float32 here).
    assert plain.estimator.precision is None
    plain_top = plain.estimator.model_.layers[1]
    assert {layer.dtype_policy.compute_dtype for layer in plain_top.layers} == {"float32"}
    np.testing.assert_array_equal(result.test_indices, plain.test_indices)
    saved = result.save(tmp_path / "bf16.joblib")
    with FeatureFile(features) as ff:
        rows, paths = ff.load_features(), ff.paths
    by_path = {p.path: p.predicted for p in predict(saved, data, progress=False)}
    assert [by_path[str(data / p)] for p in paths] == list(np.array(CLASSES)[result.estimator.predict(rows)])
    with pytest.raises(Refused, match=r"precision \(--precision\) bf16 is for the models that train"):
        train_and_evaluate(features, "logreg", precision="bf16")


@pytest.mark.slow
@pytest.mark.needs_shared
def test_finetune_weighs_each_rows_loss_by_its_sample_weight(maps_file):
    """``--class-weight`` reaches fine-tuning as sample weights: uniform ones train the network
    no fit without them does not, other ones another (the same seed, the same rows)."""
    from sklearn.base import clone

    from classify.classifiers import get_classifier

    _, features = maps_file
    entry = get_classifier("finetune")
    with FeatureFile(features) as ff:
        X, y, attrs = ff.load_features(), ff.labels, dict(ff.attrs)
    estimator = entry.make(0, None)
    entry.prepare(estimator, attrs, str(features))
    estimator.set_params(learning_rate=0.01, warmup_epochs=1, epochs=2)
    plain = clone(estimator).fit(X, y).model_.get_weights()
    ones = clone(estimator).fit(X, y, sample_weight=np.ones(len(y))).model_.get_weights()
    skewed = clone(estimator).fit(X, y, sample_weight=np.where(y == 0, 5.0, 0.2)).model_.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(plain, ones, strict=True))
    assert not all(np.allclose(a, b) for a, b in zip(plain, skewed, strict=True))
