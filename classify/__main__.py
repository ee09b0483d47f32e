"""Command line of stage 2: ``python -m classify --features FILE``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from .models import MODELS, inner_parallel

DESCRIPTION = """\
Grid-search a classifier on a feature file written by `python -m extract`: a stratified,
seeded train / test split; cross-validated search on the training rows only; the best
parameters refit on all training rows; a per-class precision / recall / F1 report on the
test rows (stdout).
"""

EPILOG = """\
models (default grid in brackets; --grid replaces it):
""" + "\n".join(
    f"  {spec.name:7} {spec.description} [{json.dumps(spec.grid)}]" for spec in MODELS.values()
) + """

examples:
  python -m classify --features animals.hdf5
  python -m classify --features flowers17.hdf5 --model rf --json rf.json --save rf.joblib
  python -m classify --features flowers17.hdf5 --grid '{"C": [0.01, 0.1]}'
  python -m classify --features flowers17.hdf5 --model logreg rf xgb --json f17.json
  python -m classify compare f17.logreg.json f17.xgb.json --plots figures/
  python -m classify predict --model rf.joblib new_photos/ --output predictions.csv

With several models, --json and --save write one file per model, named <stem>.<model><suffix>.

The test rows depend only on the labels, --test-size and --seed, and are saved with --json,
so runs of different models are scored on the same images.
Exit status: 0 done, 1 failure (message on stderr), 2 usage error.
"""


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {value}")
    return value


def jobs_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (all cores) or at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m classify",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--features", "-f", required=True, metavar="FILE",
                   help="feature file written by python -m extract")
    p.add_argument("--model", "-m", nargs="+", default=["logreg"], choices=list(MODELS),
                   help="classifier(s) to search, on the same split; several end with a "
                        "side-by-side table (default: logreg)")
    p.add_argument("--grid", metavar="JSON",
                   help='parameter grid replacing the default, e.g. \'{"C": [0.01, 0.1, 1]}\'')
    p.add_argument("--test-size", type=fraction, default=0.25, metavar="F",
                   help="share of each class held out for the test report (default: 0.25)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of the split, the folds and the models (default: 42)")
    p.add_argument("--folds", type=at_least_two, default=3, metavar="K",
                   help="cross-validation folds on the training rows (default: 3)")
    p.add_argument("--jobs", "-j", type=jobs_count, default=-1, metavar="N",
                   help="parallel jobs; -1 uses every core (default: -1)")
    p.add_argument("--json", metavar="FILE", help="write metrics, best parameters, timings, "
                   "provenance and the test rows' indices as JSON")
    p.add_argument("--save", metavar="FILE", help="save the fitted best model with joblib")
    p.add_argument("--plots", metavar="DIR", help="write confusion_<model>.png per model and, with "
                   "several models, precision.png (per-class precision side by side) into DIR")
    p.add_argument("--allow-partial", action="store_true",
                   help="use the committed rows of a file whose extraction did not finish")
    p.add_argument("--verbose", "-v", action="count", default=0, help="show the search's progress")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: this machine's cores (default); ray: every cross-validation fit "
                        "is a Ray task (joblib's Ray backend), one core each, spread over the "
                        "cluster; same results (pip install -e .[ray])")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray instance)")
    return p


def parse_grid(text: str, parser: argparse.ArgumentParser, valid: set[str]) -> dict[str, list[Any]]:
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"--grid is not valid JSON: {exc}")
    if not isinstance(grid, dict) or not grid:
        parser.error('--grid must be a JSON object of parameter lists, e.g. \'{"C": [0.1, 1]}\'')
    unknown = sorted(set(grid) - valid)
    if unknown:
        parser.error(f"--grid names unknown parameters: {', '.join(unknown)}")
    return {k: v if isinstance(v, list) else [v] for k, v in grid.items()}


def suffixed(path: str, model: str, several: bool) -> Path:
    """``path``, or with several models ``<stem>.<model><suffix>`` beside it."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{model}{p.suffix}") if several else p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    if argv[:1] == ["predict"]:
        from .predict import predict_main

        return predict_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    models = list(dict.fromkeys(args.model))  # in the order given, once each
    several = len(models) > 1
    if args.grid and several:
        parser.error("--grid applies to one model; run the models one at a time to give each a grid")
    estimators, grids = {}, {}
    ray_engine = args.engine == "ray"
    for name in models:
        # On Ray the fits are spread one core each; locally, forests and boosting use every
        # core inside one fit instead.
        inner_jobs = (1 if ray_engine else args.jobs) if inner_parallel(name) else None
        estimators[name] = MODELS[name].make(args.seed, inner_jobs)
        grids[name] = (
            parse_grid(args.grid, parser, set(estimators[name].get_params())) if args.grid
            else MODELS[name].grid
        )

    from features import FeatureFile, FeatureFileError

    from .search import SplitError, stratified_split

    def fail(message: str) -> int:
        print(f"classify: error: {message}", file=sys.stderr)
        return 1

    try:
        with FeatureFile(args.features, allow_partial=args.allow_partial) as ff:
            X = ff.load_features()
            y, label_names, provenance = ff.labels, ff.label_names, ff.attrs
    except FeatureFileError as exc:
        return fail(str(exc))
    try:
        train, test = stratified_split(y, args.test_size, args.seed)
    except SplitError as exc:
        return fail(f"{args.features}: {exc}")
    if args.plots and not Path(args.plots).is_dir():
        return fail(f"{args.plots}: no such folder for --plots")
    if ray_engine:
        try:
            backend, stop = _ray_backend(args.ray_address)
        except RuntimeError as exc:
            return fail(str(exc))
    else:
        backend, stop = contextlib.nullcontext(), None
    try:
        with backend:
            return _search_all(args, models, estimators, grids, X, y, label_names, provenance,
                               train, test, fail)
    finally:
        if stop is not None:
            stop()


def _ray_backend(address: str | None):
    """joblib's Ray backend on the cluster at ``address`` (or a local instance), and what stops
    the instance when this process started it (else None)."""
    from extract.ray_engine import RayEngineError, RayOptions, connect, ray_available

    if not ray_available():
        raise RuntimeError('--engine ray needs Ray: pip install -e ".[ray]"')
    import joblib
    import ray
    from ray.util.joblib import register_ray

    try:
        started = connect(RayOptions(address=address))
    except RayEngineError as exc:
        raise RuntimeError(str(exc)) from None
    register_ray()
    return joblib.parallel_backend("ray"), (ray.shutdown if started else None)


def _search_all(args, models, estimators, grids, X, y, label_names, provenance, train, test, fail):
    from .compare import side_by_side
    from .report import json_report, per_class_report, text_report
    from .search import SplitError, run_search

    ray_engine = args.engine == "ray"
    several = len(models) > 1
    reports = {}
    for name in models:
        spec, grid = MODELS[name], grids[name]
        print(
            f"classify: {len(y)} rows, {X.shape[1]} features, {len(label_names)} classes; "
            f"{len(train)} train / {len(test)} test; searching {name} over {json.dumps(grid)}",
            file=sys.stderr,
        )
        # Models that are parallel inside one fit search their grid one fit at a time.
        search_jobs = args.jobs if ray_engine or not inner_parallel(name) else 1
        try:
            result = run_search(
                name, estimators[name], grid, X, y, train, test,
                folds=args.folds, seed=args.seed, jobs=search_jobs, verbose=args.verbose,
                row_space=spec.row_space, select=spec.select,
            )
        except SplitError as exc:
            return fail(f"{args.features}: {exc}")
        print(text_report(result, y[test], label_names))
        reports[name] = per_class_report(result, y[test], label_names)
        if args.json:
            settings = {
                "model": name, "grid": grid, "test_size": args.test_size,
                "seed": args.seed, "folds": args.folds, "jobs": args.jobs, "engine": args.engine,
            }
            data = json_report(
                result, y[test], test, label_names,
                features_path=args.features, provenance=provenance, settings=settings,
            )
            out = suffixed(args.json, name, several)
            try:
                out.write_text(json.dumps(data, indent=2, default=str) + "\n")
            except OSError as exc:
                return fail(f"{out}: cannot write ({exc.strerror or exc})")
        if args.save:
            import joblib

            from .card import card_path, model_card

            out = suffixed(args.save, name, several)
            card = model_card(result, y[test], label_names, features_path=args.features,
                              provenance=provenance)
            try:
                joblib.dump(result.estimator, out)
                card_path(out).write_text(json.dumps(card, indent=2, default=str) + "\n")
            except OSError as exc:
                return fail(f"{out}: cannot write ({exc.strerror or exc})")
        if args.plots:
            from .plots import confusion_png

            confusion_png(y[test], result.test_pred, label_names, Path(args.plots) / f"confusion_{name}.png",
                          title=f"{name} on {Path(args.features).name}, normalised by true class")
    if several:
        print(f"side by side on the same {len(test)} test images (* best of the row):")
        print(side_by_side(reports, label_names))
        if args.plots:
            from .plots import precision_png

            precision_png(reports, label_names, Path(args.plots) / "precision.png")
    return 0


def compare_main(argv: list[str]) -> int:
    """``python -m classify compare A.json B.json ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m classify compare",
        description="Print saved --json results side by side: per class, precision, recall and "
                    "F1 of each run (* best of the row), and each later run's F1 minus the first's.",
    )
    parser.add_argument("results", nargs="+", metavar="RESULT.json", help="files from --json")
    parser.add_argument("--force", action="store_true",
                        help="compare runs scored on different test rows or classes")
    parser.add_argument("--plots", metavar="DIR", help="write precision.png (per-class precision "
                        "side by side) and confusion_<run>.png per run into DIR")
    args = parser.parse_args(argv)
    if len(args.results) < 2:
        parser.error("give at least two results to compare")

    from .compare import CompareError, common_labels, load_runs, side_by_side

    try:
        runs = load_runs(args.results, force=args.force)
    except CompareError as exc:
        print(f"classify compare: error: {exc}", file=sys.stderr)
        return 1
    labels = common_labels(runs)
    print(side_by_side({n: r["report"] for n, r in runs.items()}, labels, differences=True))
    if args.plots:
        from .plots import confusion_png, precision_png

        folder = Path(args.plots)
        if not folder.is_dir():
            print(f"classify compare: error: {folder}: no such folder for --plots", file=sys.stderr)
            return 1
        precision_png({n: r["report"] for n, r in runs.items()}, labels, folder / "precision.png")
        for name, run in runs.items():
            if "test_labels" in run:
                confusion_png(run["test_labels"], run["test_predictions"], run["label_names"],
                              folder / f"confusion_{name}.png", title=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
