"""core.threads: ordered_map's order, bound and failures."""

import threading
import time

import pytest

from beam_etl.core.threads import ordered_map


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
