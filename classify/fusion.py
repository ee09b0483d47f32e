"""Several feature files of the same images as one: :func:`fuse`, the rows a fused run reads.

``classify --features A.hdf5 B.hdf5`` (``train_and_evaluate([a, b])``) joins the files row by
row on the image path (each file's rows put in the first file's order), divides each file's
block by its mean row L2 norm, and concatenates the blocks: backbones whose features differ in
scale (and width) then weigh alike in one linear model. The files must hold the same images,
with the same labels, classes and stored splits; the first image that differs is named.

Each block's scale is computed on ALL rows of its file, not only the training rows: it is one
number per file that sees no label, so what a test image lends it is a sliver of its norm, and
one fused file then has one set of scales for every split, model, repeat and outer fold, which
``predict`` applies as they were recorded (in the result's provenance, JSON and model card).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ClassifyError

#: What the recorded scales were computed on (see the module's docstring for why).
SCALE_ROWS = "all"


#: The ``C`` values a linear L2 model (logreg) searches on fused rows unless ``grid`` is given.
#: Its default grid (1e-4 to 1) is for raw CNN rows, whose norms are in the tens: scaled to
#: norm 1, the same fit needs C about norm² (~10³) times larger, and the joined blocks,
#: twice the width, take weaker regularisation still (on Flowers-17, MobileNetV2 + MobileNet
#: v1, the folds' log-loss falls to C = 1e4 and is flat above; docs/fusion.md).
FUSED_C_GRID = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5]


def fused_grid(grid: dict[str, list[Any]], linear_l2: bool) -> dict[str, list[Any]]:
    """A model's default grid for fused rows: :data:`FUSED_C_GRID` for a linear L2 model whose
    default grid is over ``C`` alone, else the grid as it is.

    Examples
    --------
    >>> fused_grid({"C": [1e-4, 1.0]}, True)["C"][-1], fused_grid({"max_depth": [3]}, False)
    (100000.0, {'max_depth': [3]})
    """
    return {"C": list(FUSED_C_GRID)} if linear_l2 and set(grid) == {"C"} else grid


class FusionError(ClassifyError, ValueError):
    """Feature files that cannot be joined; one line naming the files, the image and the fix."""


@dataclass(frozen=True)
class FeatureData:
    """What a run reads of its feature file (or, fused, of its files).

    Attributes
    ----------
    path : str
        The file; for a fused run its files' paths joined by ``" + "``.
    X, y, mirror : ndarray
        Feature rows (float32), labels, mirrored rows (or None).
    label_names : list of str
    provenance : dict
        The file's attributes; fused, :func:`fused_provenance`.
    complete : bool
        Every file finished.
    splits, paths : list of str, optional
        Each row's stored split and image path.
    """

    path: str
    X: Any
    y: Any
    mirror: Any
    label_names: list[str]
    provenance: dict[str, Any]
    complete: bool
    splits: list[str] | None = None
    paths: list[str] | None = None


def read_file(path: str, *, allow_partial: bool, mirrors: bool) -> FeatureData:
    """The features, labels (and with ``mirrors`` the mirrored features) of the file at ``path``."""
    from features import FeatureFile, schema

    with FeatureFile(path, allow_partial=allow_partial) as ff:
        X = ff.load_features()
        mirror = ff.load_mirror_features() if mirrors else None  # one line naming the file and the fix
        complete = bool(ff.attrs.get(schema.COMPLETE, True)) and ff.n_rows == len(ff.features)
        return FeatureData(path, X, ff.labels, mirror, ff.label_names, ff.attrs, complete, ff.splits,
                           ff.paths)


def is_fused(provenance: dict[str, Any] | None) -> bool:
    """Whether ``provenance`` (a result's, a JSON document's) is a fused run's.

    Examples
    --------
    >>> is_fused({"backbone": "vgg16"}), is_fused({"fused": [{}, {}], "scales": [1.0, 1.0]})
    (False, True)
    """
    return isinstance(provenance, dict) and "fused" in provenance


def block_scale(X: np.ndarray) -> float:
    """The factor that gives ``X``'s rows a mean L2 norm of 1: ``1 / mean(||row||)``, rounded to
    float32, so that the recorded number (a float64 in JSON) is exactly the one multiplied;
    1.0 for rows that are all zero (or none).

    Examples
    --------
    >>> block_scale(np.array([[3.0, 4.0], [0.0, 5.0]], dtype=np.float32))
    0.20000000298023224
    """
    norms = np.linalg.norm(np.asarray(X, dtype=np.float64), axis=1)
    mean = float(norms.mean()) if len(norms) else 0.0
    return float(np.float32(1.0 / mean)) if mean > 0 else 1.0


def check_same_scales(now: Sequence[float], recorded: Sequence[float], features: str) -> None:
    """Refuse (one line) fused files whose scales, computed again, are not the ones a run
    recorded: the files changed since the run, and its rows cannot be read again as it read
    them. A scale is rounded to float32, so rows summed in another order may move it by one
    float32 step at most.

    Examples
    --------
    >>> check_same_scales([0.5, 0.25], [0.5, 0.25], "a.hdf5 + b.hdf5")
    """
    step = float(np.finfo(np.float32).eps)
    if len(now) != len(recorded) or not np.allclose(now, recorded, rtol=step, atol=0.0):
        raise FusionError(f"{features}: the files changed since the run (their scales are now "
                          f"{', '.join(f'{s:.6g}' for s in now)}, the run recorded "
                          f"{', '.join(f'{float(s):.6g}' for s in recorded)}); train again on them")


def scaled(X: np.ndarray, scale: float) -> np.ndarray:
    """``X`` (float32 rows) times ``scale``: one float32 multiply per value, as training,
    ``predict`` and the tests compute it."""
    return np.asarray(X, dtype=np.float32) * np.float32(scale)


def join_order(first: FeatureData, other: FeatureData) -> np.ndarray:
    """The rows of ``other`` in ``first``'s image order; :class:`FusionError` (one line naming the
    first differing image) unless both hold the same images with the same classes and splits."""
    pair = f"{first.path} and {other.path}"
    for data in (first, other):
        if data.paths is None:
            raise FusionError(f"{data.path} records no image paths, which fusion joins rows on; "
                              "extract it again with python -m extract")
        if len(set(data.paths)) != len(data.paths):
            raise FusionError(f"{data.path} lists an image twice, so its rows cannot be joined on path; "
                              "extract it again with --overwrite")
    where = {path: i for i, path in enumerate(other.paths)}
    missing = next((p for p in first.paths if p not in where), None)
    if missing is None and len(other.paths) != len(first.paths):
        ours = set(first.paths)
        extra = next(p for p in other.paths if p not in ours)
        raise FusionError(f"{pair} hold different images: {extra} is in {other.path} only; fuse files "
                          "extracted from the same images")
    if missing is not None:
        raise FusionError(f"{pair} hold different images: {missing} is in {first.path} only; fuse files "
                          "extracted from the same images")
    order = np.array([where[p] for p in first.paths], dtype=np.int64)
    for i, j in enumerate(order):
        a, b = first.label_names[first.y[i]], other.label_names[other.y[j]]
        if a != b:
            raise FusionError(f"{pair} label {first.paths[i]} differently ({a} and {b}); fuse files of "
                              "the same dataset and labels")
    if list(first.label_names) != list(other.label_names):
        raise FusionError(f"{pair} have different classes ({', '.join(first.label_names)} and "
                          f"{', '.join(other.label_names)}); fuse files of the same dataset")
    check_same_splits(first, other, order)
    return order


def check_same_splits(first: FeatureData, other: FeatureData, order: np.ndarray) -> None:
    """Refuse (one line) files whose stored splits differ, naming the first image that differs."""
    if (first.splits is None) != (other.splits is None):
        holds, lacks = (first, other) if first.splits is not None else (other, first)
        raise FusionError(f"{holds.path} stores its dataset's split and {lacks.path} does not; fuse "
                          "files extracted with the same layout")
    if first.splits is None:
        return
    for i, j in enumerate(order):
        if first.splits[i] != other.splits[j]:
            raise FusionError(f"{first.path} and {other.path} put {first.paths[i]} in different splits "
                              f"({first.splits[i]} and {other.splits[j]}); fuse files of the same split")


def fused_provenance(parts: Sequence[FeatureData], scales: Sequence[float]) -> dict[str, Any]:
    """A fused run's provenance: each file's path, attributes, width and scale, in order.

    ``dataset_root`` (where the images are, for the HTML report) is the first file's.
    """
    return {
        "fused": [dict(part.provenance) for part in parts],
        "features": [part.path for part in parts],
        "dims": [int(part.X.shape[1]) for part in parts],
        "scales": [float(s) for s in scales],
        "scale_rows": SCALE_ROWS,
        "dataset_root": parts[0].provenance.get("dataset_root"),
    }


def fuse(parts: Sequence[FeatureData]) -> FeatureData:
    """The files' rows joined on image path (in the first file's order), each block divided by
    its file's mean row norm (:func:`block_scale`), side by side in the order given.

    Examples
    --------
    >>> a = read_file("f17_mnv2.hdf5", allow_partial=False, mirrors=False)  # doctest: +SKIP
    >>> b = read_file("f17_mnv1.hdf5", allow_partial=False, mirrors=False)  # doctest: +SKIP
    >>> data = fuse([a, b])  # doctest: +SKIP
    >>> data.X.shape, data.provenance["scales"]  # doctest: +SKIP
    ((1360, 2304), [0.0435..., 0.0462...])
    """
    first = parts[0]
    orders = [np.arange(len(first.y))] + [join_order(first, part) for part in parts[1:]]
    scales = [block_scale(part.X) for part in parts]
    X = np.concatenate([scaled(part.X[order], s) for part, order, s in zip(parts, orders, scales,
                                                                              strict=True)], axis=1)
    mirror = None
    if all(part.mirror is not None for part in parts):
        # Mirrors take their image's file's scale: they are rows of the same backbone.
        mirror = np.concatenate([scaled(part.mirror[order], s) for part, order, s in
                                 zip(parts, orders, scales, strict=True)], axis=1)
    return FeatureData(" + ".join(part.path for part in parts), X, first.y, mirror, first.label_names,
                       fused_provenance(parts, scales), all(part.complete for part in parts),
                       first.splits, first.paths)


def read_fused(paths: Sequence[str | os.PathLike], *, allow_partial: bool, mirrors: bool) -> FeatureData:
    """:func:`read_file` of each path, then :func:`fuse` (one path: that file as it is).

    Examples
    --------
    >>> read_fused(["f17_mnv2.hdf5", "f17_mnv1.hdf5"], allow_partial=False,
    ...            mirrors=False).X.shape  # doctest: +SKIP
    (1360, 2304)
    """
    names = [os.fspath(path) for path in paths]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise FusionError(f"--features names {twice} twice; fuse different files")
    parts = [read_file(name, allow_partial=allow_partial, mirrors=mirrors) for name in names]
    return parts[0] if len(parts) == 1 else fuse(parts)


def features_name(features_path: str, provenance: dict[str, Any] | None) -> str:
    """How titles name a run's features: the file's name, or the fused files' names joined.

    Examples
    --------
    >>> features_name("runs/f17.hdf5", {})
    'f17.hdf5'
    >>> features_name("a/x.hdf5 + b/y.hdf5", {"fused": [{}, {}], "features": ["a/x.hdf5", "b/y.hdf5"]})
    'x.hdf5 + y.hdf5'
    """
    if is_fused(provenance):
        return " + ".join(Path(p).name for p in provenance["features"])
    return Path(features_path).name
