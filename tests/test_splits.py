"""A dataset's own split, end to end in stage 1: split folders and a manifest give the same rows,
features and splits; bad manifest rows are recorded or refused; an image moved to another
split is refused or extracted again, never kept with its old split; Ray writes what the local
engine writes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

from extract import ExtractError, extract_features
from features import FeatureFile

pytestmark = pytest.mark.slow

SMALL = dict(weights="hed-bsds500", image_size=32, pooling="avg", progress=False)
CLASSES = ("bluebell", "crocus", "daisy")


def split_of(k: int) -> str:
    """The fixed rule: of each class's sorted images, 3 of 5 train, 1 val, 1 test."""
    return ("train", "train", "train", "val", "test")[k % 5]


@pytest.fixture
def split_tree(flowers17, tmp_path) -> Path:
    """A split-folders copy (links) of 10 images of each of 3 Flowers-17 classes; ``val`` is
    named ``validation``, as Keras' cats-and-dogs set names it."""
    root = tmp_path / "output"
    for name in CLASSES:
        for k, image in enumerate(sorted((flowers17 / name).iterdir())[:10]):
            folder = {"val": "validation"}.get(split_of(k), split_of(k))
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            (root / folder / name / image.name).symlink_to(image)
    return root


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return path


def rows_of(path: Path) -> tuple[list[str], list[str], list[str] | None]:
    with FeatureFile(path) as ff:
        return ff.paths, [ff.label_names[k] for k in ff.labels], ff.splits


def test_split_folders_and_their_manifest_give_the_same_rows_features_and_splits(split_tree, tmp_path):
    summary = extract_features(split_tree, output=tmp_path / "folders.hdf5", **SMALL)
    assert summary.written == 30
    paths, labels, splits = rows_of(summary.output)
    for path, label, split in zip(paths, labels, splits, strict=True):
        folder, name, image = path.split("/")
        assert name == label and split == {"validation": "val"}.get(folder, folder)
    for name in CLASSES:  # each image's split is the rule's
        images = sorted(p.rsplit("/", 1)[1] for p in paths if p.split("/")[1] == name)
        by_image = {p.rsplit("/", 1)[1]: s for p, s in zip(paths, splits, strict=True)
                    if p.split("/")[1] == name}
        assert [by_image[image] for image in images] == [split_of(k) for k in range(10)]
    # The manifest of the same images, shuffled, at the root of the tree.
    order = np.random.default_rng(0).permutation(len(paths))
    manifest = write_manifest(split_tree / "all.csv",
                              [(paths[i], labels[i], splits[i].upper()) for i in order])
    listed = extract_features(manifest=manifest, output=tmp_path / "manifest.hdf5", **SMALL)
    assert rows_of(listed.output) == (paths, labels, splits)
    with FeatureFile(summary.output) as a, FeatureFile(listed.output) as b:
        np.testing.assert_array_equal(a.load_features(), b.load_features())  # bit-equal


def test_bad_manifest_rows_are_recorded_by_line_or_refused(split_tree, tmp_path):
    good = sorted(p.relative_to(split_tree).as_posix() for p in split_tree.glob("train/*/*.jpg"))[:4]
    manifest = write_manifest(tmp_path / "list.csv", [
        *((str(split_tree / p), p.split("/")[1], p.split("/")[0]) for p in good),
        ("missing.jpg", "daisy", "train"),
        (str(split_tree / good[0]), "daisy", "train"),
        (str(split_tree / good[1]), "", "test"),
    ])
    strict = run_module("extract", "--manifest", manifest, "--strict", "-o", tmp_path / "s.hdf5",
                        "--weights", "hed-bsds500", "--image-size", "32", "-q")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    [line] = [x for x in strict.stderr.splitlines() if "error:" in x]
    assert "line 6: " in line and "and 2 more; fix them, or leave out --strict" in line
    assert not (tmp_path / "s.hdf5").exists()
    summary = extract_features(manifest=manifest, output=tmp_path / "m.hdf5", **SMALL)
    assert summary.written == 4
    with FeatureFile(summary.output) as ff:
        reasons = dict(ff.skipped)
    assert reasons["missing.jpg"] == "rejected, line 6: missing.jpg does not exist"
    assert sorted(r.split(":")[0] for r in reasons.values()) == [
        "rejected, line 6", "rejected, line 7", "rejected, line 8"]
    again = extract_features(manifest=manifest, output=tmp_path / "m.hdf5", **SMALL)
    assert again.up_to_date  # recorded once: nothing to do the second time


def test_an_image_moved_to_another_split_is_refused_or_extracted_again(split_tree, tmp_path):
    out = tmp_path / "f.hdf5"
    extract_features(split_tree, output=out, **SMALL)
    moved = next((split_tree / "validation" / "daisy").iterdir())
    (split_tree / "train" / "daisy" / moved.name).symlink_to(moved.resolve())
    moved.unlink()
    with pytest.raises(ExtractError, match=f"validation/daisy/{moved.name} is in val there, and the dataset "
                                           f"has it in train \\(train/daisy/{moved.name}\\).*pass --prune"):
        extract_features(split_tree, output=out, **SMALL)
    done = extract_features(split_tree, output=out, prune=True, **SMALL)
    assert done.written == 1 and done.pruned == 1
    paths, _, splits = rows_of(out)
    assert dict(zip(paths, splits, strict=True))[f"train/daisy/{moved.name}"] == "train"
    assert f"validation/daisy/{moved.name}" not in paths and len(paths) == 30


def test_a_manifests_changed_split_is_extracted_again_under_the_same_path(split_tree, tmp_path):
    rows = [(p.relative_to(split_tree).as_posix(), p.parent.name, "train")
            for p in sorted(split_tree.rglob("*.jpg"))[:6]]
    rows[-1] = (rows[-1][0], rows[-1][1], "test")
    manifest = write_manifest(split_tree / "list.csv", rows)
    out = tmp_path / "m.hdf5"
    first = extract_features(manifest=manifest, output=out, **SMALL)
    with FeatureFile(out) as ff:
        before = dict(zip(ff.paths, ff.load_features(), strict=True))
    write_manifest(manifest, [*rows[:-1], (rows[-1][0], rows[-1][1], "val")])
    with pytest.raises(ExtractError, match=f"{rows[-1][0]} is in test there, and the dataset has it in val"):
        extract_features(manifest=manifest, output=out, **SMALL)
    again = extract_features(manifest=manifest, output=out, prune=True, **SMALL)
    assert first.written == 6 and again.written == 1 and again.pruned == 1  # its old row, removed
    paths, _, splits = rows_of(out)
    assert dict(zip(paths, splits, strict=True))[rows[-1][0]] == "val" and len(paths) == 6
    with FeatureFile(out) as ff:
        after = dict(zip(ff.paths, ff.load_features(), strict=True))
    assert all(np.array_equal(after[p], before[p]) for p in before)  # the same image, the same row


def test_a_file_without_splits_is_not_extended_with_them(split_tree, tmp_path):
    out = tmp_path / "f.hdf5"
    extract_features(split_tree / "train", output=out, **SMALL)
    # The same name, now a split-folders dataset: its train/ split holds the same images.
    shutil.copytree(split_tree / "train", tmp_path / "train" / "train", symlinks=True)
    with pytest.raises(ExtractError, match="its rows have no split and this dataset's do: pass --overwrite"):
        extract_features(tmp_path / "train", output=out, **SMALL)


@pytest.mark.ray
def test_ray_writes_the_splits_the_local_engine_writes(split_tree, tmp_path):
    pytest.importorskip("ray.data")
    local = extract_features(split_tree, output=tmp_path / "local.hdf5", **SMALL)
    done = run_module("extract", "--dataset", split_tree, "-o", tmp_path / "ray.hdf5", "--weights",
                      "hed-bsds500", "--image-size", "32", "--pooling", "avg", "-q", "--engine", "ray",
                      "--shard-size", "8", "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert rows_of(tmp_path / "ray.hdf5") == rows_of(local.output)
    with FeatureFile(tmp_path / "ray.hdf5") as a, FeatureFile(local.output) as b:
        np.testing.assert_array_equal(a.load_features(), b.load_features())
    # A manifest's bad line is recorded by the Ray engine as by the local one.
    paths, labels, splits = rows_of(local.output)
    manifest = write_manifest(split_tree / "list.csv", [*zip(paths, labels, splits, strict=True),
                                                         ("gone.jpg", "daisy", "train")])
    done = run_module("extract", "--manifest", manifest, "-o", tmp_path / "ray_m.hdf5", "--weights",
                      "hed-bsds500", "--image-size", "32", "--pooling", "avg", "-q", "--engine", "ray",
                      "--shard-size", "8", "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    here = extract_features(manifest=manifest, output=tmp_path / "local_m.hdf5", **SMALL)
    with FeatureFile(tmp_path / "ray_m.hdf5") as a, FeatureFile(here.output) as b:
        assert a.skipped == b.skipped == [("gone.jpg", "rejected, line 32: gone.jpg does not exist")]
    assert extract_features(manifest=manifest, output=tmp_path / "ray_m.hdf5", **SMALL).up_to_date


# -- classify on a stored split ----------------------------------------------------------------

@pytest.fixture
def split_file(split_tree, tmp_path) -> Path:
    return extract_features(split_tree, output=tmp_path / "split.hdf5", **SMALL).output


def test_classify_reports_on_the_test_folder_and_searches_on_train(split_file, tmp_path):
    from classify import train_and_evaluate

    paths, _, splits = rows_of(split_file)
    result = train_and_evaluate(split_file, json=tmp_path / "r.json", save=tmp_path / "r.joblib",
                                jobs=1)["logreg"]
    assert [paths[i] for i in result.test_indices] == [p for p, s in zip(paths, splits, strict=True)
                                                       if s == "test"]
    assert result.search.train_rows == splits.count("train")
    import json

    recorded = json.loads((tmp_path / "r.json").read_text())["settings"]["split"]
    assert recorded == {"source": "stored", "train_rows": 18, "report_on": "test", "report_rows": 6,
                        "validation": "cross-validation", "val_rows_unused": 6}
    card = json.loads((tmp_path / "r.card.json").read_text())
    assert card["split"] == recorded
    # With the val split as the one validation fold: the refit is on train and val.
    with_val = train_and_evaluate(split_file, use_val=True, jobs=1)["logreg"]
    assert with_val.search.train_rows == 24 and list(with_val.test_indices) == list(result.test_indices)
    # --resplit ignores the stored split: a random, stratified one.
    again = train_and_evaluate(split_file, resplit=True, test_size=0.5, jobs=1)["logreg"]
    assert len(again.test_indices) == 15


def test_classify_refuses_a_test_size_with_a_stored_split_and_says_which_rows(split_file):
    refused = run_module("classify", "-f", split_file, "--test-size", "0.3", "-j", "1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "holds its dataset's own split: test_size (--test-size) does not apply" in refused.stderr
    done = run_module("classify", "-f", split_file, "-j", "1")
    assert done.returncode == 0, done.stderr
    assert ("rows: 18 train (cross-validated), 6 test (reported), 6 val unused (--use-val chooses on "
            "them); the file's own split") in done.stderr
    with_val = run_module("classify", "-f", split_file, "--use-val", "-j", "1")
    assert with_val.returncode == 0, with_val.stderr
    assert "18 train + 6 val (the val split chooses the parameters, then both refit)" in with_val.stderr


def test_a_split_without_test_rows_is_reported_on_val(split_tree, tmp_path):
    from classify import train_and_evaluate

    shutil.rmtree(split_tree / "test")
    out = extract_features(split_tree, output=tmp_path / "tv.hdf5", **SMALL).output
    paths, _, splits = rows_of(out)
    result = train_and_evaluate(out, jobs=1)["logreg"]
    assert {splits[i] for i in result.test_indices} == {"val"} and len(result.test_indices) == 6
    with pytest.raises(ValueError, match="with no test split the report is on val"):
        train_and_evaluate(out, use_val=True, jobs=1)


def test_predict_on_a_split_tree_gives_the_split_column_and_a_report_per_split(split_file, split_tree,
                                                                                 tmp_path):
    from classify import predict, train_and_evaluate
    from classify.inference.predict import split_reports

    train_and_evaluate(split_file, save=tmp_path / "m.joblib", jobs=1)
    predictions = predict(tmp_path / "m.joblib", split_tree, progress=False)
    assert [(p.split, p.label) for p in predictions] == [
        (s, label) for s, label in zip(rows_of(split_file)[2], rows_of(split_file)[1], strict=True)]
    report = split_reports(predictions)
    assert [line.split(":")[0] for line in report.splitlines() if "images, accuracy" in line] == \
        ["train", "val", "test"]
    done = run_module("classify", "predict", "--model", tmp_path / "m.joblib", split_tree, "--report",
                      "-o", tmp_path / "p.csv", "-q")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["split"] for r in rows] == [p.split for p in predictions]
    assert done.stdout == report + "\n"


def test_a_mended_manifest_line_is_extracted_and_a_spoilt_one_is_gone(split_tree, tmp_path):
    images = sorted(p.relative_to(split_tree).as_posix() for p in split_tree.glob("train/*/*.jpg"))[:4]
    rows = [(p, p.split("/")[1], "train") for p in images]
    manifest = write_manifest(split_tree / "list.csv", [*rows[:3], (rows[3][0], "", "train")])
    out = tmp_path / "m.hdf5"
    assert extract_features(manifest=manifest, output=out, **SMALL).written == 3
    write_manifest(manifest, [*rows[:2], (rows[2][0], "", "train"), rows[3]])  # line 5 mended, 4 spoilt
    again = extract_features(manifest=manifest, output=out, **SMALL)
    assert again.written == 1  # the mended line's image
    with FeatureFile(out) as ff:
        assert rows[3][0] in ff.paths and rows[3][0] not in dict(ff.skipped)
        assert rows[2][0] in ff.paths  # spoilt: gone, kept until --prune
    pruned = extract_features(manifest=manifest, output=out, prune=True, **SMALL)
    assert pruned.pruned == 1
    with FeatureFile(out) as ff:
        assert rows[2][0] not in ff.paths
    recorded = extract_features(manifest=manifest, output=out, **SMALL)  # now recorded as rejected
    assert [reason for _, reason in recorded.skipped] == ["rejected, line 4: " + rows[2][0] + ": empty label"]


def test_a_manifests_changed_label_is_refused_or_extracted_again(split_tree, tmp_path):
    images = sorted(p.relative_to(split_tree).as_posix() for p in split_tree.glob("train/*/*.jpg"))[:4]
    rows = [(p, p.split("/")[1], "train") for p in images]
    manifest = write_manifest(split_tree / "list.csv", rows)
    out = tmp_path / "m.hdf5"
    extract_features(manifest=manifest, output=out, **SMALL)
    write_manifest(manifest, [*rows[:3], (rows[3][0], "tulip", "train")])
    with pytest.raises(ExtractError, match=f"{rows[3][0]} is in class {rows[3][1]} there, and the dataset "
                                           "has it in class tulip"):
        extract_features(manifest=manifest, output=out, **SMALL)
    assert extract_features(manifest=manifest, output=out, prune=True, **SMALL).written == 1
    paths, labels, _ = rows_of(out)
    assert dict(zip(paths, labels, strict=True))[rows[3][0]] == "tulip"


def test_an_image_deleted_from_one_split_is_gone_not_moved(split_tree, tmp_path):
    out = tmp_path / "f.hdf5"
    image = next((split_tree / "validation" / "daisy").iterdir())
    (split_tree / "train" / "daisy" / image.name).symlink_to(image.resolve())  # the name in two splits
    extract_features(split_tree, output=out, **SMALL)
    image.unlink()
    done = extract_features(split_tree, output=out, prune=True, **SMALL)
    assert done.written == 0 and done.pruned == 1


def test_an_empty_file_of_the_other_layout_is_refused_in_one_line(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        (tmp_path / "d" / name / "x.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "e.hdf5"
    assert extract_features(tmp_path / "d", output=out, **SMALL).rows == 0
    (tmp_path / "d" / "train").mkdir()
    for name in ("a", "b"):
        (tmp_path / "d" / name).rename(tmp_path / "d" / "train" / name)
    with pytest.raises(ExtractError, match="its rows have no split and this dataset's do: pass --overwrite"):
        extract_features(tmp_path / "d", output=out, **SMALL)


@pytest.mark.ray
def test_classify_on_ray_takes_the_stored_split_and_the_weights_as_locally(split_file):
    pytest.importorskip("ray")
    from classify import train_and_evaluate

    common = dict(models=["logreg", "rf"], use_val=True, class_weight="balanced", jobs=2)
    here = train_and_evaluate(split_file, **common)
    there = train_and_evaluate(split_file, engine="ray", **common)
    for name in ("logreg", "rf"):
        assert list(there[name].test_indices) == list(here[name].test_indices)
        assert there[name].best_params == here[name].best_params
        assert there[name].settings["split"] == here[name].settings["split"]
        np.testing.assert_array_equal(there[name].search.test_pred, here[name].search.test_pred)
