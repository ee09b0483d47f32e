"""What a run must do to bring an output file up to date with its dataset.

An image is *done* when its path is in the output, as a row or in the skipped list. A run
extracts the images of the listing that are not done, in listing order: after a killed run
that is exactly the rest of the interrupted run (so the finished file equals an uninterrupted
one), after new images were added it is the new images. Nothing is recomputed when nothing
changed. Feature files record the settings that decide their values; a run whose settings
differ from the file's is refused, so one file never mixes features of two models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features import FeatureFile
from features.schema import ATTR_DEFAULTS, FEATURE_DEFINING_ATTRS

from .listing import REJECTED, canonical_split
from .sources import ImageListing


@dataclass(frozen=True)
class Plan:
    """The work of one run.

    Attributes
    ----------
    todo : ndarray of int
        Indices into the listing of the images to extract, in listing order.
    labels : ndarray of int32
        The label, in the output, of every image of the listing.
    label_names : list of str
        The output's class names: those already in the file first (their labels are kept),
        then new classes in sorted order.
    new_classes : list of str
        Classes that are not in the file yet.
    done : int
        Images of the listing already in the file (as rows or skipped).
    gone : list of str
        Paths in the file (rows or skipped) that are no longer in the dataset.
    resume : bool
        The file exists and is extended; False: a new file is written.
    complete : bool
        The existing file is finished (not a killed run's).
    attrs : dict
        The existing file's attributes (empty for a new file).
    rejected : list of (str, str)
        Entries the layout could not use (:attr:`ImageListing.rejected`) that the file does not
        record yet: the run adds them to its ``skipped``, the reason after
        :data:`~extract.listing.REJECTED`.
    unrejected : list of str
        Paths the file records as rejected by the layout that the dataset now lists as fine
        (a manifest's line mended): the run forgets those entries and extracts the images.
    moved : list of (str, str, str, str)
        Rows whose image the dataset now puts in another split (or, a manifest, under another
        label), as ``(path in the file, where it is there, path in the dataset, where it is
        now)``: refused unless pruned, then extracted again (:func:`moved_images`).
    """

    todo: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    new_classes: list[str] = field(default_factory=list)
    done: int = 0
    gone: list[str] = field(default_factory=list)
    resume: bool = False
    complete: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    unrejected: list[str] = field(default_factory=list)
    moved: list[tuple[str, str, str, str]] = field(default_factory=list)

    def up_to_date(self, prune: bool = False) -> bool:
        """True when the run has nothing to do."""
        return (self.resume and self.complete and not len(self.todo) and not (prune and self.gone)
                and not self.rejected)


def plan_work(listing: ImageListing, existing: FeatureFile | None = None) -> Plan:
    """The plan for ``listing`` against ``existing`` (an output opened with ``allow_partial``)."""
    if existing is None:
        return Plan(
            todo=np.arange(len(listing)),
            labels=listing.labels.astype(np.int32),
            label_names=list(listing.class_names),
            rejected=[(path, REJECTED + reason) for path, reason in listing.rejected],
        )
    names = list(existing.label_names)
    new_classes = sorted(set(listing.class_names) - set(names))
    label_names = names + new_classes
    index = {name: i for i, name in enumerate(label_names)}
    remap = np.array([index[name] for name in listing.class_names], dtype=np.int32)
    rows, skips = set(existing.paths or []), dict(existing.skipped)
    listed, rejected_now = set(listing.paths), {path for path, _ in listing.rejected}
    # A layout's rejection of an image it now lists is forgotten and the image extracted; a
    # row whose entry the layout now rejects is gone (kept, or dropped with --prune).
    unrejected = sorted(p for p in listed if skips.get(p, "").startswith(REJECTED) and p not in rows)
    done_paths = rows | (set(skips) - set(unrejected))
    todo = np.array([i for i, p in enumerate(listing.paths) if p not in done_paths], dtype=np.int64)
    gone = sorted((rows - listed) | (set(skips) - listed - rejected_now))
    return Plan(
        todo=todo,
        labels=remap[listing.labels] if len(listing.labels) else listing.labels.astype(np.int32),
        label_names=label_names,
        new_classes=new_classes,
        done=len(listing) - len(todo),
        gone=gone,
        resume=True,
        complete=bool(existing.attrs.get("complete", True)),
        attrs=dict(existing.attrs),
        rejected=[(path, REJECTED + reason) for path, reason in listing.rejected
                  if path not in skips and path not in rows],
        unrejected=unrejected,
        moved=moved_images(listing, existing.paths or [], existing.splits,
                           [names[k] for k in existing.labels[: len(existing.paths or [])]]),
    )


def split_key(path: str, split: str) -> str:
    """What names an image whichever split holds it: its path, less a leading folder named for
    its split (``val/daisy/1.jpg`` and ``train/daisy/1.jpg`` are one image moved).

    Examples
    --------
    >>> split_key("validation/daisy/1.jpg", "val"), split_key("images/1.jpg", "test")
    ('daisy/1.jpg', 'images/1.jpg')
    """
    first, _, rest = path.partition("/")
    return rest if rest and canonical_split(first) == split else path


def moved_images(listing: ImageListing, paths: Sequence[str], splits: Sequence[str] | None,
                 labels: Sequence[str] | None = None) -> list[tuple[str, str, str, str]]:
    """The file's rows (``paths``, their ``splits`` and class ``labels``) whose image
    ``listing`` now puts in another split, or under the same path in another class (a
    manifest's line changed), as ``(old path, where it was, new path, where it is)``.

    An image is found by its path, else by its path less its split folder
    (:func:`split_key`) where that names one image of the listing only and its new path is not
    a row of the file already (then the old row is merely gone, not moved).

    Examples
    --------
    >>> from pathlib import Path
    >>> from extract.listing import ordered_listing
    >>> now = ordered_listing(Path("d"), [("train/a/1.jpg", "a", "train"), ("x.jpg", "b", "test")])
    >>> moved_images(now, ["val/a/1.jpg", "x.jpg"], ["val", "test"], ["a", "a"])
    [('val/a/1.jpg', 'val', 'train/a/1.jpg', 'train'), ('x.jpg', 'class a', 'x.jpg', 'class b')]
    """
    names = [listing.class_names[k] for k in listing.labels]
    splits_now = listing.splits if listing.splits is not None else [None] * len(listing)
    now = {path: (split, name) for path, split, name in zip(listing.paths, splits_now, names, strict=True)}
    keyed = [(split_key(p, s), p) for p, (s, _) in now.items() if s is not None]
    keys = Counter(key for key, _ in keyed)
    by_key = {key: p for key, p in keyed if keys[key] == 1}
    rows = set(paths)
    moved = []
    for k, path in enumerate(paths):
        old_split = splits[k] if splits is not None else None
        new = path if path in now else by_key.get(split_key(path, old_split)) if old_split else None
        if new is None or (new != path and new in rows):
            continue
        new_split, new_name = now[new]
        if old_split is not None and new_split is not None and new_split != old_split:
            moved.append((path, old_split, new, new_split))
        elif labels is not None and new == path and labels[k] != new_name:
            moved.append((path, f"class {labels[k]}", new, f"class {new_name}"))
    return moved


def settings_changes(existing: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``"name: old -> new"`` for every feature-deciding setting that differs.

    Settings missing from ``requested`` (or None there, not known yet) are not compared; the
    weights' name is compared only where their SHA-256 is not known yet.
    """
    changes = []
    keys = (*FEATURE_DEFINING_ATTRS, "dataset")
    if requested.get("weights_sha256") is None:
        keys += ("weights",)
    for key in keys:
        new = requested.get(key)
        if new is None:
            continue
        old = existing.get(key, ATTR_DEFAULTS.get(key))
        if old is None or str(old) != str(new):
            changes.append(f"{key}: {old} -> {new}")
    return changes


def split_refusal(output: str, listing: ImageListing, existing: FeatureFile | None) -> str | None:
    """The refusal when ``existing`` and the dataset disagree on whether rows have splits (one
    was listed by a layout with splits, the other not), else None."""
    if existing is None or (existing.splits is None) == (listing.splits is None):
        return None
    has = "no split" if existing.splits is None else "a split"
    other = ", --layout class-per-folder to continue it as it was made," if existing.splits is None else ""
    return (f"{output}: its rows have {has} and this dataset's "
            f"{'do' if listing.splits is not None else 'do not'}: pass --overwrite to extract it "
            f"again as it is laid out now{other} or choose another --output")


def moved_refusal(output: str, moved: Sequence[tuple[str, str, str, str]]) -> str:
    """The refusal of a run that found images moved to another split (without --prune)."""
    old, before, new, after = moved[0]
    more = f" (and {len(moved) - 1} more)" if len(moved) > 1 else ""
    return (f"{output}: {old} is in {before} there, and the dataset has it in {after} ({new}){more}; "
            "pass --prune to extract it again with its new split")
