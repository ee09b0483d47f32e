"""Parts written elsewhere (Ray actors' shards): committed in any order, published in listing
order, published as an index or merged, and adopted after a killed driver. No Ray needed."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from extract.ray_engine import adopt_unpublished
from extract.sources import ImageListing
from features import FeatureFile, FeatureWriter
from features.writer import parts_dir, remove_stale, unpublished_shards, write_part_file

DIM = 3
SETTINGS = {"backbone": "vgg16", "pooling": "flatten", "image_size": 64, "dtype": "float32"}
# Twelve images in listing order; shard k holds images 4k..4k+3, and image 5 cannot be decoded.
PATHS = [f"c{i // 6}/img{i:02d}.jpg" for i in range(12)]
LABELS = [i // 6 for i in range(12)]
FEATURES = np.arange(12 * DIM, dtype=np.float32).reshape(12, DIM)


def write_shard(out: Path, k: int, attrs: dict | None = None, tag: str = "test") -> str:
    """Shard k as an actor writes it; returns its name relative to the output's folder."""
    idx = [i for i in range(4 * k, 4 * k + 4) if i != 5]
    skipped = [(PATHS[5], "not an image")] if k == 1 else []
    parts = parts_dir(out)
    parts.mkdir(exist_ok=True)
    name = f"shard-{4 * k:09d}-{tag}.h5"
    write_part_file(
        parts / name, [FEATURES[idx]], np.array(LABELS)[idx], [PATHS[i] for i in idx],
        dim=DIM, dtype="float32", skipped=skipped,
        attrs={**SETTINGS, **(attrs or {}), "first": PATHS[4 * k]},
    )
    return f"{parts.name}/{name}"


def commit(writer: FeatureWriter, out: Path, k: int) -> None:
    name = write_shard(out, k)
    with h5py.File(out.parent / name, "r") as f:
        rows = len(f["paths"])
    writer.add_part(name, rows, PATHS[4 * k], [(PATHS[5], "not an image")] if k == 1 else [])


def new_writer(out: Path, resume: bool = False) -> FeatureWriter:
    writer = FeatureWriter(out, dim=DIM, label_names=["c0", "c1"], attrs=SETTINGS, resume=resume)
    writer.order_parts(PATHS.index)
    return writer


def expected_rows() -> list[str]:
    return [p for i, p in enumerate(PATHS) if i != 5]


@pytest.mark.parametrize("order, merge", [((2, 0, 1), False), ((1, 2, 0), True)])
def test_shards_committed_in_any_order_are_published_in_listing_order(tmp_path, order, merge):
    out = tmp_path / "f.hdf5"
    writer = new_writer(out)
    for k in order:
        commit(writer, out, k)
    writer.finish(merge=merge)
    with FeatureFile(out) as ff:  # complete: an index over the shards, or one merged file
        assert ff.paths == expected_rows()
        np.testing.assert_array_equal(ff.load_features(), np.delete(FEATURES, 5, axis=0))
        assert ff.skipped == [(PATHS[5], "not an image")]
        assert ff.features.is_virtual is not merge
    remove_stale(out)  # a finished index keeps its shards; a merged file needs none
    shards = list(parts_dir(out).iterdir()) if parts_dir(out).exists() else []
    assert len(shards) == (0 if merge else 3)


def test_a_killed_runs_shards_are_ordered_with_the_next_runs(tmp_path):
    out = tmp_path / "f.hdf5"
    writer = new_writer(out)
    commit(writer, out, 2)
    writer.close(complete=False)  # the driver dies here
    writer = new_writer(out, resume=True)
    commit(writer, out, 0)
    commit(writer, out, 1)
    writer.finish(merge=False)
    with FeatureFile(out) as ff:
        assert ff.paths == expected_rows()
        assert ff.skipped == [(PATHS[5], "not an image")]


def listing(root: Path) -> ImageListing:
    return ImageListing(root=root, class_names=["c0", "c1"], paths=PATHS, labels=np.array(LABELS))


def test_unpublished_shards_are_adopted_when_they_fit(tmp_path):
    out = tmp_path / "f.hdf5"
    writer = new_writer(out)
    commit(writer, out, 0)
    writer.close(complete=False)
    write_shard(out, 1)  # finished by an actor after the driver's last commit
    write_shard(out, 2, {"pooling": "avg"})  # another run's settings: never adopted
    assert len(unpublished_shards(out)) == 2
    assert adopt_unpublished(out, listing(tmp_path)) == 1
    assert unpublished_shards(out) == []  # the misfit is deleted
    with FeatureFile(out, allow_partial=True) as ff:
        assert ff.paths == expected_rows()[:7]
        assert ff.skipped == [(PATHS[5], "not an image")]


def test_a_shard_with_images_already_in_the_file_is_not_adopted(tmp_path):
    out = tmp_path / "f.hdf5"
    writer = new_writer(out)
    commit(writer, out, 0)
    writer.close(complete=False)
    write_shard(out, 0, tag="copy")  # the same images again, in another shard
    assert adopt_unpublished(out, listing(tmp_path)) == 0
    assert unpublished_shards(out) == []
    with FeatureFile(out, allow_partial=True) as ff:
        assert ff.paths == PATHS[:4]
