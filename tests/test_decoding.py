"""Decoding in worker processes gives what decoding in threads gives, pixel for pixel and
feature for feature, skips included; the background writer runs calls in order and raises
their failures where the run can report them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_features, make_subset, run_module

from extract.decoding import DECODERS, decoded_batches
from extract.sources import ImageListing, list_images
from features import FeatureFile
from features.background import BackgroundWriter

HED = ("--weights", "hed-bsds500", "--image-size", "64", "--batch-size", "4", "-q")


@pytest.fixture(scope="module")
def data(flowers17, tmp_path_factory) -> Path:
    """22 real JPEGs of 2 classes and 3 files that are not decodable images, among them."""
    root = make_subset(flowers17, tmp_path_factory.mktemp("dec") / "flowers", ["daisy", "iris"], 11)
    (root / "daisy" / "empty.jpg").write_bytes(b"")
    (root / "daisy" / "text.jpg").write_bytes(b"not a jpeg at all")
    first = sorted((root / "iris").glob("*.jpg"))[0]
    (root / "iris" / "truncated.jpg").write_bytes(first.read_bytes()[:2000])
    return root


def decode_all(root: Path, decoder: str, workers: int, batch_size: int):
    listing = list_images(root)
    out = []
    for batch in decoded_batches(listing, range(len(listing)), batch_size, 48, "bilinear",
                                 workers=workers, decoder=decoder):
        # Copied: a process decoder's images live in shared memory reused by later batches.
        out.append((batch.indices, batch.images.copy(), batch.decoded, batch.failed))
    return listing, out


@pytest.mark.parametrize(("workers", "batch_size"), [(1, 4), (2, 4), (3, 7), (2, 32)])
def test_processes_decode_the_same_pixels_as_threads(data, workers, batch_size):
    listing, threads = decode_all(data, "threads", 2, batch_size)
    _, processes = decode_all(data, "processes", workers, batch_size)
    assert len(processes) == len(threads) == -(-len(listing) // batch_size)
    for (ia, xa, da, fa), (ib, xb, db, fb) in zip(processes, threads, strict=True):
        assert ia == ib and da == db and fa == fb
        assert xa.dtype == xb.dtype == np.uint8 and xa.shape == xb.shape == (len(da), 48, 48, 3)
        np.testing.assert_array_equal(xa, xb)
    failed = sorted(listing.paths[i] for _, _, _, f in processes for i, _ in f)
    assert failed == ["daisy/empty.jpg", "daisy/text.jpg", "iris/truncated.jpg"]
    assert sum(len(d) for _, _, d, _ in processes) == 22


def test_an_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder must be one of processes, threads"):
        next(decoded_batches(ImageListing(Path("."), [], ["a"], np.zeros(1)), [0], 1, 8, decoder="gpu"))
    assert DECODERS == ("processes", "threads")


@pytest.mark.slow
def test_features_from_process_decoding_are_bit_equal_to_thread_decoding(data, tmp_path):
    files = {}
    for decoder, workers in (("threads", "2"), ("processes", "2"), ("processes", "1")):
        files[decoder, workers] = tmp_path / f"{decoder}{workers}.hdf5"
        done = run_module("extract", "--dataset", data, "-o", files[decoder, workers], *HED,
                          "--decoder", decoder, "--decode-workers", workers, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "wrote 22 images, skipped 3" in done.stdout
    with FeatureFile(files["threads", "2"]) as ref:
        X, paths, skipped = ref.load_features(), ref.paths, ref.skipped
    for key in (("processes", "2"), ("processes", "1")):
        with FeatureFile(files[key]) as ff:
            assert ff.paths == paths and ff.skipped == skipped
            np.testing.assert_array_equal(ff.load_features(), X)  # bit-equal


def test_decoder_settings_are_checked_by_the_library(data, tmp_path):
    done = run_module("extract", "--dataset", data, "-o", tmp_path / "f.hdf5", *HED,
                      "--decode-workers", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "decode_workers (--decode-workers) must be a whole number of at least 1" in done.stderr
    from extract import SettingsError, extract_features

    with pytest.raises(SettingsError, match=r"decoder \(--decoder\) must be one of processes, threads"):
        extract_features(data, output=tmp_path / "f.hdf5", decoder="gpu")


def test_background_writer_runs_calls_in_order_while_the_caller_goes_on():
    seen: list[int] = []
    gate = threading.Event()

    def slow(value: int) -> None:
        gate.wait(10)
        seen.append(value)

    with BackgroundWriter(max_pending=8) as background:
        for value in range(5):
            background.call(slow, value)
        assert seen == []  # queued, not run: the caller did not wait
        gate.set()
    assert seen == [0, 1, 2, 3, 4]


def test_background_writer_raises_the_first_failure_and_drops_later_calls():
    seen: list[int] = []

    def fail() -> None:
        raise OSError(28, "No space left on device")

    background = BackgroundWriter()
    background.call(seen.append, 1)
    background.call(fail)
    background.call(seen.append, 2)
    with pytest.raises(OSError, match="No space left"):
        background.wait()
    with pytest.raises(OSError, match="No space left"):
        background.call(seen.append, 3)
    with pytest.raises(OSError, match="No space left"):
        background.close()
    assert seen == [1]


def test_background_writer_bounds_what_waits():
    gate = threading.Event()
    background = BackgroundWriter(max_pending=2)
    taken = threading.Event()
    background.call(lambda: (taken.set(), gate.wait(10)))  # taken by the thread, which then waits
    assert taken.wait(60)
    background.call(len, [])
    background.call(len, [])  # the queue is now full
    blocked = threading.Thread(target=background.call, args=(len, []))
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive()  # the caller waits for room
    gate.set()
    blocked.join(10)
    assert not blocked.is_alive()
    background.close()


def test_leaving_on_an_error_still_runs_the_calls_given_and_keeps_the_error():
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter() as background:
            background.call(time.sleep, 0.2)
            background.call(seen.append, 1)
            raise KeyboardInterrupt
    assert seen == [1]


def test_a_padded_last_batch_gives_the_rows_of_the_unpadded_one(data):
    from extract.backbones import load_backbone
    from extract.tf_logs import start_keras

    start_keras(False)
    loaded = load_backbone("vgg16", "hed-bsds500", "flatten", 64)
    listing = list_images(data)
    batch = next(decoded_batches(listing, range(len(listing)), 3, 64, decoder="threads"))
    alone = loaded.embed_all(batch.images)[0]
    padded = loaded.embed_all(batch.images, pad_to=8)[0]
    assert padded.shape == alone.shape == (len(batch.decoded), 2 * 2 * 512)
    assert_same_features(padded, alone)  # another batch shape: maybe another kernel


@pytest.mark.parametrize("backbone", ["vgg16", "mobilenetv2", "densenet121"])  # caffe, tf, torch modes
def test_decoders_preprocess_image_by_image_as_the_batch_would_be(data, backbone):
    from extract.backbones import BACKBONES

    preprocess = BACKBONES[backbone].preprocess_input
    listing = list_images(data)
    pixels = [b.images.copy() for b in decoded_batches(listing, range(len(listing)), 8, 48,
                                                       decoder="threads")]
    for decoder in DECODERS:
        batches = decoded_batches(listing, range(len(listing)), 8, 48, decoder=decoder,
                                  workers=2, preprocess=preprocess)
        for uint8, batch in zip(pixels, batches, strict=True):
            assert batch.images.dtype == np.float32
            # bit-equal to preprocessing the whole batch, as embed_all does with uint8 images
            np.testing.assert_array_equal(batch.images, preprocess(uint8.astype(np.float32)))
