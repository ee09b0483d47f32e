"""The ``class-per-folder`` layout: each immediate sub-folder of the dataset folder is a class."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..listing import IMAGE_EXTENSIONS, SPLITS, ImageListing, canonical_split

log = logging.getLogger("extract")


class ClassPerFolder:
    """Each immediate sub-folder of the dataset folder is a class; its images may sit at any
    depth inside it.

    Examples
    --------
    >>> listing = ClassPerFolder().list_images(Path("datasets/flowers17"))  # doctest: +SKIP
    >>> len(listing.class_names), len(listing)  # doctest: +SKIP
    (17, 1360)
    """

    name = "class-per-folder"
    reads = "folder"
    description = "one sub-folder of images per class (the folder names are the classes)"

    def list_images(self, source: Path, exclude: Sequence[str] = ()) -> ImageListing:
        return list_class_folders(source, exclude)


def list_class_folders(root: str | os.PathLike, exclude: Sequence[str] = ()) -> ImageListing:
    """List a class-per-folder dataset: what :func:`extract.sources.list_images` does.

    Examples
    --------
    >>> list_class_folders("datasets/flowers17").class_names[:2]  # doctest: +SKIP
    ['bluebell', 'buttercup']
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    all_class_dirs = [p for p in entries if p.is_dir()]
    ignored = [p.name for p in entries if not p.is_dir()]
    if not all_class_dirs:
        raise DatasetError(
            f"{root}: no class folders (expected one sub-folder of images per class)"
        )
    unknown = sorted(set(exclude) - {p.name for p in all_class_dirs})
    if unknown:
        raise DatasetError(
            f"{root}: no class folder {', '.join(map(repr, unknown))} to exclude "
            f"(its classes: {', '.join(p.name for p in all_class_dirs[:20])}"
            f"{', ...' if len(all_class_dirs) > 20 else ''})"
        )
    class_dirs = [p for p in all_class_dirs if p.name not in set(exclude)]
    warn_if_splits(root, class_dirs)
    paths: list[str] = []
    labels: list[int] = []
    class_names: list[str] = []
    empty: list[str] = []
    for class_dir in class_dirs:
        label, before = len(class_names), len(paths)
        for rel in class_files(root, class_dir, ignored):
            paths.append(rel)
            labels.append(label)
        if len(paths) > before:
            class_names.append(class_dir.name)
        else:
            empty.append(class_dir.name)
    if not paths:
        raise DatasetError(f"{root}: no images in its {len(class_dirs)} class folders")
    return ImageListing(
        root=root,
        class_names=class_names,
        paths=paths,
        labels=np.asarray(labels, dtype=np.int32),
        ignored=ignored,
        empty_classes=empty,
        excluded_classes=sorted(set(exclude)),
    )


def warn_if_splits(root: Path, class_dirs: Sequence[Path]) -> bool:
    """Log one warning when the class folders look like a pre-split dataset's splits (every
    one named train, val, test or the like, each holding sub-folders): class-per-folder would
    make each split a class. True when it warned.

    Examples
    --------
    >>> warn_if_splits(Path("flowers"), [Path("flowers/train"), Path("flowers/val")])  # doctest: +SKIP
    True
    """
    if not looks_split(class_dirs):
        return False
    splits = sorted(class_dirs, key=lambda p: (SPLITS.index(canonical_split(p.name)), p.name))
    log.warning(f"warning: {root}'s class folders {', '.join(p.name for p in splits)} look like splits "
                "holding class folders; class-per-folder makes each split a class: leave out --layout "
                "(or pass --layout split-folders) to keep each image's split")
    return True


def looks_split(folders: Sequence[Path]) -> bool:
    """True when ``folders`` (a dataset's top-level folders) are all named for splits (train,
    val, test or the like, any case) and each holds sub-folders: a pre-split dataset's splits,
    each one class-per-folder. Folders of images alone may be classes so named.

    Examples
    --------
    >>> looks_split([Path("flowers/train"), Path("flowers/val")])  # doctest: +SKIP
    True
    """
    if not folders or any(canonical_split(p.name) is None for p in folders):
        return False
    return all(any(sub.is_dir() and not sub.name.startswith(".") for sub in p.iterdir()) for p in folders)


def class_files(root: Path, class_dir: Path, ignored: list[str]) -> list[str]:
    """The images of one class folder, relative to ``root``, in sorted walk order; the other
    files go to ``ignored``. Hidden files and folders are left out."""
    images = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            rel = (Path(dirpath) / filename).relative_to(root).as_posix()
            if Path(filename).suffix.lower() in IMAGE_EXTENSIONS:
                images.append(rel)
            else:
                ignored.append(rel)
    return images
