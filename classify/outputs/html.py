"""One self-contained HTML report of a run or of saved runs: ``html=`` / ``--html`` and
``python -m classify report RUN.json ... --html FILE`` (:func:`to_html`).

The page is built from what runs store in their ``--json`` documents (test rows, labels,
predictions, probabilities, image paths, provenance), rendered by a Jinja2 template with a
matplotlib figure; thumbnails are embedded as data URIs, so the file opens from disk with no
network access. An image that moved or vanished shows as a placeholder.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClassifyError
from ..fusion import features_name
from .registry import Output, register_output

#: Thumbnails' longest side, in pixels.
THUMBNAIL = 128
#: How many of the most probable classes a mistake lists.
TOP = 3
#: The most suspected label errors a model's gallery shows (the CSV lists them all).
GALLERY = 100


def thumbnail(path: Path) -> str | None:
    """A JPEG data URI of the image at ``path``, at most :data:`THUMBNAIL` pixels a side; None
    for an image that is not there or cannot be decoded.

    Examples
    --------
    >>> thumbnail(Path("no/such/image.jpg")) is None
    True
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_uri(figure: Any) -> str:
    """A matplotlib figure as a PNG data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def top_classes(probabilities: Sequence[float] | None, columns: Sequence[int],
                label_names: Sequence[str]) -> list[tuple[str, float]]:
    """The :data:`TOP` most probable classes of one row, with their probabilities.

    Examples
    --------
    >>> top_classes([0.1, 0.7, 0.2], [0, 1, 2], ["a", "b", "c"])
    [('b', 0.7), ('c', 0.2), ('a', 0.1)]
    """
    if probabilities is None:
        return []
    p = np.asarray(probabilities, dtype=float)
    return [(label_names[int(columns[k])], float(p[k])) for k in np.argsort(-p, kind="stable")[:TOP]]


def _items(run: Mapping[str, Any], keys: Mapping[str, int]) -> list[dict[str, Any]]:
    """One entry per test row of ``run``: its image, true and predicted class, top classes."""
    names, paths = run["label_names"], run.get("test_paths") or [None] * len(run["test_indices"])
    probabilities = run.get("test_probabilities") or [None] * len(paths)
    columns = run.get("probability_classes") or list(range(len(names)))
    items = []
    for row, path, true, pred, proba in zip(run["test_indices"], paths, run["test_labels"],
                                             run["test_predictions"], probabilities, strict=True):
        top = top_classes(proba, columns, names)
        items.append({"row": row, "path": path or f"row {row}", "thumb": keys.get(path, -1), "true": true,
                      "pred": pred, "true_name": names[true], "pred_name": names[pred], "top": top,
                      "confidence": top[0][1] if top else 0.0})
    return items


def _confusion(run: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """The confusion matrix as rows of cells (count, share of the row, true and predicted)."""
    k = len(run["label_names"])
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (np.asarray(run["test_labels"]), np.asarray(run["test_predictions"])), 1)
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return [[{"count": int(counts[t, p]), "share": float(counts[t, p] / totals[t, 0]), "true": t, "pred": p}
             for p in range(k)] for t in range(k)]


def _per_class(runs: Mapping[str, Mapping[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per class (and the averages), each metric of each run with the best of the row marked."""
    rows = []
    for label in [*labels, "macro avg", "weighted avg"]:
        cells = []
        for metric in ("precision", "recall", "f1-score"):
            values = [run["report"][label][metric] for run in runs.values()]
            cells.append([{"value": v, "best": len(values) > 1 and v == max(values)} for v in values])
        rows.append({"label": label, "metrics": cells})
    return rows


def _thumbnails(runs: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, int], list[str | None]]:
    """Each image path the report shows, numbered, and its thumbnail (None: a placeholder)."""
    from tqdm.auto import tqdm

    keys: dict[str, int] = {}
    for run in runs.values():
        issues = (run.get("label_issues") or [])[:GALLERY]
        for path in [*(run.get("test_paths") or []), *(i["path"] for i in issues)]:
            keys.setdefault(path, len(keys))
    first = next(iter(runs.values()))
    root = Path(str(first.get("provenance", {}).get("dataset_root", ".")))
    uris = [thumbnail(root / path) for path in tqdm(keys, desc="thumbnails", unit="img", leave=False,
                                                     disable=len(keys) < 100)]
    return keys, uris


def report_context(runs: Mapping[str, Mapping[str, Any]], significance: Any) -> dict[str, Any]:
    """What the template renders, from the runs' ``--json`` documents (all on the same test
    rows and classes) and their :class:`~classify.evaluation.significance.Significance`."""
    from .plots import precision_figure

    keys, uris = _thumbnails(runs)
    first = next(iter(runs.values()))
    labels = first["label_names"]
    models = []
    for k, (name, run) in enumerate(runs.items()):
        items = _items(run, keys)
        mistakes = sorted((i for i in items if i["true"] != i["pred"]), key=lambda i: -i["confidence"])
        issues = [dict(issue, thumb=keys.get(issue["path"], -1))
                  for issue in (run.get("label_issues") or [])[:GALLERY]]
        models.append({"id": f"m{k}", "name": name, "rows": items, "mistakes": mistakes,
                       "confusion": _confusion(run), "issues": issues,
                       "issues_found": run.get("label_issues") is not None,
                       "issues_total": len(run.get("label_issues") or []),
                       "intervals": significance.intervals[name], "best_params": run.get("best_params"),
                       "settings": json.dumps(run.get("settings"), indent=2, default=str)})
    figure = precision_figure({name: run["report"] for name, run in runs.items()}, labels)
    return {
        "title": f"featurebank: {', '.join(runs)} on "
                 f"{features_name(str(first.get('features', '')), first.get('provenance'))}",
        "features": first.get("features"), "labels": labels, "models": models,
        "pairs": significance.pairs, "significance": significance, "per_class": _per_class(runs, labels),
        "names": list(runs), "precision_png": figure_uri(figure),
        "provenance": json.dumps(first.get("provenance"), indent=2, default=str),
        # In a <script> element: "<" escaped so that no path can end it.
        "thumbs_json": json.dumps({str(k): uri for k, uri in enumerate(uris) if uri}).replace("<", "\\u003c"),
    }


def render_html(context: Mapping[str, Any]) -> str:
    """The page: ``templates/report.html.j2`` (beside this module) rendered with ``context``
    (:func:`report_context`).

    Examples
    --------
    >>> page = render_html(report_context(runs, significance_of_runs(runs)))  # doctest: +SKIP
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("classify.outputs", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


def write_report(runs: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write the HTML report of ``runs`` (``--json`` documents by name, comparable) to
    ``path``; a failure to write is one line.

    Examples
    --------
    >>> write_report(load_runs(["a.json", "b.json"]), "report.html")  # doctest: +SKIP
    PosixPath('report.html')
    """
    from ..evaluation.comparison import significance_of_runs

    page = render_html(report_context(runs, significance_of_runs(runs)))
    path = Path(path)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ClassifyError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def to_html(results: Mapping[str, Any] | Sequence[str | os.PathLike], path: str | os.PathLike) -> Path:
    """One self-contained HTML report of ``results`` at ``path``: the summary with 95%
    intervals and paired tests, per-class precision / recall / F1 side by side (best of each
    row marked), each model's confusion matrix (click a cell to list its images), its
    misclassified test images (most confident mistakes first, with the top 3 classes), the
    suspected label errors the run found, the settings and the provenance.

    Parameters
    ----------
    results : dict of str to ModelResult, or sequence of path
        A run's results (:func:`classify.train_and_evaluate`), or ``--json`` files of runs on
        the same test rows.
    path : path
        The HTML file to write.

    Examples
    --------
    >>> from classify import to_html, train_and_evaluate
    >>> results = train_and_evaluate("f17.hdf5", ["logreg", "head"])  # doctest: +SKIP
    >>> to_html(results, "f17.html")  # doctest: +SKIP
    PosixPath('f17.html')
    >>> to_html(["f17.logreg.json", "f17.head.json"], "f17.html")  # doctest: +SKIP
    """
    if isinstance(results, Mapping):
        from ..evaluation.results import check_comparable

        check_comparable(results)
        runs = {name: result.to_json() for name, result in results.items()}
    else:
        from ..evaluation.comparison import load_runs

        runs = load_runs(results)
    return write_report(runs, path)


class HtmlReport(Output):
    """``html=`` / ``--html``: :func:`to_html` of every model of the run, in one file."""

    name = "html"
    needs_label_issues = True

    def write(self, result: Any, destination: Path, several: bool) -> None:
        return None  # the page spans every model: written by write_all

    def write_all(self, results: Mapping[str, Any], destination: Path) -> None:
        to_html(results, destination)


register_output(HtmlReport())
