"""Stage 2's searches against the published recipe's, on the same features and split.

Runs ``python -m classify --features FILE`` (default logistic-regression search) and the plain
recipe ``GridSearchCV(LogisticRegression(max_iter=1000), {"C": [1e-4, ..., 1]}, cv=3,
n_jobs=-1)`` on the same training rows, and prints each one's search time and test accuracy
and the speed-up. ``--models rf xgb`` also times the default random-forest and XGBoost searches.

    python scripts/bench_classify.py f17_hed.hdf5 --models rf xgb
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_recipe import plain_recipe  # noqa: E402

from classify.search import stratified_split  # noqa: E402
from features import FeatureFile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def classify(features: str, model: str) -> dict:
    """``python -m classify`` as a user runs it; its --json result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run(
            [sys.executable, "-m", "classify", "--features", features, "--model", model, "--json", str(out)],
            cwd=REPO, check=True, stdout=subprocess.DEVNULL,
        )
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("features", help="feature file written by python -m extract")
    parser.add_argument("--models", nargs="*", default=[], choices=["rf", "xgb"],
                        help="also time these default searches")
    args = parser.parse_args()

    with FeatureFile(args.features) as ff:
        X, y = ff.load_features(), ff.labels
    train, test = stratified_split(y)
    print(f"{args.features}: {len(y)} rows x {X.shape[1]} features; {len(train)} train / "
          f"{len(test)} test; {platform.machine()}, {os.cpu_count()} cores")
    ours = classify(args.features, "logreg")
    best, accuracy, seconds = plain_recipe(X, y, train, test)
    print(f"plain recipe           : {seconds:7.1f} s  test accuracy {accuracy:.4f}  best {best}")
    print(f"classify --model logreg: {ours['search_seconds']:7.1f} s  test accuracy "
          f"{ours['accuracy']:.4f}  best {ours['best_params']}  "
          f"({seconds / ours['search_seconds']:.1f}x faster)")
    for model in args.models:
        result = classify(args.features, model)
        print(f"classify --model {model:6}: {result['search_seconds']:7.1f} s  test accuracy "
              f"{result['accuracy']:.4f}  best {result['best_params']}")


if __name__ == "__main__":
    main()
