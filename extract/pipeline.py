"""The local extraction engine: images → backbone → feature file, on this machine.

Images are decoded by worker processes a few batches ahead of the backbone
(:mod:`extract.decoding`), the next batch is started on the device before the current one's
rows are copied back, and rows are written by a background thread
(:mod:`features.background`), so the backbone waits on none of them. Rows reach the writer in
listing order, so the file's row order does not depend on timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

import features
from features import FeatureWriter, schema
from features.background import BackgroundWriter

from .backbones import LoadedBackbone, Running, standard_provenance
from .decoding import DecodedBatch, decoded_batches
from .devices import fixed_shape_helps
from .plan import Plan, plan_work
from .sources import ImageListing


@dataclass(frozen=True)
class ExtractSummary:
    """What a run did, for the summary line and for callers."""

    output: Path
    written: int
    skipped: list[tuple[str, str]]
    ignored: int
    seconds: float
    rows: int = 0  # rows in the finished file, earlier runs' included
    pruned: int = 0  # rows and skipped entries removed because their images are gone
    nodes: int = 0  # Ray nodes whose actors wrote shards (0: the local engine)
    up_to_date: bool = False  # nothing was to do: the file already held every image
    mirrors: bool = False  # each image's mirror was extracted too (--augment flip)

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def of(
        cls, writer: FeatureWriter, listing: ImageListing, skipped: list[tuple[str, str]],
        started: float, pruned: int, nodes: int = 0,
    ) -> ExtractSummary:
        """The summary of a run that wrote with ``writer`` and began at ``started``
        (``time.perf_counter()``)."""
        return cls(
            output=writer.path,
            written=writer.n_added,
            skipped=skipped,
            ignored=len(listing.ignored),
            seconds=time.perf_counter() - started,
            rows=writer.rows_written,
            pruned=pruned,
            nodes=nodes,
            mirrors=writer.mirrors,
        )

    def line(self) -> str:
        """The one-line summary ``python -m extract`` prints."""
        if self.up_to_date:
            return f"{self.output} is up to date: {self.rows} images done, nothing to extract"
        pruned = f", removed {self.pruned} gone" if self.pruned else ""
        nodes = f" on {self.nodes} Ray node{'s' if self.nodes > 1 else ''}" if self.nodes else ""
        return (
            f"wrote {self.written} images{' and their mirrors' if self.mirrors else ''}, "
            f"skipped {len(self.skipped)}, ignored {self.ignored} files"
            f"{pruned}{nodes} in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s) to "
            f"{self.output} ({self.rows} rows)"
        )


def backbone_facts(loaded: LoadedBackbone, index: int = 0) -> dict:
    """What a loaded backbone contributes to the provenance of the feature file of its
    ``index``-th layer (what its family records, :meth:`extract.backbones.BackboneFamily.provenance`,
    and the Keras backend), plus ``dim``: plain values, so that a Ray worker can send them to
    the driver."""
    import importlib.metadata

    import keras

    backend = keras.backend.backend()  # tensorflow by default; KERAS_BACKEND=jax works too
    family = loaded.family
    return {
        **(family.provenance(loaded, index) if family is not None else standard_provenance(loaded, index)),
        "keras_version": keras.__version__,
        "keras_backend": backend,
        f"{backend}_version": importlib.metadata.version(backend),
        "dim": loaded.dims[index],
    }


def provenance(
    facts: dict, listing: ImageListing, dataset: str, interpolation: str, dtype: str,
    augment: str = "none",
) -> dict:
    """The attributes that say where a feature file's rows came from; ``facts`` are
    :func:`backbone_facts`."""
    return {
        "featurebank_version": features.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset,
        "dataset_root": str(listing.root.resolve()),
        "excluded_classes": json.dumps(listing.excluded_classes),
        **{k: v for k, v in facts.items() if k != "dim"},
        "interpolation": interpolation,
        "dtype": dtype,
        "augment": augment,
    }


def run_attrs(attrs: dict, plan: Plan) -> dict:
    """``attrs`` for this run, keeping the creation time of a file being continued."""
    if plan.resume and "created" in plan.attrs:
        attrs["created"] = plan.attrs["created"]
        attrs["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    return attrs


def extract(
    listing: ImageListing,
    loaded: LoadedBackbone,
    output: str | os.PathLike,
    *,
    plan: Plan | None = None,
    **options: Any,
) -> ExtractSummary:
    """Extract one feature row per decodable image of ``listing`` into ``output``: the
    one-layer case of :func:`extract_layers` (same options)."""
    return extract_layers(listing, loaded, [(Path(output), plan or plan_work(listing))], **options)[0]


def extract_layers(
    listing: ImageListing,
    loaded: LoadedBackbone,
    targets: Sequence[tuple[Path, Plan]],
    *,
    prune: bool = False,
    dataset: str = "",
    batch_size: int = 32,
    buffer_size: int = 1000,
    dtype: str = "float32",
    interpolation: str = "nearest",
    max_pixels: int | None = None,
    progress: bool = True,
    augment: str = "none",
    decoder: str | None = None,
    decode_workers: int | None = None,
    fixed_shape: bool | None = None,
) -> list[ExtractSummary]:
    """Extract the features of every layer of ``loaded`` in one pass over ``listing``: layer
    ``k`` into ``targets[k]``, an output file and its plan (:func:`extract.plan.plan_work`).

    Each plan says which images that file still lacks and whether it is extended; the pass
    runs the backbone over the images any file lacks, and each file gets the rows of its own.
    ``prune`` drops the rows of images that are no longer in the dataset. Images that cannot
    be decoded are recorded in each file's ``skipped`` list with their reason; they never stop
    the run. With ``augment="flip"`` each batch also runs mirrored (:func:`mirrored`) and each
    file stores those rows as ``mirror_features``. Batches are cut from the images to do, in
    listing order; each image's features do not depend on the batch it runs in (tested:
    resumed runs are bit-equal to uninterrupted ones).

    Images are decoded by ``decode_workers`` processes or threads (``decoder``, see
    :func:`extract.decoding.decoded_batches`) a few batches ahead, and rows are committed by
    a :class:`features.background.BackgroundWriter` while the next batch runs. With
    ``fixed_shape`` (default: :func:`extract.devices.fixed_shape_helps`) the last, smaller
    batch runs padded to ``batch_size``.
    """
    started = time.perf_counter()
    name = dataset or listing.root.name
    flip = augment == "flip"
    pad_to = batch_size if (fixed_shape_helps() if fixed_shape is None else fixed_shape) else None
    todo = np.unique(np.concatenate([plan.todo for _, plan in targets])).astype(np.int64)
    wanted = [set(plan.todo.tolist()) for _, plan in targets]
    skipped: list[list[tuple[str, str]]] = [[] for _ in targets]
    bar = tqdm(
        total=len(listing), initial=len(listing) - len(todo), unit="img", desc="extract",
        file=sys.stderr, disable=not progress, dynamic_ncols=True,
    )
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(writer) for writer in layer_writers(
            listing, loaded, targets, name=name, interpolation=interpolation, dtype=dtype, augment=augment,
            buffer_size=buffer_size)]
        for k, ((_, plan), writer) in enumerate(zip(targets, writers, strict=True)):
            skipped[k].extend(record_layout_entries(writer, plan))
        stack.enter_context(bar)
        # Entered after the writers, so left before them: the calls already given still run
        # (a Ctrl-C loses no computed row), then each writer commits or keeps what it holds.
        background = stack.enter_context(BackgroundWriter())

        def write(batch: DecodedBatch, running: list[Running]) -> None:
            """Hand the rows of a finished batch to the background writer."""
            rows = running[0].rows() if running else []
            mirror_rows = running[1].rows() if flip and running else None
            for k, ((_, plan), writer) in enumerate(zip(targets, writers, strict=True)):
                for i, reason in batch.failed:
                    if i in wanted[k]:
                        background.call(writer.skip, listing.paths[i], reason)
                        skipped[k].append((listing.paths[i], reason))
                mine = [j for j, i in enumerate(batch.decoded) if i in wanted[k]]
                if mine:
                    ids = [batch.decoded[j] for j in mine]
                    splits = None if listing.splits is None else [listing.splits[i] for i in ids]
                    background.call(writer.add, rows[k][mine], plan.labels[ids],
                                    [listing.paths[i] for i in ids],
                                    mirror=mirror_rows[k][mine] if flip else None, splits=splits)
            bar.update(len(batch.indices))
            if any(skipped):
                bar.set_postfix(skipped=max(map(len, skipped)), refresh=False)

        # One batch runs on the device while the one before it is copied back and written:
        # start() only queues work where the backend runs asynchronously (JAX, a GPU), so the
        # device has the next batch before it finishes the current one. The decoders keep a
        # slot for the batch on the device (decoding.IN_FLIGHT_BATCHES).
        previous: tuple[DecodedBatch, list[Running]] | None = None
        try:
            for batch in decoded_batches(listing, todo, batch_size, loaded.image_size,
                                         interpolation, max_pixels=max_pixels, decoder=decoder,
                                         workers=decode_workers,
                                         preprocess=loaded.backbone.preprocess_input):
                # Preprocessed by the decoders; the mirror of a preprocessed image is the
                # preprocessed mirror (preprocessing works pixel by pixel).
                x = batch.images
                running = ([loaded.start(x, pad_to, preprocessed=True)]
                           + ([loaded.start(mirrored(x), pad_to, preprocessed=True)] if flip else [])
                           if batch.decoded else [])
                done, previous = previous, None
                if done is not None:
                    write(*done)
                previous = (batch, running)
        except BaseException:
            # Stopped (Ctrl-C, a decoder's failure): the batch started last still reaches the
            # writer, so no computed row is lost; never hide the error itself.
            if previous is not None:
                with contextlib.suppress(Exception):
                    write(*previous)
            raise
        if previous is not None:
            write(*previous)
        background.close()
        pruned = [writer.finish(drop=plan.gone if prune else ())
                  for (_, plan), writer in zip(targets, writers, strict=True)]
    return [ExtractSummary.of(writer, listing, skipped[k], started, pruned[k])
            for k, writer in enumerate(writers)]


def layer_writers(listing: ImageListing, loaded: LoadedBackbone, targets: Sequence[tuple[Path, Plan]], *,
                  name: str, interpolation: str, dtype: str, augment: str, buffer_size: int
                  ) -> Iterator[FeatureWriter]:
    """One writer per layer of ``loaded``, for the output and plan ``targets[k]``, with the
    run's provenance; each commits rows in buffers that fit :data:`BUFFER_BYTES` together.
    Made one at a time, so that a caller entering each as it comes closes those made before
    one that fails."""
    flip = augment == "flip"
    for k, (output, plan) in enumerate(targets):
        yield FeatureWriter(
            output, dim=loaded.dims[k], label_names=plan.label_names, dtype=dtype,
            attrs=run_attrs(provenance(backbone_facts(loaded, k), listing, name, interpolation, dtype,
                                       augment), plan),
            buffer_size=buffer_rows(buffer_size, loaded.dims * (2 if flip else 1), dtype),
            resume=plan.resume, mirrors=flip, splits=listing.splits is not None,
        )


def record_layout_entries(writer: FeatureWriter, plan: Plan) -> list[tuple[str, str]]:
    """Record in ``writer``'s file the entries the layout rejected that it lacks, and forget
    those it held that the dataset now lists as fine; returns the entries recorded."""
    writer.forget_skipped(plan.unrejected)
    for path, reason in plan.rejected:
        writer.skip(path, reason)
    return list(plan.rejected)


def mirrored(images: np.ndarray) -> np.ndarray:
    """A batch of images ``(n, height, width, 3)`` mirrored left to right (the horizontal flip
    of Keras' ``RandomFlip("horizontal")``), as a contiguous array.

    Examples
    --------
    >>> mirrored(np.arange(6).reshape(1, 1, 2, 3))[0, 0].tolist()
    [[3, 4, 5], [0, 1, 2]]
    """
    return np.ascontiguousarray(images[:, :, ::-1])


#: Features a run holds in memory between commits, at most, over all its layers: wide layers
#: (VGG16's block4_pool flattened is 100,352 values, 392 KiB a row) commit after fewer rows.
BUFFER_BYTES = 256 << 20


def buffer_rows(buffer_size: int, dims: Sequence[int], dtype: str) -> int:
    """Rows per commit: ``buffer_size``, or fewer so that one buffer of every layer together
    stays within :data:`BUFFER_BYTES`."""
    row_bytes = sum(dims) * max(4, np.dtype(dtype).itemsize)  # rows are float32 until written
    return max(1, min(buffer_size, BUFFER_BYTES // row_bytes))


def finish_existing(
    output: str | os.PathLike, plan: Plan, prune: bool = False, merge: bool = True
) -> ExtractSummary:
    """Bring ``output`` up to date when no image needs the backbone: write the finished file
    of a run killed after its last row, and with ``prune`` drop the images that are gone.
    Without ``merge`` the finished file stays an index over its parts (the Ray engine's)."""
    output = Path(output)
    started = time.perf_counter()
    attrs = {k: v for k, v in plan.attrs.items() if k not in (schema.SEGMENTS,)}
    with h5py.File(output, "r") as f:
        dim, dtype = int(f[schema.FEATURES].shape[1]), str(f[schema.FEATURES].dtype)
        mirrors, splits = schema.MIRROR_FEATURES in f, schema.SPLITS in f
    with FeatureWriter(
        output, dim=dim, label_names=plan.label_names, attrs=attrs, dtype=dtype, resume=True,
        mirrors=mirrors, splits=splits,
    ) as writer:
        record_layout_entries(writer, plan)
        pruned = writer.finish(drop=plan.gone if prune else (), merge=merge)
    return ExtractSummary(
        output=output,
        written=0,
        skipped=list(plan.rejected),
        ignored=0,
        seconds=time.perf_counter() - started,
        rows=writer.rows_written,
        pruned=pruned,
    )


def format_skipped(skipped: Sequence[tuple[str, str]], limit: int = 10) -> list[str]:
    """Lines naming skipped images and why, at most ``limit`` of them."""
    lines = [f"  skipped {path}: {reason}" for path, reason in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (all are listed in the file's 'skipped')")
    return lines
