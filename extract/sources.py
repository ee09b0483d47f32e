"""Where images come from: the dataset registry, the data folder, and class-per-folder listing."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExtractError

#: The project's data folder; its ``registry.json`` lists the known datasets.
DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"
REGISTRY_PATH = DATASETS_DIR / "registry.json"
DATA_ENV = "FEATUREBANK_DATA"

#: Extensions read as images (lower case). Other files are not images of any class.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


class DatasetError(ExtractError):
    """A dataset that cannot be found or listed; the message is one line for the user."""


def load_registry() -> dict[str, dict[str, Any]]:
    """The known datasets: name → source URL, license, expected class and image counts."""
    with open(REGISTRY_PATH, encoding="utf-8") as f:
        return json.load(f)


def default_data_dir() -> Path:
    """``$FEATUREBANK_DATA`` when set, else ``datasets/`` in the current directory."""
    return Path(os.environ.get(DATA_ENV) or "datasets")


def resolve_dataset(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of a dataset given by name (looked up in ``data_dir``) or by path.

    Raises :class:`DatasetError` with where to get a known dataset that is not there.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    by_name = data_dir / dataset
    if by_name.is_dir():
        return by_name
    as_path = Path(dataset).expanduser()
    if as_path.is_dir():
        return as_path
    registry = load_registry()
    if dataset in registry:
        entry = registry[dataset]
        how = (
            f"run `python scripts/download.py {dataset} --data-dir {data_dir}`"
            if entry.get("download")
            else entry.get("manual", f"get it from {entry['url']}")
        )
        raise DatasetError(
            f"dataset {dataset!r} is not in {data_dir}/: {how} "
            f"(source: {entry['url']}; or point --data-dir / ${DATA_ENV} at its parent folder)"
        )
    raise DatasetError(
        f"no dataset {dataset!r}: neither {by_name} nor {as_path} is a folder "
        f"(known datasets: {', '.join(sorted(registry))})"
    )


@dataclass
class ImageListing:
    """The images of a class-per-folder dataset, in a fixed order.

    Attributes
    ----------
    root : Path
        The dataset folder.
    class_names : list of str
        Sorted names of the class folders; a label is an index into them.
    paths : list of str
        Image paths relative to ``root`` (POSIX separators), sorted by class then path.
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
    """

    root: Path
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    ignored: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    excluded_classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def list_images(root: str | os.PathLike, exclude: Sequence[str] = ()) -> ImageListing:
    """List a class-per-folder dataset: each immediate sub-folder of ``root`` is a class.

    Images may sit at any depth inside their class folder. Hidden files and folders (names
    starting with ``.``) are left out; other files are listed as ``ignored``. The class
    folders named in ``exclude`` are left out (each must exist), and so are class folders
    that hold no image (listed as ``empty_classes``).

    Examples
    --------
    >>> listing = list_images("datasets/caltech101", exclude=["BACKGROUND_Google"])
    >>> len(listing.class_names), len(listing)
    (101, 8677)
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
    paths: list[str] = []
    labels: list[int] = []
    class_names: list[str] = []
    empty: list[str] = []
    for class_dir in class_dirs:
        label, before = len(class_names), len(paths)
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith("."):
                    continue
                rel = (Path(dirpath) / filename).relative_to(root).as_posix()
                if Path(filename).suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(rel)
                    labels.append(label)
                else:
                    ignored.append(rel)
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


def registry_exclusions(root: str | os.PathLike) -> list[str]:
    """The class folders the registry leaves out of the dataset at ``root`` by default (those
    that are there): ``BACKGROUND_Google`` for ``caltech101``, which the published recipe's
    101 classes and 8,677 images do not include."""
    root = Path(root)
    entry = load_registry().get(Path(os.path.abspath(root)).name, {})
    return [name for name in entry.get("exclude_classes", []) if (root / name).is_dir()]
