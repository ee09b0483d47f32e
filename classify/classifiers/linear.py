"""Multinomial logistic regression, the published recipe: the ``logreg`` entry.

Its search runs as warm-started regularisation paths in the span of the training rows
(:mod:`classify.search.regpath`); it exports as one softmax Dense layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .registry import Classifier, register_classifier


def make_logreg(seed: int, jobs: int | None) -> BaseEstimator:
    """An unfitted L2 ``LogisticRegression`` (lbfgs, 1,000 iterations at most)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=seed)


def linear_weights(estimator: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel, bias)``, float64, of the softmax layer that gives ``estimator``'s
    ``predict_proba``: a fitted ``LogisticRegression``, or a ``Pipeline`` of a PCA (the
    row-space projection) and one.

    The PCA is affine, ``z = (x - mean) @ W`` (``W`` the components, transposed, over the
    square root of the explained variance if whitened), so the logits ``z @ coef.T + b`` are
    ``x @ (W @ coef.T) + (b - mean @ W @ coef.T)``: one Dense layer on the raw features. A
    binary model's sigmoid of ``x @ w + b`` is the softmax of ``[0, x @ w + b]``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> model = LogisticRegression().fit([[0.0], [1.0], [2.0]], [0, 1, 1])
    >>> kernel, bias = linear_weights(model)
    >>> kernel.shape, bias.shape
    ((1, 2), (2,))
    """
    from sklearn.pipeline import Pipeline

    projection = None
    if isinstance(estimator, Pipeline):
        *steps, (_, estimator) = estimator.steps
        if len(steps) != 1:
            raise ValueError("only a pipeline of one projection and the model can be folded")
        projection = steps[0][1]
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercept = np.asarray(estimator.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:  # binary
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    kernel = coef.T
    bias = intercept
    if projection is not None:
        W = np.asarray(projection.components_, dtype=np.float64).T
        if getattr(projection, "whiten", False):  # scaled as PCA.transform scales, tiny ones clipped
            scale = np.sqrt(np.asarray(projection.explained_variance_, dtype=np.float64))
            W = W / np.maximum(scale, np.finfo(scale.dtype).eps)
        kernel = W @ kernel
        bias = bias - np.asarray(projection.mean_, dtype=np.float64) @ kernel
    return kernel, bias


class LinearSoftmax(Classifier):
    """A linear model whose probabilities are one softmax layer on the features."""

    def exported_probabilities(self, estimator: Any, features: Any) -> Any:
        import keras

        if len(features.shape) > 2:  # pooling "flatten": rows as stored
            features = keras.layers.Flatten(name="flatten_features", dtype="float32")(features)
        kernel, bias = linear_weights(estimator)
        dense = keras.layers.Dense(kernel.shape[1], activation="softmax", name=f"{self.name}_softmax",
                                   dtype="float32")
        probabilities = dense(features)
        dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return probabilities


register_classifier(LinearSoftmax(
    "logreg",
    "logistic regression",
    make_logreg,
    {"C": [1e-4, 1e-3, 1e-2, 0.1, 1.0]},
    "multinomial logistic regression (L2), the published recipe, searched along "
    "warm-started paths of C in the span of the training rows",
    # Chosen by held-out log-loss, the loss the model fits: a continuous score, where accuracy
    # on a few hundred validation rows moves in steps and often ties across C, leaving the
    # choice to chance.
    select="log_loss",
    linear_l2=True,
    regularisation_path=True,
    exports=True,
))
