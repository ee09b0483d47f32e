"""Datasets: the registry, finding a dataset, and listing a class-per-folder tree."""

from __future__ import annotations

import pytest

from extract.sources import DatasetError, list_images, load_registry, resolve_dataset


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_registry_lists_the_known_datasets():
    registry = load_registry()
    assert set(registry) >= {"animals", "caltech101", "flowers17", "dogs_vs_cats", "tf_flowers"}
    for name, entry in registry.items():
        assert entry["url"].startswith("https://"), name
        assert entry["license"], name
        assert entry["classes"] >= 2 and entry["images"] > entry["classes"], name
        assert entry.get("download") or entry.get("manual"), name
    flowers = registry["flowers17"]
    assert len(flowers["consecutive_classes"]) == flowers["classes"] == 17
    assert flowers["images_per_class"] * flowers["classes"] == flowers["images"]


def test_listing_order_labels_and_ignored_files(tmp_path):
    for rel in ("b/2.jpg", "b/1.PNG", "a/z.jpeg", "a/sub/y.jpg", "a/.hidden.jpg", "a/notes.txt"):
        touch(tmp_path / rel)
    touch(tmp_path / "LICENSE.txt")
    touch(tmp_path / "README")
    listing = list_images(tmp_path)
    assert listing.class_names == ["a", "b"]
    assert listing.paths == ["a/z.jpeg", "a/sub/y.jpg", "b/1.PNG", "b/2.jpg"]
    assert listing.labels.tolist() == [0, 0, 1, 1]
    assert sorted(listing.ignored) == ["LICENSE.txt", "README", "a/notes.txt"]


def test_listing_refuses_a_folder_without_classes(tmp_path):
    touch(tmp_path / "flat.jpg")
    with pytest.raises(DatasetError, match="no class folders"):
        list_images(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        list_images(tmp_path)


def test_resolve_by_name_then_by_path(tmp_path, monkeypatch):
    (tmp_path / "data" / "mine" / "c").mkdir(parents=True)
    assert resolve_dataset("mine", tmp_path / "data") == tmp_path / "data" / "mine"
    by_path = resolve_dataset(str(tmp_path / "data" / "mine"), tmp_path / "elsewhere")
    assert by_path == tmp_path / "data" / "mine"
    monkeypatch.setenv("FEATUREBANK_DATA", str(tmp_path / "data"))
    assert resolve_dataset("mine") == tmp_path / "data" / "mine"


def test_missing_known_dataset_says_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        resolve_dataset("tf_flowers", tmp_path)
    message = str(err.value)
    assert "scripts/download.py tf_flowers" in message and "\n" not in message
    assert load_registry()["tf_flowers"]["url"] in message
    with pytest.raises(DatasetError, match="Kaggle"):
        resolve_dataset("animals", tmp_path)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(DatasetError, match="known datasets: animals, caltech101"):
        resolve_dataset("nope", tmp_path)
