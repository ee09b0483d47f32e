"""Where images come from: the dataset registry and the data folder.

How a dataset is laid out (one folder per class, a manifest, ...) is a layout's business
(:mod:`extract.layouts`); what a listing holds is :class:`extract.listing.ImageListing`,
importable from here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DatasetError
from .layouts.class_per_folder import list_class_folders
from .listing import IMAGE_EXTENSIONS, ImageListing

__all__ = [
    "DATASETS_DIR",
    "DATA_ENV",
    "IMAGE_EXTENSIONS",
    "REGISTRY_PATH",
    "DatasetError",
    "ImageListing",
    "dataset_name",
    "default_data_dir",
    "list_images",
    "load_registry",
    "registry_exclusions",
    "resolve_dataset",
]

#: The project's data folder; its ``registry.json`` lists the known datasets.
DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"
REGISTRY_PATH = DATASETS_DIR / "registry.json"
DATA_ENV = "FEATUREBANK_DATA"


def load_registry() -> dict[str, dict[str, Any]]:
    """The known datasets: name → source URL, license, expected class and image counts."""
    with open(REGISTRY_PATH, encoding="utf-8") as f:
        return json.load(f)


def default_data_dir() -> Path:
    """``$FEATUREBANK_DATA`` when set, else ``datasets/`` in the current directory."""
    return Path(os.environ.get(DATA_ENV) or "datasets")


def resolve_dataset(
    dataset: str, data_dir: str | os.PathLike | None = None, reads: str | None = "folder"
) -> Path:
    """The folder (or, for a layout that ``reads`` a ``"file"``, the manifest file; with
    ``reads=None``, either) of a dataset given by name (looked up in ``data_dir``) or by path.

    Raises :class:`DatasetError` with where to get a known dataset that is not there.

    Examples
    --------
    >>> resolve_dataset("flowers17", "../shared/datasets")  # doctest: +SKIP
    PosixPath('../shared/datasets/flowers17')
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    found = {"file": Path.is_file, "folder": Path.is_dir, None: Path.exists}[reads]
    by_name = data_dir / dataset
    if found(by_name):
        return by_name
    as_path = Path(dataset).expanduser()
    if found(as_path):
        return as_path
    if reads == "file":
        what = "a folder, not a file" if as_path.is_dir() or by_name.is_dir() else "no such file"
        raise DatasetError(f"{dataset}: {what}; this --layout reads a manifest file, by name in "
                           f"{data_dir}/ or as a path")
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


def dataset_name(source: str | os.PathLike) -> str:
    """The name a feature file records for the dataset at ``source``: a folder's own name
    (``"."`` names the folder; links keep their own name), a manifest's without its suffix.

    Examples
    --------
    >>> dataset_name("datasets/flowers17"), dataset_name("lists/train.csv")  # doctest: +SKIP
    ('flowers17', 'train')
    """
    path = Path(os.path.abspath(source))
    return path.stem if path.is_file() else path.name


def list_images(root: str | os.PathLike, exclude: Sequence[str] = ()) -> ImageListing:
    """List a class-per-folder dataset: each immediate sub-folder of ``root`` is a class (the
    ``class-per-folder`` layout, :mod:`extract.layouts.class_per_folder`).

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
    return list_class_folders(root, exclude)


def registry_exclusions(root: str | os.PathLike) -> list[str]:
    """The class folders the registry leaves out of the dataset at ``root`` by default (those
    that are there): ``BACKGROUND_Google`` for ``caltech101``, which the published recipe's
    101 classes and 8,677 images do not include."""
    root = Path(root)
    entry = load_registry().get(Path(os.path.abspath(root)).name, {})
    return [name for name in entry.get("exclude_classes", []) if (root / name).is_dir()]
