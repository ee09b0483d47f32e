"""Stage 2 in one call: :func:`train_and_evaluate`, which ``python -m classify`` and notebooks use.

It holds the whole run: the settings check, reading the feature file, the split, each model's
search and report, and the files ``--json``, ``--save`` and ``--plots`` ask for. It prints
nothing: lines for people go to the ``classify`` logger (the command line shows INFO and up
on stderr), reports to the caller (``on_result``, and the returned results).
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .classifiers import get_classifier
from .errors import SettingsError, named

if TYPE_CHECKING:
    import numpy as np

    from .search.split import RowSplit
from .evaluation.results import ModelResult
from .fusion import FeatureData
from .settings import TrainSettings, check_features, check_grid_values, parse_grid

log = logging.getLogger("classify")

#: Training classes whose sizes differ by more than this many times are worth a warning.
IMBALANCE = 3


def train_and_evaluate(
    features: str | os.PathLike | Sequence[str | os.PathLike],
    models: str | Sequence[str] = ("logreg",),
    *,
    grid: str | Mapping[str, Any] | None = None,
    test_size: float | None = None,
    use_val: bool = False,
    resplit: bool = False,
    class_weight: str | None = None,
    seed: int = 42,
    folds: int = 3,
    jobs: int = -1,
    allow_partial: bool = False,
    augment: bool = False,
    tta: bool = False,
    precision: str | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    verbose: int = 0,
    json: str | os.PathLike | None = None,
    save: str | os.PathLike | None = None,
    plots: str | os.PathLike | None = None,
    html: str | os.PathLike | None = None,
    label_issues: str | os.PathLike | None = None,
    bootstrap: int = 2000,
    repeats: int | None = None,
    outer_cv: int | None = None,
    outputs: Mapping[str, str | os.PathLike] | None = None,
    on_result: Callable[[ModelResult], Any] | None = None,
) -> dict[str, ModelResult]:
    """Grid-search classifiers on a feature file and report each on held-out test rows.

    The same run as ``python -m classify``, with the same settings, defaults, checks and
    engines: a stratified, seeded train / test split (the same for every model); a
    cross-validated grid search on the training rows only; the best parameters refit on all
    training rows; a per-class report on the test rows.

    Parameters
    ----------
    features : path or sequence of paths
        A feature file written by ``python -m extract``; or several files of the same images
        (same paths, labels, classes and stored splits), fused: their rows joined on image path
        (in the first file's order), each file's block divided by its mean row L2 norm over all
        its rows (recorded in the provenance, the JSON and the model card, as ``scales``), and
        concatenated in the order given (:mod:`classify.fusion`). Every model but ``finetune``
        takes fused rows, and ``predict`` runs each backbone on the images.
    models : str or sequence of str
        Registry names (:data:`classify.CLASSIFIERS`): ``logreg``, ``rf``, ``xgb``, ``head`` (a
        Keras dense head, :class:`classify.classifiers.head.DenseHead`), ``finetune`` (the
        backbone's layers above the file's layer and a head,
        :class:`classify.classifiers.finetune.FineTune`), or one registered with
        :func:`classify.register_classifier`; run in the order given, on the same split.
    grid : dict or JSON str, optional
        Parameter lists replacing the model's default grid; one model only.
    test_size : float, optional
        Share of each class held out for the test report, strictly between 0 and 1 (default
        0.25). A file that stores its dataset's split (split folders, a manifest's split
        column) is searched on its train rows and reported on its test rows (its val rows where
        it has no test split) instead, and refuses ``test_size`` unless ``resplit``.
    use_val : bool
        With a stored split: choose the parameters on the val rows (one validation fold)
        instead of cross-validating on train, then refit on train and val.
    resplit : bool
        Ignore a stored split: split at random, stratified, by ``test_size`` and ``seed``.
    class_weight : {"balanced"}, optional
        Weigh each training row by ``n_rows / (n_classes * rows of its class)`` (scikit-learn's
        "balanced") in every fit, folds and refit alike, as sample weights; a model whose
        ``fit`` takes no ``sample_weight`` is refused. Without it a warning says when the
        training classes differ by more than 3:1.
    seed : int
        Seed of the split, the folds and the models.
    folds : int
        Stratified, shuffled cross-validation folds on the training rows (at least 2).
    jobs : int
        Parallel jobs; -1 uses every core.
    allow_partial : bool
        Use the committed rows of a file whose extraction did not finish.
    augment : bool
        Train on the training rows' mirrored images too (the file's ``mirror_features``,
        ``extract --augment flip``): in every cross-validation fold and in the final fit.
        Folds are scored on images only, never on mirrors; test images and their mirrors
        never train. Every model takes it.
    tta : bool
        Score each test image by the mean of its and its mirror's probabilities (test-time
        augmentation); the folds' scores, which choose the parameters, are not averaged.
    precision : {"float32", "bf16"}, optional
        Compute precision of the backbone layers ``finetune`` trains (``bf16``: Keras'
        ``mixed_bfloat16``, for CPUs with AVX512-BF16 or AMX and recent GPUs); by default the
        feature file's extraction precision where this machine has native bfloat16, else
        float32. Other models refuse anything but float32.
    engine : {"local", "ray"}
        ``ray`` runs every cross-validation fit as a Ray task on the cluster at
        ``ray_address`` (default ``$RAY_ADDRESS``, else a local instance).
    ray_address : str, optional
        The Ray cluster to join.
    verbose : int
        The search's own progress messages (scikit-learn's ``verbose``).
    json : path, optional
        Write each model's metrics, best parameters, timings, provenance and test rows as
        JSON (:meth:`ModelResult.to_json`); with several models ``<stem>.<model><suffix>``.
    save : path, optional
        Save each refitted model and its model card (:meth:`ModelResult.save`); named per
        model as ``json`` is; scikit-learn models with joblib, the head as a ``.keras`` file
        (the suffix replaced).
    plots : path, optional
        A folder (created with its parents if need be) for ``confusion_<model>.png`` and, with
        several models, ``precision.png``.
    html : path, optional
        One self-contained HTML report of the run (:func:`classify.to_html`): the models side
        by side with intervals and p-values, confusion matrices whose cells list their images,
        each model's misclassified images, suspected label errors, the settings.
    label_issues : path, optional
        A CSV of the training images whose given label looks wrong
        (:meth:`ModelResult.label_issues`); named per model as ``json`` is.
    bootstrap : int
        Resamples of the test rows behind the 95% intervals of accuracy and macro F1 and of
        each pair's differences (:meth:`ModelResult.intervals`, :meth:`ModelResult.compare`),
        paired across the models, seeded by ``seed``.
    repeats : int, optional
        Search, refit and test each model over this many stratified splits seeded ``seed``,
        ``seed + 1``, ... (each holding out ``test_size``), all models on the same splits; the
        result of each model is then a :class:`~classify.evaluation.repeats.RepeatedResult`
        (mean ± std per class and overall; the paired tests pool all the test sets). A file's
        stored split is kept instead, with a warning that repeats need ``resplit``. Only
        ``json`` is written (each split's document in one file per model).
    outer_cv : int, optional
        As ``repeats``, over the folds of one stratified, shuffled outer cross-validation of
        this many folds (every row tested once).
    outputs : dict of str to path, optional
        Destinations of registered outputs by name (:data:`classify.OUTPUTS`; ``json``,
        ``save`` and ``plots`` are the three above), for outputs of your own
        (:func:`classify.register_output`).
    on_result : callable, optional
        Called with each :class:`ModelResult` as soon as its model is done (before its files
        are written), e.g. to print ``result.report`` while the next model searches.

    Returns
    -------
    dict of str to ModelResult
        By model name, in the order run.

    Raises
    ------
    SettingsError
        A setting that makes no sense (before anything is read).
    features.FeatureFileError
        A file that cannot be used as a feature file (missing, damaged, unfinished, ...).
    classify.fusion.FusionError
        Several files that do not hold the same images, labels, classes or stored splits (the
        first image that differs named).
    ClassifyError
        Labels that cannot be split or searched (one class, a class too small, named),
        an output that cannot be written, a Ray cluster that cannot be reached.

    Examples
    --------
    >>> from classify import train_and_evaluate
    >>> results = train_and_evaluate("f17.hdf5", models=["logreg", "rf"])  # doctest: +SKIP
    >>> print(results["logreg"].report)  # doctest: +SKIP
    >>> results["logreg"].accuracy, results["rf"].best_params  # doctest: +SKIP
    >>> results["logreg"].plot_confusion()  # doctest: +SKIP

    Print each report as it is ready, and write what ``--json`` and ``--save`` write:

    >>> train_and_evaluate("f17.hdf5", ["logreg", "xgb"], json="f17.json", save="f17.joblib",
    ...                    on_result=lambda r: print(r.report))  # doctest: +SKIP

    Two backbones' features of the same images, fused:

    >>> train_and_evaluate(["f17_mnv2.hdf5", "f17_mnv1.hdf5"])["logreg"].accuracy  # doctest: +SKIP
    """
    names = list(TrainSettings(
        models=models, grid=grid, test_size=test_size, use_val=use_val, resplit=resplit,
        class_weight=class_weight, seed=seed, folds=folds, jobs=jobs, json=json, save=save, plots=plots,
        html=html, label_issues=label_issues, bootstrap=bootstrap, repeats=repeats, outer_cv=outer_cv,
        augment=augment, tta=tta,
        precision=precision, allow_partial=allow_partial, verbose=verbose, engine=engine,
        ray_address=ray_address,
    ).models)
    from extract.devices import warn_if_bf16_is_slow

    from .outputs import OUTPUTS, open_outputs
    from .search.engines import search_backend

    warn_if_bf16_is_slow(precision, log)
    paths = check_features(features, names)
    estimators, grids = make_estimators(names, grid, seed=seed, jobs=jobs, engine=engine, precision=precision,
                                        fused=len(paths) > 1)
    data = read_features(paths, allow_partial=allow_partial, mirrors=augment or tta)
    for name in names:  # a file a model cannot use is refused in one line before any search
        get_classifier(name).prepare(estimators[name], data.provenance, data.path)
    split = split_rows(data, test_size, seed, allow_partial, use_val=use_val, resplit=resplit)
    if split.source == "stored":  # a random split is told in each model's first line
        log.info("%s", split.describe())
    splits = repeated_rows(data, split, repeats or outer_cv, test_size=test_size, seed=seed,
                           outer_cv=outer_cv is not None, partial=allow_partial and not data.complete)
    weights = training_weights(data, split, class_weight, estimators)
    if label_issues is not None:
        for name, estimator in estimators.items():
            if not hasattr(estimator, "predict_proba"):
                raise SettingsError(f"{name} has no predict_proba, which label issues rank: leave out "
                                    f"{named('label_issues')}")
    destinations = open_outputs({"json": json, "save": save, "plots": plots, "html": html,
                                 "label_issues": label_issues, **(outputs or {})})
    # The share a random split held out (a stored split: none asked for, none used).
    share = test_size if split.source == "stored" or test_size is not None else 0.25
    settings = {"test_size": share, "seed": seed, "folds": folds, "jobs": jobs, "engine": engine,
                "augment": augment, "tta": tta, "precision": precision, "use_val": use_val,
                "resplit": resplit, "split": split.to_json(), "class_weight": class_weight,
                "bootstrap": bootstrap}
    if splits and set(destinations) - {"json"}:
        raise SettingsError(f"outputs {', '.join(sorted(set(destinations) - {'json'}))} write one split's "
                            f"model: leave out {named('repeats' if repeats else 'outer_cv')} for them")
    if splits:
        with search_backend(engine, ray_address):
            return run_repeated(names, estimators, grids, data, splits, settings, verbose=verbose,
                                class_weight=class_weight, json=destinations.get("json"),
                                on_result=on_result, scheme="outer-cv" if outer_cv else "repeats")
    results: dict[str, ModelResult] = {}
    with search_backend(engine, ray_address):
        for name in names:
            results[name] = search_model(name, estimators[name], grids[name], data, split, settings,
                                         verbose=verbose, sample_weight=weights)
            if any(OUTPUTS[output].needs_label_issues for output in destinations) and \
                    hasattr(results[name].estimator, "predict_proba"):
                results[name].label_issues()  # found once, before any output writes
            if on_result is not None:
                on_result(results[name])
            write_outputs(results[name], destinations, several=len(names) > 1)
    for output_name, destination in destinations.items():
        OUTPUTS[output_name].write_all(results, destination)
    return results


def repeated_rows(data: FeatureData, split: RowSplit, repeats: int | None, *, test_size: float | None,
                  seed: int, outer_cv: bool, partial: bool = False) -> list[RowSplit]:
    """The splits of ``--repeats`` / ``--outer-cv`` (none without them, and none for a file whose
    stored split is kept, which a warning says)."""
    from .search.split import SplitError, repeated_splits

    if not repeats:
        return []
    if split.source == "stored":
        log.warning(f"warning: {data.path} holds its dataset's own split, which is kept: "
                    "--repeats and --outer-cv need --resplit")
        return []
    try:
        return repeated_splits(data.y, repeats, test_size=0.25 if test_size is None else test_size,
                               seed=seed, outer_cv=outer_cv, label_names=data.label_names,
                               allow_trailing_empty=partial)
    except SplitError as exc:
        raise SplitError(f"{data.path}: {exc}") from None


def run_repeated(names: Sequence[str], estimators: Mapping[str, Any], grids: Mapping[str, dict],
                 data: FeatureData, splits: Sequence[RowSplit], settings: dict[str, Any], *, verbose: int,
                 class_weight: str | None, json: Path | None, on_result: Callable[[Any], Any] | None,
                 scheme: str) -> dict[str, Any]:
    """Each model searched, refit and tested on every split, as a RepeatedResult by name."""
    from sklearn.base import clone

    from .evaluation.repeats import RepeatedResult
    from .outputs import Output

    repeated = {}
    for name in names:
        results = []
        for k, split in enumerate(splits):
            log.info("%s: split %d of %d (%s)", name, k + 1, len(splits), scheme)
            weights = training_weights(data, split, class_weight, {name: estimators[name]}, warn=k == 0)
            results.append(search_model(name, clone(estimators[name]), grids[name], data, split,
                                        dict(settings, split=split.to_json(), split_index=k),
                                        verbose=verbose, sample_weight=weights))
        repeated[name] = RepeatedResult(name, results, scheme)
        if on_result is not None:
            on_result(repeated[name])
        if json is not None:
            repeated[name].to_json(Output.per_model(json, name, len(names) > 1))
    return repeated


def make_estimators(names: Sequence[str], grid: str | Mapping[str, Any] | None, *, seed: int, jobs: int,
                    engine: str, precision: str | None, fused: bool = False
                    ) -> tuple[dict[str, Any], dict[str, dict]]:
    """Each model's unfitted estimator and grid (``grid`` replacing the default, checked; for
    ``fused`` rows a linear model's default ``C`` grid is :func:`~classify.fusion.fused_grid`'s)."""
    from .fusion import fused_grid

    estimators, grids = {}, {}
    for name in names:
        entry = get_classifier(name)
        # On Ray the fits are spread one core each; locally, models parallel inside one fit
        # use every core there instead.
        inner_jobs = (1 if engine == "ray" else jobs) if entry.parallel_inside else None
        estimators[name] = entry.make(seed, inner_jobs)
        if precision is not None and entry.trains_backbone:
            estimators[name].set_params(precision=precision)
        grids[name] = fused_grid(entry.grid, entry.linear_l2) if fused else entry.grid
        if grid is not None:
            grids[name] = parse_grid(grid, set(estimators[name].get_params()))
            check_grid_values(estimators[name], grids[name])
    return estimators, grids


def read_features(path: str | Sequence[str], *, allow_partial: bool, mirrors: bool) -> FeatureData:
    """The features, labels (and with ``mirrors`` the mirrored features) of the file at ``path``;
    of several files, their rows joined on image path and scaled (:func:`classify.fusion.fuse`)."""
    from .fusion import read_fused

    return read_fused([path] if isinstance(path, str) else list(path), allow_partial=allow_partial,
                      mirrors=mirrors)


def split_rows(data: FeatureData, test_size: float | None, seed: int, allow_partial: bool, *,
               use_val: bool = False, resplit: bool = False) -> RowSplit:
    """The file's stored split (:func:`~classify.search.split.stored_split`) unless ``resplit``,
    else the stratified, seeded train / test rows; errors name the file."""
    from .search.split import RowSplit, SplitError, stored_split, stratified_split

    stored = data.splits is not None and not resplit
    if stored and test_size is not None:
        raise SettingsError(f"{data.path} holds its dataset's own split: {named('test_size')} does not "
                            f"apply; leave it out, or pass --resplit (resplit=True) to split at random")
    if use_val and not stored:
        raise SettingsError(f"{named('use_val')} chooses on a stored val split, and {data.path} has "
                            "none (extract a split-folders dataset or a manifest with a split column)")
    if stored and not data.complete:
        raise SplitError(f"{data.path} is unfinished: rows are extracted train, val, test in turn, so its "
                         "stored split may lack val or test rows yet; run extract again to finish it, or "
                         "pass --resplit to split its rows at random")
    try:
        if stored:
            return stored_split(data.splits, use_val)
        # The last classes of an unfinished file may not have been reached yet.
        share = 0.25 if test_size is None else test_size
        train, test = stratified_split(data.y, share, seed, data.label_names,
                                       allow_trailing_empty=allow_partial and not data.complete)
        return RowSplit(train, test)
    except SplitError as exc:
        raise SplitError(f"{data.path}: {exc}") from None


def training_weights(data: FeatureData, split: RowSplit, class_weight: str | None,
                     estimators: Mapping[str, Any], warn: bool = True) -> np.ndarray | None:
    """The sample weight of each training row (None without ``class_weight``); a warning when
    the training classes differ by more than 3:1, and a one-line refusal for a model whose
    ``fit`` takes no weights."""
    import numpy as np
    from sklearn.utils.class_weight import compute_sample_weight

    from .search.grid import takes_sample_weight

    y = data.y[split.train]
    counts = np.bincount(y, minlength=len(data.label_names))
    present = counts[counts > 0]
    if warn and class_weight is None and len(present) and present.max() > IMBALANCE * present.min():
        big, small = int(np.argmax(counts)), int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
        log.warning(f"warning: the training classes differ by more than {IMBALANCE}:1 "
                    f"({data.label_names[big]}: {counts[big]} rows, {data.label_names[small]}: "
                    f"{counts[small]}); --class-weight balanced weighs them equally")
    if class_weight is None:
        return None
    for name, estimator in estimators.items():
        if not takes_sample_weight(estimator):
            raise SettingsError(f"{name} takes no sample weights in fit: leave out {named('class_weight')}")
    return compute_sample_weight(class_weight, y)


def search_model(name: str, estimator: Any, grid: dict[str, list[Any]], data: FeatureData, split: RowSplit,
                 settings: dict[str, Any], *, verbose: int, sample_weight: np.ndarray | None = None
                 ) -> ModelResult:
    """One model's search on the training rows and its evaluation on the test rows."""
    from .search.grid import run_search
    from .search.split import SplitError

    entry, augment, tta = get_classifier(name), settings["augment"], settings["tta"]
    train, test = split.train, split.test
    log.info(
        "%d rows, %d features, %d classes; %d train%s / %d %s%s; searching %s over %s",
        len(data.y), data.X.shape[1], len(data.label_names), len(train),
        " + their mirrors" if augment else "", len(test), split.report_on,
        " (with their mirrors' probabilities)" if tta else "", name, jsonlib.dumps(grid),
    )
    # Models that are parallel inside one fit search their grid one fit at a time.
    search_jobs = settings["jobs"] if settings["engine"] == "ray" or not entry.parallel_inside else 1
    try:
        search = run_search(
            name, estimator, grid, data.X, data.y, train, test, folds=settings["folds"],
            seed=settings["seed"], jobs=search_jobs, verbose=verbose, row_space=entry.linear_l2,
            select=entry.select, label_names=data.label_names, mirror=data.mirror, augment=augment,
            tta=tta, c_path=entry.regularisation_path, val_fold=split.val_fold, sample_weight=sample_weight,
        )
    except SplitError as exc:
        raise SplitError(f"{data.path}: {exc}") from None
    return ModelResult(
        name=name, search=search, label_names=data.label_names, test_indices=test, y_test=data.y[test],
        features_path=data.path, provenance=data.provenance,
        settings={"model": name, "grid": grid, **settings},
        test_paths=None if data.paths is None else [data.paths[i] for i in test], train_indices=train,
    )


def write_outputs(result: ModelResult, destinations: Mapping[str, Path], *, several: bool) -> None:
    """Write each asked-for output of one model, in the registry's order."""
    from .outputs import OUTPUTS

    for name, destination in destinations.items():
        OUTPUTS[name].write(result, destination, several)
