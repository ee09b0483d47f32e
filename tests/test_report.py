"""Suspected label errors and the HTML report: cleanlab on out-of-fold probabilities finds labels
swapped on purpose; the report opens in a real headless browser (Debian's chromium through
Playwright) without console errors, shows every mistake, filters its images by confusion cell and
shows a vanished image as a placeholder."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

from classify import train_and_evaluate
from features import FeatureWriter

SWAPPED = 10


def read_issues(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_swapped_labels_of_separable_blobs_are_the_most_suspected(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    X = rng.normal(0, 1, (200, 8)) + 4.0 * np.eye(4, 8)[y]
    given = y.copy()
    swapped = rng.choice(200, SWAPPED, replace=False)
    given[swapped] = (y[swapped] + 1 + rng.integers(0, 3, SWAPPED)) % 4
    names = ["a", "b", "c", "d"]
    splits = ["test" if i % 5 == 4 and i not in swapped else "train" for i in range(200)]
    with FeatureWriter(tmp_path / "f.hdf5", dim=8, label_names=names, attrs={"backbone": "blobs"},
                       splits=True) as w:
        w.add(X, given, [f"{i}.jpg" for i in range(200)], splits=splits)
    result = train_and_evaluate(tmp_path / "f.hdf5", jobs=1, label_issues=tmp_path / "issues.csv")["logreg"]
    rows = read_issues(tmp_path / "issues.csv")
    assert [r["path"] for r in rows] == [i.path for i in result.label_issues()]
    top = {r["path"] for r in rows[:20]}
    assert len(top & {f"{i}.jpg" for i in swapped}) >= 8
    first = next(r for r in rows if int(r["path"][:-4]) in swapped)
    assert first["suggested"] == names[y[int(first["path"][:-4])]] and first["given"] != first["suggested"]
    assert all(row in result.train_indices for row in (i.row for i in result.label_issues()))
    assert [i.score for i in result.label_issues()] == sorted(i.score for i in result.label_issues())
    assert {r["flagged"] for r in rows} <= {"yes", "no"} and rows[0]["flagged"] == "yes"


def test_the_report_escapes_names_and_renders_a_model_without_probabilities(tmp_path):
    from sklearn.svm import LinearSVC

    from classify import Classifier, SettingsError, register_classifier, unregister_classifier

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 30)
    X = rng.normal(0, 1, (60, 3)) + 1.5 * y[:, None]
    names = ['<b>"tag"</b>', "a & b"]
    with FeatureWriter(tmp_path / "f.hdf5", dim=3, label_names=names, attrs={"backbone": "blobs"}) as w:
        w.add(X, y, [f"<img src=x onerror=alert(1)>{i}.jpg" for i in range(60)])
    register_classifier(Classifier("svm", "linear SVM, no probabilities",
                                   lambda seed, jobs: LinearSVC(random_state=seed), {"C": [1.0]}))
    try:
        with pytest.raises(SettingsError, match="svm has no predict_proba, which label issues rank"):
            train_and_evaluate(tmp_path / "f.hdf5", "svm", jobs=1, label_issues=tmp_path / "i.csv")
        results = train_and_evaluate(tmp_path / "f.hdf5", ["logreg", "svm"], jobs=1, bootstrap=200,
                                     html=tmp_path / "r.html")
    finally:
        unregister_classifier("svm")
    page = (tmp_path / "r.html").read_text()
    assert "&lt;b&gt;&#34;tag&#34;&lt;/b&gt;" in page and "a &amp; b" in page
    assert '<b>"tag"</b>' not in page and "<img src=x" not in page
    for k, name in enumerate(["logreg", "svm"]):
        evaluation = results[name].evaluation
        gallery = page.split(f'id="mistakes-m{k}"')[1].split("</div>\n<h3>")[0]
        mistakes = int(np.sum(evaluation.y_test != evaluation.predictions))
        assert gallery.count('class="card mistake"') == mistakes
    assert "Not found for this run" in page  # the svm's label issues: it has no probabilities
    assert results["logreg"].found_label_issues is not None and results["svm"].found_label_issues is None


@pytest.fixture(scope="module")
def swapped_flowers(flowers17, mobilenetv2_notop, tmp_path_factory) -> dict:
    """MobileNetV2 avg features of 40 images of each Flowers-17 class (links, so one can
    vanish), read through a manifest whose split column holds out 1 in 5 for test and whose
    label column gives 10 training images (by seed 0) another class."""
    from extract import extract_features

    tmp = tmp_path_factory.mktemp("swapped")
    classes = sorted(p.name for p in flowers17.iterdir() if p.is_dir())
    rows = []
    for name in classes:
        (tmp / "data" / name).mkdir(parents=True)
        for k, image in enumerate(sorted((flowers17 / name).iterdir())[:40]):
            (tmp / "data" / name / image.name).symlink_to(image)
            rows.append([f"data/{name}/{image.name}", name, "test" if k % 5 == 4 else "train"])
    rng = np.random.default_rng(0)
    train = [i for i, row in enumerate(rows) if row[2] == "train"]
    swapped = {}
    for i in rng.choice(train, SWAPPED, replace=False):
        true = rows[i][1]
        shift = 1 + int(rng.integers(0, len(classes) - 1))  # any other class
        rows[i][1] = classes[(classes.index(true) + shift) % len(classes)]
        swapped[rows[i][0]] = true
    with open(tmp / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    extract_features(manifest=tmp / "list.csv", backbone="mobilenetv2", weights=mobilenetv2_notop,
                     pooling="avg", output=tmp / "f17.hdf5", progress=False)
    result = train_and_evaluate(tmp / "f17.hdf5", jobs=1, json=tmp / "logreg.json",
                                label_issues=tmp / "issues.csv", html=tmp / "run.html")["logreg"]
    return {"tmp": tmp, "swapped": swapped, "result": result}


@pytest.mark.slow
def test_at_least_8_of_10_swapped_flowers17_labels_are_among_the_20_most_suspected(swapped_flowers):
    rows = read_issues(swapped_flowers["tmp"] / "issues.csv")
    top = [r["path"] for r in rows[:20]]
    found = [path for path in top if path in swapped_flowers["swapped"]]
    assert len(found) >= 8, (found, rows[:20])
    # Their suggested labels are mostly the true ones the swap replaced.
    suggested = {r["path"]: r["suggested"] for r in rows}
    assert sum(suggested[p] == swapped_flowers["swapped"][p] for p in found) >= len(found) - 2
    # cleanlab's own flags fall on swapped images first.
    assert all(r["path"] in swapped_flowers["swapped"] for r in rows[:5] if r["flagged"] == "yes")
    doc = json.loads((swapped_flowers["tmp"] / "logreg.json").read_text())
    assert [i["path"] for i in doc["label_issues"]] == [r["path"] for r in rows]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium in CI: .ci/run installs Debian's chromium package with apt")
        pytest.skip("no chromium browser here (apt install chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (in .[test])")
    return found


def open_page(html: Path):
    """The page at ``html`` in headless Chromium, and the console errors it logged."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    manager = sync_playwright().start()
    browser = manager.chromium.launch(executable_path=chromium())
    page = browser.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(html.resolve().as_uri())
    page.wait_for_load_state("load")
    return manager, browser, page, errors


@pytest.mark.slow
def test_the_report_opens_shows_every_mistake_and_filters_by_cell(swapped_flowers):
    chromium()
    html = swapped_flowers["tmp"] / "run.html"
    result = swapped_flowers["result"]
    mistakes = int(np.sum(result.evaluation.y_test != result.evaluation.predictions))
    manager, browser, page, errors = open_page(html)
    try:
        assert page.locator("#mistakes-m0 .card").count() == mistakes > 0
        assert page.locator("#mistakes-m0 img[src^='data:image/jpeg']").count() == mistakes
        assert page.locator(".issues .card").count() == len(result.label_issues())
        confusion = result.evaluation.confusion
        true, pred = np.argwhere((confusion > 0) & ~np.eye(len(confusion), dtype=bool))[0]
        page.click(f"td.cell[data-model='m0'][data-true='{true}'][data-pred='{pred}']")
        shown = page.locator("#cell-m0 .item:visible")
        assert shown.count() == confusion[true, pred]
        assert {(shown.nth(k).get_attribute("data-true"), shown.nth(k).get_attribute("data-pred"))
                for k in range(shown.count())} == {(str(true), str(pred))}
        page.click(f"td.cell[data-model='m0'][data-true='{true}'][data-pred='{true}']")
        assert page.locator("#cell-m0 .item:visible").count() == confusion[true, true]
        assert errors == []
    finally:
        browser.close()
        manager.stop()


@pytest.mark.slow
def test_a_report_of_saved_runs_shows_a_vanished_image_as_a_placeholder(swapped_flowers, tmp_path):
    chromium()
    tmp = swapped_flowers["tmp"]
    rf = train_and_evaluate(tmp / "f17.hdf5", "rf", grid={"n_estimators": [50]}, jobs=1,
                            json=tmp_path / "rf.json")
    doc = json.loads((tmp / "logreg.json").read_text())
    wrong = [p for p, t, g in zip(doc["test_paths"], doc["test_labels"], doc["test_predictions"], strict=True)
             if t != g]
    gone = tmp_path / wrong[0]  # test paths are relative to the manifest's folder
    shutil.copytree(tmp / "data", tmp_path / "data", symlinks=True)
    for run in ("logreg", "rf"):  # the same runs, their images now under tmp_path/data
        source = tmp / "logreg.json" if run == "logreg" else tmp_path / "rf.json"
        saved = json.loads(source.read_text())
        saved["provenance"]["dataset_root"] = str(tmp_path)
        (tmp_path / f"{run}.json").write_text(json.dumps(saved))
    gone.unlink()
    done = run_module("classify", "report", tmp_path / "logreg.json", tmp_path / "rf.json",
                      "--html", tmp_path / "saved.html")
    assert done.returncode == 0, done.stderr
    manager, browser, page, errors = open_page(tmp_path / "saved.html")
    try:
        assert page.locator("#mistakes-m0 .placeholder").count() == 1
        rf_mistakes = int(np.sum(rf["rf"].evaluation.y_test != rf["rf"].evaluation.predictions))
        assert page.locator("#mistakes-m1 .card").count() == rf_mistakes
        assert page.locator("table.pairs tr").count() == 2  # a header and the one pair
        assert "McNemar" in page.content() and errors == []
    finally:
        browser.close()
        manager.stop()
