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
from typing import Any

from .models import MODELS, inner_parallel
from .results import ModelResult
from .settings import check_grid_values, check_models, check_settings, parse_grid

log = logging.getLogger("classify")


def suffixed(path: str | os.PathLike, model: str, several: bool) -> Path:
    """``path``, or with several models ``<stem>.<model><suffix>`` beside it."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{model}{p.suffix}") if several else p


def train_and_evaluate(
    features: str | os.PathLike,
    models: str | Sequence[str] = ("logreg",),
    *,
    grid: str | Mapping[str, Any] | None = None,
    test_size: float = 0.25,
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
    on_result: Callable[[ModelResult], Any] | None = None,
) -> dict[str, ModelResult]:
    """Grid-search classifiers on a feature file and report each on held-out test rows.

    The same run as ``python -m classify``, with the same settings, defaults, checks and
    engines: a stratified, seeded train / test split (the same for every model); a
    cross-validated grid search on the training rows only; the best parameters refit on all
    training rows; a per-class report on the test rows.

    Parameters
    ----------
    features : path
        A feature file written by ``python -m extract``.
    models : str or sequence of str
        Registry names (:data:`classify.MODELS`): ``logreg``, ``rf``, ``xgb``, ``head`` (a
        Keras dense head, :class:`classify.head.DenseHead`), ``finetune`` (the backbone's
        layers above the file's layer and a head, :class:`classify.finetune.FineTune`); run
        in the order given, on the same split.
    grid : dict or JSON str, optional
        Parameter lists replacing the model's default grid; one model only.
    test_size : float
        Share of each class held out for the test report, strictly between 0 and 1.
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
        feature file's extraction precision. Other models refuse anything but float32.
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
    """
    names = check_models(models)
    check_settings(models=names, grid=grid, test_size=test_size, seed=seed, folds=folds, jobs=jobs,
                   engine=engine, verbose=verbose, augment=augment, tta=tta, precision=precision)
    if precision == "bf16":
        from extract.backbones import cpu_has_bf16, gpu_present

        if not cpu_has_bf16() and not gpu_present():
            log.warning("warning: this CPU has no bfloat16 instructions; bf16 will be slower than float32")
    several = len(names) > 1
    ray_engine = engine == "ray"
    estimators, grids = {}, {}
    for name in names:
        # On Ray the fits are spread one core each; locally, forests and boosting use every
        # core inside one fit instead.
        inner_jobs = (1 if ray_engine else jobs) if inner_parallel(name) else None
        estimators[name] = MODELS[name].make(seed, inner_jobs)
        if precision is not None and "precision" in estimators[name].get_params():
            estimators[name].set_params(precision=precision)
        grids[name] = MODELS[name].grid
        if grid is not None:
            grids[name] = parse_grid(grid, set(estimators[name].get_params()))
            check_grid_values(estimators[name], grids[name])

    from features import FeatureFile, schema

    from .engines import search_backend
    from .search import SplitError, run_search, stratified_split

    features_path = os.fspath(features)
    with FeatureFile(features_path, allow_partial=allow_partial) as ff:
        X = ff.load_features()
        if augment or tta:  # one line naming the file and the fix, before any search
            mirror = ff.load_mirror_features()
        else:
            mirror = None
        y, label_names, provenance = ff.labels, ff.label_names, ff.attrs
        complete = bool(ff.attrs.get(schema.COMPLETE, True)) and ff.n_rows == len(ff.features)
    for name in names:
        if MODELS[name].needs_extraction:  # refused in one line before any search starts
            from .card import EXTRACTION_KEYS
            from .finetune import check_extraction

            extraction = {key: provenance.get(key) for key in EXTRACTION_KEYS}
            estimators[name].set_params(extraction=extraction,
                                        weights=check_extraction(extraction, features_path))
    try:
        # The last classes of an unfinished file may not have been reached yet.
        train, test = stratified_split(y, test_size, seed, label_names,
                                       allow_trailing_empty=allow_partial and not complete)
    except SplitError as exc:
        raise SplitError(f"{features_path}: {exc}") from None
    plot_dir = None
    if plots is not None:
        from .plots import plot_folder

        plot_dir = plot_folder(plots)

    results: dict[str, ModelResult] = {}
    with search_backend(engine, ray_address):
        for name in names:
            spec, model_grid = MODELS[name], grids[name]
            log.info(
                "%d rows, %d features, %d classes; %d train%s / %d test%s; searching %s over %s",
                len(y), X.shape[1], len(label_names), len(train), " + their mirrors" if augment else "",
                len(test), " (with their mirrors' probabilities)" if tta else "", name,
                jsonlib.dumps(model_grid),
            )
            # Models that are parallel inside one fit search their grid one fit at a time.
            search_jobs = jobs if ray_engine or not inner_parallel(name) else 1
            try:
                search = run_search(
                    name, estimators[name], model_grid, X, y, train, test,
                    folds=folds, seed=seed, jobs=search_jobs, verbose=verbose,
                    row_space=spec.row_space, select=spec.select, label_names=label_names,
                    mirror=mirror, augment=augment, tta=tta, c_path=spec.c_path,
                )
            except SplitError as exc:
                raise SplitError(f"{features_path}: {exc}") from None
            settings = {
                "model": name, "grid": model_grid, "test_size": test_size,
                "seed": seed, "folds": folds, "jobs": jobs, "engine": engine,
                "augment": augment, "tta": tta, "precision": precision,
            }
            result = ModelResult(
                name=name, search=search, label_names=label_names, test_indices=test,
                y_test=y[test], features_path=features_path, provenance=provenance,
                settings=settings,
            )
            results[name] = result
            if on_result is not None:
                on_result(result)
            if json is not None:
                result.to_json(suffixed(json, name, several))
            if save is not None:
                log.info("saved %s to %s", name, result.save(suffixed(save, name, several)))
            if plot_dir is not None:
                from .plots import confusion_png

                confusion_png(result.y_test, result.test_predictions, label_names,
                              plot_dir / f"confusion_{name}.png",
                              title=f"{name} on {Path(features_path).name}, normalised by true class")
    if several and plot_dir is not None:
        from .plots import precision_png

        precision_png({n: r.report_dict for n, r in results.items()}, label_names,
                      plot_dir / "precision.png")
    return results

