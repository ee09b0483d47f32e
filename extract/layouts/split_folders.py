"""The ``split-folders`` layout: a dataset already split, ``train/``, ``val/`` and ``test/``
(any case; ``validation``, ``valid``, ``testing``, ``training`` too), each one class-per-folder.

What Keras' own cats-and-dogs set (``train/{cats,dogs}``, ``validation/{cats,dogs}``) and
``flow_from_directory`` programs (``output/train``, ``output/val``) use. Each row records its
split, which ``classify`` then honours instead of splitting at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetError
from ..listing import SPLITS, ImageListing, canonical_split, ordered_listing
from .class_per_folder import class_files, looks_split


class SplitFolders:
    """Top-level folders named for splits, each holding one sub-folder of images per class.

    The class set is the union over the splits (``extract`` then names a class missing from a
    split in a warning, and refuses one missing from ``train``: a class must be trained on).

    Examples
    --------
    >>> listing = SplitFolders().list_images(Path("output"))  # doctest: +SKIP
    >>> sorted(set(listing.splits))  # doctest: +SKIP
    ['test', 'train', 'val']
    """

    name = "split-folders"
    reads = "folder"
    description = ("train/, val/ (or validation/) and test/ folders, each with one sub-folder of "
                   "images per class; every row keeps its split (chosen by itself for such a folder)")

    def recognises(self, source: Path) -> bool:
        """True when every top-level folder of ``source`` is a split holding class folders."""
        return source.is_dir() and looks_split(_folders(source))

    def list_images(self, source: Path, exclude: Sequence[str] = ()) -> ImageListing:
        return list_split_folders(source, exclude)


def _folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_split_folders(root: str | Path, exclude: Sequence[str] = ()) -> ImageListing:
    """List a split-folders dataset: rows ``(split/class/.../image, class, split)``.

    Examples
    --------
    >>> list_split_folders("output").splits[:1]  # doctest: +SKIP
    ['train']
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    splits = _split_folders(root)
    ignored = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    rows: list[tuple[str, str, str]] = []
    classes: dict[str, set[str]] = {split: set() for split in splits}
    folders: set[str] = set()
    for split, folder in splits.items():
        for class_dir in _folders(folder):
            folders.add(class_dir.name)
            if class_dir.name in exclude:
                continue
            images = class_files(root, class_dir, ignored)
            rows.extend((path, class_dir.name, split) for path in images)
            if images:
                classes[split].add(class_dir.name)
        ignored.extend(p.relative_to(root).as_posix() for p in sorted(folder.iterdir())
                       if p.is_file() and not p.name.startswith("."))
    unknown = sorted(set(exclude) - folders)
    if unknown:
        raise DatasetError(f"{root}: no class folder {', '.join(map(repr, unknown))} in any split to exclude")
    if not rows:
        raise DatasetError(f"{root}: no images in its split folders")
    used = set().union(*classes.values())
    return ordered_listing(root, rows, ignored=ignored, excluded_classes=sorted(set(exclude)),
                           empty_classes=sorted(folders - used - set(exclude)))


def _split_folders(root: Path) -> dict[str, Path]:
    """The split folders of ``root`` by split, in :data:`SPLITS`' order; refused in one line
    where they are not split folders, or two folders name one split."""
    folders = _folders(root)
    if not looks_split(folders):
        raise DatasetError(f"{root}: its folders ({', '.join(p.name for p in folders[:8]) or 'none'}) are "
                           "not splits: split-folders expects train/, val/ or test/ folders, each "
                           "holding one sub-folder per class (else use --layout class-per-folder)")
    found: dict[str, Path] = {}
    for folder in folders:
        split = canonical_split(folder.name)
        if split in found:
            raise DatasetError(f"{root}: {found[split].name}/ and {folder.name}/ are both the {split} "
                               "split; merge them or rename one")
        found[split] = folder
    return {split: found[split] for split in SPLITS if split in found}
