"""The train / test split of stage 2: stratified, seeded, the same for every model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import ClassifyError


class SplitError(ClassifyError, ValueError):
    """Labels that cannot be split as asked; the message is one line for the user."""


def class_name(label: int, label_names: Sequence[str] | None) -> str:
    """How errors name a class: ``'tulip'``, or its number in files without names."""
    if label_names is not None and 0 <= label < len(label_names):
        return repr(str(label_names[label]))
    return str(label)


def stratified_split(
    labels: np.ndarray,
    test_size: float = 0.25,
    seed: int = 42,
    label_names: Sequence[str] | None = None,
    *,
    allow_trailing_empty: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified train / test split, each sorted.

    The same labels, ``test_size`` and ``seed`` always give the same split, so runs of
    different models (or of the same model on another day) are scored on the same rows.

    With ``label_names``, errors name the class, and a named class without rows is refused too
    (an empty class folder, or one whose every image was skipped), except, with
    ``allow_trailing_empty``, the last classes of an unfinished file, which the extraction has
    not reached yet (rows are written in class order).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if label_names is not None:
        present = set(classes.tolist())
        last = int(classes.max()) if len(classes) else -1
        for label in range(len(label_names)):
            if label not in present and not (allow_trailing_empty and label > last):
                raise SplitError(
                    f"class {class_name(label, label_names)} has no rows; every class needs at "
                    "least 2 to appear in both the training and the test rows"
                )
    if len(classes) < 2:
        raise SplitError(f"only {len(classes)} class in the file; a classifier needs at least 2")
    if counts.min() < 2:
        smallest = int(classes[counts.argmin()])
        raise SplitError(
            f"class {class_name(smallest, label_names)} has {counts.min()} row; every class "
            "needs at least 2 to appear in both the training and the test rows"
        )
    try:
        train, test = train_test_split(
            np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
        )
    except ValueError as exc:
        raise SplitError(f"cannot split {len(labels)} rows with --test-size {test_size}: {exc}") from None
    return np.sort(train), np.sort(test)
