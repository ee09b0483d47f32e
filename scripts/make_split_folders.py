"""Make a split-folders copy of a class-per-folder dataset: ``DEST/train``, ``DEST/val`` and
``DEST/test``, each one sub-folder per class, of links to the original images.

The split is fixed, not drawn: of each class's images in sorted order, every five go 3 to
train, 1 to val and 1 to test (60/20/20), so the same folder always gives the same copy.
The layout the course's MobileNetV2 program reads (``output/train``, ``output/val``) and
``python -m extract`` keeps as each row's split.

    python scripts/make_split_folders.py ../shared/datasets/flowers17 output
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: Of every five images of a class, in sorted order: the split of each.
RULE = ("train", "train", "train", "val", "test")


def make_split_folders(source: Path, dest: Path) -> dict[str, int]:
    """Link the images of ``source`` (class-per-folder) into ``dest/<split>/<class>/`` by
    :data:`RULE`; returns the images per split.

    Examples
    --------
    >>> make_split_folders(Path("datasets/flowers17"), Path("output"))  # doctest: +SKIP
    {'train': 816, 'val': 272, 'test': 272}
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from extract.sources import list_images

    listing = list_images(source)
    counts = dict.fromkeys(dict.fromkeys(RULE), 0)
    seen: dict[int, int] = {}
    for path, label in zip(listing.paths, listing.labels, strict=True):
        k = seen[label] = seen.get(label, -1) + 1
        split = RULE[k % len(RULE)]
        target = dest / split / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_symlink():
            target.symlink_to(os.path.abspath(source / path))
        counts[split] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a class-per-folder dataset")
    parser.add_argument("dest", type=Path, help="the split-folders copy to make (links)")
    args = parser.parse_args(argv)
    counts = make_split_folders(args.source, args.dest)
    print(", ".join(f"{n} {split}" for split, n in counts.items()) + f" images linked under {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
