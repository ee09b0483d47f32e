"""Shared fixtures: where the real data lives, and how to run the two commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FEATUREBANK_SHARED", REPO.parent / "shared"))
FLOWERS17 = SHARED / "datasets" / "flowers17"
MOBILENETV2_NOTOP = SHARED / "models" / "mobilenetv2_1.0_224_imagenet_notop.weights.h5"


def _need(path: Path) -> Path:
    """Skip when the real data is absent (a user's fresh clone), but never in CI."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing, and CI must run every test against ../shared")
        pytest.skip(f"needs {path} (real images and weights beside the repository, in ../shared)")
    return path


@pytest.fixture(scope="session")
def flowers17() -> Path:
    return _need(FLOWERS17)


@pytest.fixture(scope="session")
def mobilenetv2_notop() -> Path:
    return _need(MOBILENETV2_NOTOP)


def run_module(module: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` the way a user does, capturing its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def make_subset(source: Path, dest: Path, classes: list[str], per_class: int) -> Path:
    """A small class-per-folder dataset of links to the first images of some classes."""
    for name in classes:
        (dest / name).mkdir(parents=True)
        for image in sorted((source / name).iterdir())[:per_class]:
            (dest / name / image.name).symlink_to(image)
    return dest
