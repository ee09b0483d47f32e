"""Buffered, chunked writer of a feature file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import schema

_STR = h5py.string_dtype("utf-8")


def chunk_rows(dim: int, dtype: str) -> int:
    """Rows per ``features`` chunk: whole rows adding up to about :data:`schema.CHUNK_BYTES`."""
    row_bytes = dim * np.dtype(dtype).itemsize
    return max(1, schema.CHUNK_BYTES // row_bytes)


class FeatureWriter:
    """Write rows of features, labels and paths to one HDF5 file, a buffer at a time.

    Rows are kept in memory and written every ``buffer_size`` rows (and on :meth:`close`),
    so HDF5 sees few large writes. After each write the attribute ``rows_committed`` says how
    many rows are valid and the file is flushed to disk; ``complete`` becomes True only when
    :meth:`close` is called with ``complete=True``.

    Parameters
    ----------
    path : str or Path
        Output file. It is created, replacing any file of that name.
    dim : int
        Length of one feature vector.
    label_names : sequence of str
        Class names; a row's label is an index into them.
    attrs : mapping
        Provenance attributes written to the file (see :data:`schema.PROVENANCE_ATTRS`).
    dtype : {"float32", "float16"}
        Storage type of ``features``; rows are converted on write.
    buffer_size : int
        Rows kept in memory between writes.

    Examples
    --------
    >>> with FeatureWriter("f.hdf5", dim=4, label_names=["a", "b"], attrs={}) as w:
    ...     w.add(np.ones((2, 4)), [0, 1], ["a/1.jpg", "b/2.jpg"])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dim: int,
        label_names: Sequence[str],
        attrs: Mapping[str, Any],
        dtype: str = "float32",
        buffer_size: int = 1000,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        if dtype not in schema.FEATURE_DTYPES:
            raise ValueError(f"dtype must be one of {schema.FEATURE_DTYPES}, got {dtype!r}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.path = Path(path)
        self.dim = dim
        self.dtype = dtype
        self.buffer_size = buffer_size
        self.n_classes = len(label_names)
        self._buf_features: list[np.ndarray] = []
        self._buf_labels: list[np.ndarray] = []
        self._buf_paths: list[str] = []
        self._buffered = 0
        self.rows_written = 0
        self.n_skipped = 0

        self._file = h5py.File(self.path, "w")
        f = self._file
        f.create_dataset(
            schema.FEATURES,
            shape=(0, dim),
            maxshape=(None, dim),
            dtype=dtype,
            chunks=(chunk_rows(dim, dtype), dim),
        )
        f.create_dataset(
            schema.LABELS, shape=(0,), maxshape=(None,), dtype=schema.LABEL_DTYPE, chunks=(4096,)
        )
        f.create_dataset(schema.LABEL_NAMES, data=np.array(list(label_names), dtype=object), dtype=_STR)
        f.create_dataset(schema.PATHS, shape=(0,), maxshape=(None,), dtype=_STR, chunks=(4096,))
        skipped = f.create_dataset(
            schema.SKIPPED, shape=(0, 2), maxshape=(None, 2), dtype=_STR, chunks=(256, 2)
        )
        skipped.attrs["columns"] = ["path", "reason"]
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["format_version"] = schema.FORMAT_VERSION
        f.attrs["dtype"] = dtype
        f.attrs[schema.ROWS_COMMITTED] = 0
        f.attrs[schema.COMPLETE] = False
        f.flush()

    def add(self, features: np.ndarray, labels: Sequence[int], paths: Sequence[str]) -> None:
        """Buffer rows; write them out once ``buffer_size`` rows are waiting."""
        features = np.asarray(features)
        labels = np.asarray(labels, dtype=schema.LABEL_DTYPE)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape (n, {self.dim}), got {features.shape}")
        if not (len(features) == len(labels) == len(paths)):
            raise ValueError(
                f"features, labels and paths differ in length: "
                f"{len(features)}, {len(labels)}, {len(paths)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes})")
        # Convert now: a float16 file then buffers half the bytes.
        self._buf_features.append(features.astype(self.dtype, copy=False))
        self._buf_labels.append(labels)
        self._buf_paths.extend(str(p) for p in paths)
        self._buffered += len(labels)
        if self._buffered >= self.buffer_size:
            self.flush()

    def skip(self, path: str, reason: str) -> None:
        """Record an image that could not be used, with the reason, right away."""
        ds = self._file[schema.SKIPPED]
        ds.resize(len(ds) + 1, axis=0)
        ds[-1] = [str(path), str(reason)]
        self.n_skipped += 1

    def flush(self) -> None:
        """Write the buffered rows, then mark them committed and flush the file to disk."""
        if self._buffered:
            f = self._file
            start, stop = self.rows_written, self.rows_written + self._buffered
            for name, rows in (
                (schema.FEATURES, np.concatenate(self._buf_features)),
                (schema.LABELS, np.concatenate(self._buf_labels)),
                (schema.PATHS, np.array(self._buf_paths, dtype=object)),
            ):
                f[name].resize(stop, axis=0)
                f[name][start:stop] = rows
            self._buf_features.clear()
            self._buf_labels.clear()
            self._buf_paths.clear()
            self._buffered = 0
            self.rows_written = stop
            # Committed only after the rows themselves are in the file.
            f.attrs[schema.ROWS_COMMITTED] = stop
        self._file.flush()

    def close(self, complete: bool = True) -> None:
        """Write what is buffered and close; ``complete`` marks the run as finished."""
        if not self._file:
            return
        self.flush()
        self._file.attrs[schema.COMPLETE] = bool(complete)
        self._file.close()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A failed run keeps its committed rows but is not marked complete.
        self.close(complete=exc_type is None)
