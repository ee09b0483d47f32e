"""Side-by-side reports: several models (or saved runs) on the same test rows.

:func:`compare` puts saved ``--json`` results side by side (``python -m classify compare``);
:func:`side_by_side` is the table itself. The input of every table is scikit-learn's
``classification_report(..., output_dict=True)`` of each run, so the numbers are exactly the
ones each run's own report shows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ClassifyError, SettingsError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .significance import Significance

METRICS = ("precision", "recall", "f1-score")
SUMMARY_ROWS = ("macro avg", "weighted avg")


class CompareError(ClassifyError, ValueError):
    """Runs that cannot be compared; the message is one line for the user."""


def side_by_side(
    reports: Mapping[str, Mapping[str, Any]], label_names: Sequence[str], *, differences: bool = False
) -> str:
    """A table with one row per class and precision / recall / F1 of each run side by side.

    ``reports`` maps a run's name to its ``classification_report`` dict. In each row and
    metric the best value is marked with ``*`` (every tied one). Accuracy and the macro and
    weighted averages follow. With ``differences``, a column per later run gives its F1
    minus the first run's.

    Examples
    --------
    >>> from classify.evaluation.comparison import side_by_side
    >>> row = {"precision": 1.0, "recall": 0.5, "f1-score": 0.6667}
    >>> report = {"cat": row, "accuracy": 0.5, "macro avg": row, "weighted avg": row}
    >>> print(side_by_side({"a": report, "b": report}, ["cat"]).splitlines()[1])
    cat               1.0000*      1.0000*      0.5000*      0.5000*      0.6667*      0.6667*
    """
    names = list(reports)
    first = names[0]
    width = max([len(n) for n in label_names] + [len(r) for r in SUMMARY_ROWS] + [8])
    col = {name: max(12, len(name) + 4) for name in names}  # one metric of one run
    diff_col = {name: max(12, len(name) + len(first) + 6) for name in names[1:]}

    def cells(values: list[float]) -> str:
        """One value per run, the best of them marked."""
        best = max(values)
        return "".join(
            f" {value:>{col[name] - 1}.4f}{'*' if len(names) > 1 and value == best else ' '}"
            for name, value in zip(names, values, strict=True)
        )

    head = f"{'':{width}}"
    for metric in ("P", "R", "F1"):
        head += "".join(f" {metric + ' ' + name:>{col[name]}}" for name in names)
    if differences:
        head += "".join(f" {'dF1 ' + name + '-' + first:>{diff_col[name]}}" for name in names[1:])

    def row(label: str) -> str:
        line = f"{label:{width}}"
        for metric in METRICS:
            line += cells([reports[n][label][metric] for n in names])
        if differences:
            for name in names[1:]:
                diff = reports[name][label]["f1-score"] - reports[first][label]["f1-score"]
                line += f" {diff:>+{diff_col[name]}.4f}"
        return line

    lines = [head, *(row(label) for label in label_names), ""]
    lines.append(f"{'accuracy':{width}}" + cells([reports[n]["accuracy"] for n in names]))
    lines.extend(row(label) for label in SUMMARY_ROWS)
    return "\n".join(lines)


def load_runs(paths: Sequence[str | os.PathLike], force: bool = False) -> dict[str, dict[str, Any]]:
    """Saved ``--json`` results by a unique display name, checked to be comparable.

    Runs scored on different test rows, or with other class names, are refused unless
    ``force`` (then only the classes all runs have are compared).

    Examples
    --------
    >>> from classify.evaluation.comparison import load_runs
    >>> runs = load_runs(["f17.logreg.json", "f17.rf.json"])  # doctest: +SKIP
    >>> list(runs)  # doctest: +SKIP
    ['f17.logreg', 'f17.rf']
    """
    runs: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            data["report"], data["test_indices"], data["label_names"]  # noqa: B018 - required keys
        except OSError as exc:
            raise CompareError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, KeyError, TypeError):
            if isinstance(data, dict) and "runs" in data and "scheme" in data:
                raise CompareError(f"{path}: the runs of --repeats or --outer-cv, which their own run puts "
                                   "side by side; compare one-split results (without --repeats)") from None
            raise CompareError(f"{path}: not a result written by python -m classify --json") from None
        name = Path(path).stem
        while name in runs:
            name += "'"
        runs[name] = data
    first_name, first = next(iter(runs.items()))
    for name, data in runs.items():
        if data["test_indices"] != first["test_indices"] and not force:
            raise CompareError(
                f"{name} and {first_name} were scored on different test rows (other features, "
                "--test-size or --seed); pass --force to compare them anyway"
            )
        if data["label_names"] != first["label_names"] and not force:
            raise CompareError(f"{name} and {first_name} have different classes; pass --force")
    return runs


def common_labels(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Class names every run reports, in the first run's order.

    Examples
    --------
    >>> from classify.evaluation.comparison import common_labels
    >>> common_labels({"a": {"label_names": ["cat", "dog"], "report": {"cat": {}, "dog": {}}},
    ...                "b": {"label_names": ["cat"], "report": {"cat": {}}}})
    ['cat']
    """
    first = next(iter(runs.values()))["label_names"]
    return [n for n in first if all(n in r["report"] for r in runs.values())]


def significance_of_runs(runs: Mapping[str, Mapping[str, Any]]) -> Significance:
    """The intervals and paired tests of saved runs on the same test rows (the first run's
    ``bootstrap`` resamples and seed); a run saved without its test labels is refused.

    Examples
    --------
    >>> run = {"test_labels": [0, 1, 1, 0], "test_predictions": [0, 1, 0, 0], "label_names": ["a", "b"]}
    >>> significance_of_runs({"a": run, "b": dict(run, test_predictions=[0, 1, 1, 0])}).pairs[0].mcnemar
    McNemar(only_first=0, only_second=1, p_value=1.0)
    """
    from .significance import RESAMPLES, paired_significance

    first_name, first = next(iter(runs.items()))
    for name, run in runs.items():
        if "test_labels" not in run or "test_predictions" not in run:
            raise CompareError(f"{name}: saved without its test labels and predictions; run it again "
                               "with --json to compare it")
        if run["test_labels"] != first["test_labels"]:
            raise CompareError(f"{name} and {first_name} were scored on different test rows: compare runs "
                               "of one feature file, --test-size and --seed")
    settings = first.get("settings") or {}
    predictions = {name: np.asarray(run["test_predictions"]) for name, run in runs.items()}
    return paired_significance(np.asarray(first["test_labels"]), predictions, len(first["label_names"]),
                               resamples=int(settings.get("bootstrap", RESAMPLES)),
                               seed=int(settings.get("seed", 42)))


@dataclass
class Comparison:
    """Saved runs side by side: what :func:`compare` returns.

    Attributes
    ----------
    runs : dict of str to dict
        Each run's display name (its file's stem, primed when two are the same) and its
        ``--json`` document.
    label_names : list of str
        The classes compared: those every run reports, in the first run's order.
    table : str
        The side-by-side table ``python -m classify compare`` prints, then the intervals and
        paired tests; also ``str(comparison)``.
    significance : Significance or None
        Every run's 95% intervals and every pair's McNemar test and difference intervals; None
        for runs on different test rows (compared with ``force``).
    """

    runs: dict[str, dict[str, Any]]
    label_names: list[str]
    table: str
    significance: Significance | None = None

    def to_json(self, path: str | os.PathLike | None = None) -> dict[str, Any]:
        """The comparison as JSON (``python -m classify compare --json``): the runs' files,
        classes and the intervals and paired tests; also written to ``path`` when given.

        Examples
        --------
        >>> compare(["a.json", "b.json"]).to_json()["pairs"][0]["mcnemar"]  # doctest: +SKIP
        {'only_first': 12, 'only_second': 19, 'p_value': 0.281}
        """
        data = {"runs": {name: run.get("features") for name, run in self.runs.items()},
                "label_names": self.label_names,
                **(self.significance.to_json() if self.significance is not None else {})}
        if path is not None:
            try:
                Path(path).write_text(json.dumps(data, indent=2) + "\n")
            except OSError as exc:
                raise ClassifyError(f"{path}: cannot write ({exc.strerror or exc})") from None
        return data

    def __str__(self) -> str:
        return self.table

    def reports(self) -> dict[str, dict[str, Any]]:
        """Each run's ``classification_report`` dict, by run name.

        Examples
        --------
        >>> compare(["a.json", "b.json"]).reports()["a"]["macro avg"]["f1-score"]  # doctest: +SKIP
        0.8660
        """
        return {name: run["report"] for name, run in self.runs.items()}

    def plot_precision(self, ax: Any = None) -> Figure:
        """Per-class precision of every run as grouped bars (a matplotlib Figure).

        Examples
        --------
        >>> fig = compare(["a.json", "b.json"]).plot_precision()  # doctest: +SKIP
        """
        from ..outputs.plots import precision_figure

        return precision_figure(self.reports(), self.label_names, ax=ax)

    def write_plots(self, folder: str | os.PathLike) -> list[Path]:
        """Write ``precision.png`` and ``confusion_<run>.png`` per run (runs saved with their
        test predictions) into ``folder``, created if need be; the paths written.

        Examples
        --------
        >>> compare(["a.json", "b.json"]).write_plots("figures")  # doctest: +SKIP
        [PosixPath('figures/precision.png'), PosixPath('figures/confusion_a.png'), ...]
        """
        from ..outputs.plots import confusion_png, plot_folder, precision_png

        folder = plot_folder(folder)
        written = [precision_png(self.reports(), self.label_names, folder / "precision.png")]
        for name, run in self.runs.items():
            if "test_labels" in run:
                written.append(confusion_png(run["test_labels"], run["test_predictions"],
                                             run["label_names"], folder / f"confusion_{name}.png",
                                             title=name))
        return written


def compare(
    paths: Sequence[str | os.PathLike], *, force: bool = False, plots: str | os.PathLike | None = None
) -> Comparison:
    """Saved ``--json`` results side by side, as ``python -m classify compare`` prints them.

    Per class, the precision, recall and F1 of each run (``*`` marks the best of the row), then
    accuracy and the averages, and each later run's F1 minus the first's; then each run's 95%
    bootstrap intervals of accuracy and macro F1 and, for every pair, McNemar's exact test and
    the intervals of the differences, said to be within noise where they span 0.

    Parameters
    ----------
    paths : sequence of path
        At least two files written by ``python -m classify --json`` (or
        :meth:`ModelResult.to_json <classify.ModelResult.to_json>`).
    force : bool
        Compare runs scored on different test rows or with other classes (then only the
        classes every run has).
    plots : path, optional
        A folder (created if need be) for ``precision.png`` and ``confusion_<run>.png``.

    Returns
    -------
    Comparison
        ``.table`` is the text; ``print(comparison)`` prints it.

    Raises
    ------
    SettingsError
        Fewer than two paths.
    CompareError
        A file that cannot be read or is not a result, or runs that are not comparable.

    Examples
    --------
    >>> from classify import compare
    >>> print(compare(["f17.logreg.json", "f17.rf.json"]))  # doctest: +SKIP
                   P f17.logreg   P f17.rf   R f17.logreg ...
    """
    if isinstance(paths, (str, os.PathLike)) or len(paths) < 2:
        raise SettingsError("give at least two results to compare")
    runs = load_runs(paths, force=force)
    labels = common_labels(runs)
    table = side_by_side({n: r["report"] for n, r in runs.items()}, labels, differences=True)
    first = next(iter(runs.values()))
    # Paired only on the same rows and classes (--force may compare others: then none).
    paired = all(r["test_indices"] == first["test_indices"] and r["label_names"] == first["label_names"]
                 for r in runs.values())
    significance = significance_of_runs(runs) if paired else None
    if significance is not None:
        table += "\n\n" + significance.table()
    comparison = Comparison(runs=runs, label_names=labels, table=table, significance=significance)
    if plots is not None:
        comparison.write_plots(plots)
    return comparison
