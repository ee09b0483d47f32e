"""Stage 2 as a library: ``train_and_evaluate``, ``compare`` and ``predict`` give what the command
line gives (it is a shell over them), raise its one-line errors, and draw figures for notebooks."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys

import joblib
import numpy as np
import pytest
from conftest import REPO, make_subset, run_module
from test_classify import blobs_file

os.environ.setdefault("MPLBACKEND", "Agg")  # as the command line does; no display here

import classify  # noqa: E402
from classify import (  # noqa: E402
    ClassifyError,
    CompareError,
    FeatureFileError,
    ModelResult,
    PredictError,
    SettingsError,
    SplitError,
    compare,
    predict,
    side_by_side_table,
    train_and_evaluate,
)
from features import FeatureWriter  # noqa: E402

TIMINGS = ("search_seconds", "mean_fit_time", "refit_seconds")


def without_timings(value):
    """A --json document (or part of it) without the fields that differ from run to run."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def untimed(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("search time:")]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Overlapping classes (so the two models differ), 15 test rows."""
    path = tmp_path_factory.mktemp("blobs") / "blobs.hdf5"
    X, y = blobs_file(path, spread=1.0)
    return path, X, y


@pytest.fixture(scope="module")
def cli_run(blobs, tmp_path_factory):
    """``python -m classify`` with --json, --save and --plots for two models."""
    path = blobs[0]
    out = tmp_path_factory.mktemp("cli")
    done = run_module("classify", "-f", path, "-m", "logreg", "rf", "-j", "1", "--json", out / "r.json",
                      "--save", out / "m.joblib", "--plots", out / "plots")
    assert done.returncode == 0, done.stderr
    return done, out


@pytest.fixture(scope="module")
def lib_run(blobs, tmp_path_factory):
    """The same run through the library, with each result collected as it is done."""
    path = blobs[0]
    out = tmp_path_factory.mktemp("lib")
    seen: list[ModelResult] = []
    results = train_and_evaluate(path, ["logreg", "rf"], jobs=1, json=out / "r.json",
                                 save=out / "m.joblib", plots=out / "plots", on_result=seen.append)
    return results, seen, out


@pytest.mark.slow
def test_library_and_cli_give_the_same_reports_and_files(cli_run, lib_run, blobs):
    done, cli = cli_run
    results, seen, lib = lib_run
    assert list(results) == ["logreg", "rf"] and seen == list(results.values())  # in order, as done
    expected = "\n".join([results["logreg"].report, results["rf"].report, side_by_side_table(results)])
    assert untimed(done.stdout) == untimed(expected)
    X = blobs[1]
    for name, result in results.items():
        a = json.loads((cli / f"r.{name}.json").read_text())
        b = json.loads((lib / f"r.{name}.json").read_text())
        assert without_timings(a) == without_timings(b)
        assert b["accuracy"] == result.accuracy and b["best_params"] == result.best_params
        assert b["test_indices"] == result.test_indices.tolist()
        assert b["test_predictions"] == result.test_predictions.tolist()
        assert b["test_labels"] == result.y_test.tolist() and b["label_names"] == result.label_names
        assert b["report"] == result.report_dict  # JSON keeps floats exactly
        cards = [json.loads((folder / f"m.{name}.card.json").read_text()) for folder in (cli, lib)]
        assert cards[0] == cards[1]
        test = result.test_indices
        np.testing.assert_array_equal(joblib.load(cli / f"m.{name}.joblib").predict(X[test]),
                                      joblib.load(lib / f"m.{name}.joblib").predict(X[test]))
    assert sorted(p.name for p in (lib / "plots").iterdir()) == sorted(
        p.name for p in (cli / "plots").iterdir()) == ["confusion_logreg.png", "confusion_rf.png",
                                                       "precision.png"]


def test_to_json_and_save_write_what_the_cli_writes(cli_run, lib_run, blobs, tmp_path):
    _, cli = cli_run
    result = lib_run[0]["rf"]
    doc = result.to_json(tmp_path / "rf.json")
    assert without_timings(json.loads((tmp_path / "rf.json").read_text())) == without_timings(
        json.loads((cli / "r.rf.json").read_text()))
    assert without_timings(json.loads(json.dumps(doc, default=str))) == without_timings(
        json.loads((cli / "r.rf.json").read_text()))
    assert result.to_json() == doc  # without a path: the same document, nothing written
    saved = result.save(tmp_path / "rf.joblib")
    assert saved == tmp_path / "rf.joblib"
    card = json.loads((tmp_path / "rf.card.json").read_text())
    assert card == json.loads((cli / "m.rf.card.json").read_text())
    X = blobs[1]
    np.testing.assert_array_equal(joblib.load(saved).predict(X), result.estimator.predict(X))


def test_result_holds_the_report_and_confusion_matrix(lib_run, blobs):
    from sklearn.metrics import confusion_matrix

    y = blobs[2]
    result = lib_run[0]["logreg"]
    assert result.name == "logreg" and result.label_names == ["ant", "bee", "cow"]
    assert result.report.startswith("model: logreg\nbest parameters: ")
    assert "precision    recall  f1-score   support" in result.report
    np.testing.assert_array_equal(result.y_test, y[result.test_indices])
    cm = result.confusion_matrix
    np.testing.assert_array_equal(cm, confusion_matrix(result.y_test, result.test_predictions))
    assert cm.shape == (3, 3) and cm.sum() == len(result.test_indices) == 15
    assert result.accuracy == pytest.approx(np.trace(cm) / cm.sum())
    assert repr(result) == (f"ModelResult(name='logreg', accuracy={result.accuracy:.4f}, "
                            f"best_params={result.best_params!r}, test_images=15)")


def test_plot_confusion_returns_a_figure_shown_once(lib_run):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    result = lib_run[0]["rf"]
    fig = result.plot_confusion()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ant", "bee", "cow"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ant", "bee", "cow"]
    assert ax.get_title() == "rf on blobs.hdf5, normalised by true class"
    # Closed in pyplot: a notebook shows it once, as the cell's value, not again at the cell's end.
    assert fig not in [plt.figure(n) for n in plt.get_fignums()]
    # Into axes of the caller's own figure.
    own, axes = plt.subplots(1, 2)
    try:
        assert result.plot_confusion(ax=axes[1]) is own
        assert len(axes[1].get_xticklabels()) == 3 and axes[1].images and not axes[0].images
    finally:
        plt.close(own)


def test_plot_confusion_is_shown_once_in_jupyter(blobs):
    """A real kernel (inline backend): the figure is the cell's value, and is not drawn again."""
    if importlib.util.find_spec("ipykernel") is None or importlib.util.find_spec("jupyter_client") is None:
        pytest.skip("needs ipykernel and jupyter_client to run a notebook kernel")
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's own inline backend
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(REPO))
    outputs: list[dict] = []
    try:
        code = ("from classify import train_and_evaluate\n"
                f"r = train_and_evaluate({str(blobs[0])!r}, jobs=1)['logreg']\n"
                "r.plot_confusion()\n")
        reply = kc.execute_interactive(code, output_hook=outputs.append, timeout=120)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    shown = [m["msg_type"] for m in outputs
             if m["msg_type"] in ("execute_result", "display_data") and "image/png" in m["content"]["data"]]
    assert shown == ["execute_result"]
    streams = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
    assert "model: logreg" not in streams  # the library prints no report


def test_library_prints_nothing_and_logs_its_lines(blobs, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="classify"):
        results = train_and_evaluate(blobs[0], "logreg", grid={"C": [1]}, jobs=1)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert [r.getMessage() for r in caplog.records if r.name == "classify"] == [
        '60 rows, 8 features, 3 classes; 45 train / 15 test; searching logreg over {"C": [1]}'
    ]
    assert results["logreg"].best_params == {"C": 1}


SETTINGS_CASES = [
    ({"test_size": 1.5}, ["--test-size", "1.5"]),
    ({"folds": 1}, ["--folds", "1"]),
    ({"jobs": 0}, ["--jobs", "0"]),
    ({"jobs": -2}, ["--jobs", "-2"]),
    ({"seed": -1}, ["--seed", "-1"]),
    ({"grid": "{C: 1}"}, ["--grid", "{C: 1}"]),
    ({"grid": '{"gamma": [1]}'}, ["--grid", '{"gamma": [1]}']),
    ({"grid": "[1]"}, ["--grid", "[1]"]),
    ({"models": ["svm"]}, ["--model", "svm"]),
    ({"models": ["logreg", "rf"], "grid": '{"C": [1]}'}, ["--model", "logreg", "rf", "--grid", '{"C": [1]}']),
    ({"engine": "spark"}, ["--engine", "spark"]),
]


@pytest.mark.parametrize("kwargs, argv", SETTINGS_CASES)
def test_settings_errors_are_the_cli_usage_errors(blobs, kwargs, argv):
    kwargs = dict(kwargs)
    models = kwargs.pop("models", ("logreg",))
    with pytest.raises(SettingsError) as caught:
        train_and_evaluate(blobs[0], models, **kwargs)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ClassifyError)
    message = str(caught.value)
    assert "\n" not in message
    done = run_module("classify", "-f", blobs[0], *argv)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("usage: python -m classify")
    assert lines[-1] == f"python -m classify: error: {message}"


def test_settings_are_checked_before_the_file_is_read(tmp_path):
    with pytest.raises(SettingsError, match=r"folds \(--folds\) must be at least 2, got 1"):
        train_and_evaluate(tmp_path / "absent.hdf5", folds=1)
    with pytest.raises(SettingsError, match=r"folds \(--folds\) must be a whole number, got 2.5"):
        train_and_evaluate(tmp_path / "absent.hdf5", folds=2.5)


def _one_class(path):
    with FeatureWriter(path, dim=2, label_names=["ant"], attrs={}) as w:
        w.add(np.zeros((5, 2)), [0] * 5, list("abcde"))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (None, FeatureFileError, "{path}: no such file"),
        (lambda p: p.write_text("hello"), FeatureFileError,
         "{path}: not an HDF5 file, so not a feature file"),
        (_one_class, SplitError, "{path}: only 1 class in the file; a classifier needs at least 2"),
        (lambda p: blobs_file(p, per_class=(20, 1)), SplitError,
         "{path}: class 'bee' has 1 row; every class needs at least 2 to appear in both the training "
         "and the test rows"),
    ],
)
def test_failures_are_the_cli_one_line_errors(tmp_path, make, error, message):
    path = tmp_path / "bad.hdf5"
    if make is not None:
        make(path)
    with pytest.raises(error) as caught:
        train_and_evaluate(path)
    assert str(caught.value) == message.format(path=path)
    done = run_module("classify", "-f", path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"classify: error: {caught.value}"]


def test_exceptions_share_one_base():
    for exc in (SettingsError, SplitError, CompareError, PredictError):
        assert issubclass(exc, ClassifyError)
    for exc in (SettingsError, SplitError, CompareError):
        assert issubclass(exc, ValueError)  # as they were


def test_unwritable_output_is_one_line(blobs, tmp_path):
    with pytest.raises(ClassifyError) as caught:
        train_and_evaluate(blobs[0], grid={"C": [1]}, jobs=1, json=tmp_path / "absent" / "r.json")
    assert str(caught.value) == f"{tmp_path / 'absent' / 'r.json'}: cannot write (No such file or directory)"


def test_plots_folder_is_created_and_a_file_in_the_way_is_one_line(blobs, tmp_path):
    folder = tmp_path / "a" / "b"
    train_and_evaluate(blobs[0], grid={"C": [1]}, jobs=1, plots=folder)
    assert [p.name for p in folder.iterdir()] == ["confusion_logreg.png"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ClassifyError, match="cannot create the folder for --plots"):
        train_and_evaluate(blobs[0], grid={"C": [1]}, jobs=1, plots=tmp_path / "file" / "plots")


def test_unfinished_file_is_classified_without_the_classes_not_reached_yet(tmp_path):
    path = tmp_path / "partial.hdf5"
    rng = np.random.default_rng(0)
    w = FeatureWriter(path, dim=4, label_names=["ant", "bee", "cow"], attrs={})
    w.add(np.concatenate([rng.normal(0, 1, (12, 4)), rng.normal(5, 1, (12, 4))]), [0] * 12 + [1] * 12,
          [f"{i}.jpg" for i in range(24)])
    w.close(complete=False)
    with pytest.raises(FeatureFileError, match="extraction did not finish"):
        train_and_evaluate(path)
    result = train_and_evaluate(path, grid={"C": [1]}, jobs=1, allow_partial=True)["logreg"]
    assert result.report_dict["cow"]["support"] == 0 and result.accuracy == 1.0
    assert result.confusion_matrix.shape == (3, 3)


@pytest.mark.slow
def test_compare_is_the_cli_table(cli_run, tmp_path):
    _, cli = cli_run
    paths = [cli / "r.logreg.json", cli / "r.rf.json"]
    comparison = compare(paths, plots=tmp_path / "figs")
    done = run_module("classify", "compare", *paths)
    assert done.returncode == 0, done.stderr
    assert done.stdout == comparison.table + "\n" and str(comparison) == comparison.table
    assert list(comparison.runs) == ["r.logreg", "r.rf"]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "confusion_r.logreg.png", "confusion_r.rf.png", "precision.png"]
    fig = comparison.plot_precision()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["ant", "bee", "cow"]

    with pytest.raises(SettingsError) as caught:
        compare(paths[:1])
    done = run_module("classify", "compare", paths[0])
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        f"python -m classify compare: error: {caught.value}")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(CompareError) as caught:
        compare([paths[0], bad])
    done = run_module("classify", "compare", paths[0], bad)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"classify compare: error: {caught.value}"]


def test_side_by_side_table_refuses_results_on_other_rows(lib_run, blobs):
    other = train_and_evaluate(blobs[0], grid={"C": [1]}, seed=7, jobs=1)["logreg"]
    with pytest.raises(CompareError, match="were scored on different test rows"):
        side_by_side_table({"a": lib_run[0]["logreg"], "b": other})


def test_import_stays_light():
    code = ("import sys, classify\n"
            "heavy = ('tensorflow', 'keras', 'ray', 'xgboost', 'matplotlib')\n"
            "assert not [m for m in heavy if m in sys.modules], sys.modules.keys() & set(heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(classify.__all__) >= {"train_and_evaluate", "ModelResult", "compare", "predict",
                                     "ClassifyError", "SettingsError", "CLASSIFIERS"}
    for name in classify.__all__:
        obj = getattr(classify, name)
        if callable(obj) and not isinstance(obj, type):
            assert "Examples\n    --------" in obj.__doc__, name


def test_docstring_examples_run():
    """Every module of classify (but the command line's) runs its docstring examples."""
    import doctest
    import importlib
    import pkgutil

    import classify

    attempted = 0
    for info in pkgutil.walk_packages(classify.__path__, "classify."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert outcome.failed == 0, module.__name__
        attempted += outcome.attempted
    assert attempted > 50


@pytest.fixture(scope="module")
def small_model(flowers17, tmp_path_factory):
    """A logistic regression on hed-bsds500 VGG16 features of 8 images at 64 px."""
    tmp = tmp_path_factory.mktemp("small")
    data = make_subset(flowers17, tmp / "f17", ["daisy", "tulip"], per_class=4)
    features, model = tmp / "f17.hdf5", tmp / "m.joblib"
    done = run_module("extract", "--dataset", data, "-o", features, "--weights", "hed-bsds500",
                      "--image-size", "64", "-q")
    assert done.returncode == 0, done.stderr
    train_and_evaluate(features, grid={"C": [1]}, jobs=1, save=model)
    return data, model


@pytest.mark.slow  # small_model: an extraction and a search, each over 10 s on 2 cores
@pytest.mark.needs_shared
def test_predict_is_the_cli_csv_and_progress_false_prints_no_bar(small_model, tmp_path, capfd):
    data, model = small_model
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    predictions = predict(model, [data, bad], progress=False)
    quiet = capfd.readouterr()
    assert "predict:" not in quiet.err and quiet.out == ""
    predict(model, bad)  # progress=True: the bar is on stderr
    assert "predict: 100%" in capfd.readouterr().err

    assert len(predictions) == 9 and predictions[-1].error == "empty file"
    first = predictions[0]
    assert first.predicted in ("daisy", "tulip") and first.error is None
    assert first.top[0] == (first.predicted, first.probability) and len(first.top) == 2
    assert sum(p for _, p in first.top) == pytest.approx(1.0)
    out = tmp_path / "p.csv"
    done = run_module("classify", "predict", "--model", model, data, bad, "--output", out, "-q")
    assert done.returncode == 0, done.stderr
    from classify.inference.predict import write_csv

    with open(tmp_path / "lib.csv", "w", newline="") as f:
        write_csv(predictions, f)
    assert (tmp_path / "lib.csv").read_text() == out.read_text()


@pytest.mark.slow
@pytest.mark.needs_shared
def test_predict_errors_are_the_cli_errors(small_model, tmp_path):
    data, model = small_model
    with pytest.raises(PredictError) as caught:
        predict(model, tmp_path / "absent")
    assert str(caught.value) == f"{tmp_path / 'absent'}: no such file or folder"
    done = run_module("classify", "predict", "--model", model, tmp_path / "absent")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"classify predict: error: {caught.value}"
    with pytest.raises(SettingsError) as caught:
        predict(model, data, batch_size=0)
    done = run_module("classify", "predict", "--model", model, data, "--batch-size", "0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"python -m classify predict: error: {caught.value}"


def test_ctrl_c_exits_130_in_one_line(tmp_path):
    import signal

    path = tmp_path / "big.hdf5"
    blobs_file(path, per_class=(1000, 1000, 1000), dim=300, spread=0.3)  # a search of some seconds
    proc = subprocess.Popen(
        [sys.executable, "-m", "classify", "-f", str(path), "-m", "rf", "-j", "1"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal leaves it
    )
    first = proc.stderr.readline()  # the search has started
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert first.startswith("classify: 3000 rows") and proc.returncode == 130
    assert err.strip().splitlines() == ["classify: interrupted"] and out == ""
