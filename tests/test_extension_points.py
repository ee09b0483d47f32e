"""Each of the four doors takes a new entry from outside the package."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract import DatasetError, ImageListing, LoadedBackbone, SettingsError, extract_features
from extract.backbones import (
    Backbone,
    BackboneRequest,
    BaseBackboneFamily,
    family_for,
    feature_model,
    registered_backbone_family,
)
from extract.layouts import LAYOUTS, registered_layout
from features import FeatureFile

SIZE = 16


def _images(root: Path, classes=("cat", "dog"), per_class: int = 3) -> dict[str, str]:
    """``per_class`` generated 16x16 PNGs of each class under ``root``: relative path -> class."""
    rng = np.random.default_rng(0)
    made = {}
    for name in classes:
        for i in range(per_class):
            rel = f"{name}/{i}.png"
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / rel)
            made[rel] = name
    return made


def _tiny_network():
    """A Conv2D whose 4x4 map is read as 16 tokens, then a Dense on every token: 3-D outputs."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 4, strides=4, activation="relu", name="conv")(inputs)
    x = keras.layers.Reshape((16, 6), name="tokens")(x)
    return keras.Model(inputs, keras.layers.Dense(8, name="embed")(x), name="tiny")


class TinyFamily(BaseBackboneFamily):
    """``--backbone tiny``: the network built in this test, with its (random) weights."""

    name = "tiny-test"
    outputs = ("tokens",)

    def __init__(self, model) -> None:
        self.model = model
        digest = hashlib.sha256()
        for array in model.get_weights():
            digest.update(np.ascontiguousarray(array).tobytes())
        self.sha = digest.hexdigest()

    def claims(self, backbone: str, weights: str | None) -> bool:
        return backbone == "tiny"

    def check_settings(self, request: BackboneRequest) -> None:
        super().check_settings(request)
        if request.image_size not in (None, SIZE):
            raise SettingsError(f"image_size (--image-size) must be {SIZE} for tiny, "
                                f"got {request.image_size}")

    def preprocess_input(self, request: BackboneRequest):
        return lambda images: images / 255.0

    def planned_attrs(self, request: BackboneRequest) -> dict:
        return {"backbone": "tiny", "layer": request.layers[0] if request.layers else "embed",
                "image_size": SIZE, "preprocessing": "x / 255"}

    def weights_identity(self, request: BackboneRequest) -> tuple[str, str | None]:
        return "tiny-seed0", self.sha

    def build(self, request: BackboneRequest) -> LoadedBackbone:
        layers = request.layers or ("embed",)
        backbone = Backbone(name="tiny", input_size=SIZE, feature_layer="embed", preprocessing="x / 255",
                            preprocess=self.preprocess_input(request))
        return LoadedBackbone(backbone, feature_model(self.model, layers, request.pooling, request.precision),
                              "tiny-seed0", self.sha, tuple(layers), request.pooling, SIZE,
                              request.precision or "float32")


class CsvLayout:
    """``--layout csv``: a CSV of ``path,label`` rows, paths relative to the CSV's folder."""

    name = "csv"
    reads = "file"
    description = "a CSV file of path,label rows, paths relative to its folder"

    def list_images(self, source: Path, exclude=()) -> ImageListing:
        if not source.is_file():
            raise DatasetError(f"{source}: no such CSV file")
        with open(source, newline="") as f:
            rows = [row for row in csv.DictReader(f) if row["label"] not in set(exclude)]
        names = sorted({row["label"] for row in rows})
        return ImageListing(root=source.parent, class_names=names, paths=[row["path"] for row in rows],
                            labels=np.array([names.index(row["label"]) for row in rows], np.int32),
                            excluded_classes=sorted(exclude))


def test_b_a_backbone_family_registered_from_outside(tmp_path):
    import keras

    made = _images(tmp_path / "pets")
    network = _tiny_network()
    with registered_backbone_family(TinyFamily(network)):
        summary = extract_features(tmp_path / "pets", backbone="tiny", weights=None, pooling="avg",
                                   output=tmp_path / "t.hdf5", progress=False)
        assert summary.written == 6
    with pytest.raises(SettingsError, match="unknown backbone"):
        family_for("tiny", None)  # nothing left registered
    with FeatureFile(tmp_path / "t.hdf5") as ff:
        features, labels, attrs, paths = ff.features[()], ff.labels, dict(ff.attrs), ff.paths
        names = ff.label_names
    assert paths == sorted(made) and [names[k] for k in labels] == [made[p] for p in paths]
    assert attrs["backbone"] == "tiny" and attrs["backbone_family"] == "tiny-test"
    assert attrs["weights"] == "tiny-seed0" and attrs["layer"] == "embed" and attrs["pooling"] == "avg"
    images = np.stack([np.asarray(Image.open(tmp_path / "pets" / p).convert("RGB")) for p in paths])
    tokens = keras.ops.convert_to_numpy(network(images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(features, tokens.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_c_a_layout_registered_from_outside(tmp_path):
    made = _images(tmp_path / "images", classes=("a", "b"))
    rows = [(f"images/{p}", "odd" if i % 2 else "even") for i, p in enumerate(sorted(made))]
    manifest = tmp_path / "list.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    with registered_backbone_family(TinyFamily(_tiny_network())), registered_layout(CsvLayout()):
        summary = extract_features(manifest, layout="csv", backbone="tiny", weights=None, pooling="cls",
                                   output=tmp_path / "c.hdf5", progress=False)
        again = extract_features(manifest, layout="csv", backbone="tiny", weights=None, pooling="cls",
                                 output=tmp_path / "c.hdf5", progress=False)
    assert summary.written == 6 and again.up_to_date
    assert "csv" not in LAYOUTS
    with FeatureFile(tmp_path / "c.hdf5") as ff:
        assert ff.paths == [path for path, _ in rows]
        assert [ff.label_names[k] for k in ff.labels] == [label for _, label in rows]
        assert ff.attrs["dataset"] == "list" and ff.attrs["dataset_root"] == str(tmp_path.resolve())
        assert ff.features.shape == (6, 8)


def _coloured_images(root: Path, per_class: int = 6) -> Path:
    """Two classes of 48 px images a nearest neighbour tells apart: reddish and bluish."""
    rng = np.random.default_rng(0)
    for name, base in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(base) + rng.integers(-30, 30, (48, 48, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow  # a VGG16 extraction, a search, predict
def test_a_a_classifier_registered_from_outside_searches_saves_and_predicts(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    from classify import (
        CLASSIFIERS,
        Classifier,
        predict,
        register_classifier,
        train_and_evaluate,
        unregister_classifier,
    )

    images = _coloured_images(tmp_path / "colours")
    features = tmp_path / "colours.hdf5"
    extract_features(images, backbone="vgg16", weights="hed-bsds500", image_size=32, pooling="avg",
                     output=features, progress=False)
    register_classifier(Classifier("knn", "nearest neighbours",
                                   lambda seed, jobs: KNeighborsClassifier(n_jobs=jobs),
                                   grid={"n_neighbors": [1, 3]}))
    try:
        result = train_and_evaluate(features, "knn", save=tmp_path / "knn.joblib")["knn"]
        predictions = predict(tmp_path / "knn.joblib", images, progress=False)
    finally:
        unregister_classifier("knn")
    assert "knn" not in CLASSIFIERS
    assert result.best_params["n_neighbors"] in (1, 3) and result.report.startswith("model: knn")
    assert (tmp_path / "knn.card.json").is_file()
    assert len(predictions) == 12
    assert [p.predicted for p in predictions] == [Path(p.path).parent.name for p in predictions]


@pytest.mark.slow
def test_d_an_output_registered_from_outside_writes_one_more_file_per_run(tmp_path):
    from classify import OUTPUTS, Output, register_output, train_and_evaluate, unregister_output
    from features import FeatureWriter

    class AccuracyFile(Output):
        name = "accuracy"

        def write(self, result, destination, several):
            path = self.per_model(destination, result.name, several)
            path.write_text(f"{result.evaluation.accuracy!r}\n")
            return path

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = (rng.normal(size=(40, 6)) + 2 * y[:, None]).astype(np.float32)
    with FeatureWriter(tmp_path / "blobs.hdf5", dim=6, label_names=["a", "b"], attrs={}) as writer:
        writer.add(X, y, [f"{i}.png" for i in range(40)])
    register_output(AccuracyFile())
    try:
        results = train_and_evaluate(tmp_path / "blobs.hdf5", ["logreg", "rf"],
                                     outputs={"accuracy": tmp_path / "acc.txt"})
    finally:
        unregister_output("accuracy")
    assert "accuracy" not in OUTPUTS
    assert sorted(p.name for p in tmp_path.glob("acc*")) == ["acc.logreg.txt", "acc.rf.txt"]
    for name, result in results.items():
        assert float((tmp_path / f"acc.{name}.txt").read_text()) == result.accuracy
