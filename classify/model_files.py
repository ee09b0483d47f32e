"""A fitted estimator to a file and back, in the format its registry entry names.

scikit-learn and XGBoost estimators are saved with joblib; a :class:`~classify.head.DenseHead`
as a ``.keras`` file (the format ``keras.models.load_model`` reads), never pickled: a pickled
Keras model ties the file to the Keras and TensorFlow versions that wrote it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ClassifyError
from .models import MODELS

#: File suffix of each ``ModelSpec.file_format``.
SUFFIXES = {"joblib": ".joblib", "keras": ".keras"}


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
    suffix = SUFFIXES[MODELS[model].file_format]
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
        if MODELS[model].file_format == "keras":
            estimator.save(path)
        else:
            import joblib

            joblib.dump(estimator, path)
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
    if model in MODELS and MODELS[model].file_format == "keras":
        # The registry's estimator class reads its own Keras file back (DenseHead, FineTune).
        estimator_class = type(MODELS[model].make(0, None))
        return estimator_class.load(path, card["labels"], **card.get("best_params", {}))
    import joblib

    return joblib.load(path)
