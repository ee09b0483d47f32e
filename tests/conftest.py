"""Shared fixtures: where the real data lives, and how to run the two commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FEATUREBANK_SHARED", REPO.parent / "shared"))
FLOWERS17 = SHARED / "datasets" / "flowers17"
MOBILENETV2_NOTOP = SHARED / "models" / "mobilenetv2_1.0_224_imagenet_notop.weights.h5"
MOBILENET_NOTOP = SHARED / "models" / "mobilenet_1.0_224_imagenet_notop.weights.h5"


def _need(path: Path) -> Path:
    """Skip when the real data is absent (a user's fresh clone), but never in CI."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing, and CI must run every test against ../shared")
        pytest.skip(f"needs {path} (real images and weights beside the repository, in ../shared)")
    return path


#: Fixtures that read ../shared: a test that uses one (through any fixture) needs_shared.
SHARED_FIXTURES = frozenset({"flowers17", "mobilenetv2_notop", "mobilenetv2_top", "pandas",
                             "mobilenet_notop"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark needs_shared from what a test uses, so that no test that reads ../shared lacks it."""
    for item in items:
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_shared)


@pytest.fixture(scope="session")
def flowers17() -> Path:
    return _need(FLOWERS17)


@pytest.fixture(scope="session")
def mobilenetv2_notop() -> Path:
    return _need(MOBILENETV2_NOTOP)


@pytest.fixture(scope="session")
def mobilenet_notop() -> Path:
    """MobileNet v1's ImageNet weights without the top (../shared/models)."""
    return _need(MOBILENET_NOTOP)


def run_module(module: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` the way a user does, capturing its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def make_subset(source: Path, dest: Path, classes: list[str], per_class: int) -> Path:
    """A small class-per-folder dataset of links to the first images of some classes."""
    for name in classes:
        (dest / name).mkdir(parents=True)
        for image in sorted((source / name).iterdir())[:per_class]:
            (dest / name / image.name).symlink_to(image)
    return dest


# -- tolerances that follow from the dtype and the computation ------------------------------

#: float32's unit roundoff: a float32 result is within it of the exact one, relatively.
U32 = 2.0 ** -24

#: Features of one float32 network computed along two paths (another batch size, graph or
#: kernel, another machine: another summation order) differ by rounding that compounds over
#: the layers: about √K·u per layer (K terms per output, up to a few thousand), √L-fold over L
#: layers: some 1.5e-5 of the features' largest value for VGG16 (13 layers, K up to 4,608) and
#: MobileNetV2 (52 layers, K up to 960). Comparisons allow 5e-5 of it.
CNN_RTOL = 5e-5


def features_atol(features: np.ndarray) -> float:
    """What two float32 computations of these network features may differ by, anywhere."""
    return CNN_RTOL * float(np.max(np.abs(features)))


def assert_same_features(actual: np.ndarray, expected: np.ndarray) -> None:
    """Features of one network computed along two paths: equal to what float32 allows."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=features_atol(expected))


def class_moves(P: np.ndarray, R: np.ndarray) -> np.ndarray:
    """How far each softmax probability can move when every difference of two logits of its
    row moves by up to ``R`` (one bound per row). ``p_c = 1 / (1 + S)`` with ``S`` the sum of
    ``exp(z_d - z_c)``, whose log moves by up to ``R``; along it ``dp/dlog S = -p(1 - p)``, which
    changes by a factor ``e^t`` at most over a distance ``t``: ``|Δp_c| ≤ p_c (1 - p_c) R e^R``."""
    R = np.asarray(R, dtype=np.float64)[:, None]
    return np.minimum(P * (1 - P) * R * np.exp(np.minimum(R, 50.0)), 1.0)


def softmax_rounding(P: np.ndarray) -> np.ndarray:
    """How far a float32 softmax output is from its exact value: the exponentials within 2u,
    their sum of k within (k - 1)u, the division within u: within (k + 3)u of p, relatively."""
    return (P.shape[1] + 3) * U32 * P


def logit_moves(estimator, rows: np.ndarray, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """For each row: the most any difference of two logits of ``estimator`` (a logistic
    regression, a head or a head's Keras model) can move when the features move by up to
    ``shift`` (per feature), plus the rounding of one float32 evaluation of its Dense layers:
    a sum of n products is within ``n·u·Σ|w x|`` of the exact one (γ_n, Higham), and a weight
    within ``u`` of its float64 value."""
    from classify.classifiers.head import DenseHead  # imported here: conftest loads no Keras

    rows = np.asarray(rows, dtype=np.float64)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), rows.shape)
    if isinstance(estimator, DenseHead) or hasattr(estimator, "layers"):  # a head, or its Keras model
        model = estimator.model_ if isinstance(estimator, DenseHead) else estimator
        layers = {layer.name: layer for layer in model.layers}
        x, dx = rows, shift
        scaling = layers.get("scaling")
        if scaling is not None and hasattr(scaling, "scale"):  # rms: one factor
            x, dx = x * float(scaling.scale), dx * abs(float(scaling.scale))
        elif scaling is not None:  # standard: (x - mean) / std
            mean, var = (np.asarray(v, dtype=np.float64).ravel() for v in (scaling.mean, scaling.variance))
            std = np.sqrt(np.maximum(var, 1e-7))
            x, dx = (x - mean) / std, dx / std + U32 * (np.abs(x) + np.abs(mean)) / std
        dense = [layers[name] for name in ("hidden", "probabilities") if name in layers]
    else:
        from classify.classifiers.linear import linear_weights

        kernel, bias = linear_weights(estimator)
        x, dx, dense = rows, shift, [(kernel, bias)]
    for i, layer in enumerate(dense):
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in
                        (layer if isinstance(layer, tuple) else layer.get_weights()))
        magnitude = np.abs(x) @ np.abs(kernel) + np.abs(bias)
        rounding = (kernel.shape[0] + 2) * U32 * magnitude
        if i < len(dense) - 1:  # relu, 1-Lipschitz
            x, dx = np.maximum(x @ kernel + bias, 0), dx @ np.abs(kernel) + rounding
            continue
        k = kernel.shape[1]
        pairs = [(c, d) for c in range(k) for d in range(c + 1, k)]
        moved = np.max([dx @ np.abs(kernel[:, c] - kernel[:, d]) for c, d in pairs], axis=0)
        return moved + 2 * rounding.max(axis=1)
    raise AssertionError("no Dense layer")


def may_change_class(P: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Rows whose most probable class moves ``M`` of the probabilities ``P`` could change."""
    rows = np.arange(len(P))
    top = P.argmax(axis=1)
    rival = np.where(np.arange(P.shape[1]) != top[:, None], P + M, -np.inf).max(axis=1)
    return P[rows, top] - M[rows, top] <= rival


# -- feature files and models shared by the session (read-only: copy one to change it) -------

#: The flowers17 classes of the MobileNetV2 files below, 10 images each.
MNV2_CLASSES = ["crocus", "daisy", "sunflower"]


@pytest.fixture(scope="session")
def mnv2_flowers(flowers17, mobilenetv2_notop, tmp_path_factory) -> dict[str, Path]:
    """MobileNetV2 (ImageNet) features of 10 images of each of MNV2_CLASSES at 96 pixels:
    ``data`` (the images, links), ``avg`` (pooled, 1,280), ``flat`` (out_relu's 3x3x1280 maps),
    ``maps`` (block_15_add's 3x3x160 maps) and ``early`` (block_5_add max-pooled, 32, stored
    as float16). For test_export, test_head and test_finetune, extracted once."""
    from extract import extract_features

    tmp = tmp_path_factory.mktemp("mnv2_flowers")
    data = make_subset(flowers17, tmp / "f17", MNV2_CLASSES, per_class=10)
    common = {"backbone": "mobilenetv2", "weights": mobilenetv2_notop, "image_size": 96, "progress": False}
    extract_features(data, output=tmp / "avg.hdf5", pooling="avg", **common)
    extract_features(data, output=tmp / "f.hdf5", pooling="flatten", layers=["out_relu", "block_15_add"],
                     **common)
    extract_features(data, output=tmp / "early.hdf5", pooling="max", layers=["block_5_add"],
                     dtype="float16", **common)
    return {"data": data, "avg": tmp / "avg.hdf5", "flat": tmp / "f.out_relu.hdf5",
            "maps": tmp / "f.block_15_add.hdf5", "early": tmp / "early.hdf5"}


#: The head test_export exports and test_head saves: one small candidate.
HEAD_GRID = {"hidden": [16], "dropout": [0.0], "learning_rate": [1e-2]}


@pytest.fixture(scope="session")
def mnv2_models(mnv2_flowers, tmp_path_factory) -> dict[str, tuple]:
    """Saved models on mnv2_flowers' files, each ``(result, saved path, features)``: a head
    (avg), a logistic regression searched in the row space of the flattened maps (11,520
    features, 22 training rows: a PCA folded in on export), one on the 32 float16 features
    (searched as they are), a forest and boosted trees (avg)."""
    from classify import train_and_evaluate

    tmp = tmp_path_factory.mktemp("mnv2_models")
    runs = [("head", "avg", "head", HEAD_GRID), ("logreg_projected", "flat", "logreg", None),
            ("logreg", "early", "logreg", None), ("rf", "avg", "rf", {"max_features": ["sqrt"]}),
            ("xgb", "avg", "xgb", {"learning_rate": [0.3]})]
    models = {}
    for key, name, model, grid in runs:
        result = train_and_evaluate(mnv2_flowers[name], model, grid=grid, jobs=1)[model]
        models[key] = (result, result.save(tmp / f"{key}.joblib"), mnv2_flowers[name])
    return models


def recomputed_moves(classifier, features: np.ndarray, P: np.ndarray) -> np.ndarray:
    """How far the probabilities ``P`` that ``classifier`` gives float32 network ``features``
    can move when those features are computed again along another path (each within
    features_atol of the exact ones), both sides' float32 rounding included."""
    own = logit_moves(classifier, features)
    return (class_moves(P, logit_moves(classifier, features, 2 * features_atol(features)) + 2 * own)
            + 2 * softmax_rounding(P))


def assert_same_classes(labels, P: np.ndarray, moves: np.ndarray, classes) -> None:
    """``labels`` are the most probable of ``classes`` under ``P``, but where probability
    moves ``moves`` could tip a near tie."""
    changeable = may_change_class(P, moves)
    assert changeable.mean() <= 0.2  # the bounds leave the comparison its teeth
    expected = np.asarray(classes)[P.argmax(axis=1)]
    assert np.all((np.asarray(labels) == expected) | changeable), (list(labels), expected.tolist())


def assert_classes_of_stored_rows(estimator, rows: np.ndarray, labels) -> None:
    """``labels``, predicted from the images (their features computed again), are the classes
    ``estimator`` gives the stored float32 ``rows``, but for near ties."""
    P = estimator.predict_proba(rows)
    assert_same_classes(labels, P, recomputed_moves(estimator, rows, P), estimator.classes_)
