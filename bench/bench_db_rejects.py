"""Benchmark: how long database sinks take to isolate refused rows.

Usage: `PYTHONPATH=. python bench/bench_db_rejects.py [--rows N] [--refused K] [--repeat R]`.

Needs the test servers (PostgreSQL 127.0.0.1:5432 user `postgres`, MariaDB 127.0.0.1:3306 user
`root`, database `test`). Appends N rows (default 20,000) to a table `(id PRIMARY KEY, name NOT
NULL, amount CHECK (amount >= 0))` where K rows (default 2,000, spread evenly) are refused, one
kind at a time: a NULL name, a negative amount, an id repeated within the load. The clean load
of the same rows is the reference. Prints seconds (median of R runs) and the ratio to the clean
load; every run is checked (rows written, dead letters), timings are never asserted.

Before the rework (bisection over an unindexed PostgreSQL staging table, three round trips per
try) 1,000 refused rows took 11 s and 10,000 did not finish in 355 s.
"""

import argparse
import os
import statistics
import sys
import time
import uuid

import apache_beam as beam
import psycopg2
import pyarrow as pa
import pymysql

from beam_etl.core.batches import with_origin
from beam_etl.io.mysqlio import WriteToMySql
from beam_etl.io.postgresio import WriteToPostgres
from beam_etl.runner import LocalRunner

KINDS = ("clean", "null", "check", "repeated_key")


def run(db: str, sql: str) -> None:
    if db == "postgres":
        connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test")
        connection.autocommit = True
    else:
        connection = pymysql.connect(host="127.0.0.1", user="root", password="", database="test")
        connection.autocommit(True)
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


def load(rows: int, refused: int, kind: str) -> pa.RecordBatch:
    every = rows // refused if refused else rows + 1
    bad = [kind != "clean" and i % every == every - 1 for i in range(rows)]
    ids = [i - 1 if b and kind == "repeated_key" else i for i, b in enumerate(bad)]
    names = [None if b and kind == "null" else f"n{i}" for i, b in enumerate(bad)]
    amounts = [-1 if b and kind == "check" else 1 for b in bad]
    batch = pa.record_batch(
        {"id": pa.array(ids, pa.int64()), "name": names, "amount": pa.array(amounts, pa.int32())}
    )
    return with_origin(batch, "bench.csv", list(range(2, 2 + rows)))


def once(db: str, batch: pa.RecordBatch) -> tuple[float, int]:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    run(
        db,
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, name varchar(20) NOT NULL, amount int, "
        f"CONSTRAINT {table}_amount CHECK (amount >= 0))",
    )
    sink = (WriteToPostgres if db == "postgres" else WriteToMySql)(table, database="test")
    LETTERS.clear()
    pipeline = beam.Pipeline(runner=LocalRunner())
    _, errors = pipeline | beam.Create([batch]) | sink
    _ = errors | beam.Map(_collect)
    start = time.perf_counter()
    pipeline.run().wait_until_finish()
    seconds = time.perf_counter() - start
    run(db, f"DROP TABLE {table}")
    run(db, f"DELETE FROM _beam_etl_runs WHERE target = '{table}'")
    return seconds, len(LETTERS)


LETTERS: list = []


def _collect(letter) -> None:
    LETTERS.append(letter)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--refused", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    for db in ("postgres", "mysql"):
        clean = None
        for kind in KINDS:
            batch = load(args.rows, 0 if kind == "clean" else args.refused, kind)
            times = []
            for _ in range(args.repeat):
                seconds, letters = once(db, batch)
                expected = 0 if kind == "clean" else args.refused
                if letters != expected:
                    raise SystemExit(f"{db} {kind}: {letters} dead letters, expected {expected}")
                times.append(seconds)
            median = statistics.median(times)
            clean = clean or median
            print(f"{db:9} {kind:13} {median:7.2f} s  {median / clean:6.2f}x the clean load")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_db_rejects  # Beam pickles `__main__` functions by value: `LETTERS` would be a copy

    bench_db_rejects.main(sys.argv[1:])
