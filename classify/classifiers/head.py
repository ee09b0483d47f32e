"""A new dense head on the frozen backbone, trained on stored features: :class:`DenseHead`.

The course recipe freezes the pretrained base and trains a small head on top of it
(``Flatten -> Dense(D, relu) -> Dropout(0.5) -> Dense(C, softmax)``, RMSprop(0.001)). A frozen
base maps each image to the same output every epoch (its BatchNormalization layers run in
inference mode), so training that head on the rows of a feature file is the same training,
without running the base over the images every epoch (and without image augmentation, which
would change the base's output). ``tests/test_head.py`` proves it: the same head trained on
stored features and as ``Model(frozen base -> head)`` on the images ends with equal weights.

:class:`DenseHead` is a scikit-learn estimator, so the split, the cross-validated search, the
reports, ``compare``, the model card and the Ray engine take it as they take ``logreg``. Its
fitted network (``model_``) is a plain Keras model: saved as ``.keras``, never pickled.
Keras (and TensorFlow) are imported when a head is fitted or loaded, not with this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .registry import Classifier, register_classifier

#: ``optimizer=`` choices, by Keras' class name.
OPTIMIZERS = {"rmsprop": "RMSprop", "adam": "Adam", "sgd": "SGD"}

#: Rows per ``predict`` call: the probabilities of a test set in a few calls.
PREDICT_BATCH = 256


def _keras() -> Any:
    """Keras, started without TensorFlow's C++ start-up lines (see :mod:`extract.tf_logs`)."""
    from extract.tf_logs import start_keras

    start_keras()
    import keras

    return keras


#: ``scaling=`` choices: how feature rows are scaled before the first Dense layer.
SCALINGS = ("rms", "standard", "none")


def build_head(dim: int, n_classes: int, *, hidden: int = 256, dropout: float = 0.5,
               seed: int = 0, scaling: str = "none", rows: np.ndarray | None = None) -> Any:
    """The head as a Keras model from a feature row to class probabilities:
    ``[scaling] -> Dense(hidden, relu) -> Dropout(dropout) -> Dense(n_classes, softmax)`` (no
    hidden layer when ``hidden`` is 0, no dropout layer when ``dropout`` is 0), its initial
    weights fixed by ``seed``.

    ``scaling`` is a fixed first layer fitted on the training ``rows``: ``rms`` divides every
    feature by one number, the root mean square of ``rows`` (a ``Rescaling``); ``standard``
    standardises each feature with the mean and variance of ``rows`` (a ``Normalization``);
    ``none`` takes the features as they are.

    Examples
    --------
    >>> head = build_head(1280, 17, hidden=512, dropout=0.5, scaling="rms", rows=X_train)  # doctest: +SKIP
    >>> [layer.name for layer in head.layers]  # doctest: +SKIP
    ['features', 'scaling', 'hidden', 'dropout', 'probabilities']
    """
    keras = _keras()
    inputs = keras.Input((dim,), name="features")
    x = inputs
    if scaling == "rms":
        rms = float(np.sqrt(np.mean(np.square(rows, dtype=np.float64))))
        x = keras.layers.Rescaling(1.0 / rms if rms > 0 else 1.0, name="scaling")(x)
    elif scaling == "standard":
        layer = keras.layers.Normalization(name="scaling")
        layer.adapt(rows)
        x = layer(x)
    # Seeded initialisers and dropout: the same seed builds and trains the same network, with
    # no change to the process's global random state.
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name="hidden",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed + 1, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 2))(x)
    return keras.Model(inputs, outputs, name="featurebank_head")


def compile_head(model: Any, optimizer: str = "rmsprop", learning_rate: float = 1e-3) -> Any:
    """``model`` compiled for training on integer labels (sparse categorical cross-entropy).

    Examples
    --------
    >>> head = compile_head(build_head(1280, 17), "rmsprop", 1e-3)  # doctest: +SKIP
    """
    keras = _keras()
    model.compile(optimizer=getattr(keras.optimizers, OPTIMIZERS[optimizer])(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy")
    return model


def train_head(model: Any, X: np.ndarray, y: np.ndarray, *, batch_size: int = 32, epochs: int = 100,
               seed: int = 0, validation: tuple[np.ndarray, np.ndarray] | None = None,
               patience: int = 10, weights: np.ndarray | None = None) -> tuple[int, int]:
    """Train a compiled ``model`` on rows ``X`` and integer labels ``y``: each epoch the rows in
    a new order drawn from ``seed``, in batches of ``batch_size``; with ``validation``, stop
    once its loss has not improved for ``patience`` epochs and keep the weights of the best
    epoch (Keras' ``EarlyStopping(restore_best_weights=True)`` rule). Returns the epochs
    trained and the best epoch. ``weights`` (one per row) weigh each row's loss.

    Written here rather than with ``model.fit``: fit draws its order of rows from global random
    state (TensorFlow's global seed for arrays, Python's ``random`` for a ``PyDataset``) and its
    input pipeline prefetches an epoch's first batches before a dataset can reshuffle, so two
    fits with one seed ended with different weights (measured); this loop is repeatable and
    leaves the caller's random state alone.

    Examples
    --------
    >>> head = compile_head(build_head(X.shape[1], 17, dropout=0.0))  # doctest: +SKIP
    >>> train_head(head, X, y, epochs=50, validation=(X_val, y_val), patience=10)  # doctest: +SKIP
    (31, 21)
    """
    rng = np.random.default_rng(seed)
    best_loss, best_weights, best_epoch, waited = np.inf, None, 0, 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            model.train_on_batch(X[rows], y[rows], sample_weight=None if weights is None else weights[rows])
        if validation is None:
            continue
        loss = _cross_entropy(model, *validation)
        if loss < best_loss:
            best_loss, best_weights, best_epoch, waited = loss, model.get_weights(), epoch, 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return epoch, best_epoch or epoch


def _cross_entropy(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of ``model``'s probabilities for rows ``X`` with labels ``y``."""
    proba = _probabilities(model, X)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def _probabilities(model: Any, X: np.ndarray) -> np.ndarray:
    """``model``'s outputs for rows ``X``, float64, in batches of :data:`PREDICT_BATCH`.

    Called eagerly: Keras' ``predict`` compiles a function per model, and a grid search makes
    dozens of models (TensorFlow warns of retracing after five).
    """
    if not len(X):
        return np.zeros((0, model.output_shape[-1]))
    return np.concatenate([
        np.asarray(model(X[start:start + PREDICT_BATCH], training=False), dtype=np.float64)
        for start in range(0, len(X), PREDICT_BATCH)
    ])


def _validation_split(
    y: np.ndarray, fraction: float, seed: int, image_ids: np.ndarray | None = None,
    mirrored: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices: a stratified, seeded ``fraction`` of the rows held
    out for early stopping (at least as many rows as classes). Rows of a class with fewer than
    2 rows all train; with too few rows to hold any out, the validation part is empty.

    With ``mirrored`` (True for rows that are mirrored images, ``classify --augment``) and
    ``image_ids`` (the image each row shows), validation rows are drawn from the other rows
    only, as without mirrors, and the mirror of a validation image leaves the training rows:
    a mirror never validates, and no image validates next to its own mirror in training.

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # four images, then their mirrors
    >>> train, val = _validation_split(y, 0.5, 0, np.arange(8) % 4, np.arange(8) >= 4)
    >>> sorted(set(val % 4) & set(train % 4)), bool(np.all(val < 4))
    ([], True)
    """
    if mirrored is not None:
        if image_ids is None or len(image_ids) != len(y) or len(mirrored) != len(y):
            raise ValueError("mirrored needs image_ids, one of each per row")
        originals = np.flatnonzero(~np.asarray(mirrored, dtype=bool))
        _, val = _validation_split(np.asarray(y)[originals], fraction, seed)
        val = originals[val]
        held = np.isin(image_ids, np.asarray(image_ids)[val])
        return np.flatnonzero(~held), val
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    splittable = np.isin(y, classes[counts >= 2])
    pool = rows[splittable]
    n_classes = len(np.unique(y[pool]))
    n_val = max(int(round(fraction * len(y))), n_classes)
    if n_classes == 0 or len(pool) - n_val < n_classes:
        return rows, rows[:0]
    train, val = train_test_split(pool, test_size=n_val, stratify=y[pool], random_state=seed)
    return np.sort(np.concatenate([train, rows[~splittable]])), np.sort(val)


class KerasClassifier(ClassifierMixin, BaseEstimator):
    """What the Keras-trained estimators share (:class:`DenseHead`, and
    :class:`classify.classifiers.finetune.FineTune`): a fitted ``model_`` from rows to the probabilities of
    ``classes_``, predicted eagerly in batches, saved as a ``.keras`` file and read back.
    Subclasses say how rows become the model's input (:meth:`_model_input`).

    Examples
    --------
    >>> head = DenseHead().fit(X, y)  # doctest: +SKIP
    >>> DenseHead.load(head.save("h.keras"), head.classes_).predict(X)  # doctest: +SKIP
    """

    #: How messages name the model (``the head has 3 outputs``).
    _what = "model"

    # Declared so that callers can tell the estimator validates its parameters (in
    # _validate_params, written out rather than with scikit-learn's private constraint types).
    _parameter_constraints: dict = {}

    def _model_input(self, X: np.ndarray) -> np.ndarray:
        """Rows ``X`` as ``model_`` takes them, float32."""
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of ``classes_``, one row per row of ``X``."""
        check_is_fitted(self, "model_")
        proba = _probabilities(self.model_, self._model_input(X))
        return proba / proba.sum(axis=1, keepdims=True)  # exactly 1 per row, in float64

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable label of each row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``model_`` as a Keras model file (``.keras``; ``keras.models.load_model`` reads
        it). The labels are not in it: :meth:`load` takes them back (the model card keeps them)."""
        check_is_fitted(self, "model_")
        path = Path(path)
        self.model_.save(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, classes: Any, **params: Any) -> KerasClassifier:
        """A fitted estimator from a file written by :meth:`save`, with its ``classes``."""
        keras = _keras()
        fitted = cls(**params)
        fitted.model_ = keras.models.load_model(path, compile=False)
        fitted.classes_ = np.asarray(classes)
        fitted.n_features_in_ = int(np.prod(fitted.model_.input_shape[1:]))
        if fitted.model_.output_shape[-1] != len(fitted.classes_):
            raise ValueError(f"{path}: the {cls._what} has {fitted.model_.output_shape[-1]} outputs, "
                             f"not one per class of {len(fitted.classes_)}")
        return fitted


class DenseHead(KerasClassifier):
    """A dense head (``Dense(hidden, relu) -> Dropout -> Dense(C, softmax)``) trained on
    feature rows with Keras: the frozen-base transfer-learning recipe as a scikit-learn
    classifier.

    Parameters
    ----------
    hidden : int
        Width of the hidden ReLU layer; 0 for none (softmax on the features).
    dropout : float
        Dropout rate after the hidden layer (on the features when ``hidden`` is 0).
    learning_rate : float
        The optimizer's learning rate.
    optimizer : {"rmsprop", "adam", "sgd"}
        The recipe's RMSprop by default.
    batch_size : int
        Rows per training step.
    epochs : int
        Most epochs; training stops earlier when the validation loss has not improved for
        ``patience`` epochs, and the weights of its best epoch are kept.
    patience : int
        Epochs without improvement of the validation loss before stopping.
    validation_fraction : float
        Share of the training rows held out (stratified) for early stopping; 0 trains all
        ``epochs`` on every row.
    scaling : {"rms", "standard", "none"}
        A fixed first layer fitted on the training rows (see :func:`build_head`). ``rms``
        divides the features by one number, their root mean square, which leaves well-scaled
        features nearly as they are and brings large ones into range: VGG16 hed-bsds500
        features of Flowers-17 (up to 1,052, root mean square 15) trained to 0.06 and 0.31
        test accuracy as they are (learning rates 1e-3 and 1e-4), 0.42 and 0.46 divided by it.
        ``standard`` (per feature) reached 0.55 there but lost 1 to 4 points on MobileNetV2
        features (mostly zeros, which it blows up). ``none`` is the recipe as written.
    random_state : int
        A whole number (not None): seeds the initial weights, the dropout, the validation
        slice and each epoch's order of rows: the same data and seed give the same network on
        CPU.

    Attributes
    ----------
    classes_ : ndarray
        The labels, in the order of ``predict_proba``'s columns.
    model_ : keras.Model
        The trained head, from a feature row to the probabilities of ``classes_`` (no optimizer).
    epochs_ : int
        Epochs trained; ``best_epoch_`` the one whose weights were kept.

    Examples
    --------
    >>> from classify.classifiers.head import DenseHead
    >>> head = DenseHead(hidden=512, dropout=0.5).fit(X_train, y_train)  # doctest: +SKIP
    >>> head.predict_proba(X_test).shape  # doctest: +SKIP
    (340, 17)
    >>> head.save("head.keras")  # doctest: +SKIP
    """

    _what = "head"

    def __init__(self, hidden: int = 256, dropout: float = 0.5, learning_rate: float = 1e-3,
                 optimizer: str = "rmsprop", batch_size: int = 32, epochs: int = 100,
                 patience: int = 10, validation_fraction: float = 0.1, scaling: str = "rms",
                 random_state: int = 0):
        self.hidden = hidden
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.scaling = scaling
        self.random_state = random_state

    def _validate_params(self) -> None:
        """Raise ``ValueError`` (one line) for a parameter out of range; scikit-learn's own
        estimators check theirs under this name."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.hidden, (int, np.integer)) and self.hidden >= 0):
            raise ValueError(f"hidden must be a whole number of at least 0, got {self.hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be above 0, got {self.learning_rate!r}")
        for name in ("batch_size", "epochs", "patience"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction!r}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {self.scaling!r}")
        if not isinstance(self.random_state, (int, np.integer)) or isinstance(self.random_state, bool):
            raise ValueError(f"random_state must be a whole number, got {self.random_state!r}")

    def fit(self, X: np.ndarray, y: np.ndarray, image_ids: np.ndarray | None = None,
            mirrored: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> DenseHead:
        """Train a new head on feature rows ``X`` and labels ``y``; returns ``self``.

        ``image_ids`` and ``mirrored`` say which rows are mirrored images and of which image
        (``classify --augment``): the validation slice then holds no mirror, and no mirror of
        a validation image trains (see :func:`_validation_split`). ``sample_weight`` weighs
        each training row's loss (``--class-weight``; the validation loss is unweighted)."""
        self._validate_params()
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (rows, features), got shape {X.shape}")
        keras = _keras()
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        self.n_features_in_ = X.shape[1]
        seed = int(self.random_state)
        train, validation = np.arange(len(X)), None
        if self.validation_fraction > 0:
            train, val = _validation_split(codes, self.validation_fraction, seed, image_ids, mirrored)
            # Too few rows to hold some out (a tiny cross-validation fold): all epochs train.
            validation = (X[val], codes[val]) if len(val) else None
        model = compile_head(
            build_head(X.shape[1], len(self.classes_), hidden=int(self.hidden),
                       dropout=float(self.dropout), seed=seed, scaling=self.scaling, rows=X[train]),
            self.optimizer, float(self.learning_rate),
        )
        self.epochs_, self.best_epoch_ = train_head(
            model, X[train], codes[train], batch_size=int(self.batch_size), epochs=int(self.epochs),
            seed=seed, validation=validation, patience=int(self.patience),
            weights=None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)[train],
        )
        # The head alone, without the optimizer's state: what is saved, exported and predicted.
        self.model_ = keras.Model(model.input, model.output, name=model.name)
        return self

    def _model_input(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; this head takes rows of {self.n_features_in_} features")
        return np.ascontiguousarray(X, dtype=np.float32)


@dataclass(frozen=True)
class KerasTrained(Classifier):
    """An entry whose estimator is a :class:`KerasClassifier`: chosen by log-loss, TensorFlow
    using every core inside one fit, saved as a ``.keras`` file (never pickled: a pickled Keras
    model ties the file to the versions that wrote it) and exported as its own Keras model."""

    estimator_type: type[KerasClassifier] | None = None
    select: str = "log_loss"
    parallel_inside: bool = True
    libraries: tuple[str, ...] = ("keras", "tensorflow")
    file_format: str = "keras"
    suffix: str = ".keras"
    exports: bool = True

    def save(self, estimator: Any, path: Path) -> None:
        estimator.save(path)

    def load(self, path: str | os.PathLike, card: Mapping[str, Any]) -> Any:
        return self.estimator_type.load(path, card["labels"], **card.get("best_params", {}))

    def exported_probabilities(self, estimator: Any, features: Any) -> Any:
        import keras

        if len(features.shape) > 2 and len(estimator.model_.input_shape) == 2:  # rows as stored
            features = keras.layers.Flatten(name="flatten_features", dtype="float32")(features)
        return estimator.model_(features)


# Candidates that keep the search on pooled MobileNetV2 features under a minute on 2 cores
# (the values searches chose are in docs/results.md).
HEAD_GRID: dict[str, list[Any]] = {"hidden": [256, 512], "dropout": [0.0, 0.5], "learning_rate": [1e-3, 1e-4]}

register_classifier(KerasTrained(
    "head", "dense head", lambda seed, jobs: DenseHead(random_state=seed), HEAD_GRID,
    "a new dense head, Dense(hidden, relu) -> Dropout -> Dense(softmax), trained with "
    "Keras (RMSprop, early stopping on a validation slice): the frozen-base recipe",
    estimator_type=DenseHead,
))
