"""One model over several splits (``--repeats K``, ``--outer-cv K``): :class:`RepeatedResult`,
its mean and standard deviation per class and overall, and the paired tests over all the test
sets at once."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .comparison import METRICS, SUMMARY_ROWS
from .results import ModelResult, write_text
from .significance import RESAMPLES, Significance, paired_significance


@dataclass(repr=False)
class RepeatedResult:
    """One model searched, refit and tested on each of several splits.

    Attributes
    ----------
    name : str
        The model's registry name.
    results : list of ModelResult
        One per split, in order.
    scheme : str
        ``"repeats"`` (seeded stratified splits) or ``"outer-cv"`` (the folds of an outer
        cross-validation).

    Examples
    --------
    >>> repeated = train_and_evaluate("f17.hdf5", repeats=3)["logreg"]  # doctest: +SKIP
    >>> repeated.accuracy, repeated.accuracy_std  # doctest: +SKIP
    (0.9343, 0.0061)
    """

    name: str
    results: list[ModelResult]
    scheme: str

    def __repr__(self) -> str:
        return (f"RepeatedResult(name={self.name!r}, splits={len(self.results)}, "
                f"accuracy={self.accuracy:.4f} ± {self.accuracy_std:.4f})")

    @property
    def label_names(self) -> list[str]:
        return self.results[0].label_names

    def _metric(self, row: str, metric: str | None = None) -> np.ndarray:
        """A report's value (``row``: a class, ``accuracy`` or an average) on every split."""
        if metric is None:
            return np.array([r.report_dict[row] for r in self.results])
        return np.array([r.report_dict[row][metric] for r in self.results])

    @property
    def accuracy(self) -> float:
        """Mean test accuracy over the splits."""
        return float(np.mean(self._metric("accuracy")))

    @property
    def accuracy_std(self) -> float:
        """Its standard deviation over the splits (``ddof=1``: a sample of splits)."""
        return float(np.std(self._metric("accuracy"), ddof=1)) if len(self.results) > 1 else 0.0

    def summary(self) -> dict[str, Any]:
        """Mean and standard deviation over the splits of each class's precision, recall and F1,
        of accuracy and of the averages (``ddof=1``)."""
        def mean_std(values: np.ndarray) -> dict[str, float]:
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            return {"mean": float(np.mean(values)), "std": std}

        rows = [*self.label_names, *SUMMARY_ROWS]
        table = {row: {metric: mean_std(self._metric(row, metric)) for metric in METRICS} for row in rows}
        table["accuracy"] = mean_std(self._metric("accuracy"))
        return table

    @property
    def report(self) -> str:
        """The text printed for the model: per class, mean ± std of precision, recall and F1."""
        summary, width = self.summary(), max(len(n) for n in [*self.label_names, *SUMMARY_ROWS])
        splits = f"{len(self.results)} {'outer folds' if self.scheme == 'outer-cv' else 'seeded splits'}"
        tests = sum(len(r.test_indices) for r in self.results)
        lines = [f"{self.name} over {splits} ({tests} test rows in all): accuracy "
                 f"{self.accuracy:.4f} ± {self.accuracy_std:.4f} (mean ± std)",
                 f"{'':{width}}  {'precision':>15}  {'recall':>15}  {'F1':>15}"]
        for row in [*self.label_names, "", *SUMMARY_ROWS]:
            if not row:
                lines.append("")
                continue
            cells = "  ".join(f"{summary[row][m]['mean']:.4f} ± {summary[row][m]['std']:.4f}"
                              for m in METRICS)
            lines.append(f"{row:{width}}  {cells}")
        return "\n".join(lines)

    @staticmethod
    def side_by_side(repeated: Mapping[str, RepeatedResult]) -> str:
        """The side-by-side table of repeated results (:func:`repeated_side_by_side`)."""
        return repeated_side_by_side(repeated)

    def to_json(self, path: str | os.PathLike | None = None) -> dict[str, Any]:
        """The document ``--json`` writes with repeats: the summary, and each split's document.

        Examples
        --------
        >>> repeated.to_json("f17.json")["summary"]["accuracy"]  # doctest: +SKIP
        {'mean': 0.9343, 'std': 0.0061}
        """
        data = {"model": self.name, "scheme": self.scheme, "splits": len(self.results),
                "summary": self.summary(), "runs": [r.to_json() for r in self.results]}
        if path is not None:
            write_text(Path(path), json.dumps(data, indent=2, default=str) + "\n")
        return data


def pooled_significance(repeated: Mapping[str, RepeatedResult]) -> Significance:
    """Intervals and paired tests over all the test sets at once: each model's predictions on
    every split's test rows, concatenated in split order (the same rows for every model).

    Seeded splits' test sets overlap: the bootstrap then draws whole images (each with all its
    appearances), while McNemar's test counts each appearance, which makes its p-value smaller
    than it should be; the outer folds of ``outer_cv`` test each image once, and both are exact.

    Examples
    --------
    >>> folds = train_and_evaluate("f17.hdf5", ["logreg", "rf"], outer_cv=5)  # doctest: +SKIP
    >>> print(pooled_significance(folds).table())  # doctest: +SKIP
    """
    first = next(iter(repeated.values()))
    y = np.concatenate([r.y_test for r in first.results])
    images = np.concatenate([r.test_indices for r in first.results])
    predictions = {name: np.concatenate([r.test_predictions for r in rep.results])
                   for name, rep in repeated.items()}
    settings = first.results[0].settings
    return paired_significance(y, predictions, len(first.label_names),
                               resamples=int(settings.get("bootstrap", RESAMPLES)),
                               seed=int(settings.get("seed", 42)), groups=images)


def repeated_side_by_side(repeated: Mapping[str, RepeatedResult]) -> str:
    """Mean ± std F1 per class of every model side by side, then the pooled paired tests
    (what :func:`classify.side_by_side_table` prints for repeated results).

    Examples
    --------
    >>> repeated = train_and_evaluate("f17.hdf5", ["logreg", "rf"], repeats=3)  # doctest: +SKIP
    >>> print(repeated_side_by_side(repeated))  # doctest: +SKIP
    """
    names = list(repeated)
    summaries = {name: rep.summary() for name, rep in repeated.items()}
    labels = next(iter(repeated.values())).label_names
    width = max(len(n) for n in [*labels, *SUMMARY_ROWS, "accuracy"])
    col = {name: max(17, len(name) + 4) for name in names}
    lines = [f"{'':{width}}" + "".join(f"  {'F1 ' + name:>{col[name]}}" for name in names)]

    def row(label: str, cells: Sequence[dict[str, float]]) -> str:
        best = max(cell["mean"] for cell in cells)
        marks = ["*" if cell["mean"] == best and len(names) > 1 else " " for cell in cells]
        return f"{label:{width}}" + "".join(
            f"  {cell['mean']:.4f} ± {cell['std']:.4f}{mark}".rjust(col[name] + 2)
            for name, cell, mark in zip(names, cells, marks, strict=True))

    lines += [row(label, [summaries[n][label]["f1-score"] for n in names]) for label in labels]
    lines.append("")
    lines.append(row("accuracy", [summaries[n]["accuracy"] for n in names]))
    lines += [row(label, [summaries[n][label]["f1-score"] for n in names]) for label in SUMMARY_ROWS]
    first = next(iter(repeated.values()))
    head = (f"side by side over the same {len(first.results)} splits (mean ± std over the splits, "
            "* best of the row):")
    pooled = pooled_significance(repeated).table()
    images = np.concatenate([r.test_indices for r in first.results])
    caveat = ""
    if len(np.unique(images)) < len(images):
        caveat = (f"\n(the {len(first.results)} test sets overlap: {len(np.unique(images))} images appear "
                  f"{len(images)} times; the bootstrap draws images, McNemar's test counts appearances "
                  "and so understates its p-values; --outer-cv tests each image once)")
    return f"{head}\n" + "\n".join(lines) + f"\n\nall test sets pooled: {pooled}{caveat}"
