"""Threads for work done in C with the GIL released (rendering CSV, parsing, encoding).

`usable_cores()` is the number of cores this process may run on (its CPU affinity, which
container limits and `taskset` set), not the machine's. `ordered_map` runs a function over a
stream of items in a few threads and yields the results in input order, with a bounded number
of items in flight, so memory stays bounded whatever the length of the stream.
"""

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def usable_cores() -> int:
    """The cores this process may run on (at least 1)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no affinity on this platform
        return max(os.cpu_count() or 1, 1)


def ordered_map(
    function: Callable[[_In], _Out], items: Iterable[_In], threads: int | None = None
) -> Iterator[_Out]:
    """Yield `function(item)` for each item, in order, computed by `threads` threads (default:
    the usable cores) with at most twice as many items in flight. One thread: no pool."""
    threads = usable_cores() if threads is None else threads
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
