"""Writing in a thread of its own, so that the backbone never waits on the disk.

A commit copies rows into a part file, fsyncs it and rewrites the index: on a GPU that is
time the card would otherwise sit idle. :class:`BackgroundWriter` runs the calls it is given
(``writer.add``, ``writer.skip``) in one thread, in the order given, while the caller goes on.
What a kill loses is unchanged: rows still queued or buffered are not committed, and the next
run recomputes them; rows are committed in the same order, at the same positions.

A plain ``ThreadPoolExecutor(max_workers=1)`` would run the calls in order too, but its queue
has no bound (a fast backbone would pile up every feature of the run in memory) and it hides
a failed call until someone asks for its future.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

#: Calls waiting at most: a few batches' features; the caller blocks beyond that.
MAX_PENDING = 4


class BackgroundWriter:
    """Run calls one after another in a background thread; raise its first error here.

    Use it as a context manager around the writers' work; leaving it waits for every call
    given so far, also when leaving on an exception (Ctrl-C then loses no computed row, as
    without it). After a call has failed, later calls are dropped and the failure is raised
    by the next :meth:`call` or by :meth:`wait`.

    Examples
    --------
    >>> done = []
    >>> with BackgroundWriter() as background:
    ...     background.call(done.append, 1)
    ...     background.call(done.append, 2)
    >>> done
    [1, 2]
    """

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="featurebank-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    fn, args, kwargs = item
                    fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller's thread, raised there
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        # The error stays: the thread keeps dropping calls after it.
        if self._error is not None:
            raise self._error

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; blocks while :data:`MAX_PENDING` calls wait."""
        self._raise()
        self._queue.put((fn, args, kwargs))

    def wait(self) -> None:
        """Return once every call given so far has run; raise the first failure."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Wait for every call, stop the thread, raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the calls given before the error still run; never hide the error itself
            self.close()
        except Exception:
            pass
