"""The Ray engine: the same extraction, spread over a Ray cluster.

What runs where:

* the **driver** (the ``python -m extract`` process) lists the dataset, plans the work exactly as
  the local engine does, and cuts the images still to do into *shards*: runs of at most
  ``shard_size`` consecutive images of the listing. It sends Ray Data one small row per shard
  (the shard's image paths and labels), and commits each finished shard into the output's
  index (:meth:`features.FeatureWriter.add_part`), in listing order whatever order they finish in.
* **decode tasks** (Ray Data tasks, any node) read and decode one shard's images with the local
  engine's decoder and pass them on, as uint8 arrays, through Ray's object store.
* **backbone actors** (a Ray Data actor pool: one per GPU when the cluster has GPUs, else
  ``workers`` CPU actors) each load the model once, embed the shards they are given in batches
  cut where the local engine cuts them, and write each shard as a part file in
  ``<output>.parts/`` themselves (temporary name, fsync, rename). Only file names and counts go
  back to the driver, never features.

So every node must see the dataset and the output folder under the same paths (shared
storage), and a killed run loses at most the shards being embedded: finished shards are whole
files that the next run finds, commits if its driver had not yet, and does not recompute.

Ray is imported only here, and only when ``--engine ray`` is asked for.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from features import FeatureFile, FeatureWriter, schema
from features.reader import decode_strings, plain_attr
from features.writer import parts_dir, unpublished_shards

from .errors import ExtractError
from .images import decode_or_reason
from .pipeline import ExtractSummary, backbone_facts, provenance, record_layout_entries, run_attrs
from .plan import Plan
from .sources import ImageListing

#: Images per shard by default: a shard is the unit of work of one actor, of loss when a run is
#: killed, and one part file (VGG16 flatten: 25 MB of features; 37 MB of decoded images in flight).
DEFAULT_SHARD_SIZE = 256

#: Seconds the actors have to start (be scheduled and load the model) before the run fails.
ACTOR_START_TIMEOUT_S = 600

# Environment of every Ray worker of a run: the Keras backend the driver uses, and quiet TF.
_WORKER_ENV = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")


class RayEngineError(ExtractError):
    """A Ray setup problem; the message is one line for the user."""


@dataclass(frozen=True)
class RayOptions:
    """How a run uses the cluster.

    Parameters
    ----------
    address : str or None
        Cluster to join (``ray://`` or ``host:port``); None: ``RAY_ADDRESS`` if set, else a
        local Ray instance is started for the run and stopped after it.
    workers : int or None
        Backbone actors. None: one per GPU when the cluster has GPUs, else 1. With GPUs it
        caps the one-per-GPU count.
    cpus_per_worker : float
        CPUs each CPU actor reserves, and the threads its backbone uses (rounded up).
    shard_size : int
        Images per shard; rounded up to a multiple of the batch size so that shards are cut
        into the local engine's batches.
    merge : bool
        Publish one self-contained file (the shards copied into it) instead of an index of
        virtual datasets over the shards.
    local_cpus : int or None
        CPUs of the local instance started when there is no address (default: all).
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    shard_size: int = DEFAULT_SHARD_SIZE
    merge: bool = False
    local_cpus: int | None = None


def cut_shards(todo: np.ndarray, shard_size: int) -> list[np.ndarray]:
    """Cut ``todo`` (sorted listing positions) into shards: each is a run of consecutive
    positions, at most ``shard_size`` long.

    After a killed run the images still to do are whole shards of the first run, so the same
    shards come out again; and no shard spans images done earlier, so ordering the shards by
    their first image puts every row in listing order.
    """
    todo = np.asarray(todo, dtype=np.int64)
    if not len(todo):
        return []
    breaks = np.flatnonzero(np.diff(todo) != 1) + 1
    return [
        run[start : start + shard_size]
        for run in np.split(todo, breaks)
        for start in range(0, len(run), shard_size)
    ]


# -- cluster -------------------------------------------------------------------------------


def connect(options: RayOptions) -> bool:
    """Join the cluster, or start a local instance; True when this call started Ray (and the
    caller should stop it)."""
    import ray

    # Ray's own start-up and per-dataset INFO lines are not for users of this tool.
    # Ray's C++ core prints a line per actor otherwise; setting it prints one line itself.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray").setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address and (why := _unreachable(address)):
        # ray.init would retry an unreachable address for minutes before giving up.
        raise RayEngineError(
            f"cannot reach the Ray cluster at {address} ({why}); is `ray start --head` running "
            "there, and is the address its HOST:PORT?"
        )
    env = {key: os.environ[key] for key in _WORKER_ENV if key in os.environ}
    kwargs: dict[str, Any] = dict(
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": env},
    )
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": an instance of this run's own, as documented. Without it ray.init joins the
            # latest cluster `ray start` (or another process' Cluster) started on this machine.
            ray.init(address="local", num_cpus=options.local_cpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayEngineError(f"cannot start or join {where}: {str(exc).splitlines()[0]}") from None
    return True


def worker_error(exc: BaseException) -> str:
    """``Type: message`` of the error a worker raised, from a Ray error that wraps it. Ray Data
    keeps the original only as traceback text, innermost error first, so that text is read."""
    for line in str(exc).splitlines():
        found = _ERROR_LINE.match(line.strip())
        if found and not found.group(1).startswith("ray."):
            return f"{found.group(1).rsplit('.', 1)[-1]}: {found.group(2)[:300]}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def _unreachable(address: str) -> str | None:
    """Why no TCP connection opens to a cluster address (``HOST:PORT`` or ``ray://HOST:PORT``),
    or None when one does (or the address is Ray's ``auto`` / ``local``)."""
    if address in ("auto", "local"):
        return None
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        return "not HOST:PORT"
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def _quiet_data_context() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one bar, in images
    ctx.print_on_execution_start = False
    # Hand out shards only once every actor has loaded its model, so the first ones do not all
    # go to whichever actor was ready first; a pool the cluster cannot hold fails after this
    # wait instead of waiting forever.
    ctx.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    # Its "exception raised from a task" line would only repeat the one line the CLI prints.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def describe_backbone(spec: dict) -> dict:
    """Load the backbone on a Ray worker and return :func:`extract.pipeline.backbone_facts`, or
    ``{"error": message}``: the weights are checked where they are used, before any shard."""
    import ray

    from .backbones import WeightsError, load_backbone

    @ray.remote(num_cpus=0)
    def describe(spec: dict) -> dict:
        try:
            return backbone_facts(load_backbone(**spec))
        except (WeightsError, ValueError) as exc:
            return {"error": str(exc)}

    return ray.get(describe.remote(spec))


# -- the two stages that run on the cluster ------------------------------------------------


def decode_shard(
    batch: dict[str, np.ndarray], root: str, size: int, interpolation: str, max_pixels: int | None
) -> dict[str, np.ndarray]:
    """Ray Data task: decode the images of each shard row of ``batch``.

    Images travel as raw bytes of a ``(n, size, size, 3)`` uint8 array; ``slots`` are their
    positions in the shard (to cut the local engine's batches), ``skipped`` the JSON list of
    ``[path, reason]`` of images that could not be decoded.
    """
    root_path = Path(root)
    out: dict[str, list] = {"meta": [], "images": [], "slots": [], "skipped": []}
    for meta in batch["meta"]:
        paths = json.loads(meta)["paths"]
        images, slots, skipped = [], [], []
        for slot, rel in enumerate(paths):
            result = decode_or_reason(root_path, rel, size, interpolation, max_pixels)
            if isinstance(result, str):
                skipped.append([rel, result])
            else:
                images.append(result)
                slots.append(slot)
        array = np.stack(images) if images else np.empty((0, size, size, 3), np.uint8)
        out["meta"].append(meta)
        out["images"].append(array.tobytes())
        out["slots"].append(json.dumps(slots))
        out["skipped"].append(json.dumps(skipped))
    return {key: np.array(values, dtype=object) for key, values in out.items()}


class ShardEmbedder:
    """Ray Data actor: the backbone, loaded once, and the writer of the shards it embeds."""

    def __init__(
        self,
        spec: dict,
        parts: str,
        attrs: dict,
        dtype: str,
        batch_size: int,
        threads: int | None,
        augment: str = "none",
    ) -> None:
        import ray

        if threads and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            import tensorflow as tf

            # As many threads as CPUs reserved: actors sharing a node do not oversubscribe it.
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        from .backbones import load_backbone

        self.loaded = load_backbone(**spec)
        self.parts = Path(parts)
        self.attrs = attrs
        self.dtype = dtype
        self.batch_size = batch_size
        self.flip = augment == "flip"
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from features.writer import write_part_file

        from .pipeline import mirrored

        size = self.loaded.image_size
        out: dict[str, list] = {"file": [], "rows": [], "first": [], "images": [], "skipped": [],
                                "node": []}
        for meta, raw, slots_json, skipped_json in zip(
            batch["meta"], batch["images"], batch["slots"], batch["skipped"], strict=True
        ):
            info = json.loads(meta)
            slots = np.array(json.loads(slots_json), dtype=np.int64)
            images = np.frombuffer(raw, dtype=np.uint8).reshape(len(slots), size, size, 3)
            blocks, mirror_blocks = [], []
            # Batches cut at the local engine's places: every batch_size images of the listing.
            for start in range(0, len(info["paths"]), self.batch_size):
                take = (slots >= start) & (slots < start + self.batch_size)
                if take.any():
                    blocks.append(self.loaded.embed(images[take]))
                    if self.flip:
                        mirror_blocks.append(self.loaded.embed(mirrored(images[take])))
            name = f"shard-{info['first_index']:09d}-{info['token']}.h5"
            skipped = [tuple(entry) for entry in json.loads(skipped_json)]
            write_part_file(
                self.parts / name,
                blocks,
                np.array(info["labels"], dtype=np.int32)[slots],
                [info["paths"][i] for i in slots],
                dim=self.loaded.dim,
                dtype=self.dtype,
                skipped=skipped,
                attrs={**self.attrs, "first": info["paths"][0], "node_id": self.node},
                mirror=mirror_blocks if self.flip else None,
                splits=None if info["splits"] is None else [info["splits"][i] for i in slots],
            )
            out["file"].append(f"{self.parts.name}/{name}")
            out["rows"].append(len(slots))
            out["first"].append(info["paths"][0])
            out["images"].append(len(info["paths"]))
            out["skipped"].append(skipped_json)
            out["node"].append(self.node)
        return {key: np.array(values, dtype=object) for key, values in out.items()}


# -- the driver ----------------------------------------------------------------------------


def _pool(options: RayOptions) -> tuple[int, dict[str, float], int | None]:
    """Actors, the resources of each, and the backbone threads of each."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        size = min(gpus, options.workers or gpus)
        return size, {"num_gpus": 1, "num_cpus": 1}, None
    # An actor lives on one node: one that asks for more CPUs than any node has never starts.
    largest = max(
        (float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0
    )
    need = options.cpus_per_worker
    if need > largest:
        raise RayEngineError(
            f"--cpus-per-worker {need:g} is more than any node of the cluster has ({largest:g} CPUs)"
        )
    size = options.workers or 1
    return size, {"num_cpus": need}, max(1, math.ceil(need))


def listing_order(listing: ImageListing) -> Callable[[str], int]:
    """Position of a path in ``listing`` (-1 for one no longer listed): the order of shards."""
    position = {path: i for i, path in enumerate(listing.paths)}
    return lambda path: position.get(path, -1)


def shard_rows(listing: ImageListing, plan: Plan, shard_size: int, token: str) -> list[dict]:
    """One Ray Data row per shard: its paths and labels, as JSON."""
    rows = []
    for shard in cut_shards(plan.todo, shard_size):
        rows.append({"meta": json.dumps({
            "first_index": int(shard[0]),
            "token": token,
            "paths": [listing.paths[i] for i in shard],
            "labels": plan.labels[shard].tolist(),
            "splits": None if listing.splits is None else [listing.splits[i] for i in shard],
        })})
    return rows


def ray_extract(
    listing: ImageListing,
    spec: dict,
    output: str | os.PathLike,
    *,
    plan: Plan,
    options: RayOptions,
    prune: bool = False,
    dataset: str = "",
    batch_size: int = 32,
    dtype: str = "float32",
    interpolation: str = "nearest",
    max_pixels: int | None = None,
    progress: bool = True,
    augment: str = "none",
    on_facts: Callable[[dict], str | None] | None = None,
) -> ExtractSummary:
    """Extract the images ``plan`` says are to do on the Ray cluster into ``output``.

    ``spec`` holds the arguments of :func:`extract.backbones.load_backbone`. ``on_facts`` is
    called with the loaded backbone's facts before any shard is sent; a string it returns
    stops the run with that message (the CLI's check that a file being extended was made with
    the same weights). Raises :class:`RayEngineError` with one line for Ray or weights problems.
    """
    import ray
    import ray.data

    output = Path(output)
    started = time.perf_counter()
    size, resources, threads = _pool(options)
    facts = describe_backbone(spec)
    if "error" in facts:
        raise RayEngineError(facts["error"])
    if on_facts is not None and (message := on_facts(facts)):
        raise RayEngineError(message)
    attrs = run_attrs(
        provenance(facts, listing, dataset or listing.root.name, interpolation, dtype, augment), plan
    )
    shard_size = -(-options.shard_size // batch_size) * batch_size
    position = listing_order(listing)
    writer = FeatureWriter(
        output, dim=facts["dim"], label_names=plan.label_names, attrs=attrs, dtype=dtype,
        resume=plan.resume, mirrors=augment == "flip", splits=listing.splits is not None,
    )
    if not plan.resume:  # a new file, or --overwrite: no earlier shard may be adopted later
        shutil.rmtree(parts_dir(output), ignore_errors=True)
    writer.order_parts(position)
    parts_dir(output).mkdir(exist_ok=True)
    rows = shard_rows(listing, plan, shard_size, secrets.token_hex(4))
    skipped: list[tuple[str, str]] = record_layout_entries(writer, plan)
    nodes: set[str] = set()
    bar = tqdm(total=len(listing), initial=plan.done, unit="img", desc="extract (ray)",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    with writer, bar:
        if rows:
            _quiet_data_context()
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map_batches(
                decode_shard,
                batch_size=1,
                fn_kwargs=dict(root=str(listing.root.resolve()), size=facts["image_size"],
                               interpolation=interpolation, max_pixels=max_pixels),
                # Decoding is light next to the backbone; it takes no CPU reservation, so it
                # still runs when the actors reserve every CPU, at most one task per CPU.
                num_cpus=0,
                compute=ray.data.TaskPoolStrategy(size=max(1, int(ray.cluster_resources().get("CPU", 1)))),
            )
            ds = ds.map_batches(
                ShardEmbedder,
                batch_size=1,
                fn_constructor_kwargs=dict(spec=spec, parts=str(parts_dir(output).resolve()), attrs=attrs,
                                           dtype=dtype, batch_size=batch_size, threads=threads,
                                           augment=augment),
                compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
                **resources,
            )
            try:
                for row in ds.iter_rows():
                    entries = [tuple(e) for e in json.loads(row["skipped"])]
                    writer.add_part(row["file"], int(row["rows"]), row["first"], entries)
                    skipped.extend(entries)
                    nodes.add(row["node"])
                    bar.update(int(row["images"]))
                    if skipped:
                        bar.set_postfix(skipped=len(skipped), refresh=False)
            except ray.exceptions.GetTimeoutError:
                raise RayEngineError(
                    f"the {size} backbone actors did not start within {ACTOR_START_TIMEOUT_S} s: "
                    f"the cluster lacks the resources ({resources} each), or the model takes "
                    "that long to load"
                ) from None
            except ray.exceptions.RayError as exc:
                # A worker's exception (a full disk on the shared storage, say), as it was raised.
                raise RayEngineError(
                    f"a Ray worker failed ({worker_error(exc)}); finished shards are kept, run the "
                    "same command again to continue"
                ) from None
        pruned = writer.finish(drop=plan.gone if prune else (), merge=options.merge)
    skipped.sort(key=lambda entry: position(entry[0]))
    return ExtractSummary.of(writer, listing, skipped, started, pruned, nodes=len(nodes))


def adopt_unpublished(output: str | os.PathLike, listing: ImageListing) -> int:
    """Commit the shards a killed run's actors finished but its driver did not commit.

    A shard is adopted when the output (an index, finished or not) has the same
    feature-deciding settings, its labels fit the output's classes and none of its images is
    in the output yet; any other unlisted shard is deleted. Returns the shards adopted.
    """
    output = Path(output)
    shards = unpublished_shards(output)
    if not shards:
        return 0
    try:
        existing = FeatureFile(output, allow_partial=True)
    except Exception:  # noqa: BLE001 - damaged or unreadable: the repair (or --overwrite) decides
        return 0  # the shards stay: once the index is repaired, the next call adopts them
    existing.close()
    done = set(existing.paths or []) | {p for p, _ in existing.skipped}
    attrs = {k: v for k, v in existing.attrs.items() if k != schema.SEGMENTS}
    adopt = []
    for shard in shards:
        info = _shard_info(shard, existing, done)
        if info is None:
            shard.unlink(missing_ok=True)
        else:
            adopt.append(info)
            done.update(info["paths"])
    if not adopt:
        return 0
    writer = FeatureWriter(output, dim=existing.dim, label_names=existing.label_names, attrs=attrs,
                           dtype=existing.dtype, resume=True, mirrors=existing.has_mirrors,
                           splits=existing.splits is not None)
    writer.order_parts(listing_order(listing))
    for info in adopt:
        writer.add_part(info["file"], info["rows"], info["first"], info["skipped"])
    writer.close(complete=False)
    return len(adopt)


def _shard_info(shard: Path, existing: FeatureFile, done: set[str]) -> dict | None:
    try:
        with h5py.File(shard, "r") as f:
            attrs = {k: plain_attr(v) for k, v in f.attrs.items()}
            paths = decode_strings(f[schema.PATHS][()])
            labels = f[schema.LABELS][()]
            skipped = [tuple(decode_strings(r)) for r in f[schema.SKIPPED][()]]
            dim = f[schema.FEATURES].shape[1]
            mirrors, splits = schema.MIRROR_FEATURES in f, schema.SPLITS in f
    except (OSError, KeyError, ValueError):
        return None
    same = mirrors == existing.has_mirrors and splits == (existing.splits is not None) and all(
        str(attrs.get(key, schema.ATTR_DEFAULTS.get(key)))
        == str(existing.attrs.get(key, schema.ATTR_DEFAULTS.get(key)))
        for key in schema.FEATURE_DEFINING_ATTRS
    )
    fits = dim == existing.dim and (not len(labels) or labels.max() < len(existing.label_names))
    fresh = not done.intersection(paths) and not done.intersection(p for p, _ in skipped)
    if not (same and fits and fresh and "first" in attrs):
        return None
    return {
        "file": f"{shard.parent.name}/{shard.name}",
        "rows": len(paths),
        "first": attrs["first"],
        "skipped": skipped,
        "paths": [*paths, *(p for p, _ in skipped)],
    }


def shard_nodes(output: str | os.PathLike) -> dict[str, str]:
    """The Ray node that wrote each shard an index refers to (file name -> node id)."""
    from features.writer import segments_of

    output = Path(output)
    with h5py.File(output, "r") as f:
        segments = segments_of(f) or []
    nodes = {}
    for s in segments:
        with h5py.File(output.parent / s["file"], "r") as part:
            node = part.attrs.get("node_id")
        if node is not None:
            nodes[Path(s["file"]).name] = str(plain_attr(node))
    return nodes


def ray_available() -> bool:
    """True when Ray Data can be imported (the ``[ray]`` extra is installed)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None

