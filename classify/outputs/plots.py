"""Figures of a run or a comparison: confusion matrices and per-class precision.

``confusion_figure`` and ``precision_figure`` return matplotlib Figures (shown inline as a
notebook cell's value); ``confusion_png`` and ``precision_png`` write them as PNG files. The
library never picks a matplotlib backend: the command line sets ``MPLBACKEND=Agg``, and a
notebook keeps its inline one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import Output, register_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _new_axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """A figure of its own, already closed in pyplot: it is shown once, as the value a notebook
    cell returns (an open one would be drawn again when the cell ends), and saving it still works."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=100)
    plt.close(fig)
    return fig, ax


def confusion_figure(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    label_names: Sequence[str],
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Row-normalised confusion matrix (each row: where a true class's images went).

    The figure grows with the number of classes and drops the per-cell numbers past 20
    classes, so 101 class names stay readable.

    Parameters
    ----------
    y_true, y_pred : sequence of int
        True and predicted labels, indices into ``label_names``.
    label_names : sequence of str
        The class names, one tick label each on both axes.
    title : str
        The title; by default says the matrix is normalised by true class.
    ax : matplotlib Axes, optional
        Draw into these axes (of a figure of yours) instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (``ax.figure`` when ``ax`` is given).

    Examples
    --------
    >>> from classify.outputs.plots import confusion_figure
    >>> fig = confusion_figure([0, 1, 1], [0, 1, 0], ["cat", "dog"])
    >>> len(fig.axes[0].get_xticklabels())
    2
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(label_names)
    values = n <= 20  # past that, cells are too small for numbers; the colours still read
    if ax is None:
        side = max(6.0, (0.55 if values else 0.22) * n + 2.5)
        fig, ax = _new_axes((side, side))
        own = True
    else:
        fig, own = ax.figure, False
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(n), display_labels=list(label_names), normalize="true",
        include_values=values, values_format=".2f", xticks_rotation="vertical", cmap="Blues",
        colorbar=False, ax=ax, text_kw={"fontsize": 8},
    )
    fontsize = 10 if n <= 30 else max(6, 10 - n // 25)
    ax.tick_params(labelsize=fontsize)
    ax.set_title(title or "confusion matrix, normalised by true class")
    if own:  # a figure of the caller's is laid out by the caller
        fig.tight_layout()
    return fig


def precision_figure(
    reports: Mapping[str, Mapping[str, Any]], label_names: Sequence[str], ax: Axes | None = None
) -> Figure:
    """Per-class precision of each run, as grouped horizontal bars.

    Parameters
    ----------
    reports : mapping of str to dict
        Each run's name and its ``classification_report(..., output_dict=True)``.
    label_names : sequence of str
        The classes to draw, top to bottom.
    ax : matplotlib Axes, optional
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from classify.outputs.plots import precision_figure
    >>> reports = {"a": {"cat": {"precision": 0.5}, "dog": {"precision": 1.0}},
    ...            "b": {"cat": {"precision": 0.7}, "dog": {"precision": 0.9}}}
    >>> fig = precision_figure(reports, ["cat", "dog"])
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['cat', 'dog']
    """
    names = list(reports)
    n = len(label_names)
    if ax is None:
        fig, ax = _new_axes((8, max(4.0, 0.3 * n * max(1, len(names)) / 2 + 1.5)))
        own = True
    else:
        fig, own = ax.figure, False
    height = 0.8 / len(names)
    positions = np.arange(n)
    for k, name in enumerate(names):
        values = [reports[name][label]["precision"] for label in label_names]
        ax.barh(positions + k * height, values, height=height, label=name)
    ax.set_yticks(positions + height * (len(names) - 1) / 2, list(label_names))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("precision on the test images")
    ax.legend(loc="lower right")
    if own:
        fig.tight_layout()
    return fig


def confusion_png(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    label_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """:func:`confusion_figure` written as a PNG file at ``path``.

    Examples
    --------
    >>> from classify.outputs.plots import confusion_png
    >>> confusion_png([0, 1, 1], [0, 1, 0], ["cat", "dog"], "cm.png")  # doctest: +SKIP
    PosixPath('cm.png')
    """
    path = Path(path)
    confusion_figure(y_true, y_pred, label_names, title).savefig(path)
    return path


def precision_png(
    reports: Mapping[str, Mapping[str, Any]], label_names: Sequence[str], path: str | os.PathLike
) -> Path:
    """:func:`precision_figure` written as a PNG file at ``path``.

    Examples
    --------
    >>> from classify.outputs.plots import precision_png
    >>> precision_png(reports, ["cat", "dog"], "precision.png")  # doctest: +SKIP
    PosixPath('precision.png')
    """
    path = Path(path)
    precision_figure(reports, label_names).savefig(path)
    return path


def plot_folder(folder: str | os.PathLike) -> Path:
    """The folder for ``--plots``, created with its parents when it is not there yet.

    Raises :class:`~classify.errors.ClassifyError` when it cannot be (a file of that name, no
    permission).
    """
    from ..errors import ClassifyError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClassifyError(
            f"{folder}: cannot create the folder for --plots ({exc.strerror or exc})"
        ) from None
    return folder


class Plots(Output):
    """``plots=`` / ``--plots``: ``confusion_<model>.png`` per model and, with several models,
    ``precision.png`` (per-class precision side by side), in a folder."""

    name = "plots"

    def open(self, destination: str | os.PathLike) -> Path:
        return plot_folder(destination)

    def write(self, result: Any, destination: Path, several: bool) -> Path:
        from ..fusion import features_name

        named = features_name(result.features_path, result.provenance)
        title = f"{result.name} on {named}, normalised by true class"
        return confusion_png(result.y_test, result.test_predictions, result.label_names,
                             destination / f"confusion_{result.name}.png", title=title)

    def write_all(self, results: Mapping[str, Any], destination: Path) -> None:
        if len(results) > 1:
            first = next(iter(results.values()))
            precision_png({n: r.report_dict for n, r in results.items()}, first.label_names,
                          destination / "precision.png")


register_output(Plots())
