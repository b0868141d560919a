"""Threads for work done in C with the GIL released (rendering CSV, parsing, encoding).

`ordered_map` runs a function over a stream of items in a few threads (by default one for each
core the process may use, `core.resources.usable_cores`, at most `MAX_THREADS`) and yields the
results in input order, with a bounded number of items in flight, so memory stays bounded
whatever the length of the stream. `prefetched` runs an iterator ahead in a thread of its own.
`put_while` hands an item to a consuming thread through a bounded queue without waiting
forever on one that has stopped.
"""

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, TypeVar

from beam_etl.core.resources import usable_cores

_In = TypeVar("_In")
_Out = TypeVar("_Out")
#: At most this many threads by default (each holds an item and its result in memory).
MAX_THREADS: Final = 8


def ordered_map(
    function: Callable[[_In], _Out], items: Iterable[_In], threads: int | None = None
) -> Iterator[_Out]:
    """Yield `function(item)` for each item, in order, computed by `threads` threads (default:
    the usable cores, at most `MAX_THREADS`) with at most twice as many items in flight. One
    thread: no pool."""
    threads = min(usable_cores(), MAX_THREADS) if threads is None else threads
    if threads <= 1:
        yield from map(function, items)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="beam_etl-work") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # a failure or an abandoned generator: drop the rest
                future.cancel()


class _Done:
    """The end of a prefetched iterator: `failure`, the exception it raised, if any."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure


def prefetched(items: Iterator[_In], depth: int = 2) -> Iterator[_In]:
    """Yield what `items` yields, computed ahead in a thread of its own (at most `depth` items
    waiting): for work that releases the GIL, such as decompressing, beside the caller's.

    An exception of `items` is raised here, as it was raised; when the caller stops early,
    the thread stops at its next item and `items` is closed.
    """
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_Done())
        except BaseException as exc:  # handed to the caller
            put(_Done(exc))

    thread = threading.Thread(target=run, daemon=True, name="beam_etl-prefetch")
    thread.start()
    try:
        while True:
            item = waiting.get()
            if isinstance(item, _Done):
                if item.failure is not None:
                    raise item.failure
                return
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()


def put_while(box: queue.Queue, item: Any, going: Callable[[], bool], poll: float = 0.1) -> bool:
    """Put `item` into the bounded queue `box`, waiting for room only while `going()` holds
    (its consuming thread is alive and has not failed); False if it stopped first."""
    while going():
        try:
            box.put(item, timeout=poll)
            return True
        except queue.Full:
            continue
    return False
