"""Fine-tuning the top of a backbone from stored maps: ``--model finetune`` (:class:`FineTune`).

Fine-tuning unfreezes the last block of the backbone and trains it with the head. Everything
below the first unfrozen layer stays frozen, so its output for an image never changes: stored
once (``python -m extract --layer block4_pool --pooling flatten``), it is the input of the
layers above it, and training those on the stored maps is training them through the frozen
network, without running the frozen part again every epoch. :func:`top_of_backbone` rebuilds
those layers, with the weights the feature file names; :func:`stored_maps` turns the file's
rows back into maps. ``tests/test_finetune.py`` checks that one training step from the
stored maps equals the same step through the whole network on the images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ClassifyError, SettingsError, first_line
from .head import KerasClassifier, KerasTrained
from .registry import register_classifier

log = logging.getLogger("classify")

#: ``precision=`` choices for training (float16 would need loss scaling, not done here).
PRECISIONS = ("float32", "bf16")


def top_of_backbone(loaded: Any, from_layer: str) -> Any:
    """The layers of ``loaded`` (a :class:`extract.LoadedBackbone`) above ``from_layer``, as a
    Keras model from that layer's output map to the backbone's (pooled) features, sharing the
    backbone's layers and weights. Its BatchNormalization layers are frozen, so they run in
    inference mode when the rest trains (as the recipe's frozen statistics do).

    Raises :class:`~classify.errors.SettingsError` when a connection skips over ``from_layer``
    (inside a residual block), naming the layer: the layers above it then need more than its
    output.

    Examples
    --------
    >>> from extract import load_backbone
    >>> loaded = load_backbone("vgg16", "hed-bsds500", "avg", 224)  # doctest: +SKIP
    >>> top = top_of_backbone(loaded, "block4_pool")  # doctest: +SKIP
    >>> top.input_shape, top.output_shape  # doctest: +SKIP
    ((None, 14, 14, 512), (None, 512))
    """
    import keras

    from extract.backbones import _layer_output

    start = _layer_output(loaded.model, from_layer)
    try:
        top = keras.Model(start, loaded.model.output, name=f"{loaded.backbone.name}_above_{from_layer}")
    except ValueError as exc:  # Keras: the graph above needs tensors from below the layer
        raise SettingsError(
            f"layer {from_layer!r} of {loaded.backbone.name} is inside a block whose connections skip "
            f"over it ({first_line(exc)[:80]}...); store the output of a whole block"
        ) from None
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return top


def stored_maps(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Feature rows stored with ``--pooling flatten`` as the maps they flatten, ``(n, *shape)``.

    Examples
    --------
    >>> stored_maps(np.arange(24, dtype=np.float32).reshape(2, 12), (2, 2, 3)).shape
    (2, 2, 2, 3)
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != int(np.prod(shape)):
        raise SettingsError(f"rows of {rows.shape[-1]} values are not maps of shape {tuple(shape)}; "
                            "extract the layer with --pooling flatten")
    return rows.reshape(len(rows), *shape)


def last_feature_layer(ext: Mapping[str, Any]) -> str | None:
    """The layer a default extraction of the backbone ``ext`` records stores (its last feature
    map), up to which fine-tuning rebuilds the backbone; None where its family cannot say
    before the model is built (a saved model of your own).

    Examples
    --------
    >>> last_feature_layer({"backbone": "vgg16", "weights": "hed-bsds500"})
    'block5_pool'
    """
    from extract.backbones import BackboneRequest, attrs_family

    weights = ext.get("weights")
    request = BackboneRequest(str(ext.get("backbone")), None if weights in (None, "none") else str(weights))
    return attrs_family(ext).planned_attrs(request)["layer"]


def check_extraction(ext: dict[str, Any], source: str | os.PathLike,
                     weights: str | os.PathLike | None = None) -> str | None:
    """Refuse, in one line, a feature file fine-tuning cannot start from; returns ``weights``
    (where to look for the backbone's weights, None: where the file recorded them).

    Fine-tuning needs maps (``--pooling flatten``) of a layer below the backbone's last
    feature layer, whose weights are still found with the SHA-256 recorded.

    Examples
    --------
    >>> check_extraction({"backbone": "vgg16", "pooling": "avg", "layer": "block5_pool"}, "f.hdf5")
    Traceback (most recent call last):
    ...
    classify.errors.ClassifyError: f.hdf5: fine-tuning trains the layers above the stored one, \
from its maps: extract them with --layer LAYER --pooling flatten (this file: block5_pool, avg)
    """
    from extract.backbones import BackboneRequest, attrs_family
    from extract.errors import ExtractError

    from ..inference.rebuild import extraction_backbone

    name, layer = ext.get("backbone"), ext.get("layer")
    try:  # a family whose stored layers fine-tuning cannot start from says why, in one line
        refusal = getattr(attrs_family(ext), "finetune_refusal", None)
    except (ExtractError, KeyError):
        refusal = None  # a family that is not registered here, or no backbone: refused below
    if refusal:
        raise ClassifyError(f"{source}: {refusal}")
    if ext.get("pooling") != "flatten":
        raise ClassifyError(f"{source}: fine-tuning trains the layers above the stored one, from its "
                            f"maps: extract them with --layer LAYER --pooling flatten (this file: "
                            f"{layer}, {ext.get('pooling')})")
    try:
        last = last_feature_layer(ext)
        stored = BackboneRequest(str(name), ext.get("weights"), layers=(str(layer),))
        top = attrs_family(ext).needs_top(stored)
    except ExtractError as exc:  # a family that is not registered here
        raise ClassifyError(f"{source}: {exc}") from None
    if last is None:
        raise ClassifyError(f"{source}: fine-tuning rebuilds the backbone up to its last feature layer, "
                            f"which the family of {name} does not name; extract from a registry backbone")
    if layer == last or top:
        raise ClassifyError(f"{source}: {layer} is {name}'s last feature layer, with nothing above it "
                            "to fine-tune; extract an earlier one (--layer), e.g. the end of the "
                            "last block but one")
    try:
        top_of_backbone(extraction_backbone(ext, source, weights, up_to=last), layer)
    except (SettingsError, ExtractError) as exc:  # the file's fault: one line, exit status 1
        raise ClassifyError(f"{source}: {exc}") from None
    return None if weights is None else os.fspath(weights)


def training_precision(recorded: str | None) -> str:
    """The precision fine-tuning trains in when none is asked for: the feature file's own
    (``recorded``), but float32 for a bf16 file where nothing here computes bfloat16 natively
    (emulated bf16 can be several times slower than float32).

    Examples
    --------
    >>> training_precision(None), training_precision("float32")
    ('float32', 'float32')
    """
    from extract import devices

    if recorded == "bf16" and not devices.bf16_is_native():
        log.info("the feature file was extracted in bf16, which this machine computes only by "
                 "emulation: fine-tuning in float32 (--precision bf16 to insist)")
        return "float32"
    return recorded or "float32"


class FineTune(KerasClassifier):
    """The backbone's layers above the stored layer, with a new dense head, fine-tuned on the
    stored maps in the recipe's two phases: the head warmed up with the layers frozen
    (RMSprop), then everything trained at a lower rate (SGD with momentum); BatchNormalization
    stays in inference mode, early stopping on a validation slice in both phases.

    Parameters
    ----------
    hidden, dropout : int, float
        The head (see :class:`classify.classifiers.head.DenseHead`).
    warmup_epochs, warmup_learning_rate : int, float
        Phase 1: the head alone, RMSprop.
    learning_rate, momentum, epochs : float, float, int
        Phase 2: the top layers and the head, SGD with momentum; ``epochs`` at most.
    patience, batch_size, validation_fraction, random_state
        As for :class:`classify.classifiers.head.DenseHead`.
    extraction : dict
        The feature file's extraction settings (``classify`` sets them from the file).
    weights : str, optional
        The weights to rebuild the backbone with (named, or a file's path).
    precision : {"float32", "bf16"}, optional
        Compute precision of the backbone's layers being fine-tuned: ``bf16`` runs them under
        Keras' ``mixed_bfloat16`` policy (float32 weights, bfloat16 arithmetic; for CPUs with
        AVX512-BF16 or AMX and recent GPUs); None (the default) the feature file's own
        extraction precision where this machine computes it natively, else float32
        (:func:`training_precision`). The head computes in float32 either way.

    Examples
    --------
    >>> from classify import train_and_evaluate
    >>> result = train_and_evaluate("f17.block_15_add.hdf5", "finetune")["finetune"]  # doctest: +SKIP
    """

    def __init__(self, hidden: int = 256, dropout: float = 0.5, warmup_epochs: int = 25,
                 warmup_learning_rate: float = 1e-3, learning_rate: float = 1e-3,
                 momentum: float = 0.9, epochs: int = 100, patience: int = 10, batch_size: int = 32,
                 validation_fraction: float = 0.1, random_state: int = 0,
                 extraction: dict | None = None, weights: str | None = None,
                 precision: str | None = None):
        self.hidden = hidden
        self.dropout = dropout
        self.warmup_epochs = warmup_epochs
        self.warmup_learning_rate = warmup_learning_rate
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.extraction = extraction
        self.weights = weights
        self.precision = precision

    def _validate_params(self) -> None:
        """Raise ``ValueError`` (one line) for a parameter out of range."""
        from .head import DenseHead

        DenseHead(hidden=self.hidden, dropout=self.dropout, learning_rate=self.learning_rate,
                  batch_size=self.batch_size, epochs=self.epochs, patience=self.patience,
                  validation_fraction=self.validation_fraction,
                  random_state=self.random_state)._validate_params()
        if not (isinstance(self.warmup_epochs, (int, np.integer)) and self.warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs must be a whole number of at least 0, "
                             f"got {self.warmup_epochs!r}")
        if not self.warmup_learning_rate > 0:
            raise ValueError(f"warmup_learning_rate must be above 0, got {self.warmup_learning_rate!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def fit(self, X: np.ndarray, y: np.ndarray, image_ids: np.ndarray | None = None,
            mirrored: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> FineTune:
        """Fine-tune on stored map rows ``X`` and labels ``y``; returns ``self``. ``image_ids``,
        ``mirrored`` and ``sample_weight`` as for :meth:`classify.classifiers.head.DenseHead.fit`."""
        from ..inference.rebuild import extraction_backbone
        from .head import _keras, _validation_split, build_head, compile_head, train_head

        self._validate_params()
        if not self.extraction:
            raise ValueError("FineTune needs extraction=, the feature file's extraction settings")
        keras = _keras()
        ext = self.extraction
        # The layers above the stored one are built under the training precision's policy;
        # the maps below were stored at the file's own.
        precision = self.precision or training_precision(ext.get("precision"))
        loaded = extraction_backbone(dict(ext, precision=precision), "the feature file",
                                     self.weights, up_to=last_feature_layer(ext))
        top = top_of_backbone(loaded, ext["layer"])
        maps = stored_maps(np.asarray(X, dtype=np.float32), tuple(top.input_shape[1:]))
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        self.n_features_in_ = int(np.prod(top.input_shape[1:]))
        seed = int(self.random_state)
        train, validation = np.arange(len(maps)), None
        if self.validation_fraction > 0:
            train, val = _validation_split(codes, self.validation_fraction, seed, image_ids, mirrored)
            validation = (maps[val], codes[val]) if len(val) else None
        head = build_head(int(top.output_shape[-1]), len(self.classes_), hidden=int(self.hidden),
                          dropout=float(self.dropout), seed=seed)
        inputs = keras.Input(top.input_shape[1:], name="maps")
        model = keras.Model(inputs, head(top(inputs)), name="featurebank_finetune")
        common = {"batch_size": int(self.batch_size), "validation": validation,
                  "patience": int(self.patience),
                  "weights": None if sample_weight is None else np.asarray(sample_weight, np.float32)[train]}
        top.trainable = False  # phase 1: the head alone
        warm = 0
        if self.warmup_epochs:
            warm, _ = train_head(compile_head(model, "rmsprop", float(self.warmup_learning_rate)),
                                 maps[train], codes[train], epochs=int(self.warmup_epochs), seed=seed,
                                 **common)
        top.trainable = True  # phase 2: the layers above the stored one too, statistics frozen
        for layer in top.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        sgd = keras.optimizers.SGD(float(self.learning_rate), momentum=float(self.momentum))
        model.compile(optimizer=sgd, loss="sparse_categorical_crossentropy")
        tuned, self.best_epoch_ = train_head(model, maps[train], codes[train], epochs=int(self.epochs),
                                             seed=seed + 1, **common)
        self.epochs_ = (warm, tuned)
        self.model_ = keras.Model(model.input, model.output, name=model.name)
        return self

    def _model_input(self, X: np.ndarray) -> np.ndarray:
        return stored_maps(np.asarray(X, dtype=np.float32), tuple(self.model_.input_shape[1:]))


class FineTuneEntry(KerasTrained):
    """``finetune``: it trains the backbone's layers above the stored one, so it takes
    ``precision=`` and is given the feature file's extraction settings before the search."""

    def prepare(self, estimator: Any, provenance: Mapping[str, Any], features_path: str) -> None:
        from ..inference.rebuild import EXTRACTION_KEYS

        extraction = {key: provenance.get(key) for key in EXTRACTION_KEYS}
        estimator.set_params(extraction=extraction, weights=check_extraction(extraction, features_path))


register_classifier(FineTuneEntry(
    "finetune", "fine-tuned top of the backbone", lambda seed, jobs: FineTune(random_state=seed),
    # The recipe's SGD rate and ten times it.
    {"learning_rate": [1e-3, 1e-2]},
    "the backbone's layers above the stored layer and a dense head: head warmed up "
    "(RMSprop), then all fine-tuned (SGD, momentum); needs --layer L --pooling flatten",
    trains_backbone=True, estimator_type=FineTune,
))
