"""Names, types and version of the featurebank HDF5 file format.

One file holds the features of one dataset extracted by one model::

    features      float32 or float16 (N, D), digests per block  one row per image
    labels        int32 (N,)                                    index into label_names
    label_names   UTF-8 strings (C,)                            sorted class folder names
    paths         UTF-8 strings (N,)                            image path relative to the dataset root
    skipped       UTF-8 strings (K, 2)                          [path, reason] of images not decoded
    mirror_features  like features (N, D), only with augment "flip"   row i: image i mirrored left-right
    splits        UTF-8 strings (N,), only when the layout gives splits   row i's split: train, val or test

and provenance in the file's attributes (see :data:`PROVENANCE_ATTRS`). The first three
names are the ones the published feature-extraction recipe uses; files that hold only those
three are read too.

While an extraction runs (or after it was killed), ``features``, ``labels``, ``paths`` (and
``mirror_features``, ``splits``) are virtual datasets over part files in ``<file>.parts/`` and
``complete`` is False; a finished file is self-contained.
"""

from __future__ import annotations

FORMAT_VERSION = 1

FEATURES = "features"
LABELS = "labels"
LABEL_NAMES = "label_names"
PATHS = "paths"
SKIPPED = "skipped"
#: Features of each row's image mirrored left to right (``extract --augment flip``): row ``i``
#: belongs to row ``i`` of ``features``, same shape and type.
MIRROR_FEATURES = "mirror_features"
#: Dataset split of each row's image, one of :data:`SPLIT_NAMES`; only in files whose dataset
#: layout gave splits. A file without it gives no split, which is not the same as "train".
SPLITS = "splits"
#: The values ``splits`` may hold.
SPLIT_NAMES = ("train", "val", "test")

#: Datasets every feature file must have.
REQUIRED = (FEATURES, LABELS, LABEL_NAMES)

#: ``augment`` attribute values: what a file stores besides each image's own features. "flip"
#: adds ``mirror_features``. Files written before the attribute existed are "none".
AUGMENTS = ("none", "flip")

#: Storage types a user may choose for ``features``.
FEATURE_DTYPES = ("float32", "float16")
LABEL_DTYPE = "int32"

#: Attribute that says how many rows are committed: rows past it are not valid yet.
ROWS_COMMITTED = "rows_committed"
#: Attribute set to True only when the run that wrote the file finished.
COMPLETE = "complete"
#: Attribute of an unfinished file only: JSON list of the part files its virtual datasets
#: read, in row order (see :mod:`features.writer`).
SEGMENTS = "segments"

#: Attributes written by ``extract``; each one is a plain string, number or bool.
PROVENANCE_ATTRS = (
    "format_version",
    "featurebank_version",
    "created",
    "dataset",
    "dataset_root",
    "excluded_classes",
    "backbone",
    "backbone_family",
    "layer",
    "weights",
    "weights_sha256",
    "weights_path",
    "with_top",
    "pooling",
    "image_size",
    "interpolation",
    "preprocessing",
    "precision",
    "dtype",
    "augment",
    "keras_version",
    "keras_backend",
    "tensorflow_version",
    ROWS_COMMITTED,
    COMPLETE,
)

#: Attributes whose values decide the feature values: two files (or two parts of one file)
#: can only be compared or merged when all of these agree.
FEATURE_DEFINING_ATTRS = (
    "backbone",
    "layer",
    "weights_sha256",
    "pooling",
    "image_size",
    "interpolation",
    "preprocessing",
    "precision",
    "dtype",
    # Not a feature value, but which rows a file holds: a file with mirrors is not extended
    # without them, nor the other way round.
    "augment",
)

#: Values of feature-deciding attributes in files written before the attribute existed.
ATTR_DEFAULTS = {"precision": "float32", "augment": "none"}

#: Target size of one ``features`` chunk of a part file, and of one digest block of a finished
#: file: whole rows, about 1 MiB, so that a slice of rows touches few of them and damage costs
#: few rows to re-extract.
CHUNK_BYTES = 1 << 20
