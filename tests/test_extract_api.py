"""``extract.extract_features``: the library call behind ``python -m extract``."""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings

import h5py
import numpy as np
import pytest
from conftest import REPO, run_module
from PIL import Image

import extract
from extract import DatasetError, ExtractError, SettingsError, extract_features
from extract.sources import list_images
from extract.tf_logs import unexpected_lines
from features import FeatureFile

SMALL = dict(weights="hed-bsds500", image_size=32, pooling="avg")
SMALL_ARGS = ("--weights", "hed-bsds500", "--image-size", "32", "--pooling", "avg")


def _image(path, value: int, channel: int) -> None:
    pixels = np.full((40, 40, 3), value, dtype=np.uint8)
    pixels[..., channel] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def tiny(tmp_path):
    root = tmp_path / "tiny"
    for k, name in enumerate(("red", "green", "blue")):
        for i in range(3):
            _image(root / name / f"{i}.png", 40 * i, k)
    return root


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0].split("error: ", 1)[1]


@pytest.mark.slow
def test_library_call_writes_the_file_the_command_writes(tiny, tmp_path, capfd):
    cli = run_module("extract", "--dataset", tiny, "-o", tmp_path / "cli.hdf5", *SMALL_ARGS)
    assert cli.returncode == 0, cli.stderr
    summary = extract_features(tiny, output=tmp_path / "lib.hdf5", progress=False, **SMALL)
    assert summary.output == tmp_path / "lib.hdf5"
    assert summary.written == 9 and summary.skipped == [] and summary.rows == 9
    assert cli.stdout.split(" in ")[0] == summary.line().split(" in ")[0]
    assert summary.line().startswith("wrote 9 images, skipped 0, ignored 0 files")
    with FeatureFile(tmp_path / "cli.hdf5") as a, FeatureFile(tmp_path / "lib.hdf5") as b:
        assert np.array_equal(a.load_features(), b.load_features())
        assert np.array_equal(a.labels, b.labels)
        assert a.paths == b.paths and a.label_names == b.label_names == ["blue", "green", "red"]
        volatile = {"created", "updated"}
        assert {k: v for k, v in a.attrs.items() if k not in volatile} == {
            k: v for k, v in b.attrs.items() if k not in volatile
        }
    # The library prints nothing itself: no report, no bar with progress=False.
    out, err = capfd.readouterr()
    assert "wrote" not in out and "img/s" not in err
    again = extract_features(tiny, output=tmp_path / "lib.hdf5", progress=False, **SMALL)
    assert again.up_to_date and again.written == 0
    assert again.line() == f"{tmp_path / 'lib.hdf5'} is up to date: 9 images done, nothing to extract"


@pytest.mark.parametrize(
    "kwargs, args, kind",
    [
        (dict(image_size=16), ("--image-size", "16"), SettingsError),
        (dict(batch_size=0), ("--batch-size", "0"), SettingsError),
        (dict(backbone="mobilenetv2", weights="hed-bsds500"),
         ("--backbone", "mobilenetv2", "--weights", "hed-bsds500"), SettingsError),
        (dict(cpus_per_worker=1.5), ("--cpus-per-worker", "1.5"), SettingsError),
        (dict(exclude_classes=["violet"]), ("--exclude-class", "violet"), DatasetError),
        (dict(weights="no/such.weights.h5"), ("--weights", "no/such.weights.h5"), ExtractError),
    ],
)
def test_library_errors_are_the_commands_lines(tiny, tmp_path, kwargs, args, kind):
    with pytest.raises(kind) as raised:
        extract_features(tiny, output=tmp_path / "o.hdf5", progress=False, **{**SMALL, **kwargs})
    result = run_module("extract", "--dataset", tiny, "-o", tmp_path / "o.hdf5", *SMALL_ARGS, *args)
    assert result.returncode == (2 if kind is SettingsError else 1)
    assert _error_line(result) == str(raised.value)
    assert "\n" not in str(raised.value)


def test_refusal_and_missing_dataset_are_exceptions_with_the_commands_lines(tiny, tmp_path):
    extract_features(tiny, output=tmp_path / "o.hdf5", progress=False, **SMALL)
    with pytest.raises(ExtractError) as raised:
        extract_features(tiny, output=tmp_path / "o.hdf5", progress=False, **{**SMALL, "pooling": "max"})
    result = run_module("extract", "--dataset", tiny, "-o", tmp_path / "o.hdf5", *SMALL_ARGS[:-1], "max")
    assert result.returncode == 1 and _error_line(result) == str(raised.value)
    assert "pooling: avg -> max" in str(raised.value)
    with pytest.raises(DatasetError) as raised:
        extract_features("flowers17", data_dir=tmp_path, progress=False)
    result = run_module("extract", "--dataset", "flowers17", "--data-dir", tmp_path)
    assert result.returncode == 1 and _error_line(result) == str(raised.value)


def test_pillow_limit_and_warning_filters_are_left_as_they_were(tiny, tmp_path):
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    extract_features(tiny, output=tmp_path / "o.hdf5", progress=False, max_pixels=4 * limit, **SMALL)
    assert Image.MAX_IMAGE_PIXELS == limit
    assert warnings.filters == filters
    with pytest.raises(SettingsError):  # also when the call fails
        extract_features(tiny, output=tmp_path / "o.hdf5", max_pixels=0, **SMALL)
    assert Image.MAX_IMAGE_PIXELS == limit


@pytest.mark.slow
def test_empty_class_folder_is_named_and_left_out(tiny, tmp_path, caplog):
    (tiny / "tulip").mkdir()
    (tiny / "tulip" / "notes.txt").write_text("no images here")
    listing = list_images(tiny)
    assert listing.class_names == ["blue", "green", "red"] and listing.empty_classes == ["tulip"]
    with caplog.at_level(logging.WARNING, logger="extract"):
        extract_features(tiny, output=tmp_path / "o.hdf5", progress=False, **SMALL)
    assert "classes without images, left out: tulip" in caplog.text
    with FeatureFile(tmp_path / "o.hdf5") as ff:
        assert ff.label_names == ["blue", "green", "red"] and set(ff.labels) == {0, 1, 2}
    result = run_module("extract", "--dataset", tiny, "-o", tmp_path / "c.hdf5", *SMALL_ARGS)
    assert result.returncode == 0 and "left out: tulip" in result.stderr


@pytest.mark.slow
def test_excluded_classes_are_left_out_and_recorded(tiny, tmp_path):
    result = run_module("extract", "--dataset", tiny, "-o", tmp_path / "o.hdf5", *SMALL_ARGS,
                        "--exclude-class", "green")
    assert result.returncode == 0, result.stderr
    with FeatureFile(tmp_path / "o.hdf5") as ff:
        assert ff.label_names == ["blue", "red"] and len(ff.labels) == 6
        assert not any(p.startswith("green/") for p in ff.paths)
        assert json.loads(ff.attrs["excluded_classes"]) == ["green"]


@pytest.mark.slow
def test_registry_leaves_out_caltech_background_unless_asked(tmp_path):
    root = tmp_path / "caltech101"
    for k, name in enumerate(("BACKGROUND_Google", "accordion", "airplanes")):
        for i in range(2):
            _image(root / name / f"image_{i:04d}.jpg", 50 * i, k)
    default = extract_features("caltech101", data_dir=tmp_path, output=tmp_path / "d.hdf5",
                               progress=False, **SMALL)
    with FeatureFile(default.output) as ff:
        assert ff.label_names == ["accordion", "airplanes"] and len(ff.labels) == 4
        assert json.loads(ff.attrs["excluded_classes"]) == ["BACKGROUND_Google"]
    result = run_module("extract", "--dataset", "caltech101", "--data-dir", tmp_path, "-o",
                        tmp_path / "all.hdf5", *SMALL_ARGS, "--exclude-class")
    assert result.returncode == 0, result.stderr
    with FeatureFile(tmp_path / "all.hdf5") as ff:
        assert ff.label_names == ["BACKGROUND_Google", "accordion", "airplanes"]
        assert json.loads(ff.attrs["excluded_classes"]) == []
    registry = json.loads((REPO / "datasets" / "registry.json").read_text())["caltech101"]
    assert (registry["classes"], registry["images"]) == (101, 8677)


def test_download_script_drops_the_excluded_class_folders(tmp_path):
    spec = importlib.util.spec_from_file_location("download", REPO / "scripts" / "download.py")
    download = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(download)
    for name in ("BACKGROUND_Google", "accordion"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "image_0001.jpg").write_bytes(b"x")
    entry = json.loads((REPO / "datasets" / "registry.json").read_text())["caltech101"]
    assert download.drop_excluded(tmp_path, entry) == ["BACKGROUND_Google"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accordion"]


def test_weights_path_is_recorded_for_a_weights_file(tiny, tmp_path):
    copy = tmp_path / "vgg16_conv.weights.h5"
    extract.load_backbone("vgg16", "hed-bsds500", "avg", 32).model.save_weights(copy)
    extract_features(tiny, output=tmp_path / "o.hdf5", progress=False,
                     **{**SMALL, "weights": str(copy)})
    with h5py.File(tmp_path / "o.hdf5", "r") as f:
        assert f.attrs["weights_path"] == str(copy.resolve())
        assert f.attrs["weights"] == copy.name


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tiny, tmp_path):
    # TensorFlow turns oneDNN on by itself only on some CPUs (and then announces it at import);
    # asked to, it does on any x86-64 CPU, so the notice is there to be hidden or shown.
    onednn = {"TF_ENABLE_ONEDNN_OPTS": "1"}
    quiet = run_module("extract", "--dataset", tiny, "-o", tmp_path / "q.hdf5", *SMALL_ARGS, "-q", env=onednn)
    assert quiet.returncode == 0, quiet.stderr
    assert all(line.startswith("extract: ") for line in quiet.stderr.splitlines()), quiet.stderr
    loud = run_module("extract", "--dataset", tiny, "-o", tmp_path / "v.hdf5", *SMALL_ARGS, "-q", "-v",
                      env=onednn)
    assert loud.returncode == 0
    assert "oneDNN custom operations are on" in loud.stderr


def test_only_known_start_up_notices_are_dropped():
    captured = "\n".join([
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1.2 3 port.cc:153] oneDNN custom operations are on. You may see ...",
        "I0000 00:00:1.2 3 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU ...",
        "E0000 00:00:1.2 3 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "E0000 00:00:1.2 3 some_op.cc:1] Could not load dynamic library 'libcudnn.so.9'",
    ])
    assert unexpected_lines(captured, driver=False) == [
        "E0000 00:00:1.2 3 some_op.cc:1] Could not load dynamic library 'libcudnn.so.9'"
    ]
    # Where an NVIDIA driver is installed, a failed cuInit is a real error and is shown.
    assert len(unexpected_lines(captured, driver=True)) == 2


def test_package_exports_and_documents_its_calls():
    for name in extract.__all__:
        assert hasattr(extract, name), name
    assert "Examples" in extract_features.__doc__
    assert "Examples" in extract.load_backbone.__doc__ and "Examples" in extract.list_images.__doc__


def test_interrupt_is_a_keyboard_interrupt_that_says_what_stays(tiny, tmp_path, monkeypatch):
    import extract.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract.pipeline, "extract_layers", interrupted)
    with pytest.raises(KeyboardInterrupt) as raised:
        extract_features(tiny, output=tmp_path / "o.hdf5", progress=False, **SMALL)
    assert isinstance(raised.value, extract.ExtractInterrupted)
    assert str(raised.value).startswith(f"interrupted; rows committed so far stay in {tmp_path / 'o.hdf5'}")
    monkeypatch.undo()
    # The lock was released: the same call runs now.
    assert extract_features(tiny, output=tmp_path / "o.hdf5", progress=False, **SMALL).written == 9


@pytest.mark.slow
def test_command_exits_130_on_sigint(flowers17, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from conftest import make_subset

    data = make_subset(flowers17, tmp_path / "f", ["bluebell", "crocus"], 40)
    process = subprocess.Popen(
        [sys.executable, "-m", "extract", "--dataset", data, "-o", tmp_path / "o.hdf5",
         "--weights", "hed-bsds500", "--batch-size", "8", "--buffer-size", "8"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": os.environ.get("CI", "")},
        # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &` in a
        # script) inherits SIGINT ignored, and so would the command.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()  # drained all along, so that the command never blocks on a full pipe
    deadline = time.monotonic() + 300
    while _rows_committed(tmp_path / "o.hdf5") < 8:  # interrupted mid-run: after a commit
        assert process.poll() is None and time.monotonic() < deadline, "".join(stderr)
        time.sleep(0.05)  # polls a file the command writes; orders nothing
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    reader.join(timeout=30)
    rest = "".join(stderr)
    assert "extract: interrupted; rows committed so far stay in" in rest and "Traceback" not in rest
    assert 8 <= _rows_committed(tmp_path / "o.hdf5") < 80


def _rows_committed(path) -> int:
    """Rows the index at ``path`` says are committed (0 before the first commit): the writer
    replaces the index by an atomic rename, so it is whole whenever it is there."""
    if not path.exists():
        return 0
    with h5py.File(path, "r") as f:
        return int(f.attrs.get("rows_committed", 0))
