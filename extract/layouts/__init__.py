"""Dataset layouts: how a dataset folder (or a manifest file) becomes rows of path and label.

A *layout* turns the ``--dataset`` it is given into an :class:`extract.listing.ImageListing`:
image paths relative to the listing's root (as feature files record them), the label of each
(an index into its class names) and, where the layout has one, the split of each. ``python -m
extract --layout NAME`` and ``extract_features(..., layout=NAME)`` choose one; without it the
first registered layout that :meth:`~DatasetLayout.recognises` the dataset reads it
(``split-folders`` for a folder of ``train/``, ``val/``, ``test/``), else ``class-per-folder``
(:mod:`extract.layouts.class_per_folder`).

A new layout is one module with a class following :class:`DatasetLayout` and one call of
:func:`extract.register_layout`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import SettingsError
from ..listing import ImageListing
from .class_per_folder import ClassPerFolder
from .manifest import Manifest
from .split_folders import SplitFolders

#: What a layout's ``--dataset`` names.
READS = ("folder", "file")

DEFAULT_LAYOUT = ClassPerFolder.name


@runtime_checkable
class DatasetLayout(Protocol):
    """How a dataset is laid out: what ``--dataset`` names, and how it becomes a listing.

    Attributes
    ----------
    name : str
        Its ``--layout`` name (and ``extract_features(layout=...)``), under which
        :func:`register_layout` registers it.
    reads : {"folder", "file"}
        What ``--dataset`` names for this layout: a folder, or a file (a manifest), found by
        name in the data folder or as a path.
    description : str
        One line for ``python -m extract --help``.

    A layout may also have ``recognises(source: Path) -> bool``: True when a dataset given
    without ``--layout`` is laid out its way (it then reads it rather than the default).

    Examples
    --------
    >>> isinstance(LAYOUTS["class-per-folder"], DatasetLayout)
    True
    """

    name: str
    reads: str
    description: str

    def list_images(self, source: Path, exclude: Sequence[str] = ()) -> ImageListing:
        """The listing of ``source`` (the folder or file ``--dataset`` names), in a fixed order.

        Paths are relative to the listing's ``root`` (POSIX separators), which is what feature
        files record: a folder layout's root is the folder, a manifest's is usually the folder
        it sits in. ``exclude`` names classes to leave out (recorded in the file); a layout
        that cannot leave any out raises for a non-empty one. Raises
        :class:`extract.errors.DatasetError` (one line naming the file and the fix) for a
        source it cannot list.
        """
        ...


#: The registered layouts, by ``--layout`` name.
LAYOUTS: dict[str, DatasetLayout] = {}


def register_layout(layout: DatasetLayout, *, replace: bool = False) -> DatasetLayout:
    """Register ``layout`` as ``--layout <layout.name>`` (and ``extract_features(layout=...)``).
    Returns ``layout``.

    Raises :class:`~extract.errors.SettingsError` (a ``ValueError``) when ``layout`` lacks a
    part of :class:`DatasetLayout`, reads something other than a folder or a file, or its name
    is taken, unless ``replace`` (a replacement keeps the replaced layout's place in ``--help``;
    :func:`unregister_layout` frees a name).

    Examples
    --------
    >>> from extract import register_layout
    >>> register_layout(CsvManifest())  # doctest: +SKIP
    >>> extract_features("train.csv", layout="csv", backbone="mobilenetv2")  # doctest: +SKIP
    """
    if not isinstance(layout, DatasetLayout):
        raise SettingsError(f"{layout!r} is not a DatasetLayout: it needs name, reads, description and "
                         "list_images")
    name = layout.name
    if layout.reads not in READS:
        raise SettingsError(f"layout {name!r} reads {layout.reads!r}; it must read one of {', '.join(READS)}")
    if not isinstance(name, str) or not name:
        raise SettingsError(f"{layout!r} has no name; set its name attribute to its --layout name")
    if name in LAYOUTS and not replace:
        raise SettingsError(f"a layout named {name!r} is registered already; pass replace=True to replace it")
    LAYOUTS[name] = layout
    return layout


def unregister_layout(name: str) -> DatasetLayout:
    """Remove the layout registered as ``name`` and return it.

    Examples
    --------
    >>> unregister_layout("csv")  # doctest: +SKIP
    """
    try:
        return LAYOUTS.pop(name)
    except KeyError:
        raise SettingsError(f"no layout named {name!r} is registered") from None


@contextlib.contextmanager
def registered_layout(layout: DatasetLayout) -> Iterator[DatasetLayout]:
    """Register ``layout`` for the length of a ``with`` block (tests, notebooks).

    Examples
    --------
    >>> with registered_layout(CsvManifest()):  # doctest: +SKIP
    ...     extract_features("train.csv", layout="csv")
    """
    register_layout(layout)
    try:
        yield layout
    finally:
        LAYOUTS.pop(layout.name, None)


def layout_named(name: str) -> DatasetLayout:
    """The layout registered as ``name``; :class:`SettingsError` (one line) when there is none.

    Examples
    --------
    >>> layout_named("class-per-folder").reads
    'folder'
    """
    if name not in LAYOUTS:
        raise SettingsError(f"layout (--layout) must be one of {', '.join(LAYOUTS)}, got {name!r}")
    return LAYOUTS[name]


def detect_layout(source: Path) -> DatasetLayout:
    """The layout that reads ``source`` when none is named: the first registered one that
    recognises it, else :data:`DEFAULT_LAYOUT`.

    Examples
    --------
    >>> detect_layout(Path("output")).name  # doctest: +SKIP
    'split-folders'
    """
    for layout in LAYOUTS.values():
        recognises = getattr(layout, "recognises", None)
        if recognises is not None and recognises(source):
            return layout
    return LAYOUTS[DEFAULT_LAYOUT]


register_layout(ClassPerFolder())
register_layout(SplitFolders())
register_layout(Manifest())

__all__ = [
    "DEFAULT_LAYOUT",
    "LAYOUTS",
    "ClassPerFolder",
    "DatasetLayout",
    "Manifest",
    "SplitFolders",
    "detect_layout",
    "layout_named",
    "register_layout",
    "registered_layout",
    "unregister_layout",
]
