"""The registry of classifiers stage 2 can search: :class:`Classifier` and :func:`register_classifier`.

An entry declares what the rest of stage 2 needs to know of its estimator, as scikit-learn's
estimator tags and timm's ``register_model`` do, so that no other module asks which model it
is: how to make one, its default grid and the score that picks from it, whether one fit uses
every core, whether it trains backbone layers (and so takes ``precision=`` and the feature
file's extraction settings), how it is saved and read back, and whether and how it becomes the
last layers of an exported Keras model. A new classifier is one entry and one call::

    from sklearn.neighbors import KNeighborsClassifier
    from classify import Classifier, register_classifier

    register_classifier(Classifier(
        "knn", "nearest neighbours", lambda seed, jobs: KNeighborsClassifier(n_jobs=jobs),
        grid={"n_neighbors": [1, 5]}))

after which ``train_and_evaluate(..., models=["knn"])``, ``--save`` and ``predict`` take it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sklearn.base import BaseEstimator

from ..errors import SettingsError

#: ``select=`` choices: the cross-validated score that picks the best parameters.
SELECTIONS = ("accuracy", "log_loss")


@dataclass(frozen=True)
class Classifier:
    """One classifier of the registry, with its declared capabilities.

    Parameters
    ----------
    name : str
        The ``--model`` name.
    kind : str
        What it is, in a few words, for messages (``random forest``).
    make : callable
        ``make(seed, jobs)`` returns a fresh, unfitted scikit-learn estimator; ``jobs`` is the
        number of cores one fit may use (None: its own default).
    grid : dict
        Default parameter grid; ``--grid`` replaces it.
    description : str
        One line for ``--help``.
    select : {"accuracy", "log_loss"}
        The cross-validated score that picks the best parameters (``log_loss`` for models
        with ``predict_proba``).
    parallel_inside : bool
        One fit uses every core (trees, boosting, TensorFlow), so the search runs one fit at a
        time and gives the fit the cores.
    linear_l2 : bool
        The model sees the features only through ``X @ w + b`` and is penalised by ``||w||²``,
        so its search may run in the span of the training rows.
    regularisation_path : bool
        With ``linear_l2``: an L2 ``LogisticRegression`` searched over ``C`` by warm-started
        paths on the Gram matrix of the training rows (same choice and optimum as
        ``GridSearchCV``).
    trains_backbone : bool
        It rebuilds and trains the backbone's layers above the stored one: it takes
        ``precision=``, and :meth:`prepare` gives it the feature file's extraction settings.
    libraries : tuple of str
        Packages besides scikit-learn that fit it, whose versions reports and cards record.
    file_format : str
        What :meth:`save` writes (``joblib``), recorded in the model card.
    suffix : str
        The file suffix of that format.
    exports : bool
        :meth:`exported_probabilities` builds it as Keras layers (``classify export``).

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> entry = Classifier("dummy", "majority class", lambda seed, jobs: DummyClassifier())
    >>> entry.make(0, None).fit([[0], [1], [1]], [0, 1, 1]).predict([[5]]).tolist()
    [1]
    """

    name: str
    kind: str
    make: Callable[[int, int | None], BaseEstimator]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    description: str = ""
    select: str = "accuracy"
    parallel_inside: bool = False
    linear_l2: bool = False
    regularisation_path: bool = False
    trains_backbone: bool = False
    libraries: tuple[str, ...] = ()
    file_format: str = "joblib"
    suffix: str = ".joblib"
    exports: bool = False

    def save(self, estimator: Any, path: Path) -> None:
        """Write the fitted ``estimator`` to ``path`` (joblib; Keras models override this)."""
        import joblib

        joblib.dump(estimator, path)

    def load(self, path: str | os.PathLike, card: Mapping[str, Any]) -> Any:
        """The estimator :meth:`save` wrote at ``path``, as its model card ``card`` describes it.

        Raises ``OSError``, ``EOFError``, ``ValueError``, ``KeyError`` or ``TypeError`` for a
        file (or card) that cannot be read."""
        import joblib

        return joblib.load(path)

    def prepare(self, estimator: Any, provenance: Mapping[str, Any], features_path: str) -> None:
        """Set what a fit needs from the feature file before any search starts (nothing, but
        for models that train backbone layers); refuse a file it cannot use in one line."""

    def exported_probabilities(self, estimator: Any, features: Any) -> Any:
        """The Keras tensor of class probabilities computed from the backbone's output tensor
        ``features`` (as stored: maps, or rows) by the fitted ``estimator``; for entries with
        ``exports``."""
        raise NotImplementedError(f"{self.name} has no Keras layers to export")


_REGISTRY: dict[str, Classifier] = {}


#: Every registered classifier, by ``--model`` name.
CLASSIFIERS: Mapping[str, Classifier] = MappingProxyType(_REGISTRY)  # a read-only, live view


def register_classifier(entry: Classifier, *, replace: bool = False) -> Classifier:
    """Add ``entry`` to the registry under ``entry.name``; returns it.

    Raises :class:`~classify.errors.SettingsError` for a name already registered (unless
    ``replace``) or a ``select`` that is not a score.

    Examples
    --------
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> knn = register_classifier(Classifier("knn", "nearest neighbours",
    ...                                      lambda seed, jobs: KNeighborsClassifier()))
    >>> "knn" in CLASSIFIERS
    True
    >>> unregister_classifier("knn")
    """
    if entry.name in _REGISTRY and not replace:
        raise SettingsError(f"a classifier named {entry.name!r} is registered already; "
                            "pass replace=True to replace it")
    if entry.select not in SELECTIONS:
        raise SettingsError(f"classifier {entry.name!r}: select must be one of {', '.join(SELECTIONS)}, "
                            f"got {entry.select!r}")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_classifier(name: str) -> None:
    """Remove the classifier ``name`` from the registry (a no-op when it is not there).

    Examples
    --------
    >>> unregister_classifier("not-registered")
    >>> "logreg" in CLASSIFIERS
    True
    """
    _REGISTRY.pop(name, None)


def get_classifier(name: str) -> Classifier:
    """The registered classifier ``name``; a one-line :class:`SettingsError` naming the choices.

    Examples
    --------
    >>> get_classifier("rf").kind
    'random forest'
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SettingsError(f"unknown model (--model) {name!r}; choose from {', '.join(_REGISTRY)}") from None
