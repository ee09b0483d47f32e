"""Block digests of a finished file's feature rows, checked while the rows are read.

A finished file's ``features`` and ``mirror_features`` are each one contiguous dataset whose
attribute :data:`DIGEST_ATTR` holds the xxh3-64 digest of every block of
:data:`BLOCK_ROWS_ATTR` whole rows (about :data:`schema.CHUNK_BYTES`). Why not HDF5's
Fletcher-32 filter, which part files keep: HDF5 reads a filtered dataset one chunk at a time
through the filter in one thread, so the check costs more than the read itself (measured by
``scripts/bench_checksums.py``; figures in docs/performance.md). Here the blocks are read
straight from the file into the output array with ``os.preadv``, which releases the GIL, by
several threads, each digesting a block while it is still in its core's cache; a thread's
digest overlaps the other threads' reads. h5py has no parallel read and HDF5 no other
checksum, hence this module; ``xxhash`` gives the digest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import xxhash

from .errors import H5_ERRORS

#: Attribute of ``features`` and ``mirror_features``: uint64 (blocks,), each block's xxh3-64.
DIGEST_ATTR = "xxh3_blocks"
#: Attribute beside it: the rows of one block (the last block may hold fewer).
BLOCK_ROWS_ATTR = "xxh3_block_rows"
#: Threads reading and digesting blocks: more than a few only contend for memory bandwidth.
READ_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Blocks per window when checking without keeping the rows (bounded memory).
_WINDOW_BLOCKS = 64


def has_digests(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` carries block digests (a finished file's feature rows)."""
    return DIGEST_ATTR in ds.attrs


def lost(ds: h5py.Dataset, sealed_with: str) -> bool:
    """Whether ``ds``, a finished file's feature rows in a file sealed with checksums named
    ``sealed_with`` (its ``checksums`` attribute), lacks the block digests it was written with.

    Examples
    --------
    >>> with h5py.File("f17.hdf5") as f:  # doctest: +SKIP
    ...     lost(f["features"], f.attrs["checksums"])
    False
    """
    return ("xxh3" in str(sealed_with) and not ds.is_virtual and ds.chunks is None
            and not has_digests(ds))


class RowDigests:
    """The block digests of rows given in order, in pieces of any length.

    Examples
    --------
    >>> rows = np.ones((5, 3), dtype=np.float32)
    >>> d = RowDigests(2, "float32")
    >>> d.add(rows[:3]); d.add(rows[3:])
    >>> d.finish().shape  # blocks of 2, 2 and 1 rows
    (3,)
    """

    def __init__(self, block_rows: int, dtype: str) -> None:
        self.block_rows = block_rows
        # The bytes as stored: little-endian, whatever the machine.
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self._hash = xxhash.xxh3_64()
        self._filled = 0
        self._digests: list[int] = []

    def add(self, rows: np.ndarray) -> None:
        """Digest the next ``rows``."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        at = 0
        while at < len(rows):
            take = min(self.block_rows - self._filled, len(rows) - at)
            self._hash.update(rows[at : at + take])
            self._filled += take
            at += take
            if self._filled == self.block_rows:
                self._close_block()

    def _close_block(self) -> None:
        self._digests.append(self._hash.intdigest())
        self._hash.reset()
        self._filled = 0

    def finish(self) -> np.ndarray:
        """Every block's digest, the last, partial one included."""
        if self._filled:
            self._close_block()
        return np.array(self._digests, dtype=np.uint64)

    def seal(self, ds: h5py.Dataset) -> None:
        """Record the digests on ``ds``, the dataset the rows were written to."""
        ds.attrs[DIGEST_ATTR] = self.finish()
        ds.attrs[BLOCK_ROWS_ATTR] = self.block_rows


def _pread_all(fd: int, view: memoryview, offset: int) -> int:
    """Read ``len(view)`` bytes at ``offset`` (fewer only at the end of the file)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


def _raw_location(ds: h5py.Dataset) -> tuple[int, int] | None:
    """``(file descriptor, byte offset)`` of a contiguous, unfiltered, little-endian dataset's
    data in a file HDF5 reads with its POSIX driver, for reading it past HDF5; None when it
    must be read through HDF5."""
    if ds.is_virtual or ds.chunks is not None or ds.dtype.str[0] != "<":
        return None
    if ds.file.driver != "sec2" or not hasattr(os, "preadv"):  # no one file descriptor to read
        return None
    offset = ds.id.get_offset()
    if offset is None:  # no storage allocated yet
        return None
    return ds.file.id.get_vfd_handle(), offset


def _layout(ds: h5py.Dataset) -> tuple[int, np.ndarray]:
    """Rows per block and the blocks' digests. Values that are no such thing (an attribute
    edited by hand: HDF5's own checksums catch flipped bits) give none, so that every block
    reads as damaged rather than failing with a traceback."""
    try:
        block_rows = int(np.asarray(ds.attrs[BLOCK_ROWS_ATTR]).ravel()[0])
        digests = np.asarray(ds.attrs[DIGEST_ATTR], dtype=np.uint64).ravel()
    except (IndexError, KeyError, OverflowError, TypeError, ValueError):
        return 1, np.empty(0, dtype=np.uint64)
    if block_rows < 1:
        return 1, np.empty(0, dtype=np.uint64)
    return block_rows, digests


def _read_blocks(ds: h5py.Dataset, first: int, out: np.ndarray, digests: np.ndarray,
                 block_rows: int) -> list[int]:
    """Fill ``out`` with the rows of blocks ``first``, ``first + 1`` ... (whole blocks, the last
    may be cut by the dataset's end), converted to ``out``'s type after the check, and return
    the blocks whose rows do not match their digest, or cannot be read."""
    stored = ds.dtype.newbyteorder("<")
    block_bytes = block_rows * ds.shape[1] * stored.itemsize
    blocks = -(-len(out) // block_rows)
    if blocks == 0:
        return []
    where = _raw_location(ds)
    direct = out.dtype == stored  # else each block goes through a scratch block of its own type
    local = threading.local()

    def intact(i: int) -> bool:
        a, b, block = i * block_rows, min((i + 1) * block_rows, len(out)), first + i
        if direct:
            rows = out[a:b]
        else:
            if not hasattr(local, "scratch"):
                local.scratch = np.empty((block_rows, ds.shape[1]), dtype=stored)
            rows = local.scratch[: b - a]
        view = memoryview(rows.reshape(-1).view(np.uint8))
        try:
            if where is not None:
                if _pread_all(where[0], view, where[1] + block * block_bytes) != len(view):
                    return False  # the file ends inside the block: truncated
            else:
                ds.read_direct(rows, np.s_[block * block_rows : block * block_rows + b - a])
        except H5_ERRORS:
            return False
        ok = block < len(digests) and xxhash.xxh3_64_intdigest(view) == int(digests[block])
        if not direct:
            out[a:b] = rows
        return ok

    # h5py holds the GIL while it reads: threads help only the reads past HDF5.
    workers = min(READ_THREADS, blocks) if where is not None else 1

    def damaged(k: int) -> list[int]:
        return [first + i for i in range(k, blocks, workers) if not intact(i)]

    if workers <= 1:
        return damaged(0)
    with ThreadPoolExecutor(workers) as pool:
        return sorted(block for found in pool.map(damaged, range(workers)) for block in found)


def read_window(ds: h5py.Dataset, start: int, stop: int, dtype: str | None = None
                ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Rows ``start:stop`` of a dataset with block digests, every block they touch read whole
    and checked, as ``dtype`` (default: as stored), and the damaged row ranges among them
    (``(start, stop)``, counted from 0; one per damaged block, as
    :func:`features.checksums.merge_ranges` joins them).

    Examples
    --------
    >>> with h5py.File("f17.hdf5") as f:  # doctest: +SKIP
    ...     X, damaged = read_window(f["features"], 0, len(f["features"]))
    >>> damaged  # doctest: +SKIP
    []
    """
    block_rows, digests = _layout(ds)
    first = start // block_rows
    end = min(len(ds), -(-stop // block_rows) * block_rows)
    out = np.empty((max(end - first * block_rows, 0), ds.shape[1]),
                   dtype=dtype or ds.dtype.newbyteorder("<"))
    bad = _read_blocks(ds, first, out, digests, block_rows)
    ranges = [(max(b * block_rows, start), min((b + 1) * block_rows, stop)) for b in bad]
    offset = first * block_rows
    return out[start - offset : stop - offset], ranges


def _windows(rows: int, block_rows: int) -> Iterator[tuple[int, int]]:
    step = block_rows * _WINDOW_BLOCKS
    for start in range(0, rows, step):
        yield start, min(start + step, rows)


def damaged_ranges(ds: h5py.Dataset, rows: int) -> list[tuple[int, int]]:
    """Row ranges of the first ``rows`` rows of a dataset with block digests that are damaged
    (one per block), read window by window (bounded memory).

    Examples
    --------
    >>> with h5py.File("f17.hdf5") as f:  # doctest: +SKIP
    ...     damaged_ranges(f["features"], 1360)
    []
    """
    block_rows = _layout(ds)[0]
    return [r for a, b in _windows(rows, block_rows) for r in read_window(ds, a, b)[1]]
