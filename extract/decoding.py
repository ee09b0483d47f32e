"""Decoding the images of a run, a few batches ahead of the backbone.

Two decoders give the same pixels (both call :func:`extract.images.load_image`):

- ``"processes"`` (the default where processes can be forked, i.e. Linux): a pool of worker
  processes, each decoding its share of a batch straight into a slot of an anonymous shared
  memory block mapped before the pool forked, so a decoded batch reaches the backbone without
  being pickled or copied. JPEG decoding holds Python's interpreter lock for part of its work,
  so threads do not scale with cores: 16 processes decoded 4,900 images/s on a GPU machine
  where threads peaked at 1,300-1,600.
- ``"threads"``: a thread pool in this process (any platform; what featurebank did before).

Why our own pool and not ``torch.utils.data`` or ``tf.data``: either would tie stage 1 to one
framework's input pipeline (the backbone may run on TensorFlow, JAX or PyTorch), and neither
keeps our decoder's skip-with-a-reason contract per image. The pool is the standard library's
``ProcessPoolExecutor``; only the hand-over through shared memory is ours.
"""

from __future__ import annotations

import itertools
import mmap
import multiprocessing
import os
import secrets
import signal
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.lock import held_descriptors

from .errors import ExtractError
from .images import decode_or_reason
from .sources import ImageListing

#: Batches decoded ahead of the one the backbone is working on.
PREFETCH_BATCHES = 2

#: Batches a consumer may still be reading after it asked for the next one: the extractor
#: starts batch ``i + 1`` on the device before it waits for batch ``i``'s rows, and the
#: device may read batch ``i``'s images in place (JAX on a CPU does not copy them).
IN_FLIGHT_BATCHES = 1

#: The decoders :func:`decoded_batches` offers.
DECODERS = ("processes", "threads")


def default_decoder() -> str:
    """``"processes"`` where this platform forks (Linux), else ``"threads"``: the shared
    memory is mapped before the pool forks, which spawned processes would not inherit."""
    return "processes" if "fork" in multiprocessing.get_all_start_methods() else "threads"


def default_workers() -> int:
    """One decoder per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class DecodedBatch:
    """One batch of the listing, decoded.

    ``indices`` are the listing positions of the batch, in order; ``images`` the arrays
    ``(n, size, size, 3)`` of those that decoded, in order (uint8 RGB, or float32 model inputs
    when the decoders preprocess), and ``decoded`` their positions; ``failed`` the
    ``(position, reason)`` of the others. With the process decoder ``images`` may be a view
    into shared memory: it is valid until the batch :data:`IN_FLIGHT_BATCHES` + 1 after it is
    asked for.
    """

    indices: list[int]
    images: np.ndarray
    decoded: list[int]
    failed: list[tuple[int, str]]


# Shared slots of the runs of this process and their preprocessing, by token: set before the
# pool forks, so every worker inherits the mapping (an anonymous MAP_SHARED mmap) and the
# function, and looked up by the token a task carries.
_SLOTS: dict[str, tuple[np.ndarray, Preprocess | None]] = {}

#: A backbone's ``preprocess_input``: float32 RGB images in [0, 255] to the model's input.
Preprocess = Callable[[np.ndarray], np.ndarray]


def _prepared(image: np.ndarray, preprocess: Preprocess | None) -> np.ndarray:
    """One decoded image as the backbone takes it. Every ``preprocess_input`` of
    keras.applications works pixel by pixel, so preprocessing images one at a time (here, in
    the decoders) gives the very values preprocessing the batch would."""
    if preprocess is None:
        return image
    return preprocess(image[None].astype(np.float32))[0]


def _start_worker(parent: int) -> None:
    """Set up a forked decoding process."""
    # Ctrl-C reaches the whole process group; the run stops through the parent, which shuts
    # the pool down, instead of every worker printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A fork inherits the parent's open files, the output's lock among them (flock): a worker
    # outliving a killed run would keep the next run out. It lets go of the lock at once and
    # dies with the parent (Linux's PR_SET_PDEATHSIG), however the parent dies.
    for fd in held_descriptors():
        os.close(fd)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers still end when their pipe closes
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _decode_into(
    token: str, slot: int, start: int, root: str, rels: Sequence[str], size: int,
    interpolation: str, max_pixels: int | None,
) -> list[str | None]:
    """Worker task: decode ``rels`` into positions ``start...`` of shared slot ``slot``; the
    reason for each image that could not be decoded, None for each that was."""
    slots, preprocess = _SLOTS[token]
    target = slots[slot]
    reasons: list[str | None] = []
    for k, rel in enumerate(rels):
        result = decode_or_reason(Path(root), rel, size, interpolation, max_pixels)
        if isinstance(result, str):
            reasons.append(result)
        else:
            target[start + k] = _prepared(result, preprocess)
            reasons.append(None)
    return reasons


def _decode_one(
    root: str, rel: str, size: int, interpolation: str, max_pixels: int | None,
    preprocess: Preprocess | None,
) -> np.ndarray | str:
    """Thread task: one image as the backbone takes it, or the reason it could not be decoded."""
    result = decode_or_reason(Path(root), rel, size, interpolation, max_pixels)
    return result if isinstance(result, str) else _prepared(result, preprocess)


def decoded_batches(
    listing: ImageListing,
    indices: Sequence[int],
    batch_size: int,
    size: int,
    interpolation: str = "nearest",
    workers: int | None = None,
    max_pixels: int | None = None,
    decoder: str | None = None,
    preprocess: Preprocess | None = None,
) -> Iterator[DecodedBatch]:
    """Yield the images at ``indices`` of ``listing`` decoded, ``batch_size`` at a time, in
    order, while the next :data:`PREFETCH_BATCHES` batches are being decoded.

    ``decoder`` is ``"processes"`` or ``"threads"`` (default: :func:`default_decoder`), with
    ``workers`` of them (default: one per core). Both give the same pixels. With
    ``preprocess`` (a backbone's ``preprocess_input``) the decoders also preprocess, and
    ``images`` are float32 model inputs instead of uint8 pixels.

    Examples
    --------
    >>> from extract.sources import list_images
    >>> listing = list_images("../shared/datasets/flowers17")  # doctest: +SKIP
    >>> batch = next(decoded_batches(listing, range(8), 4, 224))  # doctest: +SKIP
    >>> batch.indices, batch.images.shape  # doctest: +SKIP
    ([0, 1, 2, 3], (4, 224, 224, 3))
    """
    decoder = decoder or default_decoder()
    workers = workers or default_workers()
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "processes" and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError('the "processes" decoder needs a platform that forks (Linux); use "threads"')
    indices = list(indices)
    if not indices:
        return
    if decoder == "threads":
        yield from _thread_batches(listing, indices, batch_size, size, interpolation, workers,
                                   max_pixels, preprocess)
    else:
        yield from _process_batches(listing, indices, batch_size, size, interpolation, workers,
                                    max_pixels, preprocess)


def _batches(indices: list[int], batch_size: int) -> list[list[int]]:
    return [indices[s : s + batch_size] for s in range(0, len(indices), batch_size)]


def _thread_batches(listing, indices, batch_size, size, interpolation, workers, max_pixels,
                    preprocess):
    root = str(listing.root)
    # One image per task: Pillow releases the interpreter lock while it decodes and resizes.
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(batch: list[int]) -> tuple[list[int], list[Future]]:
            return batch, [pool.submit(_decode_one, root, listing.paths[i], size, interpolation,
                                       max_pixels, preprocess) for i in batch]

        for batch, futures in _ahead(_batches(indices, batch_size), submit):
            results = [f.result() for f in futures]
            good = [k for k, r in enumerate(results) if not isinstance(r, str)]
            images = (np.stack([results[k] for k in good]) if good
                      else np.empty((0, size, size, 3), np.float32 if preprocess else np.uint8))
            yield DecodedBatch(batch, images, [batch[k] for k in good],
                               [(batch[k], r) for k, r in enumerate(results) if isinstance(r, str)])


def _ahead(batches: list, submit) -> Iterator:
    """``submit(batch)`` for each batch, :data:`PREFETCH_BATCHES` ahead of the one yielded."""
    it = iter(batches)
    pending = deque(submit(b) for b in itertools.islice(it, PREFETCH_BATCHES + 1))
    while pending:
        current = pending.popleft()
        # The slot of the batch submitted here is not the current one's: there are
        # PREFETCH_BATCHES + IN_FLIGHT_BATCHES + 2 slots (see _process_batches).
        nxt = next(it, None)
        if nxt is not None:
            pending.append(submit(nxt))
        yield current


def _process_batches(listing, indices, batch_size, size, interpolation, workers, max_pixels,
                     preprocess):
    root = str(listing.root)
    batches = _batches(indices, batch_size)
    # The batches still read (IN_FLIGHT_BATCHES), the current one, the next one submitted, and
    # those ahead.
    n_slots = PREFETCH_BATCHES + IN_FLIGHT_BATCHES + 2
    shape = (n_slots, batch_size, size, size, 3)
    dtype = np.dtype(np.float32 if preprocess else np.uint8)
    # Anonymous and shared: inherited by the fork.
    memory = mmap.mmap(-1, int(np.prod(shape)) * dtype.itemsize)
    token = secrets.token_hex(8)
    _SLOTS[token] = (np.frombuffer(memory, dtype=dtype).reshape(shape), preprocess)
    # A share of each batch per worker, so that every worker is busy even with few batches
    # ahead; at least 4 images a task, which keeps the per-task overhead small.
    per_task = max(4, -(-batch_size // workers))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(os.getpid(),))
    counter = itertools.count()
    try:
        # Fork every worker now (a fork pool starts all at its first task). JAX, and Python
        # itself from 3.12, warn that forking a threaded process may deadlock the child: the
        # children here run no JAX, TensorFlow or PyTorch code, only Pillow and numpy on the
        # slots, and leave through os._exit; PyTorch's DataLoader forks its workers the same way.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*fork\(\)", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message=r".*fork\(\)", category=DeprecationWarning)
            pool.submit(int).result()

        def submit(batch: list[int]) -> tuple[list[int], int, list[Future]]:
            slot = next(counter) % n_slots
            return batch, slot, [
                pool.submit(_decode_into, token, slot, s, root,
                            [listing.paths[i] for i in batch[s : s + per_task]], size,
                            interpolation, max_pixels)
                for s in range(0, len(batch), per_task)
            ]

        for batch, slot, futures in _ahead(batches, submit):
            try:
                reasons = [r for f in futures for r in f.result()]
            except BrokenProcessPool:
                raise ExtractError(
                    "a decoding process died (out of memory, or a crash in an image library); "
                    "run the same command again to continue, or pass --decoder threads"
                ) from None
            good = [k for k, r in enumerate(reasons) if r is None]
            images = _SLOTS[token][0][slot]
            # All decoded (the usual case): the slot itself, no copy.
            images = images[: len(batch)] if len(good) == len(batch) else images[good]
            yield DecodedBatch(batch, images, [batch[k] for k in good],
                               [(batch[k], r) for k, r in enumerate(reasons) if r is not None])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # The mapping goes when the last view of it does (a batch's images may outlive this).
        del _SLOTS[token]
