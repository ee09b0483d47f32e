"""The checks of stage 2's settings: the one place they are made.

The command line's parser only turns text into numbers; :func:`classify.train_and_evaluate`
calls :func:`check_settings`, so a notebook and ``python -m classify`` refuse the same settings
with the same one-line :class:`~classify.errors.SettingsError`.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SettingsError, first_line, named
from .models import MODELS

#: ``engine=`` choices: this machine's cores, or a Ray cluster.
ENGINES = ("local", "ray")

#: The seeds NumPy's and scikit-learn's random states accept.
MAX_SEED = 2**32 - 1


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_models(models: str | Sequence[str]) -> list[str]:
    """The model names, in the order given and once each; a single name is accepted too."""
    names = [models] if isinstance(models, str) else list(models)
    if not names:
        raise SettingsError(f"{named('model')} needs at least one of {', '.join(MODELS)}")
    for name in names:
        if name not in MODELS:
            raise SettingsError(f"unknown model (--model) {name!r}; choose from {', '.join(MODELS)}")
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


def check_settings(
    *,
    models: list[str],
    grid: str | Mapping[str, Any] | None,
    test_size: float,
    seed: int,
    folds: int,
    jobs: int,
    engine: str,
    verbose: int,
    augment: bool = False,
    tta: bool = False,
    precision: str | None = None,
) -> None:
    """Raise :class:`SettingsError` for any setting :func:`classify.train_and_evaluate` cannot
    run with (the grid's parameter names are checked against the estimator when it is made)."""
    if grid is not None and len(models) > 1:
        raise SettingsError("--grid applies to one model; run the models one at a time to give each a grid")
    if not isinstance(test_size, numbers.Real) or isinstance(test_size, bool) or not 0.0 < test_size < 1.0:
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
    from .finetune import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        raise SettingsError(f"{named('precision')} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in (None, "float32"):
        for model in models:
            if "precision" not in MODELS[model].make(0, None).get_params():
                raise SettingsError(f"{named('precision')} {precision} is for the models that train "
                                    f"backbone layers (finetune); {model} trains in float32")
    for name, value in (("augment", augment), ("tta", tta)):
        if not isinstance(value, bool):
            raise SettingsError(f"{named(name)} must be True or False, got {value!r}")
    if not _whole(verbose) or verbose < 0:
        raise SettingsError(f"{named('verbose')} must be a whole number of at least 0, got {verbose!r}")
