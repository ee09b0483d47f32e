"""Crash-safe, resumable writer of a feature file.

Committed data is never rewritten in place. Every ``buffer_size`` rows the writer

1. writes those rows to a new *part* file in ``<output>.parts/`` under a temporary name,
   syncs it to disk and renames it into place, then
2. rewrites ``<output>`` as a small *index*: ``features``, ``labels`` and ``paths`` (and
   ``mirror_features``, ``splits``) are HDF5 virtual datasets over all parts, beside
   ``label_names``, ``skipped`` and the provenance attributes; again written under a
   temporary name, synced and atomically renamed.

So at any moment, SIGKILL and power loss included, ``<output>`` is either the previous index
or the next one: a valid feature file whose rows are all committed, which ``python -m extract``
can extend from where it stopped. When the run finishes, the parts are copied into one
self-contained file (plain datasets, no virtual ones) that replaces the index, and the
parts folder is removed. Only the file being written can be lost, never a committed one.

A finished file can be extended the same way: it becomes the first part (by a hard link, not a
copy) and new rows follow it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import checksums, digests, schema
from .errors import FeatureFileError
from .reader import decode_strings

_STR = h5py.string_dtype("utf-8")

PARTS_SUFFIX = ".parts"
#: Chunk length of ``labels``, ``paths`` and ``splits`` in a finished file.
_ROW_CHUNK = 4096
_TMP_MARK = ".tmp-"


def _is_string(dtype: Any) -> bool:
    """Whether ``dtype`` is an HDF5 string type (which HDF5 refuses to filter)."""
    return h5py.check_string_dtype(np.dtype(dtype)) is not None


def chunk_rows(dim: int, dtype: str) -> int:
    """Rows per ``features`` chunk: whole rows adding up to about :data:`schema.CHUNK_BYTES`."""
    row_bytes = dim * np.dtype(dtype).itemsize
    return max(1, schema.CHUNK_BYTES // row_bytes)


def parts_dir(output: str | os.PathLike) -> Path:
    """The folder holding the parts of an unfinished ``output``: ``<output>.parts``."""
    output = Path(output)
    return output.with_name(output.name + PARTS_SUFFIX)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size_bound(
    rows: int, dim: int, dtype: str, strings: Sequence[str], chunked: bool = False, string_columns: int = 1
) -> int:
    """Bytes that an HDF5 file of ``rows`` feature rows and labels plus ``strings`` (paths,
    splits, names, reasons) stays under: the data (whole chunks when ``chunked``), the heap
    cost of each string, and metadata. ``string_columns`` is how many per-row string datasets
    (``paths``, ``splits``) the rows have."""
    feature_rows, other_rows = rows, rows
    if chunked:  # chunks are allocated whole: round up to them
        per_chunk = chunk_rows(dim, dtype)
        feature_rows = -(-rows // per_chunk) * per_chunk
        other_rows = -(-rows // _ROW_CHUNK) * _ROW_CHUNK
    # Per other row: a 4-byte label and a 16-byte heap reference per string column.
    data = feature_rows * dim * np.dtype(dtype).itemsize + other_rows * (4 + 16 * string_columns)
    text = sum(len(s.encode()) + 48 for s in strings)
    return int(1.05 * (data + text)) + (64 << 10)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")


def _publish(tmp: Path, path: Path) -> None:
    """Sync ``tmp`` to disk and rename it to ``path`` (atomic on POSIX file systems)."""
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)  # make the rename itself durable


# HDF5 must never meet a failed write (full disk, file-size limit): after one, h5py cannot
# close the file cleanly and the process may crash when the file object is freed (h5py issues
# 914, 1642). So the small index is built in memory and written by Python, where a failed write
# is a plain OSError, and the large files (parts, the finished output) first reserve their
# space, which fails, cleanly, before HDF5 writes anything.


@contextmanager
def _atomic_small_h5(path: Path) -> Iterator[h5py.File]:
    """Build an HDF5 file in memory, then write it to ``path`` atomically."""
    image = io.BytesIO()
    with h5py.File(image, "w", libver=checksums.LIBVER) as f:
        yield f
        checksums.seal(f)  # last: the digest covers every attribute written before
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as out:
            out.write(image.getbuffer())
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _atomic_large_h5(path: Path, nbytes: int, cache: int = 1 << 20) -> Iterator[h5py.File]:
    """Write an HDF5 file of at most ``nbytes`` under a temporary name, then rename it;
    ``cache`` bytes of chunk cache keep a chunk written in several pieces until it is whole
    (its Fletcher-32 then computed once)."""
    tmp = _tmp_name(path)
    try:
        _reserve(tmp, nbytes)
        with h5py.File(tmp, "w", libver=checksums.LIBVER, rdcc_nbytes=cache) as f:
            yield f
            checksums.seal(f)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reserve(tmp: Path, nbytes: int) -> None:
    """Fail now, with an OSError, if ``nbytes`` cannot be written (no space, size limit)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems that cannot tell
            raise
    finally:
        os.close(fd)


def split_values(splits: Sequence[str], where: str | os.PathLike) -> list[str]:
    """``splits`` as a list of str, each checked to be one of :data:`schema.SPLIT_NAMES`.

    Raises
    ------
    ValueError
        Naming ``where`` (the file) and the first value that is not a split name.
    """
    values = [str(v) for v in splits]
    bad = next((v for v in values if v not in schema.SPLIT_NAMES), None)
    if bad is not None:
        raise ValueError(f"{where}: split {bad!r} is not one of {', '.join(schema.SPLIT_NAMES)}")
    return values


def write_part_file(
    path: Path,
    features: Sequence[np.ndarray],
    labels: np.ndarray,
    paths: Sequence[str],
    *,
    dim: int,
    dtype: str,
    skipped: Sequence[tuple[str, str]] | None = None,
    attrs: Mapping[str, Any] | None = None,
    mirror: Sequence[np.ndarray] | None = None,
    splits: Sequence[str] | None = None,
) -> None:
    """Write one part file atomically: ``features`` (given as row blocks, written one by one so
    they are never copied whole), ``labels``, ``paths``, the ``mirror`` features' blocks and
    the rows' ``splits`` (one of :data:`schema.SPLIT_NAMES` per row) when given, and, for a
    shard written by a Ray actor, its ``skipped`` entries and attributes."""
    n = int(sum(len(block) for block in features))
    if splits is not None:
        splits = split_values(splits, path)
        if len(splits) != n:
            raise ValueError(f"{path}: {len(splits)} splits for {n} rows")
    strings = [*paths, *(splits or ()), *(text for entry in skipped or () for text in entry)]
    arrays = [(schema.FEATURES, features)]
    if mirror is not None:
        arrays.append((schema.MIRROR_FEATURES, mirror))
    columns = 1 if splits is None else 2
    feature_chunk = min(chunk_rows(dim, dtype), max(n, 1))
    # Chunks are allocated whole: round the rows up to them (labels' chunk is never larger).
    nbytes = _size_bound(-(-n // feature_chunk) * feature_chunk, dim * len(arrays), dtype, strings,
                         string_columns=columns)
    # Chunked with Fletcher-32: HDF5 checks each chunk on every read, through the index's
    # virtual datasets too (see features.checksums).
    with _atomic_large_h5(path, nbytes, cache=4 * feature_chunk * dim * np.dtype(dtype).itemsize) as f:
        for name, blocks in arrays:
            feats = f.create_dataset(name, shape=(n, dim), maxshape=(None, dim), dtype=dtype,
                                     chunks=(feature_chunk, dim), fletcher32=True)
            start = 0
            for block in blocks:
                feats[start : start + len(block)] = block
                start += len(block)
            if start != n:
                raise ValueError(f"{name}: {start} rows for {n} images")
        f.create_dataset(schema.LABELS, data=np.asarray(labels, dtype=schema.LABEL_DTYPE).reshape(n),
                         maxshape=(None,), chunks=(min(_ROW_CHUNK, max(n, 1)),), fletcher32=True)
        checksums.write_strings(f, schema.PATHS, list(paths))
        if splits is not None:
            checksums.write_strings(f, schema.SPLITS, splits)
        if skipped is not None:
            f.create_dataset(
                schema.SKIPPED, data=np.array(list(skipped), dtype=object).reshape(-1, 2), dtype=_STR
            )
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def segments_of(f: h5py.File) -> list[dict[str, Any]] | None:
    """The parts an index file is made of, or None for a finished, self-contained file."""
    raw = f.attrs.get(schema.SEGMENTS)
    if raw is None:
        return None
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


#: Name pattern of the part files that Ray actors write (see :func:`unpublished_shards`).
SHARD_GLOB = "shard-*.h5"


def _used_parts(output: Path) -> set[str]:
    """Names of the parts ``output``'s index lists; none when ``output`` does not exist.

    Raises
    ------
    FeatureFileError
        When ``output`` exists but cannot be read: its parts may hold committed rows.
    """
    if not output.exists():
        return set()
    try:
        with h5py.File(output, "r") as f:
            return {Path(s["file"]).name for s in segments_of(f) or []}
    except checksums.H5_ERRORS as exc:
        raise FeatureFileError(checksums.metadata_damage(str(output), exc)) from None


def unpublished_shards(output: str | os.PathLike) -> list[Path]:
    """Shards that Ray actors finished (renamed into place) but that no index lists yet: the
    driver was killed between an actor's commit and its own. They are whole files."""
    output = Path(output)
    parts = parts_dir(output)
    if not parts.is_dir():
        return []
    used = _used_parts(output)
    return sorted(p for p in parts.glob(SHARD_GLOB) if p.name not in used)


def remove_stale(output: str | os.PathLike, keep_shards: bool = False, replace: bool = False) -> None:
    """Delete what killed runs left behind: temporary files, and parts no index refers to
    (except, with ``keep_shards``, whole shards a Ray run may still adopt); with ``replace``
    (the output is about to be extracted again from scratch), every part.

    Call it only while holding the output's lock (:class:`features.lock.OutputLock`).
    """
    output = Path(output)
    for tmp in output.parent.glob(f".{output.name}{_TMP_MARK}*"):
        tmp.unlink(missing_ok=True)
    parts = parts_dir(output)
    if not parts.is_dir():
        return
    try:
        used = set() if replace else _used_parts(output)
    except FeatureFileError:
        return  # an unreadable index may still list them: the run that reads it says what to do
    if keep_shards:
        used |= {p.name for p in parts.glob(SHARD_GLOB)}
    for child in parts.iterdir():
        if child.name not in used:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    if not used:
        shutil.rmtree(parts, ignore_errors=True)


def _runs(keep: np.ndarray) -> list[tuple[int, int]]:
    """The ``(start, stop)`` runs of True in ``keep``.

    Examples
    --------
    >>> _runs(np.array([True, True, False, True]))
    [(0, 2), (3, 4)]
    """
    edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _kept_blocks(f: h5py.File, src: Path, names: Collection[str], keep: np.ndarray, block: int
                 ) -> Iterator[tuple[list[tuple[int, int]], dict[str, Any]]]:
    """For each block of ``block`` rows of the source ``f`` that keeps rows: its runs of kept
    rows (counted from the block's start) and each dataset's values, indexable by those runs.
    Rows with block digests are read by whole digest blocks and checked (a copy must not give
    damaged rows fresh digests); the others only where kept (a dropped row's chunk may be
    damaged, and HDF5's Fletcher-32 would refuse it)."""
    rows = len(keep)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        runs = _runs(keep[start:stop])
        if not runs:
            continue
        values: dict[str, Any] = {}
        for name in names:
            ds = f[name]
            if digests.has_digests(ds):
                values[name], damaged = digests.read_window(ds, start, stop)
                bad = checksums.merge_ranges((a, b) for a, b in damaged if keep[a:b].any())
                if bad:
                    raise FeatureFileError(
                        f"{src}: {name} rows {checksums.format_ranges(bad)} do not match their "
                        "checksums; run python -m extract --verify on the feature file, then the "
                        "same extract command again to re-extract them")
            else:
                values[name] = _RunsOf(ds, start)
        yield runs, values


class _RunsOf:
    """``ds[start + a : start + b]`` as ``self[a:b]``: reads only the rows asked for."""

    def __init__(self, ds: h5py.Dataset, start: int) -> None:
        self.ds, self.start = ds, start

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.ds[self.start + rows.start : self.start + rows.stop]


class FeatureWriter:
    """Write rows of features, labels and paths to one feature file, safely and resumably.

    Rows are kept in memory and committed every ``buffer_size`` rows (and on :meth:`close`) as
    described in the module docstring. After each commit, the attribute ``rows_committed``
    of ``path`` says how many rows it holds; ``complete`` becomes True only when
    :meth:`finish` (or :meth:`close` with ``complete=True``) has written the finished file.

    Parameters
    ----------
    path : str or Path
        Output file.
    dim : int
        Length of one feature vector.
    label_names : sequence of str
        Class names; a row's label is an index into them. When resuming they must start with
        the file's own names (new classes are appended, old labels keep their numbers).
    attrs : mapping
        Provenance attributes written to the file (see :data:`schema.PROVENANCE_ATTRS`).
    dtype : {"float32", "float16"}
        Storage type of ``features``; rows are converted on write.
    buffer_size : int
        Rows kept in memory between commits.
    resume : bool
        Keep the rows already in ``path`` (finished or not) and add after them. Without it an
        empty file replaces ``path`` at once.
    mirrors : bool
        Store ``mirror_features`` too (``augment`` "flip"): every :meth:`add` then gives the
        features of each image's mirror as well. A file being resumed must agree.
    splits : bool
        Store ``splits`` too (the dataset layout gives each image's split): every :meth:`add`
        then gives each row's split, one of :data:`schema.SPLIT_NAMES`. A file being resumed
        must agree.

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
        resume: bool = False,
        mirrors: bool = False,
        splits: bool = False,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        if dtype not in schema.FEATURE_DTYPES:
            raise ValueError(f"dtype must be one of {schema.FEATURE_DTYPES}, got {dtype!r}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        self.path = Path(path)
        self.parts = parts_dir(self.path)
        self.dim = dim
        self.dtype = dtype
        self.buffer_size = buffer_size
        self.label_names = [str(n) for n in label_names]
        self.n_classes = len(self.label_names)
        self.attrs = dict(attrs)
        self.mirrors = bool(mirrors)
        self.splits = bool(splits)
        # The file says what it holds: "augment" is one of the settings a resumed run must match.
        self.attrs["augment"] = "flip" if self.mirrors else "none"
        self._run = secrets.token_hex(4)  # part names never collide with an earlier run's
        self._seq = 0
        self._segments: list[dict[str, Any]] = []
        # Parts committed by add_part (Ray shards): ordered by their first image's position.
        self._movable: list[dict[str, Any]] = []
        self._part_skipped: dict[str, list[tuple[str, str]]] = {}
        self._position: Callable[[str], int] | None = None
        self._base: dict[str, Any] | None = None  # a finished file whose rows come first
        self._skipped: list[tuple[str, str]] = []
        self._buf_features: list[np.ndarray] = []
        self._buf_mirror: list[np.ndarray] = []
        self._buf_labels: list[np.ndarray] = []
        self._buf_paths: list[str] = []
        self._buf_splits: list[str] = []
        self._buf_skipped: list[tuple[str, str]] = []
        self._buffered = 0
        self._closed = False
        self._changed = False
        self.rows_written = 0  # rows committed in the file, earlier runs included
        self.n_added = 0  # rows added by this writer
        self.n_skipped = 0  # images skipped by this writer
        if resume and self.path.exists():
            self._load_existing()
        else:
            self._changed = True
            self._write_index()  # the output exists, valid and empty, from the start

    # -- state -------------------------------------------------------------------------

    def _load_existing(self) -> None:
        with h5py.File(self.path, "r") as f:
            names = decode_strings(f[schema.LABEL_NAMES][()])
            if names != self.label_names[: len(names)]:
                raise ValueError(
                    f"{self.path}: label_names must start with the file's own {names}, "
                    f"got {self.label_names}"
                )
            features = f[schema.FEATURES]
            if features.shape[1] != self.dim:
                raise ValueError(f"{self.path}: holds {features.shape[1]}-dim features, not {self.dim}")
            if features.dtype != np.dtype(self.dtype):
                raise ValueError(f"{self.path}: holds {features.dtype} features, not {self.dtype}")
            if (schema.MIRROR_FEATURES in f) != self.mirrors:
                held = "holds" if schema.MIRROR_FEATURES in f else "has no"
                raise ValueError(
                    f"{self.path}: {held} mirror_features; resume it with mirrors={not self.mirrors}"
                )
            self._check_splits_agree(schema.SPLITS in f, self.path)
            n = int(f.attrs.get(schema.ROWS_COMMITTED, len(features)))
            rows = f[schema.SKIPPED][()] if schema.SKIPPED in f else []
            self._skipped = [tuple(decode_strings(row)) for row in rows]
            segments = segments_of(f)
            complete = bool(f.attrs.get(schema.COMPLETE, False))
            if segments is None:
                self._base = {"rows": n, "source_rows": len(features)}
            else:
                self._segments = segments
        if segments and not complete:
            self._reopen_shards()
        self.rows_written = n
        self._changed = names != self.label_names or not complete

    def _check_splits_agree(self, has_splits: bool, where: str | os.PathLike) -> None:
        """Refuse rows with splits and rows without in one file: its splits would be ragged."""
        if has_splits == self.splits:
            return
        if has_splits:
            raise ValueError(f"{where}: holds splits but this writer has none; pass splits=True "
                             "(a layout that gives splits), or extract again with --overwrite")
        raise ValueError(f"{where}: has no splits but this writer has them; pass splits=False, or "
                         "extract again with --overwrite to store them")

    def _reopen_shards(self) -> None:
        """The shards at the end of an unfinished index were committed by a killed run of
        this same kind: order them again together with the ones this run adds."""
        while self._segments and "first" in self._segments[-1]:
            self._movable.insert(0, self._segments.pop())
        for s in self._movable:
            try:
                with h5py.File(self.path.parent / s["file"], "r") as f:
                    rows = f[schema.SKIPPED][()] if schema.SKIPPED in f else []
            except checksums.H5_ERRORS:
                # A damaged shard: its rows are dropped by the repair; its skipped entries,
                # unreadable, are simply tried again.
                rows = []
            self._part_skipped[s["file"]] = [tuple(decode_strings(row)) for row in rows]
        moved = {entry for entries in self._part_skipped.values() for entry in entries}
        self._skipped = [entry for entry in self._skipped if entry not in moved]

    def _adopt_base(self) -> None:
        """Make the finished file being extended the first part (hard link; copy if need be)."""
        base, self._base = self._base, None
        if not base or not base["rows"]:
            return
        self.parts.mkdir(exist_ok=True)
        dest = self.parts / f"base-{self._run}.h5"
        try:
            os.link(self.path, dest)
        except OSError:  # a file system without hard links
            tmp = dest.with_name(dest.name + _TMP_MARK)
            shutil.copyfile(self.path, tmp)
            os.replace(tmp, dest)
        self._segments.insert(0, {"file": f"{self.parts.name}/{dest.name}", **base})

    # -- adding rows -------------------------------------------------------------------

    def add(
        self, features: np.ndarray, labels: Sequence[int], paths: Sequence[str],
        mirror: np.ndarray | None = None, splits: Sequence[str] | None = None,
    ) -> None:
        """Buffer rows (and, for a writer with ``mirrors``, the features of the same images
        mirrored; for a writer with ``splits``, each row's split name); commit them once
        ``buffer_size`` rows are waiting."""
        features = np.asarray(features)
        labels = np.asarray(labels, dtype=schema.LABEL_DTYPE)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape (n, {self.dim}), got {features.shape}")
        if (mirror is not None) != self.mirrors:
            raise ValueError(f"{self.path}: mirror features are required by a writer with "
                             "mirrors=True, and only by one")
        if mirror is not None and np.shape(mirror) != features.shape:
            raise ValueError(
                f"mirror must have the shape of features {features.shape}, got {np.shape(mirror)}"
            )
        if not (len(features) == len(labels) == len(paths)):
            raise ValueError(
                f"features, labels and paths differ in length: "
                f"{len(features)}, {len(labels)}, {len(paths)}"
            )
        if (splits is not None) != self.splits:
            raise ValueError(f"{self.path}: splits are required by a writer with splits=True, "
                             "and only by one")
        if splits is not None:
            splits = split_values(splits, self.path)
            if len(splits) != len(paths):
                raise ValueError(f"{self.path}: {len(splits)} splits for {len(paths)} rows")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes})")
        # Convert now: a float16 file then buffers half the bytes.
        self._buf_features.append(features.astype(self.dtype, copy=False))
        if mirror is not None:
            self._buf_mirror.append(np.asarray(mirror).astype(self.dtype, copy=False))
        self._buf_labels.append(labels)
        self._buf_paths.extend(str(p) for p in paths)
        self._buf_splits.extend(splits or ())
        self._buffered += len(labels)
        if self._buffered >= self.buffer_size:
            self.flush()

    def skip(self, path: str, reason: str) -> None:
        """Record an image that could not be used, with the reason; committed with the rows."""
        self._buf_skipped.append((str(path), str(reason)))
        self.n_skipped += 1

    def forget_skipped(self, paths: Collection[str]) -> None:
        """Drop the skipped entries of ``paths`` (committed with the next commit): images
        recorded as unusable that are now to be extracted, such as a manifest's mended line."""
        drop = set(paths)
        if not drop:
            return
        self._skipped = [entry for entry in self._skipped if entry[0] not in drop]
        self._part_skipped = {file: [e for e in entries if e[0] not in drop]
                              for file, entries in self._part_skipped.items()}
        self._changed = True

    def flush(self) -> None:
        """Commit what is buffered: a new part, then a new index that includes it."""
        if not (self._buffered or self._buf_skipped):
            return
        self._settle_movable()  # a killed Ray run's shards come before this run's own rows
        if self._buffered:
            self._write_part()
        self._skipped.extend(self._buf_skipped)
        self._buf_skipped.clear()
        self._changed = True
        self._write_index()

    def _write_part(self) -> None:
        name = f"part-{self._run}-{self._seq:06d}.h5"
        self._seq += 1
        n = self._buffered
        self.parts.mkdir(exist_ok=True)
        write_part_file(
            self.parts / name, self._buf_features, np.concatenate(self._buf_labels),
            self._buf_paths, dim=self.dim, dtype=self.dtype,
            mirror=self._buf_mirror if self.mirrors else None,
            splits=self._buf_splits if self.splits else None,
        )
        self._segments.append({"file": f"{self.parts.name}/{name}", "rows": n, "source_rows": n})
        self._buf_features.clear()
        self._buf_mirror.clear()
        self._buf_labels.clear()
        self._buf_paths.clear()
        self._buf_splits.clear()
        self._buffered = 0
        self.n_added += n

    def add_part(
        self, file: str, rows: int, first: str, skipped: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Commit a part written by someone else (a Ray actor's shard) and publish the index.

        ``file`` is the part's name relative to the output's folder, ``rows`` its row count,
        ``first`` the path of the first image it covers (row or skipped), which orders it among
        this run's parts (see :meth:`order_parts`), and ``skipped`` the images it could not use.
        It must hold ``splits`` if and only if this writer has ``splits``.
        """
        self._check_part_splits(file)
        self._movable.append({"file": file, "rows": rows, "source_rows": rows, "first": first})
        self._part_skipped[file] = [(str(p), str(r)) for p, r in skipped]
        self.n_added += rows
        self.n_skipped += len(skipped)
        self._changed = True
        self._write_index()

    def _check_part_splits(self, file: str) -> None:
        """Refuse a part whose ``splits`` disagree with this writer's, before the index lists it."""
        try:
            with h5py.File(self.path.parent / file, "r") as f:
                has_splits = schema.SPLITS in f
        except OSError:
            # Not readable here yet (a shared file system's delay): the reader still refuses
            # its rows, whose splits would read as empty strings.
            return
        if has_splits != self.splits:
            held = "holds" if has_splits else "has no"
            fix = "give write_part_file the rows' splits" if self.splits else "write it without splits"
            raise ValueError(f"{self.path.parent / file}: {held} splits but the writer of {self.path} "
                             f"has splits={self.splits}; {fix}")

    def order_parts(self, position: Callable[[str], int]) -> None:
        """Order parts added with :meth:`add_part` by ``position(first)`` (listing position
        of their first image), whatever order they were committed in, so that their rows and
        skipped entries come in listing order, as the local engine writes them."""
        self._position = position

    def _ordered_movable(self) -> list[dict[str, Any]]:
        if self._position is None:
            return list(self._movable)
        return sorted(self._movable, key=lambda s: self._position(s["first"]))

    def _settle_movable(self) -> None:
        """Make the parts added with :meth:`add_part` ordinary segments, in their final order,
        and their skipped entries ordinary ones: nothing is ordered after them any more."""
        if self._movable:
            self._skipped = self._all_skipped()
            self._segments.extend(self._ordered_movable())
            self._movable, self._part_skipped = [], {}

    def _all_segments(self) -> list[dict[str, Any]]:
        return [*self._segments, *self._ordered_movable()]

    def _all_skipped(self) -> list[tuple[str, str]]:
        moved = [entry for s in self._ordered_movable() for entry in self._part_skipped[s["file"]]]
        return [*self._skipped, *moved]

    def _write_index(self, complete: bool = False) -> None:
        if self._base is not None:
            self._adopt_base()  # the index is about to replace the file the base rows are in
        segments = self._all_segments()
        n = sum(s["rows"] for s in segments)
        with _atomic_small_h5(self.path) as f:
            specs = [
                (schema.FEATURES, (self.dim,), self.dtype, np.nan),
                (schema.LABELS, (), schema.LABEL_DTYPE, -1),
                (schema.PATHS, (), _STR, None),
            ]
            if self.mirrors:
                specs.append((schema.MIRROR_FEATURES, (self.dim,), self.dtype, np.nan))
            if self.splits:
                specs.append((schema.SPLITS, (), _STR, None))
            for name, tail, dtype, fill in specs:
                if n == 0:
                    f.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype)
                    continue
                layout = h5py.VirtualLayout(shape=(n, *tail), dtype=dtype)
                start = 0
                for s in segments:
                    if not s["rows"]:  # a shard whose images were all skipped
                        continue
                    # Source names are relative: HDF5 resolves them against the index's folder.
                    source = h5py.VirtualSource(s["file"], name, shape=(s["source_rows"], *tail))
                    layout[start : start + s["rows"]] = source[: s["rows"]]
                    start += s["rows"]
                # Rows of a missing part read as the fill value; the reader checks for that.
                f.create_virtual_dataset(name, layout, fillvalue=fill)
            self._write_common(f, self._all_skipped())
            f.attrs[schema.ROWS_COMMITTED] = n
            f.attrs[schema.COMPLETE] = complete
            f.attrs[schema.SEGMENTS] = json.dumps(segments)
        self.rows_written = n

    def _write_common(self, f: h5py.File, skipped: list[tuple[str, str]]) -> None:
        f.create_dataset(
            schema.LABEL_NAMES, data=np.array(self.label_names, dtype=object), dtype=_STR
        )
        ds = f.create_dataset(
            schema.SKIPPED,
            data=np.array(skipped, dtype=object).reshape(-1, 2),
            dtype=_STR,
            maxshape=(None, 2),
            chunks=(256, 2),
        )
        ds.attrs["columns"] = ["path", "reason"]
        for key, value in self.attrs.items():
            f.attrs[key] = value
        f.attrs["format_version"] = schema.FORMAT_VERSION
        f.attrs["dtype"] = self.dtype

    # -- finishing ---------------------------------------------------------------------

    def finish(self, drop: Collection[str] = (), merge: bool = True,
               drop_rows: Sequence[tuple[int, int]] = (), complete: bool = True) -> int:
        """Commit the buffer and write the finished file.

        With ``merge`` (the default) the finished file is self-contained: the parts are copied
        into it and removed. Without it, the finished file stays an index of virtual datasets
        over the parts (no copy: what the Ray engine publishes unless asked to merge); it must
        then stay beside its ``.parts`` folder. ``drop`` names paths whose rows (and skipped
        entries) are left out: images that are no longer in the dataset; ``drop_rows`` gives
        row ranges ``(start, stop)`` left out by position (damaged rows, whose paths may not be
        readable); dropping rows always merges. ``complete=False`` writes a self-contained
        file that a later run still continues (the repair of an unfinished file). Returns how
        many rows and skipped entries were dropped.
        """
        if self._closed:
            return 0
        self.flush()
        drop = set(drop)
        removed = 0
        if not merge and not drop and not drop_rows and self._base is None:
            self._write_index(complete=True)
        elif self._changed or drop or drop_rows or self._segments or self._movable:
            removed = self._consolidate(drop, drop_rows, complete)
        self._closed = True
        return removed

    def _kept_rows(self, sources: list[tuple[Path, int]], drop: set[str],
                   drop_rows: Sequence[tuple[int, int]]) -> tuple[list[np.ndarray], list[str]]:
        """For each source, which rows stay (not in ``drop_rows``, path not in ``drop``), and
        the kept paths. Only the kept rows' paths are read: a dropped row's may be damaged."""
        keeps, kept_paths, offset = [], [], 0
        for src, rows in sources:
            keep = np.ones(rows, dtype=bool)
            for a, b in drop_rows:
                keep[max(a - offset, 0) : max(min(b - offset, rows), 0)] = False
            offset += rows
            keeps.append(keep)
            if not keep.any():  # a source with no row kept may not even open (damaged, truncated)
                continue
            with h5py.File(src, "r") as f:
                for a, b in _runs(keep):
                    paths = decode_strings(f[schema.PATHS][a:b])
                    keep[a:b] = [p not in drop for p in paths]
                    kept_paths.extend(p for p in paths if p not in drop)
        return keeps, kept_paths

    def _consolidate(self, drop: set[str], drop_rows: Sequence[tuple[int, int]] = (),
                     complete: bool = True) -> int:
        self._settle_movable()
        if self._base is not None:  # a finished file that only gains skipped entries or loses rows
            sources = [(self.path, self._base["rows"])]
        else:
            sources = [(self.path.parent / s["file"], s["rows"]) for s in self._segments]
        keeps, kept_paths = self._kept_rows(sources, drop, drop_rows)
        strings = [*self.label_names, *(text for entry in self._skipped for text in entry), *kept_paths]
        total = len(kept_paths)
        if self.splits:  # no split name is longer than the longest: no need to read them
            strings.extend([max(schema.SPLIT_NAMES, key=len)] * total)
        n_features = 2 if self.mirrors else 1
        # chunked: labels and strings are chunked (the features no longer, an over-estimate).
        nbytes = n_features * _size_bound(total, self.dim, self.dtype, strings, chunked=True,
                                          string_columns=2 if self.splits else 1)
        with _atomic_large_h5(self.path, nbytes) as out:
            columns = self._finished_datasets(out, total)
            self._copy_kept_rows(sources, keeps, columns)
            skipped = [s for s in self._skipped if s[0] not in drop]
            self._write_common(out, skipped)
            out.attrs[schema.ROWS_COMMITTED] = total
            out.attrs[schema.COMPLETE] = complete
        removed = sum(len(k) - int(k.sum()) for k in keeps) + len(self._skipped) - len(skipped)
        self._skipped = skipped
        self.rows_written = total
        self._base = None
        self._segments = []
        self._remove_parts([src for src, _ in sources if src != self.path])
        return removed

    def _remove_parts(self, listed: Sequence[Path]) -> None:
        """Delete the parts just copied; the folder too unless it holds shards no index lists
        (a killed Ray run's, which its next run adopts: a repair must not lose them)."""
        for part in listed:
            part.unlink(missing_ok=True)
        if not self.parts.is_dir():
            return
        if not any(self.parts.glob(SHARD_GLOB)):
            shutil.rmtree(self.parts, ignore_errors=True)

    def _finished_datasets(self, out: h5py.File, total: int) -> dict[str, h5py.Dataset]:
        """Create the per-row datasets of a finished file of ``total`` rows, by name: the
        feature rows contiguous (their block digests, and the strings', written by
        :meth:`_copy_kept_rows`), ``labels`` with Fletcher-32 (see features.checksums)."""
        features = [schema.FEATURES, schema.MIRROR_FEATURES] if self.mirrors else [schema.FEATURES]
        columns = {name: out.create_dataset(name, shape=(total, self.dim), dtype=self.dtype)
                   for name in features}
        columns[schema.LABELS] = out.create_dataset(
            schema.LABELS, shape=(total,), maxshape=(None,), dtype=schema.LABEL_DTYPE,
            chunks=(_ROW_CHUNK,), fletcher32=True)
        for name in [schema.PATHS, schema.SPLITS] if self.splits else [schema.PATHS]:
            columns[name] = out.create_dataset(name, shape=(total,), maxshape=(None,), dtype=_STR,
                                               chunks=(_ROW_CHUNK,))
        return columns

    def _copy_kept_rows(
        self, sources: list[tuple[Path, int]], keeps: list[np.ndarray], columns: dict[str, h5py.Dataset]
    ) -> None:
        """Copy the rows of ``sources`` that ``keeps`` keeps into ``columns``, in order, block by
        block of whole chunks (bounded memory), reading only kept rows (but whole digest
        blocks of a source with them, checked); then record the digests of what was written."""
        per_block = chunk_rows(self.dim, self.dtype)
        strings = {name: [] for name, ds in columns.items() if _is_string(ds.dtype)}
        rows_digests = {name: digests.RowDigests(per_block, self.dtype)
                        for name in (schema.FEATURES, schema.MIRROR_FEATURES) if name in columns}
        at = 0
        for (src, _), keep in zip(sources, keeps, strict=True):
            if not keep.any():  # nothing to copy: the source may not even open
                continue
            with h5py.File(src, "r") as f:
                self._check_source_strings(f, src, strings, keep)
                for runs, values in _kept_blocks(f, src, columns, keep, per_block * 16):
                    for a, b in runs:
                        for name, ds in columns.items():
                            kept = values[name][a:b]
                            ds[at : at + b - a] = kept
                            if name in strings:
                                strings[name].extend(kept)
                            if name in rows_digests:
                                rows_digests[name].add(kept)
                        at += b - a
        for name, values in strings.items():
            columns[name].attrs[checksums.DIGEST_ATTR] = checksums.string_digests(values)
        for name, digester in rows_digests.items():
            digester.seal(columns[name])

    @staticmethod
    def _check_source_strings(f: h5py.File, src: Path, names: Collection[str], keep: np.ndarray) -> None:
        """Refuse to copy kept string rows whose source digests do not match: the copy would
        give damaged text fresh, matching digests."""
        for name in names:
            if name not in f:
                continue
            for a, b in checksums.bad_string_blocks(f[name], len(keep)):
                if keep[a:b].any():
                    raise FeatureFileError(
                        f"{src}: {name} rows {a}-{b - 1} do not match their checksums; run "
                        "python -m extract --verify on the feature file, then the same extract "
                        "command again to re-extract them")

    def close(self, complete: bool = True) -> None:
        """Commit what is buffered; with ``complete``, also write the finished file."""
        if self._closed:
            return
        if complete:
            self.finish()
        else:
            self.flush()
            self._closed = True

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close(complete=True)
            return
        # A failed or interrupted run keeps every committed row. Try to commit the buffer too
        # (Ctrl-C loses nothing), but never hide the original error behind a second one.
        try:
            self.close(complete=False)
        except Exception:
            self._closed = True


def rewrite_file(path: str | os.PathLike, drop_rows: Sequence[tuple[int, int]] = ()) -> int:
    """Rewrite the feature file ``path`` as one self-contained file with checksums, atomically
    (the writer's own machinery), leaving out the rows ``drop_rows`` (``(start, stop)``,
    counted from 0: damaged rows). An unfinished file stays unfinished, so that the same
    extract command continues it. Returns how many rows were dropped.

    Call it only while holding the file's lock (:class:`features.lock.OutputLock`).

    Examples
    --------
    >>> rewrite_file("old.hdf5")  # an old file gains its checksums  # doctest: +SKIP
    0
    """
    internal = {schema.ROWS_COMMITTED, schema.COMPLETE, schema.SEGMENTS, checksums.CHECKSUMS_ATTR,
                checksums.METADATA_ATTR}
    with h5py.File(path, "r") as f:
        features = f[schema.FEATURES]
        dim, dtype = int(features.shape[1]), str(features.dtype)
        names = decode_strings(f[schema.LABEL_NAMES][()])
        attrs = {k: v for k, v in f.attrs.items() if k not in internal}
        mirrors, splits = schema.MIRROR_FEATURES in f, schema.SPLITS in f
        complete = bool(f.attrs.get(schema.COMPLETE, True))
    writer = FeatureWriter(path, dim=dim, label_names=names, attrs=attrs, dtype=dtype, resume=True,
                           mirrors=mirrors, splits=splits)
    writer._changed = True  # rewritten even when nothing else changes: to add the checksums
    return writer.finish(drop_rows=drop_rows, complete=complete)


def repair(path: str | os.PathLike) -> checksums.Verification:
    """Verify ``path`` and, where rows are damaged, rewrite it without them (atomically), so
    that the same extract command extracts those images again. Returns what was found.

    Call it only while holding the file's lock (:class:`features.lock.OutputLock`).

    Raises
    ------
    FeatureFileError
        When the file's metadata is damaged: it cannot be repaired, only extracted again.

    Examples
    --------
    >>> repair("f17.hdf5").damaged  # doctest: +SKIP
    [(256, 512)]
    """
    found = checksums.verify_file(path)
    if found.damaged:
        rewrite_file(path, found.damaged)
    return found
