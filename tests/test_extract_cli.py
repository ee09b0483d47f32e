"""``python -m extract``: usage errors, missing data and unavailable weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_module
from PIL import Image


@pytest.fixture
def tiny_dataset(tmp_path):
    root = tmp_path / "tiny"
    for k, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            pixels = np.full((40, 40, 3), 60 * i, dtype=np.uint8)
            pixels[..., 2 * k] = 255
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give a dataset (--dataset) or a manifest (--manifest), one of the two"),
        (["--dataset", "x", "--manifest", "x.csv"], "give a dataset (--dataset) or a manifest (--manifest)"),
        (["--manifest", "x.csv", "--layout", "split-folders"], "leave out --layout"),
        (["--dataset", "x", "--pooling", "sum"], "invalid choice: 'sum'"),
        (["--dataset", "x", "--backbone", "alexnet"], "unknown backbone (--backbone) 'alexnet'"),
        (["--dataset", "x", "--batch-size", "0"], "(--batch-size) must be a whole number of at least 1"),
        (["--dataset", "x", "--buffer-size", "many"], "not a whole number"),
        (["--dataset", "x", "--image-size", "16"], "(--image-size) must be at least 32 for vgg16, got 16"),
        (["--dataset", "x", "--backbone", "mobilenetv2", "--weights", "hed-bsds500"],
         "use it with --backbone vgg16"),
        (["--dataset", "x", "--dtype", "int8"], "invalid choice: 'int8'"),
    ],
)
def test_usage_errors_exit_2(args, message):
    result = run_module("extract", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_help_explains_the_weights():
    result = run_module("extract", "--help")
    assert result.returncode == 0
    assert "fine-tuned for edge detection" in result.stdout
    assert "not ImageNet weights" in result.stdout.replace("\n                ", " ")


def test_missing_known_dataset_is_one_line(tmp_path):
    result = run_module("extract", "--dataset", "flowers17", "--data-dir", tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "scripts/download.py flowers17" in lines[0]


@pytest.mark.slow
def test_imagenet_offline_fails_with_one_line_naming_the_alternatives(tiny_dataset, tmp_path):
    # Nothing listens on port 9: the download fails at once, as it does offline.
    offline = {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9",
               "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    result = run_module("extract", "--dataset", tiny_dataset, "--output", tmp_path / "o.hdf5",
                        "--image-size", "32", env=offline)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("extract: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "ImageNet weights" in errors[0]
    assert "--weights hed-bsds500" in errors[0] and "--weights PATH" in errors[0]
    assert not (tmp_path / "o.hdf5").exists()


@pytest.mark.slow
def test_weights_file_that_is_missing_or_does_not_fit(tiny_dataset, tmp_path):
    result = run_module("extract", "--dataset", tiny_dataset, "--weights", tmp_path / "none.h5",
                        "--output", tmp_path / "o.hdf5")
    assert result.returncode == 1 and "no such weights file" in result.stderr
    wrong = tmp_path / "wrong.weights.h5"
    wrong.write_bytes(b"not weights")
    result = run_module("extract", "--dataset", tiny_dataset, "--weights", wrong,
                        "--output", tmp_path / "o.hdf5", "--image-size", "32")
    assert result.returncode == 1 and "does not fit vgg16" in result.stderr
    assert "Traceback" not in result.stderr


def test_output_folder_must_exist(tiny_dataset, tmp_path):
    result = run_module("extract", "--dataset", tiny_dataset, "--output", tmp_path / "no" / "o.hdf5")
    assert result.returncode == 1 and "does not exist" in result.stderr


@pytest.mark.slow
def test_summary_line_and_default_output_name(tiny_dataset, tmp_path):
    result = run_module("extract", "--dataset", tiny_dataset, "--weights", "hed-bsds500",
                        "--image-size", "32", "--pooling", "avg", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tiny.hdf5").is_file()
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("wrote 4 images, skipped 0, ignored 0 files in ")
    assert summary.endswith("images/s) to tiny.hdf5 (4 rows)")
    assert "img/s" in result.stderr  # the progress bar
