"""The feature store: writer → file → reader, and the reader's checks."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from features import FeatureFile, FeatureFileError, FeatureWriter, schema


def write(path, rows=25, dim=6, buffer_size=10, dtype="float32", classes=("a", "b", "c")):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, dim)).astype(np.float32)
    y = np.arange(rows) % len(classes)
    paths = [f"{classes[label]}/img_{i:03d}.jpg" for i, label in enumerate(y)]
    with FeatureWriter(path, dim=dim, label_names=classes, attrs={"backbone": "test"},
                       dtype=dtype, buffer_size=buffer_size) as w:
        # Uneven pieces, so rows cross buffer boundaries.
        for start, stop in ((0, 3), (3, 17), (17, rows)):
            w.add(X[start:stop], y[start:stop], paths[start:stop])
        w.skip("c/broken.jpg", "cannot decode: truncated")
    return X, y, paths


def test_round_trip(tmp_path):
    path = tmp_path / "f.hdf5"
    X, y, paths = write(path)
    with FeatureFile(path) as ff:
        np.testing.assert_array_equal(ff.load_features(), X)
        np.testing.assert_array_equal(ff.labels, y)
        assert ff.paths == paths
        assert ff.label_names == ["a", "b", "c"]
        assert ff.skipped == [("c/broken.jpg", "cannot decode: truncated")]
        assert ff.attrs["backbone"] == "test"
        assert ff.attrs["rows_committed"] == 25 and ff.attrs["complete"] is True
        assert ff.attrs["format_version"] == schema.FORMAT_VERSION


def test_seed_keys_shapes_and_dtypes(tmp_path):
    path = tmp_path / "f.hdf5"
    write(path, rows=25, dim=6)
    with h5py.File(path, "r") as f:
        for key in ("features", "labels", "label_names", "paths", "skipped"):
            assert key in f
        assert f["features"].shape == (25, 6) and f["features"].dtype == np.float32
        assert f["features"].chunks is None  # contiguous: read past HDF5 by block (features.digests)
        assert f["features"].attrs["xxh3_blocks"].shape == (1,)  # 25 rows of 24 bytes: one block
        assert f["labels"].shape == (25,) and f["labels"].dtype == np.int32
        assert f["label_names"].shape == (3,)
        assert h5py.check_string_dtype(f["label_names"].dtype).encoding == "utf-8"
        assert h5py.check_string_dtype(f["paths"].dtype).encoding == "utf-8"
        assert f["skipped"].shape == (1, 2)


def test_float16_storage_halves_features(tmp_path):
    X, _, _ = write(tmp_path / "a.hdf5", rows=40, dim=64, dtype="float32")
    write(tmp_path / "b.hdf5", rows=40, dim=64, dtype="float16")
    with h5py.File(tmp_path / "b.hdf5", "r") as f:
        assert f["features"].dtype == np.float16
        assert f.attrs["dtype"] == "float16"
    with FeatureFile(tmp_path / "b.hdf5") as ff:
        loaded = ff.load_features()
        assert loaded.dtype == np.float32
        # Stored as float16: each value rounded to the nearest one, as NumPy rounds.
        np.testing.assert_array_equal(loaded, X.astype(np.float16).astype(np.float32))


def test_rows_are_committed_per_buffer(tmp_path):
    path = tmp_path / "f.hdf5"
    w = FeatureWriter(path, dim=2, label_names=["a"], attrs={}, buffer_size=4)
    w.add(np.zeros((3, 2)), [0, 0, 0], ["1", "2", "3"])
    with h5py.File(path, "r") as f:
        assert f.attrs["rows_committed"] == 0 and len(f["features"]) == 0
    w.add(np.ones((2, 2)), [0, 0], ["4", "5"])
    with h5py.File(path, "r") as f:
        assert f.attrs["rows_committed"] == 5 and not f.attrs["complete"]
    w.close()


def test_writer_rejects_bad_rows(tmp_path):
    with FeatureWriter(tmp_path / "f.hdf5", dim=3, label_names=["a", "b"], attrs={}) as w:
        with pytest.raises(ValueError, match="shape"):
            w.add(np.zeros((2, 4)), [0, 1], ["x", "y"])
        with pytest.raises(ValueError, match="length"):
            w.add(np.zeros((2, 3)), [0], ["x", "y"])
        with pytest.raises(ValueError, match="labels"):
            w.add(np.zeros((1, 3)), [2], ["x"])


def test_unfinished_file_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "f.hdf5"
    w = FeatureWriter(path, dim=2, label_names=["a", "b"], attrs={}, buffer_size=2)
    w.add(np.zeros((4, 2)), [0, 1, 0, 1], list("wxyz"))
    w.close(complete=False)
    with pytest.raises(FeatureFileError, match="did not finish"):
        FeatureFile(path)
    with FeatureFile(path, allow_partial=True) as ff:
        assert ff.n_rows == 4


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f.__delitem__("labels"), "missing labels"),
        (lambda f: f["labels"].resize((3,)), "2 feature rows but 3 labels"),
        (lambda f: f["labels"].__setitem__(0, 7), "indices into the 2 label_names"),
    ],
)
def test_reader_names_what_is_wrong(tmp_path, damage, message):
    path = tmp_path / "f.hdf5"
    with FeatureWriter(path, dim=2, label_names=["a", "b"], attrs={}) as w:
        w.add(np.zeros((2, 2)), [0, 1], ["x", "y"])
    with h5py.File(path, "a") as f:
        f["labels"].resize((2,))
        damage(f)
        f.attrs.pop("rows_committed")
    with pytest.raises(FeatureFileError, match=message) as err:
        FeatureFile(path)
    assert str(path) in str(err.value)


def test_reader_rejects_files_that_are_not_hdf5(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("not a feature file\n")
    with pytest.raises(FeatureFileError, match="not an HDF5 file"):
        FeatureFile(text)
    with pytest.raises(FeatureFileError, match="no such file"):
        FeatureFile(tmp_path / "absent.hdf5")


def test_reader_accepts_a_file_with_only_the_three_seed_keys(tmp_path):
    # The published recipe's writer stores just these three datasets.
    path = tmp_path / "recipe.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.ones((4, 5), dtype=np.float32))
        f.create_dataset("labels", data=np.array([0, 1, 0, 1]))
        f.create_dataset("label_names", data=["cats", "dogs"], dtype=h5py.string_dtype())
    with FeatureFile(path) as ff:
        assert ff.n_rows == 4 and ff.label_names == ["cats", "dogs"] and ff.paths is None


# -- crash safety and resuming, at the level of the writer ---------------------------------


def test_every_commit_leaves_a_valid_file_of_committed_rows(tmp_path):
    path = tmp_path / "f.hdf5"
    rng = np.random.default_rng(1)
    X = rng.standard_normal((10, 3)).astype(np.float32)
    w = FeatureWriter(path, dim=3, label_names=["a", "b"], attrs={"backbone": "t"}, buffer_size=4)
    for i in range(10):
        w.add(X[i : i + 1], [i % 2], [f"{i}.jpg"])
        # What another process sees at this moment, as if the writer were killed now.
        with FeatureFile(path, allow_partial=True) as ff:
            committed = (i + 1) // 4 * 4
            assert ff.n_rows == committed and ff.attrs["complete"] is False
            np.testing.assert_array_equal(ff.load_features(), X[:committed])
            assert ff.paths == [f"{j}.jpg" for j in range(committed)]
    assert (tmp_path / "f.hdf5.parts").is_dir()
    w.close()
    assert not (tmp_path / "f.hdf5.parts").exists()  # the finished file is self-contained
    with h5py.File(path, "r") as f:
        assert not f["features"].is_virtual and "segments" not in f.attrs
    with FeatureFile(path) as ff:
        np.testing.assert_array_equal(ff.load_features(), X)


def test_resuming_a_finished_file_appends_and_keeps_old_labels(tmp_path):
    path = tmp_path / "f.hdf5"
    X, y, paths = write(path, rows=12, dim=4)
    more = np.full((3, 4), 7, dtype=np.float32)
    with FeatureWriter(path, dim=4, label_names=["a", "b", "c", "d"], attrs={"backbone": "test"},
                       buffer_size=2, resume=True) as w:
        assert w.rows_written == 12
        w.add(more, [3, 0, 3], ["d/1.jpg", "a/new.jpg", "d/2.jpg"])
        w.skip("d/bad.jpg", "empty file")
    with FeatureFile(path) as ff:
        np.testing.assert_array_equal(ff.load_features(), np.concatenate([X, more]))
        np.testing.assert_array_equal(ff.labels, np.concatenate([y, [3, 0, 3]]))
        assert ff.label_names == ["a", "b", "c", "d"]
        assert ff.paths == paths + ["d/1.jpg", "a/new.jpg", "d/2.jpg"]
        assert ff.skipped == [("c/broken.jpg", "cannot decode: truncated"), ("d/bad.jpg", "empty file")]


def test_resume_refuses_label_names_that_renumber(tmp_path):
    path = tmp_path / "f.hdf5"
    write(path, rows=6)
    with pytest.raises(ValueError, match="must start with"):
        FeatureWriter(path, dim=6, label_names=["b", "a", "c"], attrs={}, resume=True)


def test_finish_drops_rows_of_gone_images(tmp_path):
    path = tmp_path / "f.hdf5"
    X, y, paths = write(path, rows=9, dim=6)
    with FeatureWriter(path, dim=6, label_names=["a", "b", "c"], attrs={}, resume=True) as w:
        removed = w.finish(drop={paths[0], paths[4], "c/broken.jpg"})
    assert removed == 3
    keep = [i for i in range(9) if i not in (0, 4)]
    with FeatureFile(path) as ff:
        np.testing.assert_array_equal(ff.load_features(), X[keep])
        assert ff.paths == [paths[i] for i in keep] and ff.skipped == []


def test_a_missing_part_is_named_not_read_as_zeros(tmp_path):
    path = tmp_path / "f.hdf5"
    w = FeatureWriter(path, dim=2, label_names=["a"], attrs={}, buffer_size=2)
    w.add(np.ones((4, 2)), [0] * 4, list("wxyz"))
    w.close(complete=False)
    part = sorted((tmp_path / "f.hdf5.parts").iterdir())[0]
    part.unlink()
    with pytest.raises(FeatureFileError, match=f"part f.hdf5.parts/{part.name} is missing"):
        FeatureFile(path, allow_partial=True)


def test_remove_stale_keeps_only_what_the_index_uses(tmp_path):
    from features.writer import remove_stale

    path = tmp_path / "f.hdf5"
    w = FeatureWriter(path, dim=2, label_names=["a"], attrs={}, buffer_size=2)
    w.add(np.ones((2, 2)), [0, 0], ["x", "y"])
    w.close(complete=False)
    parts = tmp_path / "f.hdf5.parts"
    used = {p.name for p in parts.iterdir()}
    (parts / "part-dead-000000.h5").write_bytes(b"left by a killed run")
    (tmp_path / ".f.hdf5.tmp-123-abc").write_bytes(b"half an index")
    remove_stale(path)
    assert {p.name for p in parts.iterdir()} == used
    assert not (tmp_path / ".f.hdf5.tmp-123-abc").exists()
    with FeatureFile(path, allow_partial=True) as ff:
        assert ff.n_rows == 2


def test_a_failed_write_raises_oserror_and_keeps_committed_rows(tmp_path):
    # A file-size limit stands in for a full disk; run in a child so the limit stays there.
    script = (
        "import resource, sys, numpy as np\n"
        "from features import FeatureWriter\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))\n"
        "try:\n"
        "    with FeatureWriter(sys.argv[1], dim=1000, label_names=['a'], attrs={}, buffer_size=10) as w:\n"
        "        for i in range(5):\n"
        "            w.add(np.ones((10, 1000), np.float32), [0] * 10, [f'{i}-{j}' for j in range(10)])\n"
        "except OSError as exc:\n"
        "    print('OSError', exc.errno)\n"
    )
    import subprocess
    import sys

    path = tmp_path / "f.hdf5"
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr  # no crash
    assert result.stdout.strip() == "OSError 27"  # EFBIG, when the finished file is written
    with FeatureFile(path, allow_partial=True) as ff:
        assert ff.n_rows == 50 and ff.attrs["complete"] is False
        np.testing.assert_array_equal(ff.load_features(), np.ones((50, 1000), np.float32))
    assert not list(tmp_path.glob(".f.hdf5.tmp-*"))


def test_lock_refuses_a_second_writer(tmp_path):
    from features.lock import OutputLock, OutputLockedError

    out = tmp_path / "f.hdf5"
    with OutputLock(out):
        assert (tmp_path / "f.hdf5.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(OutputLockedError, match=f"another extract \\(pid {os.getpid()}\\)"):
            OutputLock(out).acquire()
    assert not (tmp_path / "f.hdf5.lock").exists()
    with OutputLock(out):  # free again once released
        pass


# -- per-row dataset splits ----------------------------------------------------------------

SPLIT_CYCLE = ("train", "train", "val", "test")


def write_with_splits(path, rows=11, buffer_size=2, complete=True, drop=()):
    """Rows added in uneven pieces by a writer with splits: one commit per piece."""
    X = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    paths = [f"a/{i:02d}.jpg" for i in range(rows)]
    splits = [SPLIT_CYCLE[i % 4] for i in range(rows)]
    w = FeatureWriter(path, dim=2, label_names=["a"], attrs={}, buffer_size=buffer_size, splits=True)
    for start, stop in ((0, 3), (3, 9), (9, rows)):
        w.add(X[start:stop], [0] * (stop - start), paths[start:stop], splits=splits[start:stop])
    if complete:
        w.finish(drop=drop)
    else:
        w.close(complete=False)  # as if killed after its last commit
    return X, paths, splits


def test_splits_round_trip_aligned_with_paths(tmp_path):
    path = tmp_path / "f.hdf5"
    X, paths, splits = write_with_splits(path)
    with FeatureFile(path) as ff:
        assert ff.paths == paths and ff.splits == splits
        np.testing.assert_array_equal(ff.load_features(), X)
    with h5py.File(path, "r") as f:
        ds = f[schema.SPLITS]
        assert not ds.is_virtual and ds.chunks == f[schema.PATHS].chunks
        assert h5py.check_string_dtype(ds.dtype).encoding == "utf-8"


def test_splits_of_an_unfinished_file_are_read_through_the_index(tmp_path):
    path = tmp_path / "f.hdf5"
    _, paths, splits = write_with_splits(path, complete=False)
    with h5py.File(path, "r") as f:
        assert f[schema.SPLITS].is_virtual and len(f[schema.SPLITS].virtual_sources()) == 3
    with FeatureFile(path, allow_partial=True) as ff:
        assert ff.n_rows == 11 and ff.paths == paths and ff.splits == splits


def test_extending_a_file_with_splits_keeps_them(tmp_path):
    path = tmp_path / "f.hdf5"
    _, paths, splits = write_with_splits(path)
    with FeatureWriter(path, dim=2, label_names=["a", "b"], attrs={}, buffer_size=2, resume=True,
                       splits=True) as w:
        w.add(np.zeros((3, 2)), [1, 1, 0], ["b/0.jpg", "b/1.jpg", "a/new.jpg"],
              splits=["test", "val", "train"])
    with FeatureFile(path) as ff:
        assert ff.paths == paths + ["b/0.jpg", "b/1.jpg", "a/new.jpg"]
        assert ff.splits == splits + ["test", "val", "train"]


@pytest.mark.parametrize("complete", [True, False])  # a finished base, or the parts of a killed run
def test_finish_drops_the_splits_of_dropped_rows(tmp_path, complete):
    path = tmp_path / "f.hdf5"
    _, paths, splits = write_with_splits(path, complete=complete)
    with FeatureWriter(path, dim=2, label_names=["a"], attrs={}, resume=True, splits=True) as w:
        assert w.finish(drop={paths[2], paths[3]}) == 2  # a "val" and a "test" row
    keep = [i for i in range(11) if i not in (2, 3)]
    with FeatureFile(path) as ff:
        assert ff.paths == [paths[i] for i in keep]
        assert ff.splits == [splits[i] for i in keep]


@pytest.mark.parametrize("complete", [True, False])
def test_a_writer_must_agree_with_the_file_about_splits(tmp_path, complete):
    with_splits, without = tmp_path / "with.hdf5", tmp_path / "without.hdf5"
    write_with_splits(with_splits, complete=complete)
    w = FeatureWriter(without, dim=2, label_names=["a"], attrs={}, buffer_size=2)
    w.add(np.zeros((3, 2)), [0, 0, 0], ["x", "y", "z"])
    w.close(complete=complete)
    with pytest.raises(ValueError, match="holds splits but this writer has none; pass splits=True") as err:
        FeatureWriter(with_splits, dim=2, label_names=["a"], attrs={}, resume=True)
    assert str(with_splits) in str(err.value)
    with pytest.raises(ValueError, match="has no splits but this writer has them") as err:
        FeatureWriter(without, dim=2, label_names=["a"], attrs={}, resume=True, splits=True)
    assert str(without) in str(err.value)
    with FeatureFile(without, allow_partial=True) as ff:
        assert ff.splits is None and ff.n_rows == 3


def test_add_refuses_missing_extra_or_invalid_splits(tmp_path):
    path = tmp_path / "f.hdf5"
    with FeatureWriter(path, dim=2, label_names=["a"], attrs={}, splits=True) as w:
        with pytest.raises(ValueError, match="required by a writer with splits=True"):
            w.add(np.zeros((1, 2)), [0], ["x"])
        with pytest.raises(ValueError, match="'validation' is not one of train, val, test") as err:
            w.add(np.zeros((2, 2)), [0, 0], ["x", "y"], splits=["train", "validation"])
        assert str(path) in str(err.value)
        with pytest.raises(ValueError, match="1 splits for 2 rows"):
            w.add(np.zeros((2, 2)), [0, 0], ["x", "y"], splits=["train"])
        w.add(np.zeros((1, 2)), [0], ["z"], splits=["val"])
    with FeatureWriter(tmp_path / "g.hdf5", dim=2, label_names=["a"], attrs={}) as w:
        with pytest.raises(ValueError, match="and only by one"):
            w.add(np.zeros((1, 2)), [0], ["x"], splits=["train"])
    with FeatureFile(path) as ff:  # nothing of the refused calls was buffered
        assert ff.paths == ["z"] and ff.splits == ["val"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f[schema.SPLITS].__setitem__(1, "dev"), "split 'dev' is not one of train, val, test"),
        (lambda f: f[schema.SPLITS].resize((3,)), "3 splits for 2 rows"),
    ],
)
def test_reader_checks_splits(tmp_path, damage, message):
    path = tmp_path / "f.hdf5"
    with FeatureWriter(path, dim=2, label_names=["a"], attrs={}, splits=True) as w:
        w.add(np.zeros((2, 2)), [0, 0], ["x", "y"], splits=["train", "test"])
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(FeatureFileError, match=message) as err:
        FeatureFile(path)
    assert str(path) in str(err.value)


def test_a_shard_with_splits_is_adopted_with_them(tmp_path):
    from features.writer import parts_dir, write_part_file

    path = tmp_path / "f.hdf5"
    parts = parts_dir(path)
    parts.mkdir()
    shards = {"shard-000000000-t.h5": (["a/0", "a/1"], ["val", "train"]),
              "shard-000000002-t.h5": (["a/2", "a/3", "a/4"], ["test", "test", "train"])}
    for name, (paths, splits) in shards.items():
        write_part_file(parts / name, [np.ones((len(paths), 2))], np.zeros(len(paths)), paths,
                        dim=2, dtype="float32", skipped=[], splits=splits)
    with pytest.raises(ValueError, match="'trian' is not one of"):
        write_part_file(parts / "bad.h5", [np.ones((1, 2))], [0], ["a/9"], dim=2, dtype="float32",
                        splits=["trian"])
    w = FeatureWriter(path, dim=2, label_names=["a"], attrs={}, splits=True)
    w.order_parts(lambda first: int(first[2:]))
    for name in reversed(shards):  # committed out of listing order
        w.add_part(f"{parts.name}/{name}", len(shards[name][0]), shards[name][0][0])
    with FeatureFile(path, allow_partial=True) as ff:  # the index, over the shards
        assert ff.paths == ["a/0", "a/1", "a/2", "a/3", "a/4"]
        assert ff.splits == ["val", "train", "test", "test", "train"]
    w.finish()
    with FeatureFile(path) as ff:  # merged
        assert ff.splits == ["val", "train", "test", "test", "train"]
        assert not ff.features.is_virtual


def test_a_shard_without_splits_is_refused_by_a_writer_with_them(tmp_path):
    from features.writer import parts_dir, write_part_file

    path = tmp_path / "f.hdf5"
    parts = parts_dir(path)
    parts.mkdir()
    write_part_file(parts / "shard-0.h5", [np.ones((1, 2))], [0], ["a/0"], dim=2, dtype="float32")
    w = FeatureWriter(path, dim=2, label_names=["a"], attrs={}, splits=True)
    with pytest.raises(ValueError, match="shard-0.h5: has no splits but the writer of"):
        w.add_part(f"{parts.name}/shard-0.h5", 1, "a/0")
    w.close()
    with FeatureFile(path) as ff:  # not listed: the file stays empty, not ragged
        assert ff.n_rows == 0 and ff.splits == []
