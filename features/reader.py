"""Reading and validating a feature file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import schema


class FeatureFileError(ValueError):
    """A file that cannot be used as a feature file; the message names the file and the fault."""


def decode_strings(values: Any) -> list[str]:
    """HDF5 strings (bytes or str) as Python strings."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class FeatureFile:
    """A validated, read-only view of a feature file.

    Opening checks the file before anything is computed from it: it must be HDF5, hold
    ``features`` (2-D), ``labels`` (1-D integers) and ``label_names``, with one label per row,
    every label an index into ``label_names``, and every row committed (a run that was stopped
    leaves fewer committed rows than images). Any fault raises :class:`FeatureFileError` with
    one line naming the file.

    Parameters
    ----------
    path : str or Path
        The file to read.
    allow_partial : bool
        Accept a file whose run did not finish, using its committed rows only.

    Attributes
    ----------
    n_rows, dim : int
        Number of usable rows and length of a feature vector.
    dtype : str
        Storage type of ``features`` (``float32`` or ``float16``).
    labels : ndarray of int32, shape (n_rows,)
    label_names : list of str
    paths : list of str or None
        Image paths relative to the dataset root; None in files without them.
    splits : list of str or None
        Each row's dataset split, one of :data:`schema.SPLIT_NAMES`; None in files whose
        layout gave no splits.
    skipped : list of (path, reason)
    has_mirrors : bool
        The file holds ``mirror_features`` (extracted with ``--augment flip``).
    attrs : dict
        Provenance attributes as plain Python values.
    """

    def __init__(self, path: str | os.PathLike, *, allow_partial: bool = False) -> None:
        self.path = Path(path)
        name = str(self.path)
        if not self.path.is_file():
            raise FeatureFileError(f"{name}: no such file")
        try:
            is_hdf5 = h5py.is_hdf5(self.path)
        except OSError as exc:
            raise FeatureFileError(f"{name}: cannot be read ({exc})") from None
        if not is_hdf5:
            raise FeatureFileError(f"{name}: not an HDF5 file, so not a feature file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise FeatureFileError(
                f"{name}: HDF5 file cannot be opened, it may be truncated or corrupt ({exc})"
            ) from None
        try:
            self._validate(allow_partial)
        except FeatureFileError:
            self._file.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self._file.close()
            raise FeatureFileError(f"{name}: damaged feature file ({exc})") from None

    def _validate(self, allow_partial: bool) -> None:
        f, name = self._file, str(self.path)
        missing = [key for key in schema.REQUIRED if key not in f]
        if missing:
            raise FeatureFileError(
                f"{name}: not a feature file, missing {', '.join(missing)} "
                f"(a feature file has {', '.join(schema.REQUIRED)})"
            )
        self.attrs: dict[str, Any] = {k: plain_attr(v) for k, v in f.attrs.items()}
        features, labels = f[schema.FEATURES], f[schema.LABELS]
        if features.ndim != 2:
            raise FeatureFileError(f"{name}: features must be 2-D (rows, dim), found shape {features.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise FeatureFileError(
                f"{name}: labels must be 1-D integers, found {labels.dtype} {labels.shape}"
            )
        if len(features) != len(labels):
            raise FeatureFileError(
                f"{name}: {len(features)} feature rows but {len(labels)} labels"
            )
        self._check_parts(name)
        n = len(labels)
        committed = self.attrs.get(schema.ROWS_COMMITTED, n)
        complete = self.attrs.get(schema.COMPLETE, True)
        if committed > n:
            raise FeatureFileError(f"{name}: says {committed} rows are committed but holds {n}")
        if (committed < n or not complete) and not allow_partial:
            raise FeatureFileError(
                f"{name}: extraction did not finish ({committed} rows committed); run the same "
                "extract command again to complete it, or pass --allow-partial to use those rows"
            )
        self.n_rows = int(committed)
        self.dim = int(features.shape[1])
        self.dtype = str(features.dtype)
        self.label_names = decode_strings(f[schema.LABEL_NAMES][()])
        self.labels = labels[: self.n_rows].astype(np.int32)
        if self.n_rows and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise FeatureFileError(
                f"{name}: labels must be indices into the {len(self.label_names)} label_names"
            )
        self.paths = decode_strings(f[schema.PATHS][: self.n_rows]) if schema.PATHS in f else None
        if self.paths is not None and len(self.paths) != self.n_rows:
            raise FeatureFileError(f"{name}: {len(f[schema.PATHS])} paths for {n} rows")
        self.splits = self._read_splits(n)
        self.has_mirrors = schema.MIRROR_FEATURES in f
        augment = self.attrs.get("augment", schema.ATTR_DEFAULTS["augment"])
        if self.has_mirrors != (augment == "flip"):
            raise FeatureFileError(f"{name}: its augment attribute is {augment!r} but it "
                                   f"{'holds' if self.has_mirrors else 'lacks'} mirror_features; "
                                   "extract it again with --overwrite")
        if self.has_mirrors and f[schema.MIRROR_FEATURES].shape != features.shape:
            raise FeatureFileError(f"{name}: mirror_features has shape "
                                   f"{f[schema.MIRROR_FEATURES].shape}, features {features.shape}; "
                                   "extract it again with --overwrite")
        self.skipped = (
            [tuple(decode_strings(row)) for row in f[schema.SKIPPED][()]] if schema.SKIPPED in f else []
        )

    def _read_splits(self, n: int) -> list[str] | None:
        """The committed rows' splits, checked: one per row of the file's ``n``, each a split name."""
        ds, name = self._file.get(schema.SPLITS), str(self.path)
        if ds is None:
            return None
        if ds.ndim != 1:
            raise FeatureFileError(f"{name}: splits must be 1-D strings, found shape {ds.shape}")
        if len(ds) != n:
            raise FeatureFileError(f"{name}: {len(ds)} splits for {n} rows")
        splits = decode_strings(ds[: self.n_rows])
        bad = next((v for v in splits if v not in schema.SPLIT_NAMES), None)
        if bad is not None:
            raise FeatureFileError(
                f"{name}: split {bad!r} is not one of {', '.join(schema.SPLIT_NAMES)}; "
                "extract it again with --overwrite"
            )
        return splits

    def _check_parts(self, name: str) -> None:
        """An unfinished file (or a Ray engine's unmerged one) reads its rows from part files;
        all of them must be there.

        HDF5 would read the rows of a missing part as fill values, silently.
        """
        folder = self.path.parent
        for key in (schema.FEATURES, schema.LABELS, schema.PATHS, schema.MIRROR_FEATURES, schema.SPLITS):
            ds = self._file.get(key)
            if ds is None or not ds.is_virtual:
                continue
            for source in ds.virtual_sources():
                part = Path(source.file_name)
                if not (part if part.is_absolute() else folder / part).is_file():
                    if self._file.attrs.get(schema.COMPLETE, False):  # a Ray engine's index
                        raise FeatureFileError(
                            f"{name}: its rows are in {source.file_name}, which is missing; keep "
                            "the .parts folder beside the file (or extract with --merge)"
                        )
                    raise FeatureFileError(
                        f"{name}: unfinished file whose part {source.file_name} is missing; "
                        "run the extract command again with --overwrite to start over"
                    )

    @property
    def features(self) -> h5py.Dataset:
        """The ``features`` dataset itself, for reading slices without loading it all."""
        return self._file[schema.FEATURES]

    def load_features(self, dtype: str = "float32") -> np.ndarray:
        """All committed rows as one in-memory array of ``dtype``."""
        return self._load(schema.FEATURES, dtype)

    def load_mirror_features(self, dtype: str = "float32") -> np.ndarray:
        """The features of every committed row's image mirrored left to right, row for row as
        :meth:`load_features`; :class:`FeatureFileError` for a file without them.

        Examples
        --------
        >>> with FeatureFile("f17.hdf5") as ff:  # extracted with --augment flip  # doctest: +SKIP
        ...     X, X_mirrored = ff.load_features(), ff.load_mirror_features()
        """
        if not self.has_mirrors:
            raise FeatureFileError(
                f"{self.path}: holds no mirrored features; extract it with --augment flip "
                "(and --overwrite) to store them"
            )
        return self._load(schema.MIRROR_FEATURES, dtype)

    def _load(self, key: str, dtype: str) -> np.ndarray:
        if self.n_rows == 0:
            return np.empty((0, self.dim), dtype=dtype)
        # astype converts in HDF5 while reading, without a second full-size copy.
        return self._file[key].astype(dtype)[: self.n_rows]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plain_attr(value: Any) -> Any:
    """HDF5 attribute values as plain Python ones (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [plain_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
