"""Mirrored images: ``extract --augment flip`` stores each image's mirror in the same pass and
file; ``classify --augment`` trains on the training images' mirrors (never validating or
testing on a mirror, never training on a held-out image's mirror); ``--tta`` averages each
test image's probabilities with its mirror's.

The images are generated at the extraction's size (no resizing), so a mirror is exactly the
image reversed left to right; the symmetric dataset's images equal their mirrors.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_module
from sklearn.base import BaseEstimator, ClassifierMixin

from classify import train_and_evaluate
from classify.classifiers import CLASSIFIERS
from classify.classifiers.head import _validation_split
from classify.search.grid import run_search
from classify.search.split import stratified_split
from features import FeatureFile, FeatureFileError, FeatureWriter

SIZE = 32
CLASSES = ["a", "b", "c"]


def write_images(root: Path, images: dict[str, list[np.ndarray]]) -> Path:
    from PIL import Image

    for name, arrays in images.items():
        (root / name).mkdir(parents=True)
        for i, array in enumerate(arrays):
            Image.fromarray(array).save(root / name / f"{i:02d}.png")  # lossless
    return root


def random_images(seed: int, per_class: int = 6, symmetric: bool = False) -> dict[str, list[np.ndarray]]:
    """Per class, images of noise around a class colour; ``symmetric``: each equals its mirror."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, name in enumerate(CLASSES):
        arrays = []
        for _ in range(per_class):
            base = np.full((SIZE, SIZE, 3), 60 + 70 * k, dtype=np.int16)
            image = np.clip(base + rng.integers(-50, 50, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            if symmetric:
                image[:, SIZE // 2:] = image[:, : SIZE // 2][:, ::-1]
            arrays.append(image)
        out[name] = arrays
    return out


def extract(data: Path, out: Path, weights: Path, **settings) -> None:
    from extract import extract_features

    extract_features(data, output=out, backbone="mobilenetv2", weights=weights, image_size=SIZE,
                     batch_size=4, progress=False, **settings)


# -- the store ---------------------------------------------------------------------------


def test_writer_commits_mirrors_with_their_rows_and_resumes(tmp_path):
    out = tmp_path / "f.hdf5"
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    names = [f"x/{i}.png" for i in range(10)]
    w = FeatureWriter(out, dim=4, label_names=["x"], attrs={}, buffer_size=3, mirrors=True)
    w.add(X[:7], [0] * 7, names[:7], mirror=-X[:7])
    with pytest.raises(ValueError, match="mirror features are required"):
        w.add(X[7:], [0] * 3, names[7:])
    w.close(complete=False)  # as a killed run leaves it: an index over parts
    with FeatureFile(out, allow_partial=True) as ff:
        assert ff.has_mirrors and ff.n_rows == 7
        np.testing.assert_array_equal(ff.load_mirror_features(), -X[:7])
    with pytest.raises(ValueError, match="holds mirror_features"):
        FeatureWriter(out, dim=4, label_names=["x"], attrs={}, resume=True)
    with FeatureWriter(out, dim=4, label_names=["x"], attrs={}, resume=True, mirrors=True) as w:
        w.add(X[7:], [0] * 3, names[7:], mirror=-X[7:])
    with FeatureFile(out) as ff:
        assert ff.attrs["augment"] == "flip"
        np.testing.assert_array_equal(ff.load_features(), X)
        np.testing.assert_array_equal(ff.load_mirror_features(), -X)
    with h5py.File(out, "r") as f:
        assert not f["mirror_features"].is_virtual  # the finished file is self-contained


def test_extending_and_pruning_a_finished_file_keeps_each_mirror_with_its_row(tmp_path):
    out = tmp_path / "f.hdf5"
    X = np.arange(24, dtype=np.float32).reshape(6, 4)
    names = [f"x/{i}.png" for i in range(6)]
    with FeatureWriter(out, dim=4, label_names=["x"], attrs={}, mirrors=True) as w:
        w.add(X[:4], [0] * 4, names[:4], mirror=-X[:4])
    with FeatureWriter(out, dim=4, label_names=["x"], attrs={}, resume=True, mirrors=True) as w:
        w.add(X[4:], [0] * 2, names[4:], mirror=-X[4:])  # the finished file becomes the first part
        w.finish(drop={"x/1.png", "x/4.png"})  # --prune: images no longer in the dataset
    keep = [0, 2, 3, 5]
    with FeatureFile(out) as ff:
        assert ff.paths == [names[i] for i in keep]
        np.testing.assert_array_equal(ff.load_features(), X[keep])
        np.testing.assert_array_equal(ff.load_mirror_features(), -X[keep])


def test_a_file_without_mirrors_says_how_to_get_them(tmp_path):
    out = tmp_path / "f.hdf5"
    with FeatureWriter(out, dim=2, label_names=["x", "y"], attrs={}) as w:
        w.add(np.zeros((4, 2)), [0, 0, 1, 1], ["a", "b", "c", "d"])
    with FeatureFile(out) as ff, pytest.raises(FeatureFileError, match="extract it with --augment flip"):
        ff.load_mirror_features()
    done = run_module("classify", "--features", out, "--tta")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"classify: error: {out}: holds no mirrored features; extract it with --augment flip "
        "(and --overwrite) to store them"
    ]


# -- extraction --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.needs_shared
def test_mirror_features_are_the_features_of_the_mirrored_images(mobilenetv2_notop, tmp_path):
    images = random_images(0, per_class=3)
    data = write_images(tmp_path / "images", images)
    flipped = write_images(tmp_path / "flipped", {k: [a[:, ::-1] for a in v] for k, v in images.items()})
    extract(data, tmp_path / "aug.hdf5", mobilenetv2_notop, augment="flip", buffer_size=4)
    extract(flipped, tmp_path / "flipped.hdf5", mobilenetv2_notop)
    with FeatureFile(tmp_path / "aug.hdf5") as a, FeatureFile(tmp_path / "flipped.hdf5") as b:
        assert a.paths == b.paths and a.attrs["augment"] == "flip" and b.attrs["augment"] == "none"
        np.testing.assert_array_equal(a.load_mirror_features(), b.load_features())
        assert not np.array_equal(a.load_features(), a.load_mirror_features())
    # A file with mirrors is extended only with them.
    done = run_module("extract", "--dataset", data, "-o", tmp_path / "aug.hdf5", "--backbone",
                      "mobilenetv2", "--weights", mobilenetv2_notop, "--image-size", SIZE, "-q")
    assert done.returncode == 1
    assert "augment: flip -> none" in done.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def symmetric(mobilenetv2_notop, tmp_path_factory) -> dict[str, Path]:
    """Mirror-symmetric images extracted with mirrors at a middle layer (for finetune) and at
    the last one, in one pass."""
    tmp = tmp_path_factory.mktemp("symmetric")
    data = write_images(tmp / "images", random_images(1, per_class=8, symmetric=True))
    extract(data, tmp / "sym.hdf5", mobilenetv2_notop, augment="flip", pooling="flatten",
            layers=["block_15_add", "out_relu"])
    return {"maps": tmp / "sym.block_15_add.hdf5", "last": tmp / "sym.out_relu.hdf5"}


@pytest.mark.slow
@pytest.mark.needs_shared
def test_symmetric_images_have_mirror_features_equal_to_their_own(symmetric):
    for path in symmetric.values():
        with FeatureFile(path) as ff:
            np.testing.assert_array_equal(ff.load_mirror_features(), ff.load_features())


# One candidate each, small and short: the test is about rows, not accuracy.
QUICK = {
    "logreg": {"C": [1.0]},
    "rf": {"max_features": ["sqrt"]},
    "xgb": {"learning_rate": [0.3]},
    "head": {"hidden": [16], "dropout": [0.0], "epochs": [5]},
    "finetune": {"hidden": [16], "warmup_epochs": [2], "epochs": [3]},
}


@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("model", list(CLASSIFIERS))
def test_every_model_takes_mirrors_and_tta_is_a_no_op_on_symmetric_images(symmetric, model, tmp_path):
    features = symmetric["maps" if CLASSIFIERS[model].trains_backbone else "last"]
    grid = QUICK.get(model)  # a new registry entry runs its own grid
    plain = train_and_evaluate(features, model, grid=grid, folds=2)[model]
    tta = train_and_evaluate(features, model, grid=grid, folds=2, tta=True)[model]
    np.testing.assert_array_equal(tta.test_predictions, plain.test_predictions)
    assert tta.report_dict == plain.report_dict

    both = train_and_evaluate(features, model, grid=grid, folds=2, augment=True, tta=True,
                              json=tmp_path / "r.json", save=tmp_path / "m.joblib")[model]
    np.testing.assert_array_equal(both.test_indices, plain.test_indices)  # same test images
    assert both.search.train_rows == 2 * plain.search.train_rows
    doc = json.loads((tmp_path / "r.json").read_text())
    assert (doc["augment"], doc["tta"], doc["settings"]["augment"], doc["settings"]["tta"]) == (True,) * 4
    assert "and their mirrors" in both.report and "its mirror" in both.report
    card = json.loads(next(tmp_path.glob("m.card.json")).read_text())
    assert (card["augment"], card["tta"]) == (True, True)


# -- which rows train, validate and test -------------------------------------------------


def test_train_and_evaluate_searches_with_the_files_mirror_rows(tmp_path, monkeypatch):
    import classify.search.grid

    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 5)).astype(np.float32)
    out = tmp_path / "f.hdf5"
    with FeatureWriter(out, dim=5, label_names=["x", "y"], attrs={}, mirrors=True) as w:
        w.add(X, np.arange(24) % 2, [f"{i}.png" for i in range(24)], mirror=X[:, ::-1] * 2)
    seen = {}
    original = classify.search.grid.run_search

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(classify.search.grid, "run_search", spy)
    train_and_evaluate(out, "logreg", grid={"C": [1.0]}, augment=True, tta=True)
    np.testing.assert_array_equal(seen["mirror"], X[:, ::-1] * 2)
    assert seen["augment"] is True and seen["tta"] is True


@pytest.mark.slow
@pytest.mark.needs_shared
@pytest.mark.parametrize("model", ["head", "finetune"])
def test_keras_models_are_told_which_rows_are_mirrors(symmetric, model, monkeypatch):
    import classify.classifiers.head

    calls = []
    original = classify.classifiers.head._validation_split

    def recorder(y, fraction, seed, image_ids=None, mirrored=None):
        if mirrored is not None:  # (it calls itself on the images alone)
            calls.append((np.asarray(image_ids), np.asarray(mirrored)))
        return original(y, fraction, seed, image_ids, mirrored)

    monkeypatch.setattr(classify.classifiers.head, "_validation_split", recorder)
    features = symmetric["maps" if CLASSIFIERS[model].trains_backbone else "last"]
    result = train_and_evaluate(features, model, grid=QUICK[model], folds=2, augment=True)[model]
    assert len(calls) == 3  # two folds and the final fit
    image_ids, mirrored = calls[-1]
    train = np.setdiff1d(np.arange(24), result.test_indices)
    assert sorted(image_ids[~mirrored]) == sorted(image_ids[mirrored]) == train.tolist()
    for image_ids, mirrored in calls[:-1]:
        assert mirrored.sum() * 2 == len(mirrored)
        assert sorted(image_ids[~mirrored]) == sorted(image_ids[mirrored])


CALLS: list[dict] = []


class RowSpy(ClassifierMixin, BaseEstimator):
    """Records the rows it is fitted on and the rows it scores: column 0 holds the row's image
    (its row in the file), column 1 is 1 for a mirror."""

    def __init__(self, c: float = 1.0):
        self.c = c

    def fit(self, X, y, image_ids=None, mirrored=None):
        self.classes_ = np.unique(y)
        CALLS.append({"fit": X[:, :2].astype(int).tolist(), "image_ids": image_ids, "mirrored": mirrored})
        return self

    def predict_proba(self, X):
        CALLS.append({"score": X[:, :2].astype(int).tolist()})
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def test_mirrors_never_reach_validation_or_test_rows():
    y = np.repeat(np.arange(3), 10)
    X = np.column_stack([np.arange(30), np.zeros(30), np.random.default_rng(0).normal(size=30)])
    mirror = X.copy()
    mirror[:, 1] = 1
    train, test = stratified_split(y, 0.25, 42)
    CALLS.clear()
    result = run_search("spy", RowSpy(), {"c": [1.0, 2.0]}, X, y, train, test, folds=3, jobs=1,
                        mirror=mirror, augment=True, tta=True)
    fits = [i for i, call in enumerate(CALLS) if "fit" in call]
    assert len(fits) == 2 * 3 + 1  # two candidates on three folds, then the final fit
    for i in fits[:-1]:
        fitted, scored = CALLS[i]["fit"], CALLS[i + 1]["score"]
        assert all(flag == 0 for _, flag in scored)  # folds are scored on images only
        held = {image for image, _ in scored}
        assert not held & {image for image, _ in fitted}  # nor their mirrors trained
        assert sorted(fitted) == sorted([image, flag] for image in set(train) - held for flag in (0, 1))
        # What the Keras models are told about the rows is the truth.
        assert CALLS[i]["image_ids"].tolist() == [image for image, _ in fitted]
        assert CALLS[i]["mirrored"].tolist() == [bool(flag) for _, flag in fitted]
    final = CALLS[fits[-1]]["fit"]
    assert sorted(final) == sorted([int(i), flag] for i in train for flag in (0, 1))
    assert not {image for image, _ in final} & set(test.tolist())
    # --tta: the test images, then their mirrors, and nothing else.
    assert [c["score"] for c in CALLS[fits[-1] + 1:]] == [
        [[int(i), 0] for i in test], [[int(i), 1] for i in test]
    ]
    assert result.train_rows == 2 * len(train)


def test_a_keras_models_validation_slice_holds_no_mirror_and_no_image_whose_mirror_trains():
    y = np.tile(np.repeat(np.arange(4), 25), 2)  # 100 images, then their 100 mirrors
    image_ids = np.tile(np.arange(100), 2)
    mirrored = np.arange(200) >= 100
    train, val = _validation_split(y, 0.1, 0, image_ids, mirrored)
    assert len(val) == 10 and not mirrored[val].any()
    assert not set(image_ids[val]) & set(image_ids[train])
    assert len(train) == 200 - 2 * len(val)  # every other row trains
    # The same images validate as without mirrors.
    _, plain_val = _validation_split(y[:100], 0.1, 0)
    np.testing.assert_array_equal(val, plain_val)
