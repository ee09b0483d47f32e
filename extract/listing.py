"""What a dataset listing holds: the rows (path, label, split) a layout makes of a dataset."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError

#: Extensions read as images (lower case). Other files are not images of any class.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


@dataclass
class ImageListing:
    """The images of a dataset, in a fixed order, as a layout (:mod:`extract.layouts`) lists them.

    Attributes
    ----------
    root : Path
        The folder the paths are relative to: the dataset folder (class-per-folder), or the
        folder a manifest file sits in.
    class_names : list of str
        Names of the classes (class-per-folder: the sorted class folders); a label is an
        index into them.
    paths : list of str
        Image paths relative to ``root`` (POSIX separators); class-per-folder sorts them by
        class then path.
    labels : ndarray of int32
        The class of each path.
    ignored : list of str
        Files that are not images of any class: files in the root itself, and files in a
        class folder whose extension is not an image extension.
    empty_classes : list of str
        Class folders without a single image: left out of ``class_names``, since a class
        with no rows can be neither trained nor scored.
    excluded_classes : list of str
        Class folders left out because they were asked to be (``exclude``).
    splits : list of str, optional
        The split of each path (one of :data:`SPLITS`) where the layout records one; None
        where it does not (class-per-folder).
    rejected : list of (str, str)
        Entries the layout could not use, as ``(path, reason)`` (a manifest's bad rows, the
        reason naming the line): recorded in the file's ``skipped`` as undecodable images are,
        or refused (``strict``).
    """

    root: Path
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    ignored: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    excluded_classes: list[str] = field(default_factory=list)
    splits: list[str] | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


#: What a feature file's ``skipped`` reason begins with for an entry the layout rejected (a
#: manifest's bad line), unlike an image that could not be decoded: mended, it is extracted.
REJECTED = "rejected, "

#: The splits a row may belong to, in the order they are told (and listed) in.
SPLITS = ("train", "val", "test")

#: Names a dataset may give a split (any case), and the split each one means.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


def canonical_split(name: str) -> str | None:
    """The split (one of :data:`SPLITS`) that ``name`` means, in any case; None for another name.

    Examples
    --------
    >>> canonical_split("Validation"), canonical_split("train"), canonical_split("extra")
    ('val', 'train', None)
    """
    return SPLIT_ALIASES.get(name.strip().lower())


def ordered_listing(root: Path, rows: Iterable[tuple[str, str, str | None]], **extra) -> ImageListing:
    """The listing of ``rows`` of ``(path, class name, split or None)``, in the order every layout
    lists: by split (:data:`SPLITS`' order), then class name, then path, so that two layouts of
    the same images give the same rows; class names are the sorted names the rows use, and
    ``splits`` is None when no row has one. ``extra`` fills the other fields of
    :class:`ImageListing`.

    Examples
    --------
    >>> listing = ordered_listing(Path("d"), [("b/2.jpg", "b", "test"), ("a/1.jpg", "a", "train")])
    >>> listing.paths, listing.class_names, listing.labels.tolist(), listing.splits
    (['a/1.jpg', 'b/2.jpg'], ['a', 'b'], [0, 1], ['train', 'test'])
    """
    rows = list(rows)
    with_split = {split is not None for _, _, split in rows}
    if len(with_split) > 1:
        raise ValueError("either every row has a split or none has")
    rank = {split: k for k, split in enumerate(SPLITS)}
    rows.sort(key=lambda row: (rank.get(row[2], -1), row[1], walk_order(row[0])))
    class_names = sorted({name for _, name, _ in rows})
    index = {name: k for k, name in enumerate(class_names)}
    return ImageListing(
        root=root,
        class_names=class_names,
        paths=[path for path, _, _ in rows],
        labels=np.array([index[name] for _, name, _ in rows], dtype=np.int32),
        splits=[split for _, _, split in rows] if with_split == {True} else None,
        **extra,
    )


def split_counts(splits: Sequence[str]) -> dict[str, int]:
    """Rows per split, in :data:`SPLITS`' order, the splits without rows left out.

    Examples
    --------
    >>> split_counts(["test", "train", "train"])
    {'train': 2, 'test': 1}
    """
    return {split: n for split in SPLITS if (n := sum(s == split for s in splits))}


def walk_order(path: str) -> tuple[tuple[int, str], ...]:
    """The sort key that orders paths as a sorted walk of their folders lists them: a folder's
    own files first, then its sub-folders' (as class-per-folder lists a class).

    Examples
    --------
    >>> sorted(["a/sub/y.jpg", "a/z.jpg", "a/b.jpg"], key=walk_order)
    ['a/b.jpg', 'a/z.jpg', 'a/sub/y.jpg']
    """
    *folders, name = path.split("/")
    return (*((1, folder) for folder in folders), (0, name))


def check_split_classes(source: Path, listing: ImageListing, log: logging.Logger) -> None:
    """For a listing with splits: refuse (one line) one without training rows or with a class
    that has none (a class must be trained on); name in a warning each class a split lacks.

    Examples
    --------
    >>> check_split_classes(Path("d"), ordered_listing(Path("d"), [("x.jpg", "a", "test")]),
    ...                     logging.getLogger("x"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    extract.errors.DatasetError: d: no train rows (its splits: test); ...
    """
    if listing.splits is None:
        return
    present = {split: set() for split in split_counts(listing.splits)}
    for label, split in zip(listing.labels, listing.splits, strict=True):
        present[split].add(listing.class_names[label])
    if "train" not in present:
        raise DatasetError(f"{source}: no train rows (its splits: {', '.join(present)}); a dataset with "
                           "splits needs training images")
    every = set(listing.class_names)
    if untrained := sorted(every - present["train"]):
        raise DatasetError(f"{source}: class {', '.join(untrained)} has no train images; add some, or "
                           "leave it out with --exclude-class")
    for split, classes in present.items():
        if missing := sorted(every - classes):
            log.warning(f"warning: {source}: the {split} split has no images of class {', '.join(missing)}")
