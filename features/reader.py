"""Reading and validating a feature file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import checksums, digests, schema
from .checksums import metadata_damage, open_readable, plain_attr, unreadable
from .errors import FeatureFileError


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
        Provenance attributes as plain Python values (``checksums`` says whether the file has
        them; the digest of the attributes themselves is left out).
    """

    def __init__(self, path: str | os.PathLike, *, allow_partial: bool = False) -> None:
        self.path = Path(path)
        self._file = open_readable(self.path)
        try:
            self._validate(allow_partial)
        except FeatureFileError:
            self._file.close()
            raise
        except checksums.H5_ERRORS as exc:
            error = self._damaged(exc)
            self._file.close()
            raise error from None

    def _validate(self, allow_partial: bool) -> None:
        f, name = self._file, str(self.path)
        missing = [key for key in schema.REQUIRED if key not in f]
        if missing:
            raise FeatureFileError(
                f"{name}: not a feature file, missing {', '.join(missing)} "
                f"(a feature file has {', '.join(schema.REQUIRED)})"
            )
        # Less the digest of the others, which differs wherever a time stamp does.
        self.attrs: dict[str, Any] = {k: plain_attr(v) for k, v in f.attrs.items()
                                      if k != checksums.METADATA_ATTR}
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
        self._read_rows(n)  # an HDF5 error here is named by __init__, as _damaged says
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
        # Last, so that a file that is no feature file at all is named as such first.
        checksums.check_metadata(f, name)
        string_damage = self._string_damage()
        if string_damage:
            raise FeatureFileError(checksums.damage_message(name, string_damage, self.n_rows))
        if not checksums.sources_checksummed(f, self.path):
            checksums.warn_unverified(name)

    def _read_rows(self, n: int) -> None:
        """Read and check the committed rows' labels, paths and splits."""
        f, name = self._file, str(self.path)
        self.labels = f[schema.LABELS][: self.n_rows].astype(np.int32)
        if self.n_rows and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise FeatureFileError(
                f"{name}: labels must be indices into the {len(self.label_names)} label_names"
            )
        self.paths = decode_strings(f[schema.PATHS][: self.n_rows]) if schema.PATHS in f else None
        if self.paths is not None and len(self.paths) != self.n_rows:
            raise FeatureFileError(f"{name}: {len(f[schema.PATHS])} paths for {n} rows")
        self.splits = self._read_splits(n)

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
            wrong = f"split {bad!r} is not one of {', '.join(schema.SPLIT_NAMES)}"
            # A damaged value is named by its digest (its rows re-extracted, the rest kept);
            # only an intact one that is no split name means the file was made wrong.
            damage = self._string_damage()
            if damage:
                how = f"{wrong}, and their checksums do not match"
                raise FeatureFileError(checksums.damage_message(name, damage, self.n_rows, how))
            raise FeatureFileError(f"{name}: {wrong}; extract it again with --overwrite")
        return splits

    def _committed_sources(self) -> Iterator[tuple[Path, int, int]]:
        """The files holding the committed rows, as :func:`checksums.row_sources`, each one's
        rows cut to the committed ones."""
        for source, offset, rows in checksums.row_sources(self._file, self.path):
            rows = min(rows, self.n_rows - offset)
            if rows <= 0:
                return
            yield source, offset, rows

    def _string_damage(self) -> list[tuple[int, int]]:
        """Committed rows whose ``paths`` or ``splits`` do not match their block digests."""
        bad = []
        for source, offset, rows in self._committed_sources():
            names = (schema.PATHS, schema.SPLITS)
            if source == self.path:  # the finished file itself: already open
                found = [r for key in names if key in self._file
                         for r in checksums.bad_string_blocks(self._file[key], rows)]
            else:
                found = checksums.source_damage(source, rows, names)
            bad += [(offset + a, offset + b) for a, b in found]
        return checksums.merge_ranges(bad)

    def _damaged(self, exc: BaseException) -> FeatureFileError:
        """The error of a read that failed, as ``extract --verify`` would name it: damaged
        metadata (the file must be extracted again), else the damaged rows when a
        block-by-block check names them (the extract command re-extracts them)."""
        name = str(self.path)
        try:
            checksums.check_metadata(self._file, name)
            sources = checksums.row_sources(self._file, self.path)
        except FeatureFileError as error:
            return error
        except checksums.H5_ERRORS:
            return FeatureFileError(metadata_damage(name, exc))
        n = getattr(self, "n_rows", sum(rows for _, _, rows in sources))
        found = [(offset + a, offset + b) for source, offset, rows in sources
                 for a, b in checksums.source_damage(source, rows)]
        found = [(a, min(b, n)) for a, b in checksums.merge_ranges(found) if a < n]
        if found:
            return FeatureFileError(checksums.damage_message(name, found, n))
        # Nothing damaged found: the failure may not be the file's (an I/O error, a full
        # cache), so it is not told to delete it.
        return FeatureFileError(unreadable(name, exc))

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
        """The ``features`` dataset itself, for its shape and for reading slices without loading
        it all; a finished file's slices read from it are not checked against their digests
        (:meth:`load_features` and :func:`features.digests.read_window` check them)."""
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
        ds, name = self._file[key], str(self.path)
        try:
            if digests.has_digests(ds):  # a finished file: its blocks checked as they are read
                rows, damaged = digests.read_window(ds, 0, self.n_rows, dtype)
                if damaged:
                    raise FeatureFileError(checksums.damage_message(name, checksums.merge_ranges(damaged),
                                                                    self.n_rows))
                return rows
            if digests.lost(ds, self.attrs.get(checksums.CHECKSUMS_ATTR, "")):
                raise FeatureFileError(checksums.damage_message(
                    name, [(0, self.n_rows)], self.n_rows, f"{key} lost its block digests"))
            # astype converts in HDF5 while reading, without a second full-size copy. HDF5
            # checks each chunk's Fletcher-32 as it reads it (through an index's virtual
            # datasets too); the rows of a finished file extended by this index are checked here.
            rows = ds.astype(dtype)[: self.n_rows]
            self._check_digested_sources(key)
            return rows
        except FeatureFileError:  # a ValueError too, but already the one line
            raise
        except checksums.H5_ERRORS as exc:
            raise self._damaged(exc) from None

    def _check_digested_sources(self, key: str) -> None:
        """The rows of ``key`` that an index reads from files with block digests (the finished
        file it extends), checked against them: HDF5 does not check digests it does not know."""
        if not self._file[key].is_virtual:
            return
        damaged = []
        for source, offset, rows in self._committed_sources():
            with h5py.File(source, "r") as part:
                if digests.has_digests(part[key]):
                    damaged += [(offset + a, offset + b) for a, b in digests.damaged_ranges(part[key], rows)]
        if damaged:
            raise FeatureFileError(checksums.damage_message(str(self.path), checksums.merge_ranges(damaged),
                                                            self.n_rows))

    def close(self) -> None:
        """Close the file; the arrays already read stay usable.

        Examples
        --------
        >>> ff = FeatureFile("f17.hdf5")  # doctest: +SKIP
        >>> ff.close()  # doctest: +SKIP
        """
        self._file.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

