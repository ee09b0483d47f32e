"""The text report of one model, as ``python -m classify`` prints it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def text_report(result: Any) -> str:
    """Best parameters, search time and scikit-learn's per-class report on the test rows of
    ``result`` (a :class:`~classify.evaluation.results.ModelResult`)."""
    from sklearn.metrics import classification_report

    search, evaluation, intervals = result.search, result.evaluation, result.intervals()
    # The metrics are the evaluation's; classification_report only lays them out as text.
    report = classification_report(
        evaluation.y_test, evaluation.predictions, labels=np.arange(len(evaluation.label_names)),
        target_names=evaluation.label_names, digits=4, zero_division=0,
    )
    lines = [
        f"model: {search.model}",
        f"best parameters: {json.dumps(search.best_params, default=str)} "
        f"(cross-validated accuracy {search.best_cv_score:.4f}"
        + (
            f", log-loss {search.best_cv_log_loss:.4f}; chosen by log-loss)"
            if search.selected_by == "log_loss" else ")"
        ),
        f"search time: {search.search_seconds:.1f} s for {len(search.cv_results)} candidates"
        + (f" (in the {search.dim}-dim span of the training rows)" if search.projected else "")
        + f"; final fit on all training rows {search.refit_seconds:.1f} s"
        + (f" ({search.train_rows // 2} images and their mirrors)" if search.augment else ""),
        f"test accuracy: {evaluation.accuracy:.4f} on {len(evaluation.y_test)} images"
        + (" (mean probabilities of each image and its mirror)" if search.tta else ""),
        f"95% bootstrap intervals: accuracy [{intervals.accuracy.low:.4f}, {intervals.accuracy.high:.4f}], "
        f"macro F1 {intervals.macro_f1}",
        "",
        report,
    ]
    return "\n".join(lines)
