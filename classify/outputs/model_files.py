"""A fitted estimator to a file and back, as its registry entry saves and loads it.

scikit-learn and XGBoost estimators are saved with joblib; the Keras-trained ones as ``.keras``
files (see :class:`classify.classifiers.head.KerasTrained`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..classifiers import CLASSIFIERS, get_classifier
from ..errors import ClassifyError


def model_file(path: str | os.PathLike, model: str) -> Path:
    """Where :func:`save_estimator` writes model ``model`` asked to save at ``path``: ``path``
    itself, or for a Keras model ``path`` with ``.keras`` in place of a ``.joblib`` suffix, or
    after any other name.

    Examples
    --------
    >>> model_file("f17.joblib", "logreg"), model_file("f17.head.joblib", "head")
    (PosixPath('f17.joblib'), PosixPath('f17.head.keras'))
    >>> model_file("f17.head", "head"), model_file("head.keras", "head")
    (PosixPath('f17.head.keras'), PosixPath('head.keras'))
    """
    path = Path(path)
    suffix = get_classifier(model).suffix
    if path.suffix == suffix or suffix == ".joblib":
        return path
    if path.suffix == ".joblib":
        return path.with_suffix(suffix)
    return path.with_name(path.name + suffix)


def save_estimator(estimator: Any, path: str | os.PathLike, model: str) -> Path:
    """Write ``estimator`` (fitted, of registry model ``model``) to :func:`model_file`;
    returns the path written. A failure is one line naming the file.

    Examples
    --------
    >>> save_estimator(result.estimator, "f17.head.joblib", "head")  # doctest: +SKIP
    PosixPath('f17.head.keras')
    """
    path = model_file(path, model)
    try:
        get_classifier(model).save(estimator, path)
    except OSError as exc:
        raise ClassifyError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def load_estimator(path: str | os.PathLike, card: dict[str, Any]) -> Any:
    """The estimator saved at ``path``, as its model card ``card`` describes it.

    Raises ``OSError``, ``EOFError``, ``ValueError``, ``KeyError`` or ``TypeError`` for a file
    (or card) that cannot be read.

    Examples
    --------
    >>> import json
    >>> card = json.load(open("f17.head.card.json"))  # doctest: +SKIP
    >>> load_estimator("f17.head.keras", card).predict_proba(X).shape  # doctest: +SKIP
    (340, 17)
    """
    model = card.get("model")
    if model not in CLASSIFIERS:
        raise ValueError(f"the card names the model {model!r}, which is not registered here")
    return CLASSIFIERS[model].load(path, card)
