"""One writer per feature file: an advisory lock held beside the output while it is written."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_SUFFIX = ".lock"

# The descriptors of the locks this process holds, so that a forked child (a decoding
# process) can close its copies: a flock lasts while any copy of its descriptor is open.
_HELD: set[int] = set()


def held_descriptors() -> list[int]:
    """The file descriptors of the output locks this process holds."""
    return sorted(_HELD)


class OutputLockedError(Exception):
    """Another process is writing the same output; the message is one line for the user."""


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``<output>.lock`` beside it."""
    output = Path(output)
    return output.with_name(output.name + LOCK_SUFFIX)


class OutputLock:
    """Exclusive, non-blocking ``flock`` on ``<output>.lock``.

    The kernel drops the lock when its holder dies, SIGKILL included, so a killed run never
    leaves a stale lock behind. The lock file is removed on release.

    Examples
    --------
    >>> with OutputLock("animals.hdf5"):
    ...     pass  # write animals.hdf5
    """

    def __init__(self, output: str | os.PathLike) -> None:
        self.output = Path(output)
        self.path = lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(
                    f"{self.output}: another extract (pid {holder}) is writing it; wait for it "
                    "to finish or stop it, then run again"
                ) from None
            # A holder that released meanwhile has unlinked the file we opened: lock the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        _HELD.discard(self._fd)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
