"""core.threads: ordered_map's order, bound and failures."""

import threading
import time

import pytest

from beam_etl.core.threads import ordered_map, prefetched


def test_results_come_in_input_order_whatever_finishes_first():
    def slow_first(n: int) -> int:
        time.sleep(0.02 if n % 3 == 0 else 0)
        return n * n

    assert list(ordered_map(slow_first, range(50), threads=3)) == [n * n for n in range(50)]


def test_items_in_flight_are_bounded():
    started, lock = [], threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        return n

    results = ordered_map(work, range(100), threads=2)
    assert next(results) == 0
    time.sleep(0.05)
    assert len(started) <= 5  # 2 threads: at most 4 in flight, and the one taken
    assert list(results) == list(range(1, 100))


def test_a_failure_is_raised_in_order_and_stops_the_rest():
    done = []

    def work(n: int) -> int:
        if n == 3:
            raise ValueError("bad item 3")
        done.append(n)
        return n

    results = ordered_map(work, range(1000), threads=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(results)
    assert len(done) < 20  # the pool did not go on through the whole input


def test_one_thread_maps_in_the_caller():
    names = list(ordered_map(lambda _: threading.current_thread().name, range(3), threads=1))
    assert names == [threading.current_thread().name] * 3


def test_prefetched_yields_everything_in_order_computed_in_another_thread():
    names: set[str] = set()

    def items():
        for n in range(20):
            names.add(threading.current_thread().name)
            yield n

    assert list(prefetched(items())) == list(range(20))
    assert threading.current_thread().name not in names


def test_prefetched_raises_the_failure_and_closes_when_the_caller_stops():
    def failing():
        yield 1
        raise OSError("truncated stream")

    found = prefetched(failing())
    assert next(found) == 1
    with pytest.raises(OSError, match="truncated stream"):
        next(found)

    closed = []

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    first = prefetched(endless(), depth=2)
    assert next(first) == 0
    first.close()  # the thread stops and the source is closed, not run to its end
    assert closed == [True]
    assert not [t for t in threading.enumerate() if t.name == "beam_etl-prefetch"]


def test_put_while_waits_for_room_and_gives_up_when_the_consumer_stops():
    import queue as queues

    from beam_etl.core.threads import put_while

    box: queues.Queue = queues.Queue(maxsize=1)
    assert put_while(box, 1, lambda: True)
    stopped = threading.Event()
    threading.Timer(0.3, stopped.set).start()
    assert not put_while(box, 2, lambda: not stopped.is_set(), poll=0.05)  # full, then stopped
    assert box.get_nowait() == 1
    freed = threading.Thread(target=lambda: (time.sleep(0.2), box.get()))
    box.put(3)
    freed.start()
    assert put_while(box, 4, lambda: True, poll=0.05)  # room made by the consumer
    freed.join()
    assert box.get_nowait() == 4
