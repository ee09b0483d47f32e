"""Stage 2's logistic-regression search before and after the warm-started path, on one matrix.

Runs ``run_search`` for ``--model logreg`` twice on the same rows and split, each in its own
process so that each peak memory (``ru_maxrss``) is its own: ``before``, today's
``GridSearchCV`` on the PCA coordinates of the training rows (``c_path=False``), and
``after``, the warm-started regularisation paths on their Gram matrix (``c_path=True``,
:mod:`classify.search.regpath`). Prints each one's search seconds, peak memory (the matrix included;
``ru_maxrss`` of the process, so the memory of ``before``'s joblib workers is not counted: its
figure is a lower bound), chosen ``C`` and test accuracy, and whether the test predictions are
identical.

The matrix is a feature file; or ``--shared``: real features of Caltech-101's shape (8,677 x
62,720), MobileNetV2 (ImageNet weights from ../shared/models) flatten features of ../shared
animals + flowers17 (2,860 images, 20 classes), extracted at 224 and at 208 (both give 7 x 7 x
1,280 maps) with their mirrors (``--augment flip``), stacked: 224, 224 mirrored, 208, and an
even spread of 97 of the 208 mirrors (near-copies of one image fall on both sides of the
split: the accuracy is high, the timing and the choice are what this measures); or
``--synthetic``: Caltech-101's shape with MobileNetV2
flatten features (8,677 x 62,720 float32, 101 classes of 31 to 800-odd rows), non-negative
and sparse like ReLU maps, a class signal in a decaying spectrum of latent directions, made
deterministically from ``--seed`` in float32 chunks and cached as ``.npy`` (2.2 GB).

    python scripts/bench_classify.py --shared
    python scripts/bench_classify.py --synthetic
    python scripts/bench_classify.py f17_flat.hdf5 --only after
    python scripts/bench_classify.py f17_hed.hdf5 --recipe --models rf xgb

``--recipe`` also times the published recipe's plain ``GridSearchCV`` and ``python -m
classify``; ``--models rf xgb`` the default random-forest and XGBoost searches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def synthetic_features(rows: int = 8677, dim: int = 62720, classes: int = 101, seed: int = 0,
                       out: np.ndarray | None = None, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A float32 matrix shaped like CNN flatten features, and its labels (class order).

    Rows are ``relu(latent @ P + noise - 0.5)``: ``latent`` the class's centre plus noise in 128
    latent directions of decaying scale (as a CNN's features have), ``P`` a random projection
    with features of unequal scale (lognormal), so about 40 % of entries are non-zero. Class
    sizes are lognormal, at least 31 rows, as Caltech-101's are. Generated a ``chunk`` of rows
    at a time in float32, into ``out`` when given (a memory map).

    Examples
    --------
    >>> X, y = synthetic_features(rows=200, dim=300, classes=4)
    >>> X.shape, X.dtype, bool(X.min() >= 0), bool(np.bincount(y).min() >= 31)
    ((200, 300), dtype('float32'), True, True)
    """
    rng = np.random.default_rng(seed)
    latent = 128
    weights = rng.lognormal(0.0, 1.0, classes)
    sizes = 31 + np.floor(weights / weights.sum() * max(rows - 31 * classes, 0)).astype(int)
    sizes[: max(rows - sizes.sum(), 0)] += 1
    y = np.repeat(np.arange(classes), sizes)[:rows]
    centres = rng.standard_normal((classes, latent)).astype(np.float32)
    proj = rng.standard_normal((latent, dim), dtype=np.float32) / np.float32(np.sqrt(latent))
    spectrum = (3.0 / np.sqrt(1.0 + np.arange(latent))).astype(np.float32)
    proj *= (spectrum * np.sqrt(latent / (spectrum**2).sum())).astype(np.float32)[:, None]
    proj *= rng.lognormal(0.0, 0.5, dim).astype(np.float32)
    X = np.empty((rows, dim), np.float32) if out is None else out
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        lat = centres[y[start:stop]] + np.float32(2.6) * rng.standard_normal((stop - start, latent),
                                                                             dtype=np.float32)
        block = lat @ proj
        block += rng.standard_normal((stop - start, dim), dtype=np.float32)
        block -= np.float32(0.5)
        np.maximum(block, 0, out=block)
        X[start:stop] = block
    return X, y


def synthetic_cache(args: argparse.Namespace) -> tuple[Path, Path]:
    """The ``--synthetic`` matrix and labels as ``.npy`` files, made once."""
    stem = Path(args.cache) / f"synthetic_{args.rows}x{args.dim}_{args.classes}_{args.seed}"
    matrix, labels = stem.with_suffix(".X.npy"), stem.with_suffix(".y.npy")
    if not (matrix.exists() and labels.exists()):
        stem.parent.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        out = np.lib.format.open_memmap(str(matrix) + ".part", "w+", np.float32, (args.rows, args.dim))
        _, y = synthetic_features(args.rows, args.dim, args.classes, args.seed, out=out)
        out.flush()
        del out
        os.replace(str(matrix) + ".part", matrix)
        np.save(labels, y)
        print(f"made {matrix} in {time.perf_counter() - began:.0f} s")
    return matrix, labels


SHARED = Path(os.environ.get("FEATUREBANK_SHARED", REPO.parent / "shared"))
SHARED_PARTS = [(224, False), (224, True), (208, False), (208, True)]


def shared_cache(args: argparse.Namespace, rows: int = 8677) -> Path:
    """The ``--shared`` matrix and labels as ``.npy`` files, extracted (``python -m extract``)
    and stacked once."""
    from features import FeatureFile

    stem = Path(args.cache) / f"shared_mobilenetv2_{rows}x62720"
    matrix, labels = stem.with_suffix(".X.npy"), stem.with_suffix(".y.npy")
    if matrix.exists() and labels.exists():
        return matrix
    datasets = ["animals", "flowers17"]
    for name in datasets:
        for size in (224, 208):
            out = Path(args.cache) / f"{name}_mobilenetv2_{size}.hdf5"
            subprocess.run([sys.executable, "-m", "extract", "--dataset", name, "--data-dir",
                            str(SHARED / "datasets"), "--backbone", "mobilenetv2", "--weights",
                            str(SHARED / "models" / "mobilenetv2_1.0_224_imagenet_notop.weights.h5"),
                            "--pooling", "flatten", "--image-size", str(size), "--augment", "flip",
                            "-q", "-o", str(out)], cwd=REPO, check=True)
    stacked = np.lib.format.open_memmap(str(matrix) + ".part", "w+", np.float32, (rows, 62720))
    parts, filled = [], 0
    for size, mirrored in SHARED_PARTS:
        offset = 0
        for name in datasets:
            with FeatureFile(Path(args.cache) / f"{name}_mobilenetv2_{size}.hdf5") as ff:
                X = ff.load_mirror_features() if mirrored else ff.load_features()
                y = np.asarray(ff.labels) + offset
                offset += len(ff.label_names)
            take = min(len(X), rows - filled)
            if take <= 0:
                break
            picked = np.arange(len(X)) if take == len(X) else np.linspace(0, len(X) - 1, take).astype(int)
            stacked[filled:filled + take] = X[picked]
            parts.append(y[picked])
            filled += take
    stacked.flush()
    del stacked
    os.replace(str(matrix) + ".part", matrix)
    np.save(labels, np.concatenate(parts))
    return matrix


def load(source: str) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and labels of a feature file, or of a synthetic ``.X.npy``."""
    if source.endswith(".X.npy"):
        return np.load(source), np.load(source[: -len(".X.npy")] + ".y.npy")
    from features import FeatureFile

    with FeatureFile(source) as ff:
        return ff.load_features(), ff.labels


def worker(source: str, variant: str, predictions: str) -> None:
    """One search in this process; one JSON line of its figures on stdout."""
    from classify.classifiers import CLASSIFIERS
    from classify.search.grid import run_search
    from classify.search.split import stratified_split

    X, y = load(source)
    train, test = stratified_split(y, 0.25, 42)
    spec = CLASSIFIERS["logreg"]
    result = run_search("logreg", spec.make(42, None), spec.grid, X, y, train, test, jobs=-1,
                        row_space=spec.linear_l2, select=spec.select, c_path=variant == "after")
    np.save(predictions, result.test_pred)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(json.dumps({
        "seconds": result.search_seconds, "peak_gb": peak, "C": result.best_params["C"],
        "accuracy": float(np.mean(result.test_pred == y[test])), "dim": result.dim,
        "cv_log_loss": [row.get("mean_log_loss") for row in result.cv_results],
        "matrix_gb": X.nbytes / 1e9,
    }))


def run_variant(source: str, variant: str, predictions: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", variant, source, "--predictions",
                           str(predictions)], cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def recipe(source: str, models: list[str]) -> None:
    """The published recipe's search and ``python -m classify`` on a feature file."""
    from plain_recipe import plain_recipe

    from classify.search.split import stratified_split

    def classify(model: str) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            subprocess.run([sys.executable, "-m", "classify", "--features", source, "--model", model,
                            "--json", str(out)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            return json.loads(out.read_text())

    X, y = load(source)
    train, test = stratified_split(y)
    ours = classify("logreg")
    best, accuracy, seconds = plain_recipe(X, y, train, test)
    print(f"plain recipe           : {seconds:7.1f} s  test accuracy {accuracy:.4f}  best {best}")
    print(f"classify --model logreg: {ours['search_seconds']:7.1f} s  test accuracy "
          f"{ours['accuracy']:.4f}  best {ours['best_params']}  "
          f"({seconds / ours['search_seconds']:.1f}x faster)")
    for model in models:
        result = classify(model)
        print(f"classify --model {model:6}: {result['search_seconds']:7.1f} s  test accuracy "
              f"{result['accuracy']:.4f}  best {result['best_params']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", nargs="?", help="feature file written by python -m extract")
    parser.add_argument("--shared", action="store_true", help="real features of ../shared (see above)")
    parser.add_argument("--synthetic", action="store_true", help="a synthetic matrix instead (see above)")
    parser.add_argument("--rows", type=int, default=8677)
    parser.add_argument("--dim", type=int, default=62720)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=tempfile.gettempdir(), help="folder of the synthetic matrix")
    parser.add_argument("--only", choices=["before", "after"], help="run one of the two searches")
    parser.add_argument("--recipe", action="store_true", help="also the plain recipe and python -m classify")
    parser.add_argument("--models", nargs="*", default=[], choices=["rf", "xgb"],
                        help="with --recipe, also time these default searches")
    parser.add_argument("--worker", choices=["before", "after"], help=argparse.SUPPRESS)
    parser.add_argument("--predictions", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.features, args.worker, args.predictions)
        return
    if args.synthetic + args.shared + bool(args.features) != 1:
        parser.error("give one of a feature file, --shared or --synthetic")
    if args.synthetic:
        source = str(synthetic_cache(args)[0])
    else:
        source = str(shared_cache(args)) if args.shared else args.features
    X, y = load(source)
    shape, classes = X.shape, len(np.unique(y))
    del X
    print(f"{source}: {shape[0]} rows x {shape[1]} features, {classes} classes; "
          f"{platform.machine()}, {os.cpu_count()} cores")
    # Each run's figures and predictions are kept beside the cache, so that a "before" run
    # once (5 minutes on the synthetic matrix) is compared with later "after" runs (--only after).
    stem = Path(args.cache) / f"bench_classify_{Path(source).name}"
    results = {}
    for variant in ["before", "after"]:
        figures, predictions = Path(f"{stem}.{variant}.json"), Path(f"{stem}.{variant}.pred.npy")
        if args.only in (None, variant):
            results[variant] = run_variant(source, variant, predictions)
            figures.write_text(json.dumps(results[variant]))
        elif figures.exists() and predictions.exists():
            results[variant] = json.loads(figures.read_text()) | {"stored": True}
        else:
            continue
        r = results[variant]
        print(f"{variant:6}: {r['seconds']:7.1f} s  peak {r['peak_gb']:5.2f} GB (matrix "
              f"{r['matrix_gb']:.2f})  C={r['C']:g}  test accuracy {r['accuracy']:.4f}  "
              f"dim {r['dim']}" + ("  (stored run)" if r.get("stored") else ""), flush=True)
    if len(results) == 2:
        before, after = (np.load(f"{stem}.{v}.pred.npy") for v in ("before", "after"))
        b, a = results["before"], results["after"]
        print(f"same C: {b['C'] == a['C']}; test predictions identical: {np.array_equal(before, after)} "
              f"({int(np.sum(before != after))} of {len(before)} differ); {b['seconds'] / a['seconds']:.1f}x "
              f"faster, {b['peak_gb'] / a['peak_gb']:.1f}x less peak memory")
    if args.recipe:
        recipe(source, args.models)


if __name__ == "__main__":
    main()
