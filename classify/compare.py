"""Side-by-side reports: several models (or saved runs) on the same test rows.

The input of every table is scikit-learn's ``classification_report(..., output_dict=True)``
of each run, so the numbers are exactly the ones each run's own report shows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRICS = ("precision", "recall", "f1-score")
SUMMARY_ROWS = ("macro avg", "weighted avg")


class CompareError(ValueError):
    """Runs that cannot be compared; the message is one line for the user."""


def side_by_side(
    reports: Mapping[str, Mapping[str, Any]], label_names: Sequence[str], *, differences: bool = False
) -> str:
    """A table with one row per class and precision / recall / F1 of each run side by side.

    ``reports`` maps a run's name to its ``classification_report`` dict. In each row and
    metric the best value is marked with ``*`` (every tied one). Accuracy and the macro and
    weighted averages follow. With ``differences``, a column per later run gives its F1
    minus the first run's.
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
    """
    runs: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            data["report"], data["test_indices"], data["label_names"]  # noqa: B018 - required keys
        except OSError as exc:
            raise CompareError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, KeyError, TypeError):
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
    """Class names every run reports, in the first run's order."""
    first = next(iter(runs.values()))["label_names"]
    return [n for n in first if all(n in r["report"] for r in runs.values())]
