"""Where images come from: the dataset registry, the data folder, and class-per-folder listing."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The project's data folder; its ``registry.json`` lists the known datasets.
DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"
REGISTRY_PATH = DATASETS_DIR / "registry.json"
DATA_ENV = "FEATUREBANK_DATA"

#: Extensions read as images (lower case). Other files are not images of any class.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


class DatasetError(Exception):
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
    """

    root: Path
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    ignored: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def list_images(root: str | os.PathLike) -> ImageListing:
    """List a class-per-folder dataset: each immediate sub-folder of ``root`` is a class.

    Images may sit at any depth inside their class folder. Hidden files and folders (names
    starting with ``.``) are left out; other files are listed as ``ignored``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    class_dirs = [p for p in entries if p.is_dir()]
    ignored = [p.name for p in entries if not p.is_dir()]
    if not class_dirs:
        raise DatasetError(
            f"{root}: no class folders (expected one sub-folder of images per class)"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
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
    if not paths:
        raise DatasetError(f"{root}: no images in its {len(class_dirs)} class folders")
    return ImageListing(
        root=root,
        class_names=[p.name for p in class_dirs],
        paths=paths,
        labels=np.asarray(labels, dtype=np.int32),
        ignored=ignored,
    )
