"""Nothing lost: killed, resumed, extended, refused and failed runs of ``python -m extract``.

Runs use real VGG16 weights (hed-bsds500) on a small flowers17 subset at 96 x 96 pixels
(3 x 3 x 512 = 4608 features), with small batches and buffers so a run commits many times.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_same_features, make_subset, run_module

from features import FeatureFile

pytestmark = [pytest.mark.slow, pytest.mark.needs_shared]  # real images, VGG16, each run a process

CLASSES = ["bluebell", "buttercup", "coltsfoot"]
PER_CLASS = 20
ARGS = ("--weights", "hed-bsds500", "--image-size", "96", "--batch-size", "4", "--buffer-size", "8", "-q")


@pytest.fixture(scope="module")
def source(flowers17, tmp_path_factory) -> Path:
    return make_subset(flowers17, tmp_path_factory.mktemp("src") / "flowers", CLASSES, PER_CLASS + 5)


def dataset(source: Path, dest: Path, per_class: int = PER_CLASS, classes=CLASSES) -> Path:
    """A dataset folder of links into ``source``, which a test may then change."""
    for name in classes:
        (dest / name).mkdir(parents=True)
        for image in sorted((source / name).iterdir())[:per_class]:
            (dest / name / image.name).symlink_to(image.resolve())
    return dest


def extract_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "extract", "--dataset", str(data), "-o", str(out), *ARGS, *extra]


# Run in a child: python -m extract, but once a commit brings the file to argv[2] rows or more,
# the writer notes it in the file argv[1] and waits there for good, holding the run, which
# then cannot commit or finish anything more before the parent kills it.
HOLD_AFTER_ROWS = """
import sys, threading
import features.writer
flush = features.writer.FeatureWriter.flush
def flush_then_hold(self):
    flush(self)
    if self.rows_written >= int(sys.argv[2]):
        open(sys.argv[1], "w").close()
        threading.Event().wait()
features.writer.FeatureWriter.flush = flush_then_hold
from extract.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


def held_run(argv: list[str], note: Path, after_rows: int) -> subprocess.Popen:
    """Start ``argv`` (a python -m extract command) to hold once ``after_rows`` rows are
    committed, and return once it holds there."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AFTER_ROWS, str(note), str(after_rows), *argv[3:]],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # a deadline, not an order: the note says when
    while not note.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended before {after_rows} rows were committed: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("run took too long")
        time.sleep(0.01)
    return proc


def run_and_kill(argv: list[str], out: Path, after_rows: int) -> None:
    """Start an extraction and SIGKILL it once ``after_rows`` rows are committed (held there
    until then, so the kill lands after that commit and before any other)."""
    proc = held_run(argv, out.with_name(out.name + ".held"), after_rows)
    try:
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def contents(out: Path, allow_partial: bool = False):
    with FeatureFile(out, allow_partial=allow_partial) as ff:
        return ff.load_features(), ff.labels, ff.paths, ff.label_names, ff.skipped, ff.attrs


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """An uninterrupted run: what every resumed run must equal."""
    tmp = tmp_path_factory.mktemp("ref")
    data = dataset(source, tmp / "flowers")
    out = tmp / "ref.hdf5"
    result = subprocess.run(extract_argv(data, out), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return data, contents(out)


def assert_resumes_to(reference_contents, data: Path, out: Path, done: int) -> None:
    """Running the same command again on the killed ``out`` continues after its ``done``
    rows and finishes the reference's file, bit for bit."""
    X, y, paths, names, _, _ = reference_contents
    result = subprocess.run(extract_argv(data, out), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"continuing the unfinished {out}: {done} images done" in result.stderr
    Xr, yr, pr, nr, _, attrs = contents(out)
    assert attrs["complete"] is True
    assert np.array_equal(Xr, X)  # bit-equal
    assert np.array_equal(yr, y) and pr == paths and nr == names


@pytest.mark.parametrize("kill_after", [8, 24, 40])
def test_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path, kill_after):
    data, (X, _, paths, names, _, _) = reference
    out = tmp_path / "killed.hdf5"
    run_and_kill(extract_argv(data, out), out, kill_after)

    # What the kill left: a valid file whose committed rows are the reference's first rows.
    Xk, yk, pk, nk, _, attrs = contents(out, allow_partial=True)
    assert attrs["complete"] is False and len(Xk) >= kill_after
    assert np.array_equal(Xk, X[: len(Xk)]) and pk == paths[: len(pk)] and nk == names
    with pytest.raises(Exception, match="did not finish"):
        FeatureFile(out)

    assert_resumes_to(reference[1], data, out, len(Xk))
    assert not (tmp_path / "killed.hdf5.parts").exists()


# Run in a child: the writer thread's second commit SIGKILLs the process before writing, once
# it has noted which thread it runs in, the rows it held and the rows the file held.
KILL_IN_WRITER = """
import json, os, signal, sys, threading
import features.writer
flush = features.writer.FeatureWriter.flush
def dying_flush(self):
    if self.rows_written:  # the second commit: the first one's rows are in the file
        with open(sys.argv[1], "w") as f:
            json.dump({"held": self._buffered, "committed": self.rows_written,
                       "thread": threading.current_thread().name}, f)
        os.kill(os.getpid(), signal.SIGKILL)
    flush(self)
features.writer.FeatureWriter.flush = dying_flush
from extract.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def test_run_killed_while_the_background_writer_holds_rows_resumes_bit_equal(reference, tmp_path):
    data, (X, _, paths, _, _, _) = reference
    out, note = tmp_path / "killed.hdf5", tmp_path / "held.json"
    argv = extract_argv(data, out)[3:]  # the arguments of python -m extract
    killed = subprocess.run([sys.executable, "-c", KILL_IN_WRITER, str(note), *argv], cwd=REPO,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    held = json.loads(note.read_text())
    # The writer thread was committing 8 rows (--buffer-size 8) while the backbone went on;
    # none of them reached the file.
    assert held == {"held": 8, "committed": 8, "thread": "featurebank-writer"}
    Xk, _, pk, _, _, attrs = contents(out, allow_partial=True)
    assert len(Xk) == 8 and attrs["complete"] is False
    assert np.array_equal(Xk, X[:8]) and pk == paths[:8]

    assert_resumes_to(reference[1], data, out, 8)


def test_killed_run_with_mirrors_resumes_to_the_uninterrupted_result(source, tmp_path):
    data = dataset(source, tmp_path / "flowers", per_class=8)
    whole, out = tmp_path / "whole.hdf5", tmp_path / "killed.hdf5"
    assert subprocess.run(extract_argv(data, whole, "--augment", "flip"), cwd=REPO).returncode == 0
    run_and_kill(extract_argv(data, out, "--augment", "flip"), out, 8)
    with FeatureFile(out, allow_partial=True) as ff:
        n = ff.n_rows
        with FeatureFile(whole) as ref:
            np.testing.assert_array_equal(ff.load_mirror_features(), ref.load_mirror_features()[:n])
    result = subprocess.run(extract_argv(data, out, "--augment", "flip"), cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert f"continuing the unfinished {out}: {n} images done" in result.stderr
    with FeatureFile(out) as ff, FeatureFile(whole) as ref:
        assert ff.paths == ref.paths
        np.testing.assert_array_equal(ff.load_features(), ref.load_features())  # bit-equal
        np.testing.assert_array_equal(ff.load_mirror_features(), ref.load_mirror_features())


def test_rerun_without_changes_does_nothing(reference, tmp_path):
    data, _ = reference
    out = tmp_path / "f.hdf5"
    assert subprocess.run(extract_argv(data, out), cwd=REPO, capture_output=True).returncode == 0
    before = out.read_bytes()
    started = time.monotonic()
    result = subprocess.run(extract_argv(data, out), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{out} is up to date: 60 images done, nothing to extract"
    assert "vgg16" not in result.stderr  # the backbone was never loaded
    assert out.read_bytes() == before
    assert time.monotonic() - started < 60  # generous: the point is it does not re-extract


def test_added_images_and_class_are_appended(source, reference, tmp_path):
    _, (X, y, paths, names, _, _) = reference
    data = dataset(source, tmp_path / "flowers", per_class=15, classes=CLASSES[:2])
    out = tmp_path / "f.hdf5"
    assert run_module("extract", "--dataset", data, "-o", out, *ARGS).returncode == 0
    X0, y0, p0, n0, _, _ = contents(out)
    assert n0 == CLASSES[:2] and len(X0) == 30

    # Five more images of an old class, and a new class that sorts before the others.
    for image in sorted((source / "bluebell").iterdir())[15:20]:
        (data / "bluebell" / image.name).symlink_to(image.resolve())
    new_class = data / "anemone"
    new_class.mkdir()
    for image in sorted((source / "coltsfoot").iterdir())[:3]:
        (new_class / image.name).symlink_to(image.resolve())
    result = run_module("extract", "--dataset", data, "-o", out, *ARGS)
    assert result.returncode == 0, result.stderr
    assert "30 images done, 8 to go, new classes anemone" in result.stderr
    X1, y1, p1, n1, _, attrs = contents(out)
    assert n1 == ["bluebell", "buttercup", "anemone"]  # old labels keep their numbers
    assert np.array_equal(X1[:30], X0) and np.array_equal(y1[:30], y0) and p1[:30] == p0
    # New rows follow the old ones, in listing order (classes sorted by name).
    assert p1[30:] == [f"anemone/{p.name}" for p in sorted((source / "coltsfoot").iterdir())[:3]] + [
        f"bluebell/{p.name}" for p in sorted((source / "bluebell").iterdir())[15:20]
    ]
    assert list(y1[30:]) == [2] * 3 + [0] * 5
    # New rows hold the same features an uninterrupted run computes for those images.
    ref = {p: X[i] for i, p in enumerate(paths)}
    # (In other batches than the reference's: float32 along another path.)
    assert_same_features(X1[33:38], np.stack([ref[p] for p in p1[33:38]]))
    assert attrs["complete"] is True and "updated" in attrs


def test_gone_images_are_reported_then_pruned(source, tmp_path):
    data = dataset(source, tmp_path / "flowers", per_class=6)
    out = tmp_path / "f.hdf5"
    assert run_module("extract", "--dataset", data, "-o", out, *ARGS).returncode == 0
    X0, _, p0, _, _, _ = contents(out)
    gone = sorted((data / "buttercup").iterdir())[:2]
    for link in gone:
        link.unlink()
    result = run_module("extract", "--dataset", data, "-o", out, *ARGS)
    assert result.returncode == 0
    assert "2 images in" in result.stderr
    assert "no longer in the dataset (kept; --prune removes them)" in result.stderr
    assert "up to date" in result.stdout
    assert contents(out)[2] == p0  # reported only

    result = run_module("extract", "--dataset", data, "-o", out, *ARGS, "--prune")
    assert result.returncode == 0, result.stderr
    assert "removed 2 gone" in result.stdout
    X1, _, p1, _, _, _ = contents(out)
    keep = [i for i, p in enumerate(p0) if p not in {f"buttercup/{g.name}" for g in gone}]
    assert p1 == [p0[i] for i in keep] and np.array_equal(X1, X0[keep])


def test_a_file_is_extended_in_its_own_precision_unless_told(source, tmp_path):
    data = dataset(source, tmp_path / "flowers", per_class=4)
    out = tmp_path / "f.hdf5"
    small = ("--image-size", "32")  # bfloat16 on a CPU without it is slow; the test is about the file
    first = subprocess.run(extract_argv(data, out, *small, "--precision", "bf16"), cwd=REPO,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    for name in CLASSES:  # one more image per class, then a run that names no precision
        image = sorted((source / name).iterdir())[4]
        (data / name / image.name).symlink_to(image.resolve())
    again = subprocess.run(extract_argv(data, out, *small), cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "(hed-bsds500, block5_pool, flatten, bf16)" in again.stderr
    with FeatureFile(out) as ff:
        assert ff.n_rows == 15 and ff.attrs["precision"] == "bf16"
    new = tmp_path / "new.hdf5"  # a new file, no precision named, no GPU: float32
    assert subprocess.run(extract_argv(data, new, *small), cwd=REPO, capture_output=True).returncode == 0
    with FeatureFile(new) as ff:
        assert ff.attrs["precision"] == "float32"


@pytest.fixture(scope="module")
def small_file(source, tmp_path_factory) -> tuple[Path, Path]:
    """2 images per class and their finished file, with ARGS."""
    tmp = tmp_path_factory.mktemp("small")
    data = dataset(source, tmp / "flowers", per_class=2)
    out = tmp / "f.hdf5"
    assert run_module("extract", "--dataset", data, "-o", out, *ARGS).returncode == 0
    return data, out


@pytest.mark.parametrize(
    "change, message",
    [
        (("--pooling", "avg"), "pooling: flatten -> avg"),
        (("--image-size", "64"), "image_size: 96 -> 64"),
        (("--dtype", "float16"), "dtype: float32 -> float16"),
        (("--interpolation", "bilinear"), "interpolation: nearest -> bilinear"),
        (("--augment", "flip"), "augment: none -> flip"),
        (("--precision", "bf16"), "precision: float32 -> bf16"),
    ],
)
def test_changed_settings_are_refused_unless_overwrite(small_file, tmp_path, change, message):
    data, extracted = small_file
    out = tmp_path / "f.hdf5"
    shutil.copy(extracted, out)  # the test overwrites it
    before = out.read_bytes()
    argv = [*ARGS, *change]  # later options win
    result = run_module("extract", "--dataset", data, "-o", out, *argv)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "--overwrite" in lines[-1], result.stderr
    assert out.read_bytes() == before
    result = run_module("extract", "--dataset", data, "-o", out, *argv, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert contents(out)[5]["rows_committed"] == 6


def test_other_weights_are_refused(source, tmp_path, mobilenetv2_notop):
    data = dataset(source, tmp_path / "flowers", per_class=2)
    out = tmp_path / "f.hdf5"
    base = ("--image-size", "96", "-q", "--backbone", "mobilenetv2")
    first = run_module("extract", "--dataset", data, "-o", out, *base, "--weights", mobilenetv2_notop)
    assert first.returncode == 0, first.stderr
    other = tmp_path / "other.weights.h5"
    blob = bytearray(mobilenetv2_notop.read_bytes())
    blob[-1] ^= 0xFF  # other bytes: the SHA-256 differs, whatever the file is called
    other.write_bytes(bytes(blob))
    result = run_module("extract", "--dataset", data, "-o", out, *base, "--weights", other)
    assert result.returncode == 1 and "weights_sha256: " in result.stderr and "--overwrite" in result.stderr


def test_a_file_that_is_not_a_feature_file_is_not_overwritten(source, tmp_path):
    data = dataset(source, tmp_path / "flowers", per_class=2)
    out = tmp_path / "notes.hdf5"
    out.write_text("my notes")
    result = run_module("extract", "--dataset", data, "-o", out, *ARGS)
    assert result.returncode == 1 and "not an HDF5 file" in result.stderr and "--overwrite" in result.stderr
    assert out.read_text() == "my notes"


def test_a_second_writer_is_refused(reference, tmp_path):
    data, _ = reference
    out = tmp_path / "f.hdf5"
    first = held_run(extract_argv(data, out), tmp_path / "held", 1)  # writing, held after its first commit
    try:
        assert (tmp_path / "f.hdf5.lock").exists()
        second = subprocess.run(extract_argv(data, out), cwd=REPO, capture_output=True, text=True)
        assert first.poll() is None, "the first run must still be writing"
        assert second.returncode == 1
        assert f"another extract (pid {first.pid}) is writing it" in second.stderr
    finally:
        first.kill()
        first.wait()
        first.stderr.close()


@pytest.mark.parametrize("limit", [50_000, 400_000])
def test_write_failure_is_one_line_then_resumes(reference, tmp_path, limit):
    # A file-size limit in the child stands in for a full disk. 50 kB: the first part
    # (8 rows of 4608 floats) cannot be written; 400 kB: every part can, the finished file not.
    data, (X, y, paths, names, _, _) = reference
    out = tmp_path / "f.hdf5"

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(extract_argv(data, out), cwd=REPO, capture_output=True, text=True,
                            preexec_fn=limited)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"extract: error: {out}: cannot write (") and "File too large" in last
    assert "Traceback" not in result.stderr
    Xk, _, pk, _, _, attrs = contents(out, allow_partial=True)
    assert np.array_equal(Xk, X[: len(Xk)]) and attrs["complete"] is False
    assert len(Xk) == (0 if limit == 50_000 else 60)

    result = subprocess.run(extract_argv(data, out), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    Xr, yr, pr, nr, _, _ = contents(out)
    assert np.array_equal(Xr, X) and np.array_equal(yr, y) and pr == paths and nr == names
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
