"""The manifest layout: a CSV of path,label[,split] rows lists the same rows as the folders it
names; bad rows are rejected with their line numbers, bad files refused in one line."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract import DatasetError
from extract.layouts import LAYOUTS, ClassPerFolder, DatasetLayout
from extract.layouts.manifest import Manifest

SIZE = 8


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _tree(root: Path, classes=("cat", "dog", "eel"), per_class: int = 3) -> dict[str, str]:
    """A class-per-folder tree of tiny PNGs: relative path -> class."""
    made = {}
    for c, name in enumerate(classes):
        for i in range(per_class):
            rel = f"{name}/{i}.png"
            _png(root / rel, seed=10 * c + i)
            made[rel] = name
    return made


def _write(path: Path, rows, encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows(rows)
    return path


def _by_name(listing) -> list[str]:
    return [listing.class_names[k] for k in listing.labels]


def test_manifest_is_a_file_layout():
    layout = Manifest()
    assert isinstance(layout, DatasetLayout)
    assert (layout.name, layout.reads) == ("manifest", "file")
    assert layout.description and "\n" not in layout.description


def test_relative_and_absolute_paths_give_the_same_rows(tmp_path):
    made = _tree(tmp_path / "data")
    rows = sorted(made.items())
    relative = _write(tmp_path / "data" / "rel.csv", [("path", "label"), *rows])
    absolute = _write(tmp_path / "data" / "abs.csv",
                      [("path", "label"), *((str(tmp_path / "data" / p), c) for p, c in rows)])
    dotted = _write(tmp_path / "data" / "dot.csv", [("path", "label"), *((f"./{p}", c) for p, c in rows)])
    listings = [Manifest().list_images(path) for path in (relative, absolute, dotted)]
    for listing in listings:
        assert listing.root == tmp_path / "data"
        assert listing.paths == [p for p, _ in rows] and _by_name(listing) == [c for _, c in rows]
        assert listing.labels.dtype == np.int32 and listing.splits is None
        assert listing.rejected == [] and listing.ignored == []


def test_an_absolute_path_outside_the_folder_stays_absolute_and_opens(tmp_path):
    _png(tmp_path / "elsewhere" / "x.png")
    _tree(tmp_path / "data", classes=("a",), per_class=1)
    manifest = _write(tmp_path / "data" / "m.csv",
                      [("path", "label"), ("a/0.png", "a"), (str(tmp_path / "elsewhere" / "x.png"), "b"),
                       ("../elsewhere/x.png", "b")])
    listing = Manifest().list_images(manifest)
    outside = (tmp_path / "elsewhere" / "x.png").as_posix()
    assert listing.paths == ["a/0.png", outside]
    assert (listing.root / listing.paths[1]).is_file()
    assert [reason for _, reason in listing.rejected] == [
        "line 4: ../elsewhere/x.png: duplicate path, already on line 3"]


def test_a_manifest_of_a_class_per_folder_tree_lists_what_the_tree_does(tmp_path):
    tree = tmp_path / "tree"
    rows = list(_tree(tree).items())
    random.Random(0).shuffle(rows)  # the manifest's order is not the listing's
    manifest = _write(tmp_path / "tree.csv", [("path", "label"), *((f"tree/{p}", c) for p, c in rows)])
    inside = _write(tree / "labels.csv", [("path", "label"), *rows])
    folders = ClassPerFolder().list_images(tree)
    listed = Manifest().list_images(inside)
    assert listed.paths == folders.paths and listed.class_names == folders.class_names
    np.testing.assert_array_equal(listed.labels, folders.labels)
    outer = Manifest().list_images(manifest)
    assert outer.paths == [f"tree/{p}" for p in folders.paths] and outer.class_names == folders.class_names


def test_splits_are_canonical_aligned_and_ordered_by_split_class_path(tmp_path):
    made = _tree(tmp_path, classes=("cat", "dog"), per_class=3)
    split_of = {"cat/0.png": "Training", "cat/1.png": "VALID", "cat/2.png": "test",
                "dog/0.png": "train", "dog/1.png": "Validation", "dog/2.png": "TESTING"}
    canonical = {"cat/0.png": "train", "cat/1.png": "val", "cat/2.png": "test",
                 "dog/0.png": "train", "dog/1.png": "val", "dog/2.png": "test"}
    rows = [(split_of[p], "x", c, p) for p, c in sorted(made.items(), reverse=True)]
    manifest = _write(tmp_path / "m.csv", [("Split", "note", "LABEL", "Path"), *rows])
    listing = Manifest().list_images(manifest)
    assert listing.paths == ["cat/0.png", "dog/0.png", "cat/1.png", "dog/1.png", "cat/2.png", "dog/2.png"]
    assert listing.splits == [canonical[p] for p in listing.paths]
    assert _by_name(listing) == [made[p] for p in listing.paths]
    assert listing.class_names == ["cat", "dog"]


def test_utf8_with_a_bom_and_extra_columns(tmp_path):
    _tree(tmp_path, classes=("café",), per_class=2)
    manifest = _write(tmp_path / "m.csv", [("id", "PATH", " Label "), ("1", "café/1.png", "café"),
                                           ("2", " café/0.png ", "café")], encoding="utf-8-sig")
    assert manifest.read_bytes().startswith(b"\xef\xbb\xbf")
    listing = Manifest().list_images(manifest)
    assert listing.paths == ["café/0.png", "café/1.png"] and listing.class_names == ["café"]


def test_bad_rows_are_rejected_with_their_line_numbers_and_the_good_rows_kept(tmp_path):
    _tree(tmp_path, classes=("cat", "dog"), per_class=2)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,split,note\n"                  # 1
        "cat/0.png,cat,train,\n"                   # 2  good
        "cat/9.png,cat,train,\n"                   # 3  missing
        ",cat,train,\n"                            # 4  empty path
        "dog/0.png,,train,\n"                      # 5  empty label
        "dog/1.png,dog,holdout,\n"                 # 6  unknown split
        "cat/1.png,cat,,\n"                        # 7  empty split
        "\n"                                       # 8  blank, skipped
        'cat/0.png,cat,val,"two\nlines"\n'         # 9-10  duplicate of line 2
        "notes.txt,cat,train,\n"                   # 11 not an image
        "folder.png,dog,train,\n"                  # 12 not a file
        "dog/1.png,dog,Test,\n"                    # 13 good
        "./cat/0.png,dog,test,\n",                 # 14 duplicate, another label
        encoding="utf-8",
    )
    listing = Manifest().list_images(manifest)
    assert listing.paths == ["cat/0.png", "dog/1.png"] and listing.splits == ["train", "test"]
    assert _by_name(listing) == ["cat", "dog"]
    reasons = dict(listing.rejected)
    # A bad line whose path another line lists fine is named with its line number.
    assert [path for path, _ in listing.rejected] == [
        "cat/9.png", "<line 4>", "dog/0.png", "dog/1.png (line 6)", "cat/1.png", "cat/0.png (line 9)",
        "notes.txt", "folder.png", "./cat/0.png (line 14)"]
    assert reasons["cat/9.png"] == "line 3: cat/9.png does not exist"
    assert reasons["<line 4>"] == "line 4: empty path"
    assert reasons["dog/0.png"] == "line 5: dog/0.png: empty label"
    assert reasons["dog/1.png (line 6)"].startswith("line 6: dog/1.png: unknown split 'holdout'")
    assert "train, val, test" in reasons["dog/1.png (line 6)"]
    assert reasons["cat/1.png"].startswith("line 7: cat/1.png: empty split")
    assert reasons["cat/0.png (line 9)"] == "line 9: cat/0.png: duplicate path, already on line 2"
    assert reasons["notes.txt"].startswith("line 11: notes.txt: not an image file (extension .txt")
    assert reasons["folder.png"] == "line 12: folder.png is not a file"
    assert reasons["./cat/0.png (line 14)"] == ("line 14: ./cat/0.png: duplicate path, already on line 2, "
                                                "labelled 'cat' there")
    assert all("\n" not in reason for _, reason in listing.rejected)


def test_a_label_whose_rows_are_all_rejected_is_an_empty_class(tmp_path):
    _tree(tmp_path, classes=("cat",), per_class=1)
    manifest = _write(tmp_path / "m.csv", [("path", "label"), ("cat/0.png", "cat"), ("dog/0.png", "dog")])
    listing = Manifest().list_images(manifest)
    assert listing.class_names == ["cat"] and listing.empty_classes == ["dog"]
    assert listing.rejected == [("dog/0.png", "line 3: dog/0.png does not exist")]


def test_exclude_leaves_a_class_out_and_refuses_an_unknown_one(tmp_path):
    made = _tree(tmp_path)
    manifest = _write(tmp_path / "m.csv", [("path", "label"), *sorted(made.items()), ("eel/9.png", "eel")])
    listing = Manifest().list_images(manifest, exclude=["eel"])
    assert listing.class_names == ["cat", "dog"] and listing.excluded_classes == ["eel"]
    assert listing.paths == sorted(p for p, c in made.items() if c != "eel")
    assert listing.rejected == []  # an excluded class's rows are not checked
    with pytest.raises(DatasetError, match=r"m\.csv: no label 'owl' to exclude \(its labels: cat, dog, eel"):
        Manifest().list_images(manifest, exclude=["owl"])
    with pytest.raises(DatasetError, match="every row is of an excluded class"):
        Manifest().list_images(manifest, exclude=["cat", "dog", "eel"])


@pytest.mark.parametrize("content, message", [
    ("file,label\na.png,a\n", r"no path column in its header row \(its columns: 'file', 'label'\)"),
    ("path\na.png\n", r"no label column"),
    ("path;label\na.png;a\n", r"no path or label column .* it must be comma-separated"),
    ("path,label,path\na.png,a,b.png\n", r"more than one 'path' column"),
    ("", r"empty"),
    ("path,label\n\n", r"no rows under its header"),
    ("path,label\nmissing.png,a\nother.txt,b\n", r"no usable row of 2 \(line 2: missing.png does not exist;"),
])
def test_a_bad_file_is_refused_in_one_line_naming_it(tmp_path, content, message):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as raised:
        Manifest().list_images(manifest)
    assert str(raised.value).startswith(str(manifest)) and "\n" not in str(raised.value)


def test_a_file_not_utf8_and_a_source_not_a_file_are_refused(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label\ncaf\u00e9.png,a\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.csv: cannot be read as a UTF-8 CSV file"):
        Manifest().list_images(latin)
    with pytest.raises(DatasetError, match=r"nothing\.csv: no such file"):
        Manifest().list_images(tmp_path / "nothing.csv")
    with pytest.raises(DatasetError, match="a folder, not a file"):
        Manifest().list_images(tmp_path)


@pytest.mark.slow  # loads TensorFlow and VGG16
def test_extract_features_reads_a_manifest(tmp_path):
    from extract import extract_features
    from features import FeatureFile

    made = _tree(tmp_path / "data", classes=("a", "b"), per_class=2)
    manifest = _write(tmp_path / "data" / "list.csv",
                      [("path", "label"), *sorted(made.items(), reverse=True)])
    listing = Manifest().list_images(manifest)
    assert isinstance(LAYOUTS["manifest"], Manifest)
    summary = extract_features(manifest=manifest, weights="hed-bsds500", image_size=32,
                               pooling="avg", progress=False, output=tmp_path / "m.hdf5")
    assert summary.written == 4
    with FeatureFile(tmp_path / "m.hdf5") as ff:
        assert ff.paths == listing.paths
        assert [ff.label_names[k] for k in ff.labels] == _by_name(listing)
        assert ff.attrs["dataset"] == "list"
