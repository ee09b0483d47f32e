"""A damaged feature file is detected and repaired, never used (issue 26's proof).

A seeded fuzzer corrupts copies of one small finished feature file (60 rows of a tiny saved
Keras model's features) four ways: bit flips in the first 4 KiB (HDF5's metadata), bit flips
past them (mostly data), zeroed 512-byte blocks and truncations. Every copy is given to
``python -m classify`` and must either read exactly as the intact file (same report: the
damage hit no byte the reader uses) or end in one line naming the file, with exit status 1:
no traceback, no signal, no hang. Then the extract command of the line's fix runs on it and
the repaired file must hold the original's rows, bit for bit.

All cases run in ONE child process (this file run as a script), so that TensorFlow is
imported once; a per-case alarm and the child's timeout catch a hang, its exit status a
signal.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SEED = 26
KINDS = ("header", "data", "zero", "truncate")
PER_KIND = 10
CASE_SECONDS = 60  # a generous alarm per case: a hang, not a slow machine, trips it
CLASSIFY = ["--model", "logreg", "--grid", '{"C": [1.0]}', "--folds", "2", "--seed", "0"]


def make_dataset(root: Path) -> tuple[Path, Path]:
    """3 classes of 20 seeded random 24x24 images, and a tiny saved Keras model (one conv layer,
    random weights): flattened, 22 x 22 x 32 features, so that the 60 rows span 4 chunks and a
    damaged chunk leaves intact rows to keep."""
    import keras
    from PIL import Image

    rng = np.random.default_rng(SEED)
    data = root / "data"
    for c, name in enumerate(("a", "b", "c")):
        (data / name).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, (24, 24, 3)) // 2 + 40 * c
            Image.fromarray(pixels.astype(np.uint8)).save(data / name / f"{i:02d}.png")
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    model.save(root / "tiny.keras")
    return data, root / "tiny.keras"


def extract_argv(data: Path, model: Path, out: Path) -> list[str]:
    return ["--dataset", str(data), "-o", str(out), "--backbone", str(model), "--preprocess", "none",
            "--layer", "conv", "--pooling", "flatten", "--weights", "none", "--batch-size", "4",
            "--buffer-size", "16", "-q"]


def corrupt(raw: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One corrupted copy of ``raw``: bit flips in the first 4 KiB or past them, a zeroed
    512-byte block, or a truncation."""
    b = bytearray(raw)
    if kind == "truncate":
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == "zero":
        start = int(rng.integers(0, len(b) // 512)) * 512
        b[start : start + 512] = bytes(len(b[start : start + 512]))
        return bytes(b)
    low, high = (0, min(4096, len(b))) if kind == "header" else (min(4096, len(b) - 1), len(b))
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(low, high))
        b[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(b)


def rows_by_path(path: Path) -> dict[str, bytes]:
    from features import FeatureFile

    with FeatureFile(path) as ff:
        X, labels = ff.load_features(), ff.labels
        return {p: X[i].tobytes() + labels[i].tobytes() for i, p in enumerate(ff.paths)}


def read_digest(path: Path) -> str:
    """SHA-256 of everything ``FeatureFile`` gives a reader, or the one line it refused with."""
    import hashlib
    import warnings

    from features import FeatureFile, FeatureFileError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a file that lost its checksums would warn
            with FeatureFile(path) as ff:
                text = repr((ff.paths, ff.splits, ff.label_names, ff.skipped, sorted(ff.attrs.items())))
                content = [ff.load_features().tobytes(), ff.labels.tobytes(), text]
    except FeatureFileError as exc:
        return f"refused: {exc}"
    return hashlib.sha256(b"".join(c if isinstance(c, bytes) else c.encode() for c in content)).hexdigest()


def report(result: dict) -> list[str]:
    """A classify report less its timings."""
    return [line for line in result["stdout"].splitlines() if " time: " not in line]


def _captured(main, argv: list[str]) -> dict:
    """Run a command's ``main`` here, as its process would: exit status, stdout, stderr, and
    the traceback of anything that escaped it (which a user would see)."""
    out, err = io.StringIO(), io.StringIO()
    result: dict = {"rc": None, "traceback": None}
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result["rc"] = main(argv)
    except SystemExit as exc:
        result["rc"] = exc.code
    except BaseException:  # noqa: BLE001 - what escapes is what the user would see as a traceback
        result["traceback"] = traceback.format_exc()
    finally:
        signal.alarm(0)
    return {**result, "stdout": out.getvalue(), "stderr": err.getvalue()}


def run_cases(work: Path) -> list[dict]:
    """Build the intact file, then every corrupted case: classify it, re-extract it."""
    from classify.__main__ import main as classify_main
    from extract.__main__ import main as extract_main

    def on_alarm(*_):
        raise TimeoutError(f"a case ran past {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, on_alarm)
    data, model = make_dataset(work)
    intact = work / "intact.hdf5"
    made = _captured(extract_main, extract_argv(data, model, intact))
    assert made["rc"] == 0, made
    reference = _captured(classify_main, ["--features", str(intact), *CLASSIFY])
    rows, raw = rows_by_path(intact), intact.read_bytes()
    rng = np.random.default_rng(SEED)
    cases = [{"intact": reference, "size": len(raw), "read": read_digest(intact)}]
    for k, kind in enumerate(kind for kind in KINDS for _ in range(PER_KIND)):
        path = work / f"case{k:02d}.hdf5"
        path.write_bytes(corrupt(raw, kind, rng))
        classified = _captured(classify_main, ["--features", str(path), *CLASSIFY])
        case = {"kind": kind, "case": k, "classify": classified, "read": read_digest(path)}
        rerun = extract_argv(data, model, path)
        case["extract"] = _captured(extract_main, rerun)
        if case["extract"]["rc"] != 0:  # damaged metadata: the line says to start over
            case["overwrite"] = _captured(extract_main, [*rerun, "--overwrite"])
        case["repaired_equal"] = rows_by_path(path) == rows
        cases.append(case)
        path.unlink()
    return cases


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> list[dict]:
    work = tmp_path_factory.mktemp("fuzz")
    proc = subprocess.run([sys.executable, __file__, str(work)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, f"the fuzzing process ended with {proc.returncode}: {proc.stderr[-3000:]}"
    cases = json.loads((work / "cases.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return cases


def one_line_error(result: dict) -> bool:
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("classify: error:")]
    return result["rc"] == 1 and len(errors) == 1 and "Traceback" not in result["stderr"]


@pytest.mark.slow
def test_every_corruption_reads_as_intact_or_ends_in_one_line(fuzzed):
    intact, cases = fuzzed[0]["intact"], fuzzed[1:]
    assert intact["rc"] == 0 and intact["stdout"].strip()
    assert len(cases) == len(KINDS) * PER_KIND
    for case in cases:
        result = case["classify"]
        assert result["traceback"] is None, (case["kind"], result["traceback"])
        if result["rc"] == 0:  # the damage missed every byte the reader uses
            assert case["read"] == fuzzed[0]["read"], case["kind"]
            assert report(result) == report(intact), case["kind"]
        else:
            assert case["read"].startswith("refused: ")
            assert one_line_error(result), (case["kind"], result)
            assert f"case{case['case']:02d}.hdf5" in result["stderr"]
    caught = sum(case["classify"]["rc"] == 1 for case in cases)
    assert caught >= len(cases) // 2  # the fuzzer's corruptions do reach the reader


@pytest.mark.slow
def test_the_extract_command_repairs_every_corruption_bit_equal(fuzzed):
    for case in fuzzed[1:]:
        for step in ("extract", "overwrite"):
            if step in case:
                assert case[step]["traceback"] is None, (case["kind"], case[step]["traceback"])
        if case["extract"]["rc"] != 0:  # one line saying to start over, then --overwrite
            assert case["extract"]["rc"] == 1 and "--overwrite" in case["extract"]["stderr"], case
            assert case["overwrite"]["rc"] == 0, case["overwrite"]
        assert case["repaired_equal"], case["kind"]


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    target = Path(sys.argv[1])
    (target / "cases.json").write_text(json.dumps(run_cases(target)))
