"""``classify predict --imagenet``: a pretrained backbone with its top, as an ImageNet classifier."""

from __future__ import annotations

import configparser
import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED, U32, _need, make_subset, run_module
from PIL import Image

from classify import ImagenetPrediction, PredictError, SettingsError, imagenet_predict
from classify.inference.imagenet import (
    CLASS_INDEX_FILE,
    csv_header,
    decode_predictions,
    load_class_index,
    write_csv,
)

SHARED_INDEX = SHARED / "models" / "imagenet_class_index.json"
MOBILENETV2_TOP = SHARED / "models" / "mobilenetv2_1.0_224_imagenet.weights.h5"
MOBILENETV2_NOTOP = SHARED / "models" / "mobilenetv2_1.0_224_imagenet_notop.weights.h5"
ANIMALS = SHARED / "datasets" / "animals"
#: The MD5 Keras' decode_predictions checks its downloaded class index against.
KERAS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"
MOBILENETV2 = ("--backbone", "mobilenetv2")


@pytest.fixture(scope="module")
def mobilenetv2_top() -> Path:
    return _need(MOBILENETV2_TOP)


@pytest.fixture(scope="module")
def pandas(tmp_path_factory) -> tuple[Path, Path]:
    """The first 20 images of animals/panda (links), and an empty file that cannot be decoded."""
    tmp = tmp_path_factory.mktemp("pandas")
    folder = make_subset(_need(ANIMALS), tmp / "animals", ["panda"], per_class=20) / "panda"
    bad = tmp / "bad.jpg"
    bad.write_bytes(b"")
    return folder, bad


@pytest.fixture(scope="module")
def cli_run(pandas, mobilenetv2_top, tmp_path_factory):
    """``predict --imagenet`` on the 20 pandas and the bad file: its CSV text and stderr."""
    folder, bad = pandas
    out = tmp_path_factory.mktemp("cli") / "imagenet.csv"
    done = run_module("classify", "predict", "--imagenet", *MOBILENETV2, "--weights", mobilenetv2_top,
                      folder, bad, "--output", out, "-q")
    assert done.returncode == 0, done.stderr
    return out.read_text(), done.stderr


# (1) The decoder is Keras' decode_predictions.

@pytest.fixture
def keras_decode(tmp_path, monkeypatch):
    """Keras' own ``decode_predictions``, reading the class index shipped with featurebank.

    Keras' cache is pointed at a folder holding that file, so Keras goes its own way: it finds
    the file where it would have downloaded it, checks its MD5 and reads it. (Setting
    ``imagenet_utils.CLASS_INDEX`` directly would skip both.) Both are restored afterwards.
    """
    from extract.tf_logs import start_keras

    start_keras()
    from keras.src.applications import imagenet_utils
    from keras.src.backend import config

    (tmp_path / "models").mkdir()
    shutil.copy(CLASS_INDEX_FILE, tmp_path / "models" / "imagenet_class_index.json")
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # read by keras_home() at each call
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", None)  # not yet loaded: load from the cache
    return imagenet_utils.decode_predictions


def probability_rows(rng: np.random.Generator) -> np.ndarray:
    """Softmax rows of random logits, and rows full of ties: rounded, constant, one-hot, zero."""
    logits = rng.normal(scale=3.0, size=(40, 1000))
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    rounded = np.round(soft[:10], 2)  # mostly 0.0 with a few equal values: ties everywhere
    coarse = rng.integers(0, 4, size=(10, 1000)) / 4.0  # four values only
    constant = np.full((2, 1000), 0.001)
    one_hot = np.eye(1000)[[0, 388, 999]]
    zeros = np.zeros((1, 1000))
    return np.concatenate([soft, rounded, coarse, constant, one_hot, zeros]).astype(np.float32)


@pytest.mark.parametrize("top", [1, 3, 5, 10, 1000])
def test_decoder_equals_keras_decode_predictions(keras_decode, top):
    preds = probability_rows(np.random.default_rng(top))
    expected = keras_decode(preds, top=top)
    ours = decode_predictions(preds, top=top)
    assert len(ours) == len(expected) == len(preds)
    for mine, theirs in zip(ours, expected, strict=True):
        assert mine == [(wnid, name, float(p)) for wnid, name, p in theirs]
    # From a file given as class_index, and from the loaded list: the same.
    assert decode_predictions(preds, top=top, class_index=CLASS_INDEX_FILE) == ours
    assert decode_predictions(preds, top=top, class_index=load_class_index()) == ours


def test_decoder_refuses_what_keras_refuses_or_misreads():
    with pytest.raises(SettingsError, match=r"shape \(samples, 1000\), got \(2, 10\)"):
        decode_predictions(np.zeros((2, 10)))
    for top in (0, 1001, 2.0, True):  # keras' top=0 would silently give all 1,000 classes
        with pytest.raises(SettingsError, match=r"top \(--top\) must be a whole number from 1 to 1000"):
            decode_predictions(np.zeros((1, 1000)), top=top)


def test_class_index_override_and_bad_index_files(tmp_path):
    custom = {str(i): [wnid, name.upper()] for i, (wnid, name) in enumerate(load_class_index())}
    path = tmp_path / "index.json"
    path.write_text(json.dumps(custom))
    preds = np.eye(1000, dtype=np.float32)[[388]]
    assert decode_predictions(preds, top=1, class_index=path) == [[("n02510455", "GIANT_PANDA", 1.0)]]

    short = tmp_path / "short.json"
    short.write_text(json.dumps({k: v for k, v in custom.items() if k != "999"}))
    bad_entry = tmp_path / "bad_entry.json"
    bad_entry.write_text(json.dumps({**custom, "7": "cock"}))
    not_index = r"\.json: not an ImageNet class index"
    with pytest.raises(PredictError, match=r'short' + not_index + r' \(expected .* "0" to "999"'):
        load_class_index(short)
    with pytest.raises(PredictError, match=r'bad_entry' + not_index + r' \(entry "7" is not'):
        load_class_index(bad_entry)
    with pytest.raises(PredictError, match="absent.json: no such class index file"):
        load_class_index(tmp_path / "absent.json")
    # Checked before any model is loaded: the command fails at once, in one line.
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    done = run_module("classify", "predict", "--imagenet", "--class-index", short, image, "-q")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"classify predict: error: {short}: not an ImageNet class index"
    )


def test_module_docstring_examples_run():
    import doctest

    from classify.inference import imagenet

    outcome = doctest.testmod(imagenet, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert outcome.failed == 0 and outcome.attempted > 0


def test_csv_layout():
    assert csv_header(1) == ["path", "class_1", "probability_1", "wnid_1", "error"]
    assert len(csv_header()) == 1 + 3 * 5 + 1
    good = ImagenetPrediction("a.jpg", [("n02510455", "giant_panda", 0.5),
                                        ("n02509815", "lesser_panda", 0.25)])
    assert (good.predicted, good.wnid, good.probability) == ("giant_panda", "n02510455", 0.5)
    bad = ImagenetPrediction("b.jpg", [], "empty file")
    assert bad.predicted is bad.probability is bad.wnid is None
    out = io.StringIO()
    write_csv([good, bad], out, top=2)
    assert out.getvalue().splitlines() == [
        "path,class_1,probability_1,wnid_1,class_2,probability_2,wnid_2,error",
        "a.jpg,giant_panda,0.500000,n02510455,lesser_panda,0.250000,n02509815,",
        "b.jpg,,,,,,,skipped: empty file",
    ]


# (2) Real pandas, real weights.

@pytest.mark.slow
@pytest.mark.needs_shared
def test_pandas_are_giant_pandas(cli_run, pandas):
    text, stderr = cli_run
    assert stderr == "", stderr  # -q: no bar, and no TensorFlow start-up lines
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == csv_header(5)
    folder, bad = pandas
    assert [row["path"] for row in rows] == [str(p) for p in sorted(folder.iterdir())] + [str(bad)]
    assert rows[-1]["error"] == "skipped: empty file" and rows[-1]["class_1"] == ""
    decoded = rows[:-1]
    pandas_first = sum(row["class_1"] == "giant_panda" for row in decoded)
    print(f"giant_panda first for {pandas_first} of {len(decoded)} panda images")
    assert len(decoded) == 20 and pandas_first >= 15  # the weights' README measured 19 of 20
    index = dict(load_class_index())
    for row in decoded:
        assert row["error"] == ""
        probabilities = [float(row[f"probability_{k}"]) for k in range(1, 6)]
        assert all(0 <= p <= 1 for p in probabilities), row
        assert probabilities == sorted(probabilities, reverse=True), row
        # A float32 softmax of 1,000 classes sums to within (1000 + 3)u of 1 (conftest's
        # softmax_rounding); the CSV rounds each to 6 decimals.
        assert sum(probabilities) <= 1 + 1003 * U32 + 5 * 0.5e-6, row
        assert all(index[row[f"wnid_{k}"]] == row[f"class_{k}"] for k in range(1, 6))
        assert len({row[f"class_{k}"] for k in range(1, 6)}) == 5


# (3) Refusals, each in one line.

@pytest.mark.slow
@pytest.mark.needs_shared
def test_weights_without_the_top_are_refused_in_one_line(pandas, mobilenetv2_top):
    notop = _need(MOBILENETV2_NOTOP)
    folder, _ = pandas
    done = run_module("classify", "predict", "--imagenet", *MOBILENETV2, "--weights", notop, folder, "-q")
    message = (f"{notop}: has no top (the 1,000-class classifier): use the weights file with the "
               "top, e.g. mobilenetv2_1.0_224_imagenet.weights.h5")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"classify predict: error: {message}"]
    assert done.stdout == ""
    with pytest.raises(PredictError) as caught:
        imagenet_predict(folder, backbone="mobilenetv2", weights=notop, progress=False)
    assert str(caught.value) == message


def test_weights_and_options_that_do_not_go_with_imagenet(tmp_path, capsys):
    from classify.__main__ import main

    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    usage = [
        (("--imagenet", "--model", "m.joblib"), "--imagenet uses the backbone's own ImageNet classifier"),
        ((), "the following arguments are required: --model (or --imagenet)"),
        (("--model", "m.joblib", "--top", "3"), "--top goes with --imagenet"),
        (("--model", "m.joblib", "--backbone", "vgg16", "--class-index", "x"),
         "--backbone, --class-index go with --imagenet"),
        (("--imagenet", "--top", "0"), "top (--top) must be a whole number from 1 to 1000, got 0"),
        (("--imagenet", "--backbone", "nope"), "unknown backbone (--backbone) 'nope'"),
        (("--imagenet", "--weights", "hed-bsds500"), "hed-bsds500"),  # VGG16's convolutions, no top
    ]
    for i, (args, expected) in enumerate(usage):
        if i == 0:  # the command as a user runs it
            done = run_module("classify", "predict", *args, image, "-q")
            returncode, stderr = done.returncode, done.stderr
        else:  # the same main, in this process: usage errors are found before anything loads
            with pytest.raises(SystemExit) as exited:
                main(["predict", *args, str(image), "-q"])
            returncode, stderr = exited.value.code, capsys.readouterr().err
        last = stderr.strip().splitlines()[-1]
        assert returncode == 2 and "Traceback" not in stderr, (args, stderr)
        assert last.startswith("python -m classify predict: error: ") and expected in last, (args, last)
    done = run_module("classify", "predict", "--imagenet", "--weights", tmp_path / "absent.h5", image)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"classify predict: error: {tmp_path / 'absent.h5'}: no such weights file (give imagenet, or a "
        "weights file of vgg16 with its top)"
    ]


# (4) The library is the command.

@pytest.mark.slow
@pytest.mark.needs_shared
def test_library_call_is_the_cli_csv(cli_run, pandas, mobilenetv2_top, tmp_path, capfd):
    folder, bad = pandas
    predictions = imagenet_predict([folder, bad], backbone="mobilenetv2", weights=mobilenetv2_top,
                                   progress=False)
    assert capfd.readouterr().out == ""  # nothing printed, not even Keras' messages
    lib = tmp_path / "lib.csv"
    with open(lib, "w", newline="") as f:
        write_csv(predictions, f)
    assert lib.read_text() == cli_run[0]

    # All 1,000 classes: a softmax (sums to 1), in descending order; the first 5 are the top 5;
    # another class index renames them.
    custom = tmp_path / "index.json"
    custom.write_text(json.dumps({str(i): [w, f"c{i}:{n}"] for i, (w, n) in enumerate(load_class_index())}))
    two = sorted(folder.iterdir())[:2]
    full = imagenet_predict(two, backbone="mobilenetv2", weights=mobilenetv2_top, top=1000,
                            class_index=custom, batch_size=1, progress=False)
    # In the same batches (one image each), so by the same computation: equal to the last bit.
    fives = imagenet_predict(two, backbone="mobilenetv2", weights=mobilenetv2_top, batch_size=1,
                             progress=False)
    for whole, five in zip(full, fives, strict=True):
        probabilities = [p for _, _, p in whole.top]
        # A float32 softmax of 1,000 classes sums to within (1000 + 3)u of 1 (softmax_rounding).
        assert len(probabilities) == 1000 and sum(probabilities) == pytest.approx(1.0, abs=1003 * U32)
        assert probabilities == sorted(probabilities, reverse=True)
        assert [(w, n.split(":", 1)[1], p) for w, n, p in whole.top[:5]] == five.top


# (5) The class index shipped with the package.

@pytest.mark.needs_shared
def test_shipped_class_index_is_keras_own():
    data = json.loads(CLASS_INDEX_FILE.read_text())
    assert len(data) == 1000 and data["0"] == ["n01440764", "tench"]
    assert data["388"] == ["n02510455", "giant_panda"]
    assert hashlib.md5(CLASS_INDEX_FILE.read_bytes()).hexdigest() == KERAS_INDEX_MD5
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert "imagenet_class_index.json" in setup["options.package_data"]["classify.inference"].split()
    assert json.loads(_need(SHARED_INDEX).read_text()) == data
    assert SHARED_INDEX.read_bytes() == CLASS_INDEX_FILE.read_bytes()
