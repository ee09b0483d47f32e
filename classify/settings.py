"""Stage 2's settings, declared once: :class:`TrainSettings`, and their checks.

Each field of :class:`TrainSettings` is a keyword of :func:`classify.train_and_evaluate` with
its default, and carries in its metadata the command line's flag, help and text-to-value
conversion: :func:`add_arguments` builds ``python -m classify``'s options from it, and
:func:`option_table` the table of docs/cli.md. Making one checks it (:func:`check_settings`),
so a notebook and ``python -m classify`` refuse the same settings with the same one-line
:class:`~classify.errors.SettingsError`.
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from extract.options import add_arguments_from, keywords_from, number, option, option_table_of, whole

from .classifiers import CLASSIFIERS, get_classifier
from .errors import SettingsError, first_line, named

#: ``engine=`` choices: this machine's cores, or a Ray cluster.
ENGINES = ("local", "ray")

#: Fewer resamples give percentile intervals too coarse to read.
MIN_RESAMPLES = 100

#: The seeds NumPy's and scikit-learn's random states accept.
MAX_SEED = 2**32 - 1


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_repeats(repeats: int | None, outer_cv: int | None, **outputs: Any) -> None:
    """Refuse (one line) repeats that are not a whole number of at least 2, both kinds at once,
    or with outputs of one split (``save``, ``plots``, ``html``, ``label_issues``).

    Examples
    --------
    >>> check_repeats(3, None, save=None)
    >>> check_repeats(3, None, save="m.joblib")
    Traceback (most recent call last):
    ...
    classify.errors.SettingsError: save (--save) writes one split's model: leave out repeats ... for it
    """
    for name, value in (("repeats", repeats), ("outer_cv", outer_cv)):
        if value is not None and (not _whole(value) or value < 2):
            raise SettingsError(f"{named(name)} must be a whole number of at least 2, got {value!r}")
    if repeats is not None and outer_cv is not None:
        raise SettingsError(f"{named('repeats')} and {named('outer_cv')} are two ways to repeat: give one")
    given = [name for name, value in outputs.items() if value is not None]
    if (repeats is not None or outer_cv is not None) and given:
        writes = "writes" if len(given) == 1 else "write"
        raise SettingsError(f"{', '.join(named(n) for n in given)} {writes} one split's model: leave out "
                            f"{named('repeats' if repeats else 'outer_cv')} for "
                            f"{'it' if len(given) == 1 else 'them'}")


def check_models(models: str | Sequence[str]) -> list[str]:
    """The model names, in the order given and once each; a single name is accepted too."""
    names = [models] if isinstance(models, str) else list(models)
    if not names:
        raise SettingsError(f"{named('model')} needs at least one of {', '.join(CLASSIFIERS)}")
    for name in names:
        get_classifier(name)
    return list(dict.fromkeys(names))


def parse_grid(grid: str | Mapping[str, Any], valid: set[str]) -> dict[str, list[Any]]:
    """A parameter grid from JSON text or a mapping, each value made a list, every name one of
    ``valid`` (the estimator's parameters)."""
    if isinstance(grid, str):
        try:
            grid = json.loads(grid)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--grid is not valid JSON: {exc}") from None
    if not isinstance(grid, Mapping) or not grid:
        raise SettingsError('--grid must be a JSON object of parameter lists, e.g. \'{"C": [0.1, 1]}\'')
    unknown = sorted(set(map(str, grid)) - valid)
    if unknown:
        raise SettingsError(f"--grid names unknown parameters: {', '.join(unknown)}")
    return {str(k): _candidates(v) for k, v in grid.items()}


def check_grid_values(estimator: Any, grid: Mapping[str, list[Any]]) -> None:
    """Refuse, in one line, a grid value the estimator would refuse in every fit of the
    search (where the message would be buried in GridSearchCV's summary of failed fits).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> check_grid_values(LogisticRegression(), {"C": [0.1, -1]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    classify.errors.SettingsError: --grid: The 'C' parameter of LogisticRegression must be ... Got -1 instead.
    """
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid

    if not hasattr(estimator, "_parameter_constraints"):  # XGBoost checks only when it fits
        return
    for candidate in ParameterGrid(dict(grid)):
        try:
            clone(estimator).set_params(**candidate)._validate_params()
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"--grid: {first_line(exc)}") from None


def _candidates(value: Any) -> list[Any]:
    """A grid entry as a list of candidates: a single value is one candidate."""
    if hasattr(value, "tolist") and not isinstance(value, str):  # a NumPy array, as plain values
        value = value.tolist()
    return list(value) if isinstance(value, (list, tuple, range)) else [value]


def check_features(features: str | os.PathLike | Sequence[str | os.PathLike],
                   models: Sequence[str] = ()) -> list[str]:
    """The feature file paths of a run (one, or several to fuse), as strings; a model that
    trains backbone layers is refused for several (its layers above the file's belong to one
    backbone).

    Examples
    --------
    >>> check_features("f17.hdf5"), check_features(["a.hdf5", "b.hdf5"])
    (['f17.hdf5'], ['a.hdf5', 'b.hdf5'])
    >>> check_features(["a.hdf5", "b.hdf5"], ["finetune"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    classify.errors.SettingsError: finetune trains the top layers of one backbone, ...
    """
    paths = [features] if isinstance(features, (str, os.PathLike)) else list(features)
    if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise SettingsError(f"features (--features) must be one feature file or several to fuse, got "
                            f"{features!r}")
    paths = [os.fspath(p) for p in paths]
    for model in models if len(paths) > 1 else ():
        if get_classifier(model).trains_backbone:
            raise SettingsError(f"{model} trains the top layers of one backbone, and fused features "
                                f"come from {len(paths)}: give it one --features file, or choose "
                                "another model for the fusion")
    return paths


#: ``class_weight=`` choices: none, or scikit-learn's "balanced".
CLASS_WEIGHTS = (None, "balanced")


def check_settings(
    *,
    models: list[str],
    grid: str | Mapping[str, Any] | None,
    test_size: float | None,
    seed: int,
    folds: int,
    jobs: int,
    engine: str,
    verbose: int,
    augment: bool = False,
    tta: bool = False,
    precision: str | None = None,
    use_val: bool = False,
    resplit: bool = False,
    class_weight: str | None = None,
) -> None:
    """Raise :class:`SettingsError` for any setting :func:`classify.train_and_evaluate` cannot
    run with (the grid's parameter names are checked against the estimator when it is made)."""
    if grid is not None and len(models) > 1:
        raise SettingsError("--grid applies to one model; run the models one at a time to give each a grid")
    if test_size is not None and (not isinstance(test_size, numbers.Real) or isinstance(test_size, bool)
                                  or not 0.0 < test_size < 1.0):
        raise SettingsError(f"{named('test_size')} must lie strictly between 0 and 1, got {test_size!r}")
    if not _whole(seed) or not 0 <= seed <= MAX_SEED:
        raise SettingsError(f"{named('seed')} must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    if not _whole(folds):
        raise SettingsError(f"{named('folds')} must be a whole number, got {folds!r}")
    if folds < 2:
        raise SettingsError(f"{named('folds')} must be at least 2, got {folds!r}")
    if not _whole(jobs) or jobs == 0 or jobs < -1:
        raise SettingsError(f"{named('jobs')} must be -1 (all cores) or at least 1, got {jobs!r}")
    if engine not in ENGINES:
        raise SettingsError(f"{named('engine')} must be one of {', '.join(ENGINES)}, got {engine!r}")
    from .classifiers.finetune import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        raise SettingsError(f"{named('precision')} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in (None, "float32"):
        for model in models:
            if not get_classifier(model).trains_backbone:
                raise SettingsError(f"{named('precision')} {precision} is for the models that train "
                                    f"backbone layers (finetune); {model} trains in float32")
    if class_weight not in CLASS_WEIGHTS:
        raise SettingsError(f"{named('class_weight')} must be balanced (or None), got {class_weight!r}")
    if use_val and resplit:
        raise SettingsError(f"{named('use_val')} validates on the file's own val split, which "
                            f"{named('resplit')} sets aside: choose one")
    for name, value in (("augment", augment), ("tta", tta), ("use_val", use_val), ("resplit", resplit)):
        if not isinstance(value, bool):
            raise SettingsError(f"{named(name)} must be True or False, got {value!r}")
    if not _whole(verbose) or verbose < 0:
        raise SettingsError(f"{named('verbose')} must be a whole number of at least 0, got {verbose!r}")


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one stage-2 run: every keyword of :func:`classify.train_and_evaluate`
    after the feature file, with its default; made, they are checked.

    Examples
    --------
    >>> TrainSettings(models=["rf", "rf"], folds=5).models
    ('rf',)
    >>> TrainSettings(test_size=1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    classify.errors.SettingsError: test_size (--test-size) must lie strictly between 0 and 1, got 1.5
    """

    models: tuple[str, ...] = field(default=("logreg",), metadata=option(
        "classifier(s) to search, on the same split; several end with a side-by-side table "
        "(default: logreg)", "--model", "-m", nargs="+",
        metavar=lambda: "{" + ",".join(CLASSIFIERS) + "}"))
    grid: str | Mapping[str, Any] | None = field(default=None, metadata=option(
        'parameter grid replacing the default, e.g. \'{"C": [0.01, 0.1, 1]}\'', metavar="JSON"))
    test_size: float | None = field(default=None, metadata=option(
        "share of each class held out for the test report (default: 0.25); a file that holds its "
        "dataset's split (split folders, a manifest's split column) is reported on its test split "
        "instead, and refuses this unless --resplit", metavar="F", text=number))
    use_val: bool = field(default=False, metadata=option(
        "with a file's stored split: choose the parameters on its val split (one validation fold) "
        "instead of cross-validating on train, then refit on train and val", action="store_true"))
    class_weight: str | None = field(default=None, metadata=option(
        "balanced: weigh each training row by n_rows / (n_classes x its class's rows), "
        "scikit-learn's meaning, in every model's fit (sample weights); recorded (default: none)",
        choices=["balanced"]))
    resplit: bool = field(default=False, metadata=option(
        "ignore a file's stored split: split its rows at random, stratified (--test-size, --seed)",
        action="store_true"))
    seed: int = field(default=42, metadata=option(
        "seed of the split, the folds and the models (default: 42)", text=whole))
    folds: int = field(default=3, metadata=option(
        "cross-validation folds on the training rows (default: 3)", metavar="K", text=whole))
    jobs: int = field(default=-1, metadata=option(
        "parallel jobs; -1 uses every core (default: -1)", "--jobs", "-j", metavar="N", text=whole))
    json: str | None = field(default=None, metadata=option(
        "write metrics, best parameters, timings, provenance and the test rows' indices as JSON",
        metavar="FILE"))
    save: str | None = field(default=None, metadata=option(
        "save the fitted best model (joblib; the head as FILE with the suffix .keras) and its "
        "model card FILE.card.json", metavar="FILE"))
    plots: str | None = field(default=None, metadata=option(
        "write confusion_<model>.png per model and, with several models, precision.png "
        "(per-class precision side by side) into DIR (created if need be)", metavar="DIR"))
    html: str | None = field(default=None, metadata=option(
        "write one self-contained HTML report: the models side by side with intervals and "
        "p-values, confusion matrices whose cells list their images, the misclassified images, "
        "suspected label errors, the settings", metavar="FILE"))
    label_issues: str | None = field(default=None, metadata=option(
        "write the training images whose given label looks wrong (out-of-fold probabilities that "
        "prefer another class, or cleanlab flags), most suspect first, as CSV: path, given, "
        "suggested, score, flagged; one file per model as --json",
        metavar="FILE"))
    bootstrap: int = field(default=2000, metadata=option(
        "bootstrap resamples of the test rows behind the intervals of accuracy, macro F1 and "
        "their differences (default: 2000)", metavar="N", text=whole))
    repeats: int | None = field(default=None, metadata=option(
        "search, refit and test every model over K stratified splits seeded --seed, --seed + 1, "
        "...: mean and std per class and overall, and the paired tests over all K test sets "
        "(a file's stored split is kept: use --resplit)", metavar="K", text=whole))
    outer_cv: int | None = field(default=None, metadata=option(
        "as --repeats, over the K folds of an outer stratified cross-validation (every row "
        "tested once)", metavar="K", text=whole))
    augment: bool = field(default=False, metadata=option(
        "train on the training images' mirrors too (a file extracted with --augment flip); folds "
        "and test are scored on images, never mirrors", action="store_true"))
    tta: bool = field(default=False, metadata=option(
        "score each test image by the mean of its and its mirror's probabilities (a file "
        "extracted with --augment flip)", action="store_true"))
    precision: str | None = field(default=None, metadata=option(
        "compute precision of the backbone layers finetune trains: bf16 (Keras mixed_bfloat16; "
        "CPUs with AVX512-BF16 or AMX, recent GPUs) (default: the feature file's extraction "
        "precision, float32 where bf16 is not native)", metavar="{float32,bf16}"))
    allow_partial: bool = field(default=False, metadata=option(
        "use the committed rows of a file whose extraction did not finish", action="store_true"))
    verbose: int = field(default=0, metadata=option(
        "show the search's progress", "--verbose", "-v", action="count"))
    engine: str = field(default="local", metadata=option(
        "local: this machine's cores (default); ray: every cross-validation fit is a Ray task "
        "(joblib's Ray backend), one core each, spread over the cluster; same results "
        "(pip install -e .[ray])", metavar="{" + ",".join(ENGINES) + "}"))
    ray_address: str | None = field(default=None, metadata=option(
        "Ray cluster to join (default: $RAY_ADDRESS, else a local Ray instance)", metavar="ADDR"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(check_models(self.models)))
        check_repeats(self.repeats, self.outer_cv, save=self.save, plots=self.plots, html=self.html,
                      label_issues=self.label_issues)
        if not _whole(self.bootstrap) or self.bootstrap < MIN_RESAMPLES:
            raise SettingsError(f"{named('bootstrap')} must be a whole number of at least {MIN_RESAMPLES} "
                                f"resamples, got {self.bootstrap!r}")
        check_settings(models=list(self.models), grid=self.grid, test_size=self.test_size, seed=self.seed,
                       folds=self.folds, jobs=self.jobs, engine=self.engine, verbose=self.verbose,
                       augment=self.augment, tta=self.tta, precision=self.precision,
                       use_val=self.use_val, resplit=self.resplit, class_weight=self.class_weight)

    def keywords(self) -> dict[str, Any]:
        """The settings as :func:`classify.train_and_evaluate`'s keywords."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`TrainSettings` field to ``parser`` as an option (dest: the keyword)."""
    add_arguments_from(TrainSettings, parser)


def keywords_of(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`classify.train_and_evaluate`'s keywords from parsed command-line ``args`` (checked
    when the call makes its :class:`TrainSettings`)."""
    return keywords_from(TrainSettings, args)


def option_table() -> str:
    """The Markdown table of stage 2's settings: flag, keyword, default, meaning.

    Examples
    --------
    >>> option_table().splitlines()[2].split(" | ")[:3]
    ['| `--model`, `-m`', '`models`', '`logreg`']
    """
    return option_table_of(TrainSettings)
