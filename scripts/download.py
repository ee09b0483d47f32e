"""Download a dataset of the registry into the data folder, laid out class-per-folder.

    python scripts/download.py tf_flowers                 # into ./datasets/tf_flowers
    python scripts/download.py flowers17 --data-dir /data
    python scripts/download.py caltech101                 # 101 classes, 8,677 images

Class folders the registry excludes (Caltech-101's BACKGROUND_Google clutter, which is not a
class of the published 101-class task) are left out unless --all-classes.
Datasets without a direct download (animals, behind a Kaggle login) print where to get them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

REGISTRY = Path(__file__).resolve().parent.parent / "datasets" / "registry.json"


def fetch(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))


def unpack(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)  # zipfile drops absolute paths and '..' parts itself
    else:
        with tarfile.open(archive) as t:
            # The 'data' filter refuses links and paths that leave the folder.
            if hasattr(tarfile, "data_filter"):
                t.extractall(into, filter="data")
            else:
                t.extractall(into)


def sort_consecutive(folder: Path, classes: list[str], per_class: int) -> None:
    """Move image_0001.jpg ... into class folders: the first ``per_class`` files are class 0."""
    images = sorted(folder.glob("image_*.jpg"))
    if len(images) != len(classes) * per_class:
        raise SystemExit(f"expected {len(classes) * per_class} images in {folder}, found {len(images)}")
    for i, image in enumerate(images):
        target = folder / classes[i // per_class]
        target.mkdir(exist_ok=True)
        image.rename(target / image.name)


def drop_excluded(folder: Path, entry: dict) -> list[str]:
    """Remove the class folders ``entry`` excludes from the unpacked dataset ``folder``."""
    dropped = []
    for name in entry.get("exclude_classes", []):
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
            dropped.append(name)
    return dropped


def main() -> int:
    registry = json.loads(REGISTRY.read_text())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(registry))
    parser.add_argument("--data-dir", default="datasets", help="where datasets live (default: ./datasets)")
    parser.add_argument("--all-classes", action="store_true",
                        help="keep class folders the registry excludes "
                             "(e.g. Caltech-101's BACKGROUND_Google)")
    args = parser.parse_args()

    entry = registry[args.dataset]
    target = Path(args.data_dir) / args.dataset
    if not entry.get("download"):
        print(f"{args.dataset}: no direct download; {entry['manual']} ({entry['url']})", file=sys.stderr)
        return 1
    if target.exists():
        print(f"{target} already exists; remove it to download again", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp = Path(tmp)
        archive = tmp / Path(entry["download"]).name
        fetch(entry["download"], archive)
        unpack(archive, tmp / "unpacked")
        source = tmp / "unpacked"
        if entry.get("archive_member"):  # an archive inside the archive (Caltech-101)
            unpack(source / entry["archive_member"], tmp / "inner")
            source = tmp / "inner"
        source = source / entry.get("root", "")
        if entry.get("consecutive_classes"):  # one flat folder, classes by file number
            sort_consecutive(source, entry["consecutive_classes"], entry["images_per_class"])
        if not args.all_classes:
            for name in drop_excluded(source, entry):
                print(f"left out {name} (not a class of the {args.dataset} task; --all-classes keeps it)",
                      file=sys.stderr)
        shutil.move(str(source), target)
    classes = [p for p in target.iterdir() if p.is_dir()]
    images = sum(1 for c in classes for p in c.rglob("*") if p.is_file())
    print(f"{target}: {len(classes)} class folders, {images} files "
          f"(registry: {entry['classes']} classes, {entry['images']} images); {entry['license']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
