"""Checksums of feature files: written in every part and finished file, checked on every read,
naming the damaged rows, and dropped rows re-extracted (the whole commands: test_fuzz.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from features import (
    FeatureFile,
    FeatureFileError,
    FeatureWriter,
    UnverifiedFileWarning,
    digests,
    schema,
    verify_file,
)
from features.checksums import DIGEST_ATTR, DIGEST_ROWS, has_checksums
from features.writer import chunk_rows, parts_dir, repair, rewrite_file

DIM = 3000  # 87 float32 rows a chunk: a few hundred rows span several chunks
ROWS = 600


def rows(n: int = ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, DIM)).astype(np.float32), rng.integers(0, 2, n).astype(np.int32),
            [f"c/{i:04d}.jpg" for i in range(n)])


def write(path: Path, n: int = ROWS, finish: bool = True, buffer_size: int = 200) -> tuple:
    X, y, paths = rows(n)
    w = FeatureWriter(path, dim=DIM, label_names=["a", "b"], attrs={"backbone": "x"},
                      buffer_size=buffer_size, splits=True)
    splits = ["train", "test"] * (n // 2)
    for start in range(0, n, buffer_size):  # one part file per buffer
        stop = start + buffer_size
        w.add(X[start:stop], y[start:stop], paths[start:stop], splits=splits[start:stop])
    w.close(complete=finish)
    return X, y, paths


def flip(path: Path, offset: int, bit: int = 3) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def chunk_offset(path: Path, name: str, index: int) -> int:
    with h5py.File(path, "r") as f:
        return f[name].id.get_chunk_info(index).byte_offset


def row_offset(path: Path, name: str, row: int) -> int:
    """Byte offset of ``row`` of a finished file's contiguous feature dataset."""
    with h5py.File(path, "r") as f:
        return f[name].id.get_offset() + row * DIM * 4


def test_every_row_dataset_carries_a_checksum(tmp_path):
    path = tmp_path / "f.hdf5"
    write(path, finish=False)
    parts = sorted(parts_dir(path).iterdir())
    write(tmp_path / "g.hdf5")
    with h5py.File(tmp_path / "g.hdf5", "r") as f:  # finished: a digest per block of rows
        per_block = f[schema.FEATURES].attrs[digests.BLOCK_ROWS_ATTR]
        assert per_block == chunk_rows(DIM, "float32")
        assert f[schema.FEATURES].attrs[digests.DIGEST_ATTR].shape == (-(-ROWS // per_block),)
    for file in [*parts, tmp_path / "g.hdf5"]:
        with h5py.File(file, "r") as f:
            finished = file.name == "g.hdf5"
            assert f[schema.FEATURES].fletcher32 != finished and f[schema.LABELS].fletcher32
            for name in (schema.PATHS, schema.SPLITS):
                n_blocks = -(-len(f[name]) // DIGEST_ROWS)
                assert f[name].attrs[DIGEST_ATTR].shape == (n_blocks, 32)
            assert has_checksums(f)
    with h5py.File(path, "r") as f:  # the index: virtual datasets, its metadata sealed
        assert f[schema.FEATURES].is_virtual and has_checksums(f)


def test_a_damaged_block_names_its_rows_in_a_finished_file(tmp_path):
    path = tmp_path / "f.hdf5"
    X, _, paths = write(path)
    per_chunk = chunk_rows(DIM, "float32")
    flip(path, row_offset(path, schema.FEATURES, 2 * per_chunk) + 1000)
    damaged = [(2 * per_chunk, 3 * per_chunk)]
    assert verify_file(path).damaged == damaged
    with FeatureFile(path) as ff, pytest.raises(FeatureFileError) as err:
        ff.load_features()  # the block's digest refuses it as it is read
    assert str(err.value) == (f"{path}: damaged rows {2 * per_chunk}-{3 * per_chunk - 1} ({per_chunk} of "
                              f"{ROWS}, counted from 0: unreadable, or their checksums do not match); run "
                              "the same extract command again to re-extract them (the intact rows are kept)")
    assert repair(path).damaged == damaged
    with FeatureFile(path) as ff:  # every intact row kept, in order
        keep = np.r_[0 : 2 * per_chunk, 3 * per_chunk : ROWS]
        assert ff.paths == [paths[i] for i in keep]
        assert np.array_equal(ff.load_features(), X[keep])
    assert verify_file(path).damaged == []


def test_a_damaged_part_is_found_through_the_index(tmp_path):
    path = tmp_path / "f.hdf5"
    write(path, finish=False)
    second = sorted(parts_dir(path).iterdir())[1]  # rows 200-399
    flip(second, chunk_offset(second, schema.FEATURES, 0) + 10)
    with h5py.File(path, "r") as f, pytest.raises(OSError):
        f[schema.FEATURES][200:210]  # a read through the virtual dataset checks the source chunk
    per_chunk = chunk_rows(DIM, "float32")
    assert verify_file(path).damaged == [(200, 200 + per_chunk)]
    with FeatureFile(path, allow_partial=True) as ff:
        with pytest.raises(FeatureFileError, match="damaged rows 200-"):
            ff.load_features()
    repair(path)
    with FeatureFile(path, allow_partial=True) as ff:  # still unfinished: the run continues it
        assert ff.n_rows == ROWS - per_chunk and ff.attrs["complete"] is False


def test_damaged_path_text_is_caught_by_its_digest(tmp_path):
    path = tmp_path / "f.hdf5"
    _, _, paths = write(path)
    raw = path.read_bytes()
    at = raw.index(paths[300].encode())  # the text itself, in HDF5's global heap
    flip(path, at + 2, bit=0)  # "c/0300.jpg" -> "c/1300.jpg": still valid text
    block = 300 // DIGEST_ROWS * DIGEST_ROWS
    assert verify_file(path).damaged == [(block, block + DIGEST_ROWS)]
    with pytest.raises(FeatureFileError, match=f"damaged rows {block}-{block + DIGEST_ROWS - 1} "):
        FeatureFile(path)


def test_damaged_label_names_are_metadata_damage(tmp_path):
    path = tmp_path / "f.hdf5"
    write(path)
    with h5py.File(path, "r+") as f:  # as a flipped bit in the heap would read
        f[schema.LABEL_NAMES][0] = "z"
    for check in (lambda: FeatureFile(path), lambda: verify_file(path)):
        with pytest.raises(FeatureFileError, match="do not match their checksum; delete it"):
            check()


def old_file(path: Path) -> np.ndarray:
    """A file as featurebank wrote it before checksums: contiguous, unfiltered, no digests."""
    X, y, paths = rows(50)
    with h5py.File(path, "w") as f:
        f[schema.FEATURES], f[schema.LABELS] = X, y
        f[schema.LABEL_NAMES] = np.array(["a", "b"], dtype=object).astype(h5py.string_dtype())
        f[schema.PATHS] = np.array(paths, dtype=object).astype(h5py.string_dtype())
        f.attrs.update({schema.ROWS_COMMITTED: 50, schema.COMPLETE: True, "backbone": "x"})
    return X


def test_an_old_file_is_read_with_one_warning_and_gains_checksums(tmp_path):
    path = tmp_path / "old.hdf5"
    X = old_file(path)
    with pytest.warns(UnverifiedFileWarning, match="without checksums") as caught, FeatureFile(path) as ff:
        assert np.array_equal(ff.load_features(), X)
    assert len(caught) == 1
    found = verify_file(path)
    assert not found.checksummed and not found.damaged and "not verified" in found.line()
    rewrite_file(path)  # what extract --verify --add-checksums does
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedFileWarning)
        with FeatureFile(path) as ff:
            assert np.array_equal(ff.load_features(), X) and ff.attrs["backbone"] == "x"
    assert verify_file(path).checksummed


def test_the_next_extend_of_an_old_file_adds_checksums(tmp_path):
    path = tmp_path / "old.hdf5"
    X = old_file(path)
    extra, _, _ = rows(5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedFileWarning)
        with FeatureWriter(path, dim=DIM, label_names=["a", "b"], attrs={}, resume=True) as w:
            w.add(extra, [0] * 5, [f"new/{i}" for i in range(5)])
    found = verify_file(path)
    assert found.checksummed and found.rows == 55 and not found.damaged
    with FeatureFile(path) as ff:
        assert np.array_equal(ff.load_features(), np.vstack([X, extra]))


@pytest.mark.parametrize("cut", [100, 5000, -3000])
def test_a_truncated_file_is_one_line_with_the_fix(tmp_path, cut):
    path = tmp_path / "f.hdf5"
    write(path, n=100)
    raw = path.read_bytes()
    path.write_bytes(raw[:cut])
    with pytest.raises(FeatureFileError) as err:
        with FeatureFile(path) as ff:
            ff.load_features()
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "extract" in message  # the fix


def test_extract_verify_names_damage_and_adds_checksums(tmp_path, capsys):
    from extract.__main__ import main

    old = tmp_path / "old.hdf5"
    old_file(old)
    assert main(["--verify", str(old)]) == 0
    assert "written without checksums, so not verified" in capsys.readouterr().out
    assert main(["--verify", str(old), "--add-checksums"]) == 0
    assert capsys.readouterr().out == f"{old}: 50 rows verified, no damage\n"
    damaged = tmp_path / "f.hdf5"
    write(damaged)
    flip(damaged, chunk_offset(damaged, schema.LABELS, 0) + 4)  # the labels' only chunk
    assert main(["--verify", str(damaged)]) == 1
    assert capsys.readouterr().out.startswith(f"{damaged}: damaged rows 0-{ROWS - 1} ")


def test_a_truncated_part_costs_its_rows_only(tmp_path):
    path = tmp_path / "f.hdf5"
    X, _, paths = write(path, finish=False)
    second = sorted(parts_dir(path).iterdir())[1]  # rows 200-399
    second.write_bytes(second.read_bytes()[:500])  # not even its superblock is whole
    assert verify_file(path).damaged == [(200, 400)]
    assert repair(path).damaged == [(200, 400)]  # no source that cannot be opened is opened
    with FeatureFile(path, allow_partial=True) as ff:  # still unfinished: the run continues it
        keep = np.r_[0:200, 400:ROWS]
        assert ff.paths == [paths[i] for i in keep] and ff.attrs["complete"] is False
        assert np.array_equal(ff.load_features(), X[keep])


def test_an_unreadable_index_keeps_its_parts(tmp_path):
    from features.writer import _used_parts, remove_stale

    path = tmp_path / "f.hdf5"
    write(path, finish=False)
    parts = sorted(parts_dir(path).iterdir())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FeatureFileError, match=f"^{path}: damaged feature file"):
        _used_parts(path)
    remove_stale(path)
    assert sorted(parts_dir(path).iterdir()) == parts
    assert _used_parts(tmp_path / "none.hdf5") == set()
    remove_stale(path, replace=True)  # --overwrite: the file is extracted again from scratch
    assert not parts_dir(path).exists()


def test_a_failed_read_without_damage_is_not_called_damage(tmp_path, monkeypatch):
    path = tmp_path / "f.hdf5"
    write(path, n=100)

    def fail(error: BaseException):
        def read_rows(self, n: int) -> None:
            raise error
        return read_rows

    monkeypatch.setattr(FeatureFile, "_read_rows", fail(MemoryError()))
    with pytest.raises(MemoryError):  # out of memory says nothing about the file
        FeatureFile(path)
    monkeypatch.setattr(FeatureFile, "_read_rows", fail(OSError("Input/output error")))
    with pytest.raises(FeatureFileError) as err:
        FeatureFile(path)
    assert str(err.value) == (f"{path}: cannot be read (Input/output error); python -m extract "
                              f"--verify {path} checks it")


def test_a_damaged_split_name_is_damaged_rows_not_a_bad_file(tmp_path):
    path = tmp_path / "f.hdf5"
    write(path)
    raw = bytearray(path.read_bytes())
    at = [i for i in range(len(raw) - 5) if raw[i : i + 5] == b"train"]
    row = at[len(at) // 2]
    raw[row : row + 5] = b"trbin"
    path.write_bytes(bytes(raw))
    with pytest.raises(FeatureFileError, match=r"damaged rows \d+-\d+ .*intact rows are kept\)$") as err:
        FeatureFile(path)
    assert "--overwrite" not in str(err.value)


def test_finishing_refuses_to_restamp_damaged_text(tmp_path):
    path = tmp_path / "f.hdf5"
    _, _, paths = write(path)
    flip(path, path.read_bytes().index(paths[300].encode()) + 2, bit=0)
    with pytest.raises(FeatureFileError, match="paths rows 256-511 do not match their checksums"):
        rewrite_file(path)  # keeping the damaged rows would give them fresh digests
    assert verify_file(path).damaged == [(256, 512)]  # unchanged


def test_a_repair_keeps_the_shards_no_index_lists(tmp_path):
    from extract.ray_engine import adopt_unpublished

    path = tmp_path / "f.hdf5"
    _, _, paths = write(path, finish=False)
    shard = parts_dir(path) / "shard-0001-x.h5"
    shard.write_bytes(b"a killed Ray run's finished shard")
    second = sorted(parts_dir(path).glob("part-*"))[1]
    flip(second, second.read_bytes().index(paths[250].encode()), bit=0)  # rows 200-399's text
    assert adopt_unpublished(path, None) == 0 and shard.exists()  # the damaged index cannot adopt
    repair(path)
    assert shard.exists()


def test_an_unfinished_extend_of_an_old_file_is_not_verified(tmp_path):
    path = tmp_path / "old.hdf5"
    old_file(path)
    extra, _, _ = rows(5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedFileWarning)
        w = FeatureWriter(path, dim=DIM, label_names=["a", "b"], attrs={}, resume=True, buffer_size=5)
        w.add(extra, [0] * 5, [f"new/{i}" for i in range(5)])
        w.close(complete=False)
    found = verify_file(path)  # the index has checksums, the old rows in its first part none
    assert not found.checksummed and "not verified" in found.line()
    with pytest.warns(UnverifiedFileWarning), FeatureFile(path, allow_partial=True):
        pass


def test_extract_verify_takes_no_lock_and_names_a_missing_file(tmp_path, capsys, monkeypatch):
    import extract.api
    from extract.__main__ import main

    path = tmp_path / "f.hdf5"
    write(path, n=100)

    def no_lock(where):
        raise AssertionError(f"a check alone locked {where}")

    monkeypatch.setattr(extract.api, "locked", no_lock)
    assert main(["--verify", str(path)]) == 0  # works on a read-only drive: nothing written
    assert capsys.readouterr().out == f"{path}: 100 rows verified, no damage\n"
    missing = tmp_path / "none.hdf5"
    assert main(["--verify", str(missing)]) == 1
    assert capsys.readouterr().err == (f"extract: error: {missing}: no such file; "
                                      "give the path of a feature file\n")


def test_block_digests_do_not_depend_on_how_the_rows_were_written(tmp_path):
    import xxhash

    X, _, _ = rows(200)
    per_block = chunk_rows(DIM, "float32")
    pieces = digests.RowDigests(per_block, "float32")
    for a, b in [(0, 1), (1, 90), (90, 91), (91, 200)]:
        pieces.add(X[a:b])
    whole = [xxhash.xxh3_64_intdigest(X[a : a + per_block].tobytes()) for a in range(0, 200, per_block)]
    assert pieces.finish().tolist() == whole


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_and_hdf5_reads_find_the_same_damage(tmp_path, monkeypatch, threads):
    path = tmp_path / "f.hdf5"
    X, _, _ = write(path)
    per_block = chunk_rows(DIM, "float32")
    for block in (1, 5):
        flip(path, row_offset(path, schema.FEATURES, block * per_block + 3))
    damaged = [(per_block, 2 * per_block), (5 * per_block, min(6 * per_block, ROWS))]
    monkeypatch.setattr(digests, "READ_THREADS", threads)
    found = []
    for raw in (True, False):  # past HDF5 with pread, then through HDF5 (a driver without a descriptor)
        if not raw:
            monkeypatch.setattr(digests, "_raw_location", lambda ds: None)
        with h5py.File(path, "r") as f:
            values, bad = digests.read_window(f[schema.FEATURES], 10, ROWS - 10)
        found.append((values, bad))
        intact = np.r_[10:per_block, 2 * per_block : 5 * per_block]
        assert np.array_equal(values[intact - 10], X[intact])
        assert bad == [(per_block, 2 * per_block), (5 * per_block, 6 * per_block)]
    assert np.array_equal(found[0][0], found[1][0])
    assert verify_file(path).damaged == damaged


def test_float16_rows_are_checked_and_converted(tmp_path):
    path = tmp_path / "f.hdf5"
    X, y, paths = rows(100)
    with FeatureWriter(path, dim=DIM, label_names=["a", "b"], attrs={}, dtype="float16") as w:
        w.add(X, y, paths)
    with FeatureFile(path) as ff:
        assert np.array_equal(ff.load_features(), X.astype(np.float16).astype(np.float32))
        assert ff.load_features("float16").dtype == np.float16
    with h5py.File(path, "r") as f:
        flip(path, f[schema.FEATURES].id.get_offset() + 2 * DIM * 100 - 1)  # the last row's last byte
    assert verify_file(path).damaged[-1][1] == 100


def test_an_extended_finished_file_checks_the_rows_it_keeps(tmp_path):
    path = tmp_path / "f.hdf5"
    X, _, paths = write(path)
    extra, _, _ = rows(5, seed=1)
    w = FeatureWriter(path, dim=DIM, label_names=["a", "b"], attrs={}, resume=True, buffer_size=5,
                      splits=True)
    w.add(extra, [0] * 5, [f"new/{i}" for i in range(5)], splits=["train"] * 5)
    w.close(complete=False)  # an index over the finished file (its first part) and the new rows
    base = next(parts_dir(path).glob("base-*"))
    per_block = chunk_rows(DIM, "float32")
    flip(base, row_offset(base, schema.FEATURES, 2 * per_block))
    damaged = [(2 * per_block, 3 * per_block)]
    with FeatureFile(path, allow_partial=True) as ff, pytest.raises(FeatureFileError,
                                                                    match="damaged rows 174-260"):
        ff.load_features()  # HDF5 reads the base through the index without its digests: checked after
    assert verify_file(path).damaged == damaged
    with pytest.raises(FeatureFileError, match=r"features rows 174-260 do not match their checksums"):
        FeatureWriter(path, dim=DIM, label_names=["a", "b"], attrs={}, resume=True, splits=True).finish()
    assert repair(path).damaged == damaged
    with FeatureFile(path, allow_partial=True) as ff:
        keep = np.r_[0 : 2 * per_block, 3 * per_block : ROWS]
        assert np.array_equal(ff.load_features(), np.vstack([X[keep], extra]))
        assert ff.paths == [*(paths[i] for i in keep), *(f"new/{i}" for i in range(5))]


@pytest.mark.parametrize("edit", ["delete", "zero", "text"])
def test_digests_lost_or_edited_are_damage_not_a_traceback(tmp_path, edit):
    path = tmp_path / "f.hdf5"
    write(path, n=100)
    with h5py.File(path, "r+") as f:
        attrs = f[schema.FEATURES].attrs
        if edit == "delete":
            del attrs[digests.DIGEST_ATTR]
        else:
            attrs[digests.BLOCK_ROWS_ATTR] = 0 if edit == "zero" else "many"
    with FeatureFile(path) as ff, pytest.raises(FeatureFileError, match=r"^\S+: damaged rows 0-99 \(100 of"):
        ff.load_features()
    assert verify_file(path).damaged == [(0, 100)]


def test_a_file_opened_without_a_descriptor_is_read_through_hdf5(tmp_path):
    path = tmp_path / "f.hdf5"
    X, _, _ = write(path, n=100)
    with h5py.File(path, "r", driver="core") as f:  # the file in memory: no descriptor to read
        values, damaged = digests.read_window(f[schema.FEATURES], 0, 100, "float64")
    assert np.array_equal(values, X.astype(np.float64)) and damaged == []
