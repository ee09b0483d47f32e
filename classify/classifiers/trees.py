"""Tree ensembles: a random forest (``rf``) and gradient-boosted trees (``xgb``).

Both use every core inside one fit, so their searches run one fit at a time.
"""

from __future__ import annotations

from sklearn.base import BaseEstimator

from .registry import Classifier, register_classifier


def make_random_forest(seed: int, jobs: int | None) -> BaseEstimator:
    """300 trees, grown in parallel inside the forest."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=jobs)


def make_xgboost(seed: int, jobs: int | None) -> BaseEstimator:
    """100 rounds of depth-2 trees on histograms, a tenth of the columns per tree."""
    from xgboost import XGBClassifier

    # CNN features are wide (25,088 for VGG16) and rows are few: sampling a tenth of the
    # columns per tree and 16 histogram bins per column keep one fit short at the accuracy of
    # denser settings (docs/performance.md).
    return XGBClassifier(
        tree_method="hist",
        n_estimators=100,
        max_depth=2,
        colsample_bytree=0.1,
        max_bin=16,
        random_state=seed,
        n_jobs=jobs,
        verbosity=0,
    )


register_classifier(Classifier(
    "rf", "random forest", make_random_forest, {"max_features": ["sqrt", 0.02]},
    "random forest of 300 trees", parallel_inside=True,
))
register_classifier(Classifier(
    "xgb", "gradient-boosted trees", make_xgboost, {"learning_rate": [0.1, 0.3]},
    "gradient-boosted trees (xgboost, hist), 100 rounds of depth 2, 0.1 of features per tree",
    parallel_inside=True, libraries=("xgboost",),
))
