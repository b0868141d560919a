"""Cost per row of the bridge (`ToRows`, `ToBatches`): run by hand, asserts nothing timed.

    python tests/interop/bench_bridge.py [ROWS]

Prints microseconds per row for the pure conversions (in process) and for pipelines on the
local runner: batches counted as batches (the baseline), `ToRows` + `Count.Globally()`, and
`ToRows` + `ToBatches`, each the median of three interleaved runs.
"""

import datetime
import decimal
import statistics
import sys
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_etl.interop import ToBatches, ToRows
from beam_etl.interop.rowtypes import batch_of, row_maker
from beam_etl.runner import LocalRunner

BATCH_ROWS = 50_000


def make_batch(rows: int, seed: int = 0) -> pa.RecordBatch:
    """A batch of 10 columns of the usual kinds: ints, floats, text, decimals, dates, times."""
    rng = np.random.default_rng(seed)
    start = datetime.datetime(2024, 1, 1)
    return pa.RecordBatch.from_pydict(
        {
            "id": pa.array(np.arange(rows)),
            "qty": pa.array(rng.integers(0, 100, rows).astype(np.int32)),
            "price": pa.array(rng.random(rows)),
            "name": pa.array([f"customer {i % 997}" for i in range(rows)]),
            "city": pa.array([f"city {i % 31}" for i in range(rows)]),
            "amount": pa.array(
                [decimal.Decimal(int(v)).scaleb(-2) for v in rng.integers(0, 10**8, rows)],
                pa.decimal128(10, 2),
            ),
            "day": pa.array([start.date() + datetime.timedelta(days=i % 365) for i in range(rows)]),
            "at": pa.array(
                [start + datetime.timedelta(seconds=i) for i in range(rows)], pa.timestamp("us")
            ),
            "ok": pa.array(rng.integers(0, 2, rows).astype(bool)),
            "note": pa.array([None if i % 3 else "n" for i in range(rows)], pa.string()),
        }
    )


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def pure(batch: pa.RecordBatch) -> tuple[float, float]:
    """Seconds to make rows of `batch`, and to make a batch of those rows again."""
    _, rows_of = row_maker(batch.schema)
    rows: list = []
    to_rows = _timed(lambda: rows.extend(rows_of(batch)))
    from beam_etl.interop.rowtypes import arrow_schema, row_type

    schema = arrow_schema(row_type(batch.schema))
    to_batch = _timed(lambda: batch_of(rows, schema))
    return to_rows, to_batch


class _CountRowsFn(beam.DoFn):
    def process(self, batch):
        yield batch.num_rows


def run(kind: str, rows: int) -> float:
    schema = make_batch(1).schema
    seeds = list(range(0, rows, BATCH_ROWS))

    def build_and_run() -> None:
        with beam.Pipeline(runner=LocalRunner()) as p:
            source = (
                p
                | beam.Create(seeds, reshuffle=False)
                | beam.Map(lambda seed: make_batch(min(BATCH_ROWS, rows - seed), seed))
            )
            if kind == "batches":
                _ = source | beam.ParDo(_CountRowsFn()) | beam.CombineGlobally(sum)
            elif kind == "rows":
                _ = source | ToRows(schema=schema) | beam.combiners.Count.Globally()
            else:
                back = source | ToRows(schema=schema) | ToBatches()
                _ = back | beam.ParDo(_CountRowsFn()) | beam.CombineGlobally(sum)

    return _timed(build_and_run)


def main(rows: int) -> None:
    batch = make_batch(rows)
    to_rows, to_batch = pure(batch)
    print(
        f"pure: rows of a batch {to_rows / rows * 1e6:.2f} us/row, "
        f"batch of rows {to_batch / rows * 1e6:.2f} us/row"
    )
    times: dict[str, list[float]] = {"batches": [], "rows": [], "round trip": []}
    for _ in range(3):
        for kind in times:
            times[kind].append(run(kind.split()[0] if kind != "round trip" else "trip", rows))
    base = statistics.median(times["batches"])
    for kind, values in times.items():
        median = statistics.median(values)
        extra = (median - base) / rows * 1e6
        print(
            f"{kind:>10}: {median:6.2f} s, {median / rows * 1e6:5.2f} us/row "
            f"({extra:+.2f} us/row over batches)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
