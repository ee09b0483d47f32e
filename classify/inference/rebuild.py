"""The backbone a feature file (or a model card) was made with, rebuilt from what it recorded.

``predict``, ``export`` and ``finetune`` need the very backbone the training features came
from: same weights (SHA-256 checked), layer, pooling, image size, precision and preprocessing.
The backbone's family knows how to rebuild it (:func:`extract.backbones.rebuild_backbone`);
this module only names the file or model the errors are about.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import PredictError

#: Feature-file attributes that ``predict`` must reproduce to extract comparable features.
#: ``weights_path`` (where extraction read a weights file; absent in older files and for named
#: weights) lets ``predict`` find that file again without ``--weights``.
EXTRACTION_KEYS = (
    "backbone", "backbone_family", "weights", "weights_sha256", "weights_path", "layer", "pooling",
    "image_size", "interpolation", "preprocessing", "precision", "dtype", "with_top",
)


def extraction_backbone(ext: dict[str, Any], source: str | os.PathLike,
                        weights: str | os.PathLike | None = None, *, up_to: str | None = None) -> Any:
    """The backbone that extraction settings ``ext`` (a feature file's attributes, or a model
    card's ``extraction``) describe, loaded with the same weights (SHA-256 checked), layer,
    pooling, image size, precision and preprocessing; ``weights`` (a file) replaces where the
    weights are looked for. ``source`` names the errors (:class:`PredictError`, one line).

    With ``up_to``, the backbone is built up to that layer with average pooling instead (for
    the layers above the stored one, see :mod:`classify.classifiers.finetune`).

    Examples
    --------
    >>> from features import FeatureFile
    >>> with FeatureFile("f17.hdf5") as ff:  # doctest: +SKIP
    ...     loaded = extraction_backbone(ff.attrs, "f17.hdf5")
    """
    from extract.backbones import WeightsError, rebuild_backbone

    changes = {} if up_to is None else {"layers": [up_to], "pooling": "avg"}
    try:
        return rebuild_backbone(ext, None if weights is None else os.fspath(weights), **changes)
    except (WeightsError, ValueError) as exc:  # ValueError: settings, or another backbone's weights
        raise PredictError(f"{source}: {exc}") from None
