"""Command line of stage 2: ``python -m classify --features FILE``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .models import MODELS

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
    p.add_argument("--model", "-m", default="logreg", choices=list(MODELS),
                   help="classifier to search (default: logreg)")
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
    p.add_argument("--allow-partial", action="store_true",
                   help="use the committed rows of a file whose extraction did not finish")
    p.add_argument("--verbose", "-v", action="count", default=0, help="show the search's progress")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = MODELS[args.model]
    inner_jobs = args.jobs if args.model in ("rf", "xgb") else None
    estimator = spec.make(args.seed, inner_jobs)
    grid = parse_grid(args.grid, parser, set(estimator.get_params())) if args.grid else spec.grid

    from features import FeatureFile, FeatureFileError

    from .report import json_report, text_report
    from .search import SplitError, run_search, stratified_split

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
        print(
            f"classify: {len(y)} rows, {X.shape[1]} features, {len(label_names)} classes; "
            f"{len(train)} train / {len(test)} test; searching {args.model} over {json.dumps(grid)}",
            file=sys.stderr,
        )
        # Models that are parallel inside one fit search their grid one fit at a time.
        search_jobs = 1 if inner_jobs is not None else args.jobs
        result = run_search(
            args.model, estimator, grid, X, y, train, test,
            folds=args.folds, seed=args.seed, jobs=search_jobs, verbose=args.verbose,
            row_space=spec.row_space,
        )
    except SplitError as exc:
        return fail(f"{args.features}: {exc}")
    print(text_report(result, y[test], label_names))
    if args.json:
        settings = {
            "model": args.model, "grid": grid, "test_size": args.test_size,
            "seed": args.seed, "folds": args.folds, "jobs": args.jobs,
        }
        data = json_report(
            result, y[test], test, label_names,
            features_path=args.features, provenance=provenance, settings=settings,
        )
        try:
            Path(args.json).write_text(json.dumps(data, indent=2, default=str) + "\n")
        except OSError as exc:
            return fail(f"{args.json}: cannot write ({exc.strerror or exc})")
    if args.save:
        import joblib

        try:
            joblib.dump(result.estimator, args.save)
        except OSError as exc:
            return fail(f"{args.save}: cannot write ({exc.strerror or exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
