"""The README and docs/ as a reader meets them: short README, links that resolve, a CLI
reference that matches the commands, and contributing.md's four extensions running as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    targets = [t for t in LINK.findall(page.read_text()) if "://" not in t and not t.startswith("mailto:")]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing {missing}"


@pytest.mark.slow  # five commands' --help, each in a fresh process
def test_the_cli_reference_matches_the_commands():
    done = subprocess.run([sys.executable, "scripts/cli_reference.py", "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def python_blocks(page: Path) -> dict[str, str]:
    """The ```python blocks of ``page`` by the heading they sit under."""
    blocks, heading = {}, ""
    for part in re.split(r"(?m)^(## .*)$", page.read_text()):
        if part.startswith("## "):
            heading = part[3:].strip()
        for code in re.findall(r"```python\n(.*?)```", part, flags=re.S):
            blocks[heading] = code
    return blocks


def my_network():
    """What contributing.md's family builds: a 64 px input, 16 tokens of 8 values (``embed``)."""
    import keras

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(4, 16, strides=16, name="conv")(inputs)
    x = keras.layers.Reshape((16, 4), name="tokens")(x)
    return keras.Model(inputs, keras.layers.Dense(8, name="embed")(x))


@pytest.mark.slow
def test_contributing_shows_four_extensions_that_run_as_written(tmp_path, monkeypatch):
    from PIL import Image

    from classify import CLASSIFIERS, OUTPUTS, unregister_classifier, unregister_output
    from extract import extract_features, unregister_backbone_family, unregister_layout
    from extract.layouts import LAYOUTS
    from features import FeatureFile, FeatureWriter

    blocks = python_blocks(REPO / "docs" / "contributing.md")
    doors = ["A classifier", "A backbone family", "A dataset layout", "An output"]
    assert all(len([line for line in blocks[door].splitlines() if line.strip()]) <= 20 for door in doors)
    monkeypatch.chdir(tmp_path)
    my_network().save_weights("mine.weights.h5")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]}")
    Path("train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    y = np.arange(40) % 2
    with FeatureWriter("f17.hdf5", dim=6, label_names=["a", "b"], attrs={}) as writer:
        writer.add((rng.normal(size=(40, 6)) + 2 * y[:, None]).astype(np.float32), y,
                   [f"{i}.png" for i in range(40)])
    try:
        for door in doors:
            exec(compile(blocks[door], f"contributing.md: {door}", "exec"), {"my_network": my_network})
        assert "knn" in CLASSIFIERS and "accuracy" in OUTPUTS and "csv" in LAYOUTS
        assert sorted(p.name for p in tmp_path.glob("acc.*")) == ["acc.logreg.txt", "acc.rf.txt"]
        summary = extract_features("train.csv", layout="csv", backbone="mine", pooling="cls",
                                   output="mine.hdf5", progress=False)
        assert summary.written == 6
        with FeatureFile("mine.hdf5") as ff:
            assert ff.attrs["backbone_family"] == "mine" and ff.features.shape == (6, 8)
            assert [ff.label_names[k] for k in ff.labels] == list("ababab")
    finally:
        unregister_classifier("knn")
        unregister_output("accuracy")
        for name, unregister in (("mine", unregister_backbone_family), ("csv", unregister_layout)):
            try:
                unregister(name)
            except (KeyError, ValueError):  # the block did not get as far as registering it
                pass
