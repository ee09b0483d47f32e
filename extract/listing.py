"""What a dataset listing holds: the rows (path, label) a layout makes of a dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
        The split of each path (``"train"``, ``"test"``, ...) where the layout records one;
        None where it does not (class-per-folder).
    """

    root: Path
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    ignored: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    excluded_classes: list[str] = field(default_factory=list)
    splits: list[str] | None = None

    def __len__(self) -> int:
        return len(self.paths)
