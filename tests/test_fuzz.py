"""A damaged feature file is detected and repaired, never used (issue 26's proof).

A seeded fuzzer corrupts copies of one small finished feature file (60 rows of a tiny saved
Keras model's features) five ways: bit flips in the first 4 KiB (HDF5's metadata), bit flips
past them (mostly data), zeroed 512-byte blocks, truncations, and a changed character in an
image path's text. Every copy is given to ``python -m classify`` and must either read exactly
as the intact file (same report: the damage hit no byte the reader uses) or end in one line
naming the file, with exit status 1: no traceback, no signal, no hang. Then the same extract
command runs on it: where the line named damaged rows, it must re-extract exactly those
(without --overwrite) and keep every other row; only damaged metadata may need --overwrite.
The repaired file must hold the original's rows, bit for bit. Unfinished files (parts) are
damaged too: a truncated or corrupted part is repaired by the same command.

All cases run in ONE child process (this file run as a script), so that TensorFlow is
imported once; a per-case alarm and the child's timeout catch a hang, its exit status a
signal. A few cases are also run as real ``python -m classify`` processes, which see what C
code writes to the stderr file descriptor.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

REPO = Path(__file__).resolve().parent.parent
SEED = 26
KINDS = ("header", "data", "zero", "truncate", "strings")
PER_KIND = 10
CASE_SECONDS = 60  # a generous alarm per case: a hang, not a slow machine, trips it
#: Ways of damaging an unfinished file's part: (part index, how).
PART_CASES = ((1, "truncate500"), (2, "truncate"), (0, "data"), (3, "zero"))


class CaseTimeout(BaseException):
    """A case ran past :data:`CASE_SECONDS`. Not an OSError: no reader may take it for damage."""
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
    512-byte block, a truncation (to 500 bytes, or anywhere), or a changed digit in a path."""
    b = bytearray(raw)
    if kind == "truncate500":
        return bytes(b[:500])
    if kind == "strings":  # one digit of an image's name: still valid text, another path
        at = [i for i in range(len(b) - 4) if b[i : i + 4] == b".png"]
        pick = at[int(rng.integers(0, len(at)))] - 1
        b[pick] ^= 1
        return bytes(b)
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
    """Run a command's ``main`` here, as its process would: exit status, stdout, stderr, the
    seconds it took, and the traceback of anything that escaped it (which a user would see)."""
    out, err = io.StringIO(), io.StringIO()
    result: dict = {"rc": None, "traceback": None}
    started = time.monotonic()
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
    seconds = time.monotonic() - started
    return {**result, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": seconds}


def damaged_count(text: str) -> int | None:
    """N of a "damaged rows ... (N of M, ..." line, None in a text without one."""
    found = re.search(r"damaged rows [^(]*\((\d+) of \d+,", text)
    return int(found.group(1)) if found else None


def written(result: dict) -> int | None:
    """Rows an extract run wrote, from its summary line."""
    found = re.search(r"^wrote (\d+) images", result["stdout"], re.MULTILINE)
    return int(found.group(1)) if found else None


def repair_case(case: dict, path: Path, rerun: list[str], rows: dict, extract_main) -> dict:
    """Verify the damaged ``path``, run the extract command on it (then, if it refused,
    with --overwrite) and compare its rows with the intact ``rows``."""
    case["verify"] = _captured(extract_main, ["--verify", str(path)])
    case["extract"] = _captured(extract_main, rerun)
    if case["extract"]["rc"] != 0:  # damaged metadata: the line says to start over
        case["overwrite"] = _captured(extract_main, [*rerun, "--overwrite"])
    case["repaired_equal"] = rows_by_path(path) == rows
    case["seconds"] = sum(case[k]["seconds"] for k in ("classify", "verify", "extract", "overwrite")
                          if k in case)
    return case


def unfinished_cases(work: Path, intact: Path, data: Path, model: Path, rows: dict, rng) -> list[dict]:
    """An unfinished copy of ``intact`` (parts of 16 rows) with one part damaged, per
    :data:`PART_CASES`, each repaired by the extract command."""
    from extract.__main__ import main as extract_main
    from features import FeatureFile, FeatureWriter, schema
    from features.writer import parts_dir

    internal = {schema.ROWS_COMMITTED, schema.COMPLETE, schema.SEGMENTS, "checksums", "metadata_sha256"}
    cases = []
    for k, (part, kind) in enumerate(PART_CASES):
        path = work / f"part{k}.hdf5"
        with FeatureFile(intact) as ff:
            X = ff.load_features()
            attrs = {key: v for key, v in ff.attrs.items() if key not in internal}
            writer = FeatureWriter(path, dim=ff.dim, label_names=ff.label_names, attrs=attrs,
                                   dtype=ff.dtype, buffer_size=16, splits=ff.splits is not None)
            for at in range(0, ff.n_rows, 16):  # one part per 16 rows
                block = slice(at, at + 16)
                writer.add(X[block], ff.labels[block], ff.paths[block],
                           splits=ff.splits[block] if ff.splits is not None else None)
            writer.close(complete=False)
        target = sorted(parts_dir(path).iterdir())[part]
        target.write_bytes(corrupt(target.read_bytes(), kind, rng))
        case = {"kind": f"part-{kind}", "case": k, "classify": {"seconds": 0.0}, "part_rows": 16}
        cases.append(repair_case(case, path, extract_argv(data, model, path), rows, extract_main))
    return cases


def run_cases(work: Path) -> list[dict]:
    """Build the intact file, then every corrupted case: classify it, re-extract it."""
    from classify.__main__ import main as classify_main
    from extract.__main__ import main as extract_main

    def on_alarm(*_):
        raise CaseTimeout(f"a case ran past {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, on_alarm)
    data, model = make_dataset(work)
    intact = work / "intact.hdf5"
    made = _captured(extract_main, extract_argv(data, model, intact))
    assert made["rc"] == 0, made
    reference = _captured(classify_main, ["--features", str(intact), *CLASSIFY])
    rows, raw = rows_by_path(intact), intact.read_bytes()
    rng = np.random.default_rng(SEED)
    cases = [{"intact": reference, "size": len(raw), "read": read_digest(intact)}]
    kept = set()
    for k, kind in enumerate(kind for kind in KINDS for _ in range(PER_KIND)):
        path = work / f"case{k:02d}.hdf5"
        path.write_bytes(corrupt(raw, kind, rng))
        classified = _captured(classify_main, ["--features", str(path), *CLASSIFY])
        case = {"kind": kind, "case": k, "classify": classified, "read": read_digest(path)}
        if classified["rc"] == 1 and kind not in kept:  # one per kind, for a real process
            kept.add(kind)
            shutil.copyfile(path, work / f"kept-{kind}.hdf5")
        cases.append(repair_case(case, path, extract_argv(data, model, path), rows, extract_main))
        path.unlink()
    return cases + unfinished_cases(work, intact, data, model, rows, rng)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("fuzz")
    proc = subprocess.run([sys.executable, __file__, str(work)], cwd=REPO, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, f"the fuzzing process ended with {proc.returncode}: {proc.stderr[-3000:]}"
    cases = json.loads((work / "cases.json").read_text())
    return {"intact": cases[0], "cases": cases[1:], "kept": sorted(work.glob("kept-*.hdf5"))}


def one_line_error(result: dict, command: str) -> bool:
    """Exit status 1, and the error is the last line, the only one, with no traceback."""
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{command}: error:")]
    return (result["rc"] == 1 and len(errors) == 1 and bool(lines) and lines[-1] == errors[0]
            and not any("Traceback" in line for line in lines))


@pytest.mark.slow
def test_every_corruption_reads_as_intact_or_ends_in_one_line(fuzzed):
    intact, cases = fuzzed["intact"], [c for c in fuzzed["cases"] if c["kind"] in KINDS]
    assert intact["intact"]["rc"] == 0 and intact["intact"]["stdout"].strip()
    assert len(cases) == len(KINDS) * PER_KIND
    for case in cases:
        result = case["classify"]
        assert result["traceback"] is None, (case["kind"], result["traceback"])
        if result["rc"] == 0:  # the damage missed every byte the reader uses
            assert case["read"] == intact["read"], case["kind"]
            assert report(result) == report(intact["intact"]), case["kind"]
        else:
            assert case["read"].startswith("refused: ")
            assert one_line_error(result, "classify"), (case["kind"], result)
            assert f"case{case['case']:02d}.hdf5" in result["stderr"]
    caught = sum(case["classify"]["rc"] == 1 for case in cases)
    assert caught >= len(cases) // 2  # the fuzzer's corruptions do reach the reader
    for kind in ("data", "strings"):  # these hit rows: most must be named as damaged rows
        named = [c for c in cases if c["kind"] == kind and damaged_count(c["classify"]["stderr"])]
        assert len(named) >= PER_KIND // 2, kind


@pytest.mark.slow
def test_every_case_ends_within_its_limit(fuzzed):
    for case in fuzzed["cases"]:
        assert case["seconds"] < CASE_SECONDS, (case["kind"], case["case"], case["seconds"])


@pytest.mark.slow
def test_the_extract_command_repairs_every_corruption_bit_equal(fuzzed):
    in_place = 0
    for case in fuzzed["cases"]:
        for step in ("verify", "extract", "overwrite"):
            if step in case:
                assert case[step]["traceback"] is None, (case["kind"], case[step]["traceback"])
        line = case["classify"].get("stderr", "") + case["verify"]["stdout"]
        if damaged_count(line) is not None:  # damaged rows: re-extracted in place, no --overwrite
            assert case["extract"]["rc"] == 0 and "overwrite" not in case, case
            assert written(case["extract"]) == damaged_count(case["verify"]["stdout"]), case
            assert damaged_count(case["verify"]["stdout"]) >= (damaged_count(line) or 0)
            in_place += written(case["extract"]) < 60  # intact rows kept (else all were damaged)
        elif case["extract"]["rc"] != 0:  # damaged metadata: one line saying to start over
            assert one_line_error(case["extract"], "extract") and "--overwrite" in case["extract"]["stderr"]
            assert case["overwrite"]["rc"] == 0, case["overwrite"]
        assert case["repaired_equal"], case["kind"]
    parts = [c for c in fuzzed["cases"] if c["kind"].startswith("part-")]
    assert len(parts) == len(PART_CASES)
    for case in parts:  # a damaged part costs its own rows only
        assert case["extract"]["rc"] == 0 and written(case["extract"]) <= case["part_rows"], case
    print(f"{in_place} repairs kept intact rows")
    assert in_place >= PER_KIND + len(PART_CASES)  # the data and strings kinds, the parts


@pytest.mark.slow
def test_damaged_files_end_in_one_line_in_a_real_process(fuzzed):
    assert len(fuzzed["kept"]) >= 3
    for path in fuzzed["kept"][:3]:
        proc = run_module("classify", "--features", str(path), *CLASSIFY, cwd=REPO,
                          env={"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
        result = {"rc": proc.returncode, "stderr": proc.stderr}
        assert proc.returncode == 1, (path.name, proc.returncode, proc.stderr[-2000:])  # no signal
        assert one_line_error(result, "classify"), (path.name, proc.stderr[-2000:])
        assert path.name in proc.stderr


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    target = Path(sys.argv[1])
    (target / "cases.json").write_text(json.dumps(run_cases(target)))
