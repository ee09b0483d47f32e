"""What a search gives back: :class:`ModelResult`, one per model, and the table of several."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ClassifyError
from ..search.result import SearchResult
from .evaluation import Evaluation
from .label_issues import LabelIssue
from .significance import RESAMPLES, ModelIntervals, PairedComparison, Significance, paired_significance

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from sklearn.base import BaseEstimator


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; a failure is one line naming the file."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise ClassifyError(f"{path}: cannot write ({exc.strerror or exc})") from None


@dataclass(repr=False)
class ModelResult:
    """One model's search on a feature file and its report on the test rows.

    Attributes
    ----------
    name : str
        The model's registry name (``logreg``, ``rf``, ``xgb``).
    search : SearchResult
        What the grid search found: best parameters, cross-validation scores, timings.
    label_names : list of str
        The classes; labels are indices into it.
    test_indices : ndarray of int
        The test rows of the feature file, sorted.
    y_test : ndarray of int
        Their true labels.
    features_path : str
        The feature file; fused files' paths joined by ``" + "``.
    provenance : dict
        Its attributes (how the features were made); for fused files
        (:func:`classify.fusion.fused_provenance`) each file's attributes (``fused``), path
        (``features``), width (``dims``) and the factor its block was multiplied by
        (``scales``).
    settings : dict
        The run's settings, as the ``--json`` document records them.
    test_paths : list of str, optional
        The test rows' image paths, as the feature file records them (relative to its
        ``dataset_root``).
    train_indices : ndarray of int, optional
        The rows the model was searched and refit on.
    evaluation : Evaluation
        The metrics, confusion matrix, test rows and probabilities, computed once.
    report : str
        The text ``python -m classify`` prints for the model: best parameters, search time,
        test accuracy and scikit-learn's per-class report.
    report_dict : dict
        ``classification_report(..., output_dict=True)`` of the test rows.
    accuracy : float
        Accuracy on the test rows.

    Examples
    --------
    >>> from classify import train_and_evaluate
    >>> result = train_and_evaluate("f17.hdf5")["logreg"]  # doctest: +SKIP
    >>> print(result.report)  # doctest: +SKIP
    >>> result.accuracy, result.best_params  # doctest: +SKIP
    (0.9324, {'C': 1.0})
    """

    name: str
    search: SearchResult
    label_names: list[str]
    test_indices: np.ndarray
    y_test: np.ndarray
    features_path: str
    provenance: dict[str, Any]
    settings: dict[str, Any]
    test_paths: list[str] | None = None
    train_indices: np.ndarray | None = None
    evaluation: Evaluation = field(init=False)
    report: str = field(init=False)
    _label_issues: list[LabelIssue] | None = field(default=None, init=False)
    _intervals: ModelIntervals | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        from ..outputs.text import text_report

        self.evaluation = Evaluation.of(self.y_test, self.search.test_pred, self.test_indices,
                                        self.label_names, self.search.test_proba,
                                        getattr(self.search.estimator, "classes_", None))
        self.report = text_report(self)

    def __repr__(self) -> str:  # the dataclass one would print arrays and the provenance
        return (
            f"ModelResult(name={self.name!r}, accuracy={self.accuracy:.4f}, "
            f"best_params={self.best_params!r}, test_images={len(self.y_test)})"
        )

    @property
    def estimator(self) -> BaseEstimator:
        """The best parameters refit on all training rows; takes raw feature rows."""
        return self.search.estimator

    @property
    def best_params(self) -> dict[str, Any]:
        """The grid's best parameters."""
        return self.search.best_params

    @property
    def test_predictions(self) -> np.ndarray:
        """The estimator's labels for the test rows."""
        return self.search.test_pred

    @property
    def report_dict(self) -> dict[str, Any]:
        """``classification_report(..., output_dict=True)`` of the test rows."""
        return self.evaluation.per_class

    @property
    def accuracy(self) -> float:
        """Accuracy on the test rows."""
        return self.evaluation.accuracy

    @property
    def confusion_matrix(self) -> np.ndarray:
        """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class, in
        ``label_names`` order."""
        return self.evaluation.confusion

    def intervals(self) -> ModelIntervals:
        """Accuracy and macro F1 on the test rows with their bootstrap 95% intervals (the run's
        ``bootstrap`` resamples and seed).

        Examples
        --------
        >>> print(results["logreg"].intervals().accuracy)  # doctest: +SKIP
        0.9324 [0.9059, 0.9588]
        """
        if self._intervals is None:
            self._intervals = significance_of({self.name: self}).intervals[self.name]
        return self._intervals

    def compare(self, other: ModelResult) -> PairedComparison:
        """McNemar's exact test of this model against ``other`` on the same test rows, and the
        bootstrap 95% intervals of ``other``'s accuracy and macro F1 minus this one's.

        Raises :class:`~classify.evaluation.comparison.CompareError` for models scored on
        other test rows.

        Examples
        --------
        >>> pair = results["logreg"].compare(results["head"])  # doctest: +SKIP
        >>> pair.mcnemar.p_value, pair.accuracy_difference.spans_zero  # doctest: +SKIP
        (0.28, True)
        >>> print(pair.describe())  # doctest: +SKIP
        """
        first, second = self.name, other.name if other.name != self.name else f"{other.name}'"
        return significance_of({first: self, second: other}).pairs[0]

    def label_issues(self) -> list[LabelIssue]:
        """The training images whose given label looks wrong, most suspect first (computed once).

        Every training row is predicted by a copy of this model (its best parameters) fitted on
        the other folds of the search's stratified folds and seed, with the run's class
        weights. The rows those probabilities give another class, and those cleanlab's
        ``find_label_issues`` flags, ranked by cleanlab's label quality score, lowest first
        (:mod:`classify.evaluation.label_issues`). Costs one more fit per fold.

        Examples
        --------
        >>> for issue in results["logreg"].label_issues()[:3]:  # doctest: +SKIP
        ...     print(issue.path, issue.given, "->", issue.suggested, round(issue.score, 3))
        daisy/image_0801.jpg daisy -> sunflower 0.004
        """
        if self._label_issues is None:
            self._label_issues = self._find_label_issues()
        return self._label_issues

    @property
    def found_label_issues(self) -> list[LabelIssue] | None:
        """:meth:`label_issues` if they were asked for already (a run with ``html`` or
        ``label_issues`` asks), else None; never computes them."""
        return self._label_issues

    def _find_label_issues(self) -> list[LabelIssue]:
        from sklearn.utils.class_weight import compute_sample_weight

        from features import FeatureFile

        from ..fusion import check_same_scales, is_fused, read_fused
        from .label_issues import out_of_fold_probabilities, rank_label_issues

        if self.train_indices is None:
            raise ClassifyError(f"{self.name}: the result does not record its training rows; make it with "
                                "train_and_evaluate")
        if not hasattr(self.estimator, "predict_proba"):
            raise ClassifyError(f"{self.name} has no predict_proba, which label issues rank")
        train = np.asarray(self.train_indices)
        if is_fused(self.provenance):  # the rows joined and scaled again, as the run read them
            data = read_fused(self.provenance["features"], allow_partial=True, mirrors=False)
            check_same_scales(data.provenance["scales"], self.provenance["scales"], self.features_path)
            X, y, paths = data.X[train], data.y[train], data.paths
        else:
            with FeatureFile(self.features_path, allow_partial=True) as ff:
                X, y, paths = ff.load_features()[train], ff.labels[train], ff.paths
        weight = self.settings.get("class_weight")
        proba, classes = out_of_fold_probabilities(
            self.estimator, X, y, folds=int(self.settings.get("folds", 3)),
            seed=int(self.settings.get("seed", 42)), label_names=self.label_names,
            sample_weight=None if weight is None else compute_sample_weight(weight, y))
        names = None if paths is None else [paths[i] for i in train]
        return rank_label_issues(y, proba, classes, train, names, self.label_names)

    @staticmethod
    def side_by_side(results: Mapping[str, ModelResult]) -> str:
        """The side-by-side table of ``results`` (:func:`side_by_side_table`)."""
        return model_side_by_side(results)

    def plot_confusion(self, ax: Axes | None = None, title: str | None = None) -> Figure:
        """The confusion matrix normalised by true class, as a matplotlib Figure.

        In Jupyter, the figure returned as a cell's value is shown once, inline.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw into these axes instead of a new figure.
        title : str, optional
            Default: the model, the feature file, and the normalisation.

        Examples
        --------
        >>> fig = results["logreg"].plot_confusion()  # doctest: +SKIP
        >>> fig.savefig("confusion.png")  # doctest: +SKIP
        """
        from ..fusion import features_name
        from ..outputs.plots import confusion_figure

        if title is None:
            named = features_name(self.features_path, self.provenance)
            title = f"{self.name} on {named}, normalised by true class"
        return confusion_figure(self.y_test, self.test_predictions, self.label_names, title, ax=ax)

    def to_json(self, path: str | os.PathLike | None = None) -> dict[str, Any]:
        """The ``--json`` document: metrics, best parameters, timings, provenance, settings,
        and the test rows' indices, labels and predictions.

        Parameters
        ----------
        path : path, optional
            Also write it there, as ``python -m classify --json`` does.

        Examples
        --------
        >>> doc = results["logreg"].to_json("f17.logreg.json")  # doctest: +SKIP
        >>> doc["accuracy"], doc["best_params"]  # doctest: +SKIP
        (0.9324, {'C': 1.0})
        """
        from ..outputs.document import json_document

        data = json_document(self)
        if path is not None:
            write_text(Path(path), json.dumps(data, indent=2, default=str) + "\n")
        return data

    def model_card(self) -> dict[str, Any]:
        """The model card :meth:`save` writes beside the model (what ``predict`` reads).

        Examples
        --------
        >>> results["logreg"].model_card()["extraction"]["backbone"]  # doctest: +SKIP
        'mobilenetv2'
        """
        from ..outputs.card import model_card

        return model_card(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the estimator at ``path`` and its model card ``<stem>.card.json`` beside it, as
        ``python -m classify --save`` does; the path written is returned.

        scikit-learn and XGBoost models are written with joblib. The ``head`` is written as a
        Keras model file, never pickled: at ``path`` with the suffix ``.keras``.

        Examples
        --------
        >>> results["logreg"].save("logreg.joblib")  # doctest: +SKIP
        PosixPath('logreg.joblib')
        >>> results["head"].save("head.joblib")  # doctest: +SKIP
        PosixPath('head.keras')
        >>> from classify import predict
        >>> predict("logreg.joblib", "new_photos/")  # doctest: +SKIP
        """
        from ..outputs.card import card_path
        from ..outputs.model_files import save_estimator

        card = self.model_card()
        path = save_estimator(self.estimator, path, self.name)
        write_text(card_path(path), json.dumps(card, indent=2, default=str) + "\n")
        return path


def check_comparable(results: Mapping[str, ModelResult]) -> None:
    """Refuse (:class:`~classify.evaluation.comparison.CompareError`) results scored on
    different test rows or classes.

    Examples
    --------
    >>> check_comparable({"a": results_of_f17["logreg"], "b": results_of_f34["logreg"]})  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    classify.evaluation.comparison.CompareError: b and a were scored on different test rows: ...
    """
    from .comparison import CompareError

    if not results:
        raise CompareError("no results to put side by side")
    first_name, first = next(iter(results.items()))
    for name, result in results.items():
        if not np.array_equal(result.test_indices, first.test_indices):
            raise CompareError(f"{name} and {first_name} were scored on different test rows: compare "
                               "results of one feature file, --test-size and --seed")
        if list(result.label_names) != list(first.label_names):
            raise CompareError(f"{name} and {first_name} have different classes: compare results of "
                               "one feature file")


def significance_of(results: Mapping[str, ModelResult]) -> Significance:
    """The intervals of every model and the paired tests of every pair, on the bootstrap
    resamples and seed of the first model's run (:func:`paired_significance`).

    Examples
    --------
    >>> print(significance_of(results).table())  # doctest: +SKIP
    """
    check_comparable(results)
    first = next(iter(results.values()))
    return paired_significance(
        first.y_test, {name: r.test_predictions for name, r in results.items()}, len(first.label_names),
        resamples=int(first.settings.get("bootstrap", RESAMPLES)), seed=int(first.settings.get("seed", 42)))


def side_by_side_table(results: Mapping[str, ModelResult]) -> str:
    """Several models' reports side by side on their common test rows, as ``python -m classify``
    prints them after the reports (a heading, then per class the precision, recall and F1 of
    each model, ``*`` marking the best of the row).

    Raises :class:`~classify.evaluation.comparison.CompareError` for results scored on different test rows
    or classes (from other files or splits).

    Examples
    --------
    >>> from classify import side_by_side_table, train_and_evaluate
    >>> results = train_and_evaluate("f17.hdf5", models=["logreg", "rf"])  # doctest: +SKIP
    >>> print(side_by_side_table(results))  # doctest: +SKIP
    side by side on the same 340 test images (* best of the row):
                     P logreg         P rf     R logreg         R rf    F1 logreg        F1 rf
    bluebell          0.4000       0.3077*     ...
    """
    from .comparison import CompareError

    if not results:
        raise CompareError("no results to put side by side")
    # Each kind of result lays out its own table (RepeatedResult: mean ± std over the splits).
    return next(iter(results.values())).side_by_side(results)


def model_side_by_side(results: Mapping[str, ModelResult]) -> str:
    """:func:`side_by_side_table` of one-split results."""
    from .comparison import side_by_side

    check_comparable(results)
    first = next(iter(results.values()))
    table = side_by_side({name: r.report_dict for name, r in results.items()}, first.label_names)
    return (f"side by side on the same {len(first.test_indices)} test images (* best of the row):\n{table}"
            f"\n\n{significance_of(results).table()}")
