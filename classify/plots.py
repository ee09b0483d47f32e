"""Figures of a comparison: confusion matrices and per-class precision, as PNG files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def confusion_png(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    label_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Row-normalised confusion matrix (each row: where a true class's images went).

    The figure grows with the number of classes and drops the per-cell numbers past 20
    classes, so 101 class names stay readable.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    n = len(label_names)
    values = n <= 20  # past that, cells are too small for numbers; the colours still read
    side = max(6.0, (0.55 if values else 0.22) * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(n), display_labels=list(label_names), normalize="true",
        include_values=values, values_format=".2f", xticks_rotation="vertical", cmap="Blues",
        colorbar=False, ax=ax, text_kw={"fontsize": 8},
    )
    fontsize = 10 if n <= 30 else max(6, 10 - n // 25)
    ax.tick_params(labelsize=fontsize)
    ax.set_title(title or "confusion matrix, normalised by true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def precision_png(
    reports: Mapping[str, Mapping[str, Any]], label_names: Sequence[str], path: str | os.PathLike
) -> Path:
    """Per-class precision of each run, as grouped horizontal bars."""
    plt = _pyplot()
    names = list(reports)
    n = len(label_names)
    fig, ax = plt.subplots(figsize=(8, max(4.0, 0.3 * n * max(1, len(names)) / 2 + 1.5)), dpi=100)
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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
