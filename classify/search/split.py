"""The rows of stage 2: the split a feature file stores (its dataset's own train / val / test),
or a stratified, seeded train / test split; the same for every model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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



@dataclass(frozen=True)
class RowSplit:
    """Which rows a run searches and refits on, and which it reports on.

    Attributes
    ----------
    train : ndarray of int
        Rows the search and the refit use, sorted.
    test : ndarray of int
        Rows the report is on, sorted.
    val_fold : ndarray of int, optional
        Positions in ``train`` of the one validation fold (``use_val``: the file's val
        split), instead of cross-validation folds.
    source : {"random", "stored"}
        A stratified, seeded split, or the split the feature file stores.
    report_on : {"test", "val"}
        The stored split the report is on (``val`` where the file has no test split).
    unused : int
        Stored val rows neither trained nor reported on (a test split, without ``use_val``).
    """

    train: np.ndarray
    test: np.ndarray
    val_fold: np.ndarray | None = None
    source: str = "random"
    report_on: str = "test"
    unused: int = 0

    def describe(self) -> str:
        """One line saying which rows do what.

        Examples
        --------
        >>> RowSplit(np.arange(6), np.arange(6, 8)).describe()
        'rows: 6 train (cross-validated), 2 test (a random, stratified split)'
        """
        if self.source == "random":
            return (f"rows: {len(self.train)} train (cross-validated), {len(self.test)} test (a random, "
                    "stratified split)")
        if self.val_fold is not None:
            searched = (f"{len(self.train) - len(self.val_fold)} train + {len(self.val_fold)} val (the val "
                        "split chooses the parameters, then both refit)")
        else:
            searched = f"{len(self.train)} train (cross-validated)"
        unused = f", {self.unused} val unused (--use-val chooses on them)" if self.unused else ""
        return f"rows: {searched}, {len(self.test)} {self.report_on} (reported){unused}; the file's own split"

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` and the model card record of it."""
        return {"source": self.source, "train_rows": len(self.train), "report_on": self.report_on,
                "report_rows": len(self.test), "validation": "val split" if self.val_fold is not None
                else "cross-validation", "val_rows_unused": self.unused}


def stored_split(splits: Sequence[str], use_val: bool = False) -> RowSplit:
    """The rows of a file's stored split (one of train / val / test per row): the search on
    train (or, with ``use_val``, on train with val as its one validation fold, then refit on
    both), the report on test, or on val where there is no test split.

    Examples
    --------
    >>> split = stored_split(["train", "test", "val", "train"], use_val=True)
    >>> split.train.tolist(), split.val_fold.tolist(), split.test.tolist()
    ([0, 2, 3], [1], [1])
    """
    splits = np.asarray(splits)
    train, val, test = (np.flatnonzero(splits == name) for name in ("train", "val", "test"))
    if not len(test):
        if use_val:
            raise SplitError("--use-val chooses on the val split, but with no test split the report is "
                             "on val: leave out --use-val, or add a test split")
        if not len(val):
            raise SplitError("its stored split has train rows only, nothing to report on: add a val "
                             "or test split, or pass --resplit to hold out test rows at random")
        return RowSplit(train, val, source="stored", report_on="val")
    if not use_val:
        return RowSplit(train, test, source="stored", unused=len(val))
    if not len(val):
        raise SplitError("--use-val chooses on the val split, and its stored split has none")
    rows = np.sort(np.concatenate([train, val]))
    return RowSplit(rows, test, val_fold=np.flatnonzero(np.isin(rows, val)), source="stored")


def repeated_splits(labels: np.ndarray, repeats: int, *, test_size: float = 0.25, seed: int = 42,
                    outer_cv: bool = False, label_names: Sequence[str] | None = None,
                    allow_trailing_empty: bool = False) -> list[RowSplit]:
    """``repeats`` train / test splits of the rows: stratified splits seeded ``seed``,
    ``seed + 1``, ... (each holding out ``test_size``), or with ``outer_cv`` the folds of one
    stratified, shuffled ``repeats``-fold cross-validation (every row tested once).
    ``label_names`` and ``allow_trailing_empty`` are :func:`stratified_split`'s.

    Examples
    --------
    >>> labels = np.repeat([0, 1], 6)
    >>> folds = repeated_splits(labels, 3, outer_cv=True, seed=0)
    >>> sorted(np.concatenate([s.test for s in folds]).tolist()) == list(range(12)), len(folds[0].test)
    (True, 4)
    >>> len({tuple(s.test) for s in repeated_splits(labels, 3, test_size=0.25)})
    3
    """
    from sklearn.model_selection import StratifiedKFold

    if not outer_cv:
        return [RowSplit(*stratified_split(labels, test_size, seed + k, label_names,
                                           allow_trailing_empty=allow_trailing_empty), source="random")
                for k in range(repeats)]
    # The same one-line refusals of unusable labels as one split's.
    stratified_split(labels, 0.5, seed, label_names, allow_trailing_empty=allow_trailing_empty)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < repeats:
        raise SplitError(f"class {class_name(int(classes[counts.argmin()]), label_names)} has {counts.min()} "
                         f"rows, fewer than the {repeats} outer folds: lower --outer-cv")
    folds = StratifiedKFold(n_splits=repeats, shuffle=True, random_state=seed)
    return [RowSplit(np.sort(train), np.sort(test), source="outer-cv")
            for train, test in folds.split(np.zeros((len(labels), 1)), labels)]
