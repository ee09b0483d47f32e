"""Checksums of feature files: how damage is written down, found, and named by rows.

Why three kinds (their cost measured by ``scripts/bench_checksums.py``, figures in
docs/performance.md):

* A finished file's ``features`` and ``mirror_features`` carry the xxh3 digest of every block
  of about 1 MiB of rows (:mod:`features.digests`), checked by every read of them: HDF5's
  Fletcher-32 filter would make the read of a large file several times slower.
* Part files' ``features`` and ``mirror_features``, and ``labels`` everywhere, are chunked
  with HDF5's own Fletcher-32 filter. HDF5 checks a chunk each time it reads it, also through
  the virtual datasets of an unfinished file's index (a read of the index fails on a damaged
  source chunk). Part files are written once and read once, when the file is finished.
* ``paths`` and ``splits`` are variable-length strings, which HDF5 refuses to filter ("not
  suitable for filters"); even if it took them, the filter would cover the heap references,
  not the text in the global heap. So each such dataset carries the SHA-256 of every block of
  :data:`DIGEST_ROWS` rows in its attribute :data:`DIGEST_ATTR`, written in the same atomic
  file as the rows.
* Everything else a reader uses (provenance attributes, ``label_names``, ``skipped``) is
  covered by one SHA-256 in the file attribute :data:`METADATA_ATTR`, and the HDF5 structure
  itself by the checksums of HDF5's version-2 object headers, B-trees and superblock
  (:data:`LIBVER`).

Files written before checksums existed lack :data:`CHECKSUMS_ATTR`: they are read, with one
warning that they cannot be verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import digests, schema
from .errors import H5_ERRORS, FeatureFileError

#: Rows per SHA-256 of a string dataset: small, so that damage costs few rows to re-extract.
DIGEST_ROWS = 256
#: Attribute of a string dataset: uint8 (blocks, 32), the SHA-256 of each block of rows.
DIGEST_ATTR = "sha256_blocks"
#: File attribute: SHA-256 of the other attributes, ``label_names`` and ``skipped``.
METADATA_ATTR = "metadata_sha256"
#: File attribute of a file written with checksums, naming them.
CHECKSUMS_ATTR = "checksums"
CHECKSUMS = "xxh3+fletcher32+sha256"
#: HDF5 file-format versions written: 1.10's, whose metadata carries checksums of its own (the
#: earliest format's has none, so a flipped bit there is read as another value).
LIBVER = ("v110", "latest")
#: The datasets with one entry per row.
ROW_DATASETS = (schema.FEATURES, schema.MIRROR_FEATURES, schema.LABELS, schema.PATHS, schema.SPLITS)

REPAIR = "run the same extract command again to re-extract them (the intact rows are kept)"
START_OVER = "delete it (or pass extract --overwrite) and extract it again"


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line, at most 160 characters (HDF5's run to several).

    Examples
    --------
    >>> one_line(OSError("truncated   file"))
    'truncated file'
    """
    return " ".join(str(exc).split())[:160]


def metadata_damage(name: str, exc: BaseException) -> str:
    """The one line of a file whose HDF5 structure (not its rows) cannot be read.

    Examples
    --------
    >>> metadata_damage("f.hdf5", OSError("bad object header")).startswith("f.hdf5: damaged")
    True
    """
    return f"{name}: damaged feature file, it cannot be read ({one_line(exc)}); {START_OVER}"


def unreadable(name: str, exc: BaseException) -> str:
    """The one line of a read that failed where no damage was found: the cause is not known to
    be the file, so nothing is said to delete it.

    Examples
    --------
    >>> unreadable("f.hdf5", OSError("Input/output error"))
    'f.hdf5: cannot be read (Input/output error); python -m extract --verify f.hdf5 checks it'
    """
    return f"{name}: cannot be read ({one_line(exc)}); python -m extract --verify {name} checks it"


def open_readable(path: Path) -> h5py.File:
    """``path`` opened for reading, any failure as one :class:`FeatureFileError` line."""
    name = str(path)
    if not path.is_file():
        raise FeatureFileError(f"{name}: no such file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise FeatureFileError(f"{name}: cannot be read ({exc})") from None
    if not is_hdf5:
        raise FeatureFileError(f"{name}: not an HDF5 file, so not a feature file")
    try:
        return h5py.File(path, "r")
    except H5_ERRORS as exc:
        raise FeatureFileError(
            f"{name}: HDF5 file cannot be opened, it may be truncated or corrupt ({one_line(exc)}); "
            f"{START_OVER}"
        ) from None


@contextmanager
def open_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """A feature file open for reading as a plain :class:`h5py.File`, with the reader's checks
    and one-line errors on opening.

    Examples
    --------
    >>> with open_h5("f17.hdf5") as f:  # doctest: +SKIP
    ...     f.attrs["backbone"]
    'mobilenetv2'
    """
    f = open_readable(Path(path))
    try:
        yield f
    finally:
        f.close()


class UnverifiedFileWarning(UserWarning):
    """A feature file written before checksums: damage in it cannot be detected."""


def _encoded(values: Iterable[Any]) -> bytes:
    """Values as length-prefixed UTF-8 bytes, so that no two lists encode alike."""
    parts = []
    for v in values:
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(len(b).to_bytes(4, "little") + b)
    return b"".join(parts)


def string_digests(values: Sequence[Any]) -> np.ndarray:
    """SHA-256 of every block of :data:`DIGEST_ROWS` values, as uint8 (blocks, 32).

    Examples
    --------
    >>> string_digests(["a/1.jpg"] * 300).shape
    (2, 32)
    """
    blocks = range(0, len(values), DIGEST_ROWS)
    out = np.zeros((len(blocks), 32), dtype=np.uint8)
    for i, start in enumerate(blocks):
        digest = hashlib.sha256(_encoded(values[start : start + DIGEST_ROWS])).digest()
        out[i] = np.frombuffer(digest, np.uint8)
    return out


def write_strings(f: h5py.File, name: str, values: Sequence[str], **kwargs: Any) -> h5py.Dataset:
    """Create the string dataset ``name`` of ``values`` with its block digests."""
    data = np.array(list(values), dtype=object)
    ds = f.create_dataset(name, data=data, dtype=h5py.string_dtype("utf-8"), **kwargs)
    ds.attrs[DIGEST_ATTR] = string_digests(values)
    return ds


def bad_string_blocks(ds: h5py.Dataset, rows: int) -> list[tuple[int, int]]:
    """Row ranges of ``ds`` (the first ``rows``) whose digests do not match, or cannot be read;
    none for a dataset without digests."""
    if DIGEST_ATTR not in ds.attrs:
        return []
    digests = np.asarray(ds.attrs[DIGEST_ATTR])
    bad = []
    for i, start in enumerate(range(0, rows, DIGEST_ROWS)):
        stop = min(start + DIGEST_ROWS, len(ds))
        try:
            values = list(ds[start:stop].ravel())
            ok = i < len(digests) and np.array_equal(string_digests(values)[0], digests[i])
        except H5_ERRORS:
            ok = False
        if not ok:
            bad.append((start, min(stop, rows)))
    return bad


def plain_attr(value: Any) -> Any:
    """HDF5 attribute values as plain Python ones (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [plain_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def metadata_digest(f: h5py.File) -> str:
    """SHA-256 of ``f``'s attributes (but :data:`METADATA_ATTR`), ``label_names`` and ``skipped``."""
    h = hashlib.sha256()
    for key in sorted(f.attrs):
        if key != METADATA_ATTR:
            h.update(json.dumps([key, plain_attr(f.attrs[key])], default=str).encode())
    for name in (schema.LABEL_NAMES, schema.SKIPPED):
        if name in f:
            h.update(name.encode() + _encoded(np.asarray(f[name][()]).ravel()))
    return h.hexdigest()


def seal(f: h5py.File) -> None:
    """Mark ``f`` (being written) as checksummed and record its metadata digest, last."""
    f.attrs[CHECKSUMS_ATTR] = CHECKSUMS
    f.attrs[METADATA_ATTR] = metadata_digest(f)


def has_checksums(f: h5py.File) -> bool:
    """Whether ``f`` was written with checksums (it has :data:`CHECKSUMS_ATTR`).

    Examples
    --------
    >>> with open_h5("f17.hdf5") as f:  # doctest: +SKIP
    ...     has_checksums(f)
    True
    """
    return CHECKSUMS_ATTR in f.attrs


def check_metadata(f: h5py.File, name: str) -> None:
    """Raise :class:`~features.FeatureFileError` when ``f``'s metadata digest does not match."""
    if has_checksums(f) and metadata_digest(f) != plain_attr(f.attrs.get(METADATA_ATTR)):
        raise FeatureFileError(f"{name}: damaged file, its attributes, label_names or skipped list "
                               f"do not match their checksum; {START_OVER}")


#: Files already warned about: a process says it once per file, however often it opens it.
_WARNED: set[str] = set()


def warn_unverified(name: str) -> None:
    """Warn, once per ``name`` in this process, that the file has no checksums.

    Examples
    --------
    >>> warn_unverified("old.hdf5")  # doctest: +SKIP
    UnverifiedFileWarning: old.hdf5: written without checksums, ...
    """
    if name in _WARNED:
        return
    _WARNED.add(name)
    warnings.warn(f"{name}: written without checksums, so damage in it cannot be detected; "
                  f"python -m extract --verify {name} --add-checksums adds them", UnverifiedFileWarning,
                  stacklevel=4)  # the caller of FeatureFile


def format_ranges(ranges: Sequence[tuple[int, int]], limit: int = 5) -> str:
    """``[(0, 256), (512, 513)]`` as ``"0-255, 512"`` (rows counted from 0), the first ``limit``.

    Examples
    --------
    >>> format_ranges([(0, 256), (512, 513)])
    '0-255, 512'
    """
    text = [f"{a}-{b - 1}" if b - a > 1 else f"{a}" for a, b in ranges[:limit]]
    more = f" and {len(ranges) - limit} more ranges" if len(ranges) > limit else ""
    return ", ".join(text) + more


def damage_message(name: str, ranges: Sequence[tuple[int, int]], rows: int,
                   how: str = "unreadable, or their checksums do not match") -> str:
    """The one line of a file whose rows ``ranges`` are damaged (``how``: what is wrong).

    Examples
    --------
    >>> damage_message("f.hdf5", [(0, 2)], 10).split(";")[0]
    'f.hdf5: damaged rows 0-1 (2 of 10, counted from 0: unreadable, or their checksums do not match)'
    """
    n = sum(b - a for a, b in ranges)
    return f"{name}: damaged rows {format_ranges(ranges)} ({n} of {rows}, counted from 0: {how}); {REPAIR}"


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint row ranges covering ``ranges``."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _numeric_damage(ds: h5py.Dataset, rows: int) -> list[tuple[int, int]]:
    """Row ranges of ``ds`` (the first ``rows``) that cannot be read: one read per chunk, so
    that a chunk whose Fletcher-32 fails names its own rows only."""
    step = ds.chunks[0] if ds.chunks else max(rows, 1)
    bad = []
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        try:
            ds[start:stop]
        except H5_ERRORS:
            bad.append((start, stop))
    return bad


def row_sources(f: h5py.File, path: Path) -> list[tuple[Path, int, int]]:
    """The files holding ``f``'s rows as ``(file, first row in f, rows)``: the part files of an
    index (unfinished or Ray's), else the file itself."""
    segments = f.attrs.get(schema.SEGMENTS)
    n = int(f.attrs.get(schema.ROWS_COMMITTED, len(f[schema.FEATURES])))
    if segments is None:
        return [(path, 0, n)]
    out, start = [], 0
    for s in json.loads(plain_attr(segments)):
        if s["rows"]:
            out.append((path.parent / s["file"], start, int(s["rows"])))
            start += int(s["rows"])
    return out


def source_damage(source: Path, rows: int, names: Sequence[str] = ROW_DATASETS) -> list[tuple[int, int]]:
    """Damaged row ranges of the datasets ``names`` of one file holding rows (a part or a
    finished file); a file that cannot be opened at all is damaged in all of them."""
    try:
        with h5py.File(source, "r") as g:
            bad = []
            for name in names:
                if name not in g:
                    continue
                ds = g[name]
                strings = h5py.check_string_dtype(ds.dtype) is not None
                if strings:
                    bad += bad_string_blocks(ds, rows)
                elif digests.has_digests(ds):
                    bad += digests.damaged_ranges(ds, rows)
                elif digests.lost(ds, g.attrs.get(CHECKSUMS_ATTR, "")):
                    bad.append((0, rows))
                else:
                    bad += _numeric_damage(ds, rows)
            return merge_ranges(bad)
    except H5_ERRORS:
        return [(0, rows)] if rows else []


def sources_checksummed(f: h5py.File, path: Path) -> bool:
    """Whether ``f`` and every file holding its rows were written with checksums: an old file
    extended by a new run is the first part of an index that has them, its own rows not."""
    if not has_checksums(f):
        return False
    for source, _, _ in row_sources(f, path):
        if source == path:
            continue
        try:
            with h5py.File(source, "r") as g:
                if not has_checksums(g):
                    return False
        except H5_ERRORS:
            continue  # unreadable: named as damaged rows by the checks themselves
    return True


@dataclass
class Verification:
    """What :func:`verify_file` found.

    Attributes
    ----------
    path : Path
    rows : int
        Committed rows.
    damaged : list of (start, stop)
        Damaged row ranges, counted from 0, ``stop`` excluded.
    checksummed : bool
        The file was written with checksums (else only unreadable rows can be found).
    """

    path: Path
    rows: int
    damaged: list[tuple[int, int]] = field(default_factory=list)
    checksummed: bool = True

    def line(self) -> str:
        """The summary line: no damage found, or the damaged rows and the fix."""
        if self.damaged:
            return damage_message(str(self.path), self.damaged, self.rows)
        if not self.checksummed:
            return (f"{self.path}: {self.rows} rows readable, but written without checksums, so not "
                    "verified; --add-checksums adds them")
        return f"{self.path}: {self.rows} rows verified, no damage"


def verify_file(path: str | os.PathLike) -> Verification:
    """Check every committed row of a feature file, block by block, and name the damaged ones.

    Raises
    ------
    FeatureFileError
        When the file's metadata is damaged (it cannot be opened, or its attributes,
        ``label_names`` or ``skipped`` do not match their checksum): one line with the fix.

    Examples
    --------
    >>> verify_file("f17.hdf5").line()  # doctest: +SKIP
    'f17.hdf5: 1360 rows verified, no damage'
    """
    path = Path(path)
    with open_h5(path) as f:
        try:
            check_metadata(f, str(path))
            checksummed = sources_checksummed(f, path)
            sources = row_sources(f, path)
        except FeatureFileError:
            raise
        except H5_ERRORS as exc:
            raise FeatureFileError(f"{path}: damaged file, its HDF5 metadata cannot be read ({exc}); "
                                   f"{START_OVER}") from None
    for source, offset, rows in sources:  # moved or deleted, not damaged: no row to re-extract
        if not source.is_file():
            raise FeatureFileError(f"{path}: its rows {offset}-{offset + rows - 1} are in {source}, which "
                                   "is missing; put its .parts folder back beside it, or pass extract "
                                   "--overwrite to start over")
    damaged = [(offset + a, offset + b) for source, offset, rows in sources
               for a, b in source_damage(source, rows)]
    total = sum(rows for _, _, rows in sources)
    return Verification(path, total, merge_ranges(damaged), checksummed)

