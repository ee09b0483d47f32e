"""Dataset layouts: every registered one lists its example into rows of path and label relative
to the listing's root; class-per-folder exactly as before; the registry and ``--layout``."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

from extract import DatasetError, SettingsError, extract_features
from extract.layouts import (
    LAYOUTS,
    READS,
    ClassPerFolder,
    DatasetLayout,
    SplitFolders,
    detect_layout,
    register_layout,
    registered_layout,
)
from extract.listing import check_split_classes
from extract.sources import ImageListing, list_images, resolve_dataset


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _class_folders(tmp: Path) -> Path:
    root = tmp / "folders"
    for rel in ("b/2.jpg", "b/1.PNG", "a/z.jpeg", "a/sub/y.jpg", "a/.hidden.jpg", "a/.cache/w.jpg",
                "a/notes.txt", "c/notes.txt", "README"):
        touch(root / rel)
    return root


def _split_folders(tmp: Path) -> Path:
    root = tmp / "split"
    for rel in ("Test/b/3.jpg", "train/b/2.jpg", "train/a/1.jpg", "train/a/notes.txt", "Validation/a/4.jpg",
                "train/README", "LICENSE"):
        touch(root / rel)
    return root


def _manifest(tmp: Path) -> Path:
    root = tmp / "listed"
    for rel in ("imgs/b.png", "imgs/a.png", "imgs/c.png"):
        touch(root / rel)
    (root / "list.csv").write_text("path,label,split\nimgs/b.png,cat,test\nimgs/a.png,dog,train\n"
                                   f"{root / 'imgs' / 'c.png'},cat,TRAIN\nimgs/none.png,dog,train\n")
    return root / "list.csv"


#: An example dataset for each built-in layout, made in a temporary folder, with the listing it
#: must give: (paths, labels by name). A layout added to the package needs one here.
EXAMPLES: dict[str, Callable[[Path], tuple[Path, list[str], list[str]]]] = {
    "class-per-folder": lambda tmp: (_class_folders(tmp), ["a/z.jpeg", "a/sub/y.jpg", "b/1.PNG", "b/2.jpg"],
                                     ["a", "a", "b", "b"]),
    "split-folders": lambda tmp: (_split_folders(tmp),
                                  ["train/a/1.jpg", "train/b/2.jpg", "Validation/a/4.jpg", "Test/b/3.jpg"],
                                  ["a", "b", "a", "b"]),
    "manifest": lambda tmp: (_manifest(tmp), ["imgs/c.png", "imgs/a.png", "imgs/b.png"],
                             ["cat", "dog", "cat"]),
}
BUILT_IN = sorted(LAYOUTS)


def test_every_registered_layout_has_an_example():
    assert set(LAYOUTS) <= set(EXAMPLES), "give each built-in layout an example in EXAMPLES"


@pytest.mark.parametrize("name", BUILT_IN)
def test_layout_lists_its_example_relative_to_the_root(name, tmp_path):
    layout = LAYOUTS[name]
    assert isinstance(layout, DatasetLayout) and layout.reads in READS
    assert layout.description and "\n" not in layout.description
    source, paths, labels = EXAMPLES[name](tmp_path)
    assert resolve_dataset(str(source), tmp_path / "elsewhere", reads=layout.reads) == source
    listing = layout.list_images(source)
    assert isinstance(listing, ImageListing)
    assert listing.paths == paths
    assert [listing.class_names[k] for k in listing.labels] == labels
    assert listing.labels.dtype == np.int32 and len(listing) == len(listing.labels)
    assert all(not Path(p).is_absolute() and "\\" not in p and (listing.root / p).is_file() for p in paths)
    assert listing.splits is None or len(listing.splits) == len(listing)


@pytest.mark.parametrize("name", BUILT_IN)
def test_layout_refuses_a_missing_source_in_one_line(name, tmp_path):
    with pytest.raises(DatasetError) as raised:
        LAYOUTS[name].list_images(tmp_path / "nothing-here")
    assert "\n" not in str(raised.value) and "nothing-here" in str(raised.value)


def test_class_per_folder_is_list_images(tmp_path):
    root = _class_folders(tmp_path)
    listing = ClassPerFolder().list_images(root)
    same = list_images(root)
    assert (listing.paths, listing.class_names) == (same.paths, same.class_names)
    assert listing.ignored == same.ignored
    assert listing.empty_classes == ["c"]
    assert sorted(listing.ignored) == ["README", "a/notes.txt", "c/notes.txt"]
    assert listing.splits is None
    left = ClassPerFolder().list_images(root, exclude=["b"])
    assert left.class_names == ["a"] and left.excluded_classes == ["b"]
    with pytest.raises(DatasetError, match="no class folder 'x' to exclude"):
        ClassPerFolder().list_images(root, exclude=["x"])


def test_a_file_layout_reads_a_manifest_by_name_or_path(tmp_path):
    touch(tmp_path / "data" / "list.csv", b"")
    (tmp_path / "data" / "folder").mkdir()
    assert resolve_dataset("list.csv", tmp_path / "data", reads="file") == tmp_path / "data" / "list.csv"
    assert resolve_dataset(str(tmp_path / "data" / "list.csv"), tmp_path, reads="file").name == "list.csv"
    with pytest.raises(DatasetError, match="a folder, not a file"):
        resolve_dataset("folder", tmp_path / "data", reads="file")
    with pytest.raises(DatasetError, match="no such file"):
        resolve_dataset("nope.csv", tmp_path / "data", reads="file")


def test_registry_refuses_what_is_not_a_layout_and_unregisters():
    before = dict(LAYOUTS)
    with pytest.raises(SettingsError, match="not a DatasetLayout: it needs name, reads"):
        register_layout(object())
    with pytest.raises(SettingsError, match="registered already; pass replace=True"):
        register_layout(ClassPerFolder())

    class Tarball(ClassPerFolder):
        name, reads = "tar", "archive"

    class Nameless(ClassPerFolder):
        name = ""

    class Again(ClassPerFolder):
        name = "again"

    with pytest.raises(SettingsError, match="must read one of folder, file"):
        register_layout(Tarball())
    with pytest.raises(SettingsError, match="has no name"):
        register_layout(Nameless())
    with registered_layout(Again()) as again:
        assert LAYOUTS["again"] is again
    assert LAYOUTS == before


def test_a_layout_carries_its_name_and_replace_takes_its_place():
    assert all(name == layout.name for name, layout in LAYOUTS.items())
    before = dict(LAYOUTS)
    other = ClassPerFolder()
    try:
        assert register_layout(other, replace=True) is other
        assert LAYOUTS["class-per-folder"] is other and list(LAYOUTS) == list(before)
    finally:
        LAYOUTS.update(before)
    assert LAYOUTS == before


def _split_tree(root: Path, splits=("train", "val", "test")) -> Path:
    for split in splits:
        for name in ("daisy", "tulip"):
            touch(root / split / name / "1.jpg")
    return root


def test_class_per_folder_warns_of_a_folder_of_splits(tmp_path, caplog):
    root = _split_tree(tmp_path / "flowers", ("test", "Train", "validation"))
    with caplog.at_level(logging.WARNING, logger="extract"):
        listing = ClassPerFolder().list_images(root)
    assert listing.class_names == ["Train", "test", "validation"]  # as before: each split a class
    [record] = [r for r in caplog.records if r.name == "extract"]
    assert record.getMessage() == (
        f"warning: {root}'s class folders Train, validation, test look like splits holding class folders; "
        "class-per-folder makes each split a class: leave out --layout (or pass --layout split-folders) "
        "to keep each image's split")


@pytest.mark.parametrize("layout", [
    ("train", "val", "daisy"),  # a class that is not a split
    ("train", "test"),  # with images in the splits themselves, not class folders
])
def test_class_per_folder_says_nothing_of_what_are_classes(tmp_path, caplog, layout):
    root = tmp_path / "data"
    if "daisy" in layout:
        _split_tree(root, layout)
    else:
        for split in layout:
            touch(root / split / "1.jpg")
    with caplog.at_level(logging.WARNING, logger="extract"):
        ClassPerFolder().list_images(root)
    assert "look like splits" not in caplog.text


def test_unknown_layout_is_a_settings_error_and_a_usage_error(tmp_path):
    with pytest.raises(SettingsError, match=r"layout \(--layout\) must be one of class-per-folder"):
        extract_features(tmp_path, layout="nope", output=tmp_path / "o.hdf5")
    result = run_module("extract", "--dataset", tmp_path, "--layout", "nope")
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr
    usage = run_module("extract", "--help")
    assert "class-per-folder (a folder): one sub-folder of images per class" in " ".join(usage.stdout.split())


def test_split_folders_keep_each_rows_split_and_the_union_of_classes(tmp_path, caplog):
    root = _split_folders(tmp_path)
    listing = SplitFolders().list_images(root)
    assert listing.splits == ["train", "train", "val", "test"]  # by split, then class, then path
    assert listing.class_names == ["a", "b"]
    assert sorted(listing.ignored) == ["LICENSE", "train/README", "train/a/notes.txt"]
    # Each split lacks a class: named, one warning per split.
    with caplog.at_level(logging.WARNING, logger="extract"):
        check_split_classes(root, listing, logging.getLogger("extract"))
    messages = [r.getMessage() for r in caplog.records if r.name == "extract"]
    assert messages == [f"warning: {root}: the val split has no images of class b",
                        f"warning: {root}: the test split has no images of class a"]
    assert detect_layout(root) is LAYOUTS["split-folders"]
    assert detect_layout(_class_folders(tmp_path)) is LAYOUTS["class-per-folder"]
    left = SplitFolders().list_images(root, exclude=["b"])
    assert left.class_names == ["a"] and left.excluded_classes == ["b"] and left.splits == ["train", "val"]


@pytest.mark.parametrize("tree, message", [
    (("train/a/1.jpg", "test/b/2.jpg"), "class b has no train images; add some, or leave it out"),
    (("val/a/1.jpg", "test/a/2.jpg"), "no train rows (its splits: val, test)"),
    (("train/a/1.jpg", "val/a/2.jpg", "validation/a/3.jpg"), "val/ and validation/ are both the val split"),
    (("train/a/1.jpg", "extra/a/2.jpg"), "are not splits: split-folders expects train/, val/ or test/"),
])
def test_split_folders_refuse_in_one_line(tmp_path, tree, message):
    for rel in tree:
        touch(tmp_path / "d" / rel)
    with pytest.raises(DatasetError, match=re.escape(message)) as raised:
        listing = SplitFolders().list_images(tmp_path / "d")
        check_split_classes(tmp_path / "d", listing, logging.getLogger("extract"))
    assert "\n" not in str(raised.value) and str(tmp_path / "d") in str(raised.value)


def test_a_folder_of_splits_is_read_as_split_folders_unless_told(tmp_path):
    from extract.api import _layout_and_source
    from extract.settings import ExtractSettings

    root = _split_folders(tmp_path)
    assert _layout_and_source(str(root), ExtractSettings())[0].name == "split-folders"
    forced = ExtractSettings(layout="class-per-folder")
    assert _layout_and_source(str(root), forced)[0].name == "class-per-folder"
