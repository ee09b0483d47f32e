"""The registry of classifiers that ``classify`` can search, each with its default grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sklearn.base import BaseEstimator


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry.

    Parameters
    ----------
    name : str
        The ``--model`` name.
    kind : str
        What it is, in a few words, for messages (``random forest``).
    make : callable
        ``make(seed, jobs)`` returns a fresh, unfitted estimator.
    grid : dict
        Default parameter grid for ``GridSearchCV``; ``--grid`` replaces it.
    description : str
        One line for ``--help``.
    row_space : bool
        The model is L2-penalised and linear in the features, so its search may run in the
        span of the training rows (see :func:`classify.search.run_search`).
    c_path : bool
        It is an L2 ``LogisticRegression`` whose grid is over ``C``: with ``row_space``, the
        search runs as warm-started regularisation paths on the training rows' Gram matrix
        (:func:`classify.path.path_search`; same choice and optimum as ``GridSearchCV``,
        far less time and memory on wide features).
    select : {"accuracy", "log_loss"}
        The cross-validated score that picks the best parameters.
    file_format : {"joblib", "keras"}
        How ``--save`` writes the fitted estimator (:mod:`classify.model_files`).
    export : {"linear", "keras"} or None
        How ``classify export`` writes it as the last layers of one Keras model
        (:mod:`classify.export`): ``linear``, a softmax Dense layer from the estimator's
        ``coef_`` and ``intercept_`` (a row-space projection folded in); ``keras``, its own
        Keras model; None, it cannot be.
    parallel_inside : bool
        One fit uses every core (trees, boosting, TensorFlow), so the search runs one fit at
        a time.
    libraries : tuple of str
        Packages besides scikit-learn that fit it, whose versions reports and model cards record.
    needs_extraction : bool
        It rebuilds part of the backbone: ``classify`` gives it the feature file's extraction
        settings (``extraction=``) and the weights to rebuild it with (``weights=``).
    """

    name: str
    kind: str
    make: Callable[[int, int | None], BaseEstimator]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    description: str = ""
    row_space: bool = False
    c_path: bool = False
    select: str = "accuracy"
    file_format: str = "joblib"
    export: str | None = None
    parallel_inside: bool = False
    libraries: tuple[str, ...] = ()
    needs_extraction: bool = False


def _logreg(seed: int, jobs: int | None) -> BaseEstimator:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=seed)


def _random_forest(seed: int, jobs: int | None) -> BaseEstimator:
    from sklearn.ensemble import RandomForestClassifier

    # Trees run in parallel inside the forest; the search itself then runs one fit at a time.
    return RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=jobs)


def _head(seed: int, jobs: int | None) -> BaseEstimator:
    from .head import DenseHead

    return DenseHead(random_state=seed)


def _finetune(seed: int, jobs: int | None) -> BaseEstimator:
    from .finetune import FineTune

    return FineTune(random_state=seed)


def _xgboost(seed: int, jobs: int | None) -> BaseEstimator:
    from xgboost import XGBClassifier

    # CNN features are wide (25,088 for VGG16) and rows are few: sampling a tenth of the
    # columns per tree and 16 histogram bins per column keep one fit to about half a minute
    # on 2 cores at the accuracy of denser settings (0.48 on hed-bsds500 flowers17 features
    # either way).
    return XGBClassifier(
        tree_method="hist",
        n_estimators=100,
        max_depth=2,
        colsample_bytree=0.1,
        max_bin=16,
        random_state=seed,
        n_jobs=jobs,
        verbosity=0,
    )


# On Flowers-17 single fits over these values ranged 0.90-0.94 test accuracy on MobileNetV2 avg
# features and 0.86-0.92 on flatten ones, and the search chose hidden 256 and learning rate 1e-4
# on all three feature files of the README, dropout 0.5 on two and 0 on one. Eight candidates
# keep the search on 1,280 avg features under a minute on 2 cores (45.5 s; 62,720 flatten
# features: 15 minutes).
HEAD_GRID: dict[str, list[Any]] = {"hidden": [256, 512], "dropout": [0.0, 0.5], "learning_rate": [1e-3, 1e-4]}

# What the Keras-trained models (classify.head.KerasClassifier) have in common: chosen by
# log-loss, saved and exported as Keras models, TensorFlow using every core inside one fit.
KERAS_TRAINED: dict[str, Any] = {
    "select": "log_loss", "file_format": "keras", "export": "keras", "parallel_inside": True,
    "libraries": ("keras", "tensorflow"),
}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "logreg",
            "logistic regression",
            _logreg,
            {"C": [1e-4, 1e-3, 1e-2, 0.1, 1.0]},
            "multinomial logistic regression (L2), the published recipe, searched along "
            "warm-started paths of C in the span of the training rows",
            row_space=True,
            # Warm-started Newton paths on the Gram (classify/path.py): same choice and optimum
            # as GridSearchCV on the PCA coordinates (tests/test_search_path.py), far cheaper on
            # wide features (scripts/bench_classify.py; figures in the README).
            c_path=True,
            # Chosen by held-out log-loss, the loss the model fits: a continuous score, where
            # accuracy on a few hundred validation rows moves in steps and often ties across
            # C (VGG16 features of flowers17: every C within 0.9 points of accuracy), leaving
            # the choice to chance.
            select="log_loss",
            export="linear",
        ),
        ModelSpec(
            "rf",
            "random forest",
            _random_forest,
            {"max_features": ["sqrt", 0.02]},
            "random forest of 300 trees",
            parallel_inside=True,
        ),
        ModelSpec(
            "xgb",
            "gradient-boosted trees",
            _xgboost,
            {"learning_rate": [0.1, 0.3]},
            "gradient-boosted trees (xgboost, hist), 100 rounds of depth 2, 0.1 of features per tree",
            parallel_inside=True,
            libraries=("xgboost",),
        ),
        ModelSpec(
            "head",
            "dense head",
            _head,
            HEAD_GRID,
            "a new dense head, Dense(hidden, relu) -> Dropout -> Dense(softmax), trained with "
            "Keras (RMSprop, early stopping on a validation slice): the frozen-base recipe",
            **KERAS_TRAINED,
        ),
        ModelSpec(
            "finetune",
            "fine-tuned top of the backbone",
            _finetune,
            # The recipe's SGD rate and ten times it; on MobileNetV2 maps of Flowers-17 above
            # block_15_add the search chose 1e-3 (0.9529 test accuracy, README).
            {"learning_rate": [1e-3, 1e-2]},
            "the backbone's layers above the stored layer and a dense head: head warmed up "
            "(RMSprop), then all fine-tuned (SGD, momentum); needs --layer L --pooling flatten",
            **KERAS_TRAINED,
            needs_extraction=True,
        ),
    )
}


def inner_parallel(name: str) -> bool:
    """True for models that use all cores inside one fit (so folds run one at a time)."""
    return MODELS[name].parallel_inside
