"""The published recipe's classifier search on a feature file, on featurebank's split.

Prints the test accuracy and search time of
``GridSearchCV(LogisticRegression(max_iter=1000), {"C": [1e-4, 1e-3, 1e-2, 0.1, 1]}, cv=3)``
trained on the same training rows that ``python -m classify`` uses (same --test-size and
--seed), so the two can be compared on the same test rows.

    python scripts/plain_recipe.py flowers17.hdf5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from classify.search.split import stratified_split
from features import FeatureFile

GRID = {"C": [1e-4, 1e-3, 1e-2, 0.1, 1]}


def plain_recipe(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                 jobs: int = -1) -> tuple[dict, float, float]:
    """Best parameters, test accuracy and search seconds of the recipe's search."""
    started = time.perf_counter()
    search = GridSearchCV(LogisticRegression(max_iter=1000), GRID, cv=3, n_jobs=jobs)
    search.fit(X[train], y[train])
    seconds = time.perf_counter() - started
    return search.best_params_, float(search.score(X[test], y[test])), seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("features", help="feature file written by python -m extract")
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jobs", type=int, default=-1)
    args = parser.parse_args()

    with FeatureFile(args.features) as ff:
        X, y = ff.load_features(), ff.labels
    train, test = stratified_split(y, args.test_size, args.seed)
    best, accuracy, seconds = plain_recipe(X, y, train, test, args.jobs)
    print(f"plain recipe on {args.features}: best {best}, "
          f"test accuracy {accuracy:.4f} on {len(test)} images, search {seconds:.1f} s")


if __name__ == "__main__":
    main()
