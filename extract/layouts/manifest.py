"""The ``manifest`` layout: a CSV file of image paths and labels (and, optionally, splits).

The file has a header row naming a ``path`` and a ``label`` column, and optionally a ``split``
one (any order, any case; other columns are ignored). Paths are relative to the folder the
file sits in, or absolute. Rows that cannot be used are not raised: each lands in
:attr:`extract.listing.ImageListing.rejected` with its line number, for the caller to record
or refuse.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..listing import IMAGE_EXTENSIONS, SPLIT_ALIASES, SPLITS, ImageListing, canonical_split, ordered_listing

#: The columns a manifest must have, and the one it may have.
REQUIRED_COLUMNS = ("path", "label")
SPLIT_COLUMN = "split"

#: The split names a row may give, for messages: the canonical ones first.
ALLOWED_SPLITS = ", ".join([*SPLITS, *(name for name in SPLIT_ALIASES if name not in SPLITS)])


class Manifest:
    """A CSV file with a header row of ``path,label`` (and optionally ``split``) columns.

    Paths are relative to the CSV's folder (the listing's root) or absolute; an absolute path
    inside that folder is stored relative to it, so a manifest of a class-per-folder tree lists
    the same rows as the tree. Bad rows go to ``rejected`` as ``(path, "line N: why")``.

    Examples
    --------
    >>> listing = Manifest().list_images(Path("pets/train.csv"))  # doctest: +SKIP
    >>> listing.paths[:1], listing.class_names, listing.splits  # doctest: +SKIP
    (['cat/1.png'], ['cat', 'dog'], None)
    >>> listing.rejected  # doctest: +SKIP
    [('dog/9.png', 'line 7: dog/9.png does not exist')]
    """

    name = "manifest"
    reads = "file"
    description = "a CSV file of path,label[,split] rows, paths relative to its folder or absolute"

    def recognises(self, source: Path) -> bool:
        """True for a ``.csv`` file: a dataset given as one is a manifest."""
        return source.is_file() and source.suffix.lower() == ".csv"

    def list_images(self, source: Path, exclude: Sequence[str] = ()) -> ImageListing:
        return list_manifest(source, exclude)


@dataclass(frozen=True)
class _Row:
    """One data row of a manifest: its first physical line and its cells, stripped."""

    line: int
    path: str
    label: str
    split: str | None  # None when the file has no split column


def list_manifest(source: str | os.PathLike, exclude: Sequence[str] = ()) -> ImageListing:
    """List the manifest CSV ``source``: what :class:`Manifest` does.

    Raises :class:`DatasetError` (one line naming the file) for a file that is missing, not
    UTF-8 CSV, lacks a ``path`` or ``label`` column, has no rows or no usable row, or for an
    ``exclude`` name that labels no row.

    Examples
    --------
    >>> list_manifest("pets/train.csv", exclude=["hamster"]).excluded_classes  # doctest: +SKIP
    ['hamster']
    """
    source = Path(source)
    rows = list(_read_rows(source))
    if not rows:
        raise DatasetError(f"{source}: no rows under its header; add one row of path,label per image")
    _check_exclude(source, rows, exclude)
    kept = [row for row in rows if row.label not in set(exclude)]
    if not kept:
        raise DatasetError(f"{source}: every row is of an excluded class "
                           f"({', '.join(sorted(set(exclude)))}); exclude fewer classes")
    good, rejected = _check_rows(source.parent, kept)
    if not good:
        first = "; ".join(reason for _, reason in rejected[:3]) + ("; ..." if len(rejected) > 3 else "")
        raise DatasetError(f"{source}: no usable row of {len(kept)} ({first}); paths are relative to "
                           "the file's folder or absolute")
    used = {label for _, label, _ in good}
    empty = sorted({row.label for row in kept if row.label} - used)
    return ordered_listing(source.parent, good, rejected=rejected, empty_classes=empty,
                           excluded_classes=sorted(set(exclude)))


def _read_rows(source: Path) -> Iterator[_Row]:
    """The data rows of ``source`` with their line numbers; blank rows are skipped. Raises
    :class:`DatasetError` for a file that cannot be read as UTF-8 CSV or lacks a column."""
    if not source.is_file():
        what = "a folder, not a file" if source.is_dir() else "no such file"
        raise DatasetError(f"{source}: {what}; the manifest layout reads a CSV file of path,label rows")
    try:
        # Read whole, so a decoding error is refused before any row is listed.
        with open(source, encoding="utf-8-sig", newline="") as f:
            records = _records(f)
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise DatasetError(f"{source}: cannot be read as a UTF-8 CSV file ({_one_line(exc)}); "
                           "save it as UTF-8 comma-separated values") from None
    if not records:
        raise DatasetError(f"{source}: empty; a manifest needs a header row (path,label) and one row "
                           "per image")
    _, header = records[0]
    columns = _columns(source, header)
    for line, cells in records[1:]:
        if not any(cell.strip() for cell in cells):
            continue  # blank lines and spreadsheets' trailing ",,," rows
        values = {name: cells[k].strip() if k < len(cells) else "" for name, k in columns.items()}
        yield _Row(line, values["path"], values["label"], values.get(SPLIT_COLUMN))


def _records(f) -> list[tuple[int, list[str]]]:
    """Every CSV record of ``f`` with the physical line it starts on (a quoted cell may span
    lines; the header is line 1)."""
    reader = csv.reader(f)
    records, line = [], 1
    for cells in reader:
        records.append((line, cells))
        line = reader.line_num + 1
    return records


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _columns(source: Path, header: list[str]) -> dict[str, int]:
    """The index of the path, label and (if any) split column in ``header``, by lower-case name;
    :class:`DatasetError` naming what the file has when one it needs is missing or doubled."""
    names = [cell.strip().lower() for cell in header]
    wanted = (*REQUIRED_COLUMNS, SPLIT_COLUMN)
    doubled = [name for name in wanted if names.count(name) > 1]
    if doubled:
        raise DatasetError(f"{source}: its header has more than one {doubled[0]!r} column; keep one")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        has = ", ".join(repr(cell) for cell in header) or "none"
        hint = ""
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            hint = "; it must be comma-separated"
        raise DatasetError(f"{source}: no {' or '.join(missing)} column in its header row (its columns: "
                           f"{has}); a manifest needs path and label columns, split optional{hint}")
    return {name: names.index(name) for name in wanted if name in names}


def _check_exclude(source: Path, rows: Sequence[_Row], exclude: Sequence[str]) -> None:
    """Refuse in one line an ``exclude`` name that is no row's label."""
    labels = sorted({row.label for row in rows if row.label})
    unknown = sorted(set(exclude) - set(labels))
    if unknown:
        raise DatasetError(
            f"{source}: no label {', '.join(map(repr, unknown))} to exclude "
            f"(its labels: {', '.join(labels[:20])}{', ...' if len(labels) > 20 else ''})"
        )


def _check_rows(folder: Path, rows: Sequence[_Row]) -> tuple[list[tuple[str, str, str | None]],
                                                             list[tuple[str, str]]]:
    """Split ``rows`` into the usable ones, as ``(stored path, label, split)``, and the rejected
    ones, as ``(path as written, "line N: why")``, in the file's order."""
    good: list[tuple[str, str, str | None]] = []
    rejected: list[tuple[str, str]] = []
    seen: dict[str, _Row] = {}  # stored path -> the accepted row that gave it
    bases = _folder_forms(folder)
    bad: list[tuple[_Row, str, str]] = []
    for row in rows:
        stored = _stored_path(row.path, bases) if row.path else ""
        problem = _problem(row, stored, folder, seen)
        if problem:
            bad.append((row, stored, problem))
            continue
        seen[stored] = row
        split = canonical_split(row.split) if row.split is not None else None
        good.append((stored, row.label, split))
    for row, stored, problem in bad:
        # A bad line whose path another line lists fine is named by its line: that path is a
        # row of the file, which a skipped entry under the same path would contradict.
        where = f"{row.path} (line {row.line})" if stored in seen else row.path or f"<line {row.line}>"
        rejected.append((where, f"line {row.line}: {problem}"))
    return good, rejected


def _problem(row: _Row, stored: str, folder: Path, seen: dict[str, _Row]) -> str | None:
    """What makes ``row`` unusable, in a few words; None when it is usable."""
    if not row.path:
        return "empty path"
    if not row.label:
        return f"{row.path}: empty label"
    if row.split is not None and not row.split:
        return f"{row.path}: empty split (the file has a split column; give {', '.join(SPLITS)})"
    if row.split is not None and canonical_split(row.split) is None:
        return f"{row.path}: unknown split {row.split!r} (allowed, any case: {ALLOWED_SPLITS})"
    suffix = Path(row.path).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return (f"{row.path}: not an image file (extension {suffix or 'none'}; images are "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    if stored in seen:
        earlier = seen[stored]
        other = f", labelled {earlier.label!r} there" if earlier.label != row.label else ""
        return f"{row.path}: duplicate path, already on line {earlier.line}{other}"
    return _missing(row.path, folder / stored)


def _missing(written: str, path: Path) -> str | None:
    """Why the image at ``path`` cannot be opened, or None when it is a file."""
    try:
        if path.is_file():
            return None
        return f"{written} is not a file" if path.exists() else f"{written} does not exist"
    except (OSError, ValueError) as exc:  # a name the system refuses (too long, a NUL byte)
        return f"{written}: unusable path ({_one_line(exc)})"


def _folder_forms(folder: Path) -> tuple[str, ...]:
    """The manifest's folder as an absolute path: lexically, and with links resolved (an
    absolute path in the file may name it either way)."""
    lexical = os.path.normpath(os.path.abspath(folder))
    return tuple(dict.fromkeys((lexical, os.path.realpath(folder))))


def _stored_path(written: str, bases: tuple[str, ...]) -> str:
    """The path a row's image is recorded under: relative to the manifest's folder (POSIX
    separators) when it lies inside it, else absolute, so the same image is one key whichever
    way the file writes it."""
    absolute = os.path.normpath(os.path.join(bases[0], written))
    # A link to an image elsewhere keeps its own name: only the folders above it are resolved.
    parent, name = os.path.split(absolute)
    candidates = (absolute, os.path.join(os.path.realpath(parent), name))
    for candidate in candidates:
        for base in bases:
            if candidate.startswith(base.rstrip(os.sep) + os.sep):
                return Path(os.path.relpath(candidate, base)).as_posix()
    return Path(absolute).as_posix()
