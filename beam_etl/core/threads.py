"""Threads for work done in C with the GIL released (rendering CSV, parsing, encoding).

`ordered_map` runs a function over a stream of items in a few threads (by default one for each
core the process may use, `core.resources.usable_cores`, at most `MAX_THREADS`) and yields the
results in input order, with a bounded number of items in flight, so memory stays bounded
whatever the length of the stream.
"""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final, TypeVar

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
