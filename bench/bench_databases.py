"""Benchmark: beam_etl's database sinks and sources against the drivers' own bulk paths.

Usage: `PYTHONPATH=. python bench/bench_databases.py [--rows N] [--repeat K]`.

Needs the test servers (PostgreSQL 127.0.0.1:5432 user `postgres`, MariaDB 127.0.0.1:3306 user
`root`, database `test`). Uses the orders CSV of `bench/datagen.py` (nine columns). Pairs, each
run interleaved (reference, beam_etl, reference, ...) in this process, medians reported as
"beam_etl speed / reference speed" (1.00 = as fast as the reference):

- PostgreSQL append: `ReadFromCsv | WriteToPostgres(mode=append)` vs `COPY ... FROM STDIN` of
  the same CSV file into an empty table of the same shape.
- PostgreSQL merge: `ReadFromCsv | WriteToPostgres(mode=merge)` into a table holding every
  other key vs hand-written `COPY` into a temporary table + `INSERT ... ON CONFLICT DO UPDATE`.
- MariaDB append: `ReadFromCsv | WriteToMySql(mode=append)` vs `LOAD DATA LOCAL INFILE`.
- Reads: `ReadFromPostgres` vs `COPY (table) TO STDOUT` (bytes only); `ReadFromMySql` vs
  PyMySQL's unbuffered `SSCursor.fetchmany` loop.

Every run is checked (row counts); timings are printed, never asserted.
"""

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

import apache_beam as beam
import psycopg2
import pymysql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen

from beam_etl.io.csvio import ReadFromCsv
from beam_etl.io.mysqlio import ReadFromMySql, WriteToMySql
from beam_etl.io.postgresio import ReadFromPostgres, WriteToPostgres
from beam_etl.runner import LocalRunner

PG_COLUMNS = (
    "id bigint PRIMARY KEY, customer_id bigint, country text, email text, amount text, "
    "quantity bigint, created_at timestamp, active boolean, note text"
)
MY_COLUMNS = (
    "id bigint PRIMARY KEY, customer_id bigint, country longtext, email longtext, "
    "amount longtext, quantity bigint, created_at datetime(6), active boolean, note longtext"
)


def pg(sql: str, params=None):
    connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test")
    connection.autocommit = True
    with connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        result = cursor.fetchall() if cursor.description else None
    connection.close()
    return result


def my(sql: str, params=None):
    connection = pymysql.connect(
        host="127.0.0.1",
        user="root",
        password="",
        database="test",
        local_infile=True,
        autocommit=True,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        result = cursor.fetchall()
    connection.close()
    return result


def run_pipeline(build: Callable[[beam.Pipeline], None]) -> None:
    pipeline = beam.Pipeline(runner=LocalRunner())
    build(pipeline)
    pipeline.run().wait_until_finish()


def csv_batches(pipeline: beam.Pipeline, path: str):
    """The orders CSV as batches (its dead letters, none for this file, are ignored)."""
    return (pipeline | ReadFromCsv(path, columns=dict(datagen.COLUMN_TYPES))).output


CASES = ("pg_append", "pg_merge", "my_append", "reads")


class Bench:
    """Fresh tables per run, dropped afterwards; timings of the timed part only."""

    def __init__(self, csv: str, rows: int) -> None:
        self.csv = csv
        self.rows = rows

    def _pg_table(self, half: bool = False) -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        pg(f'CREATE TABLE "{name}" ({PG_COLUMNS})')
        if half:
            self.copy_pg(name)
            pg(f'DELETE FROM "{name}" WHERE id % 2 = 0')
            pg(f"UPDATE \"{name}\" SET note = 'old'")
        return name

    def copy_pg(self, table: str) -> None:
        connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test")
        with connection, connection.cursor() as cursor, open(self.csv, "rb") as data:
            cursor.copy_expert(f'COPY "{table}" FROM STDIN WITH (FORMAT csv, HEADER)', data)
        connection.close()

    def pg_append_reference(self, table: str) -> None:
        self.copy_pg(table)

    def pg_append_beam(self, table: str) -> None:
        run_pipeline(lambda p: csv_batches(p, self.csv) | WriteToPostgres(table, database="test"))

    def pg_merge_reference(self, table: str) -> None:
        connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test")
        names = [c.split()[0] for c in PG_COLUMNS.split(", ")]
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names[1:])
        with connection, connection.cursor() as cursor, open(self.csv, "rb") as data:
            cursor.execute(f'CREATE TEMP TABLE s (LIKE "{table}") ON COMMIT DROP')
            cursor.copy_expert("COPY s FROM STDIN WITH (FORMAT csv, HEADER)", data)
            cursor.execute(
                f'INSERT INTO "{table}" SELECT * FROM s ON CONFLICT (id) DO UPDATE SET {updates}'
            )
        connection.close()

    def pg_merge_beam(self, table: str) -> None:
        run_pipeline(
            lambda p: (
                csv_batches(p, self.csv)
                | WriteToPostgres(table, mode="merge", primary_key="id", database="test")
            )
        )

    def my_table(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        my(f"CREATE TABLE `{name}` ({MY_COLUMNS}) DEFAULT CHARSET=utf8mb4")
        return name

    def my_append_reference(self, table: str) -> None:
        nullable = ("customer_id", "amount", "note")
        my(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            "LINES TERMINATED BY '\\n' IGNORE 1 LINES (id, @customer_id, country, email, "
            "@amount, quantity, created_at, @active, @note) SET active = (@active = 'true'), "
            + ", ".join(f"{n} = NULLIF(@{n}, '')" for n in nullable),
            (self.csv,),
        )

    def my_append_beam(self, table: str) -> None:
        run_pipeline(lambda p: csv_batches(p, self.csv) | WriteToMySql(table, database="test"))


def _count_pg(table: str) -> int:
    return pg(f'SELECT count(*) FROM "{table}"')[0][0]


def _count_my(table: str) -> int:
    return my(f"SELECT count(*) FROM `{table}`")[0][0]


def timed(work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def compare(name: str, pairs: dict[str, Callable[[], float]], repeat: int) -> None:
    times: dict[str, list[float]] = {k: [] for k in pairs}
    for _ in range(repeat):
        for key, run in pairs.items():
            times[key].append(run())
    reference, ours = (statistics.median(v) for v in times.values())
    print(
        f"{name:<38} reference {reference:6.2f} s  beam_etl {ours:6.2f} s  "
        f"ratio {reference / ours:4.2f}x",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}"
    )
    args = parser.parse_args(argv)
    cases = set(args.cases.split(","))
    csv = datagen.ensure_csv(args.rows)
    bench = Bench(csv, args.rows)

    def write_run(make_table, work, count, drop, expected):
        def run() -> float:
            table = make_table()
            try:
                seconds = timed(lambda: work(table))
                found = count(table)
                if found != expected:
                    raise SystemExit(f"{work.__name__}: {found} rows, expected {expected}")
                return seconds
            finally:
                drop(table)

        return run

    drop_pg = lambda t: pg(f'DROP TABLE IF EXISTS "{t}"')  # noqa: E731
    drop_my = lambda t: my(f"DROP TABLE IF EXISTS `{t}`")  # noqa: E731
    if "pg_append" in cases:
        compare(
            "PostgreSQL append (COPY FROM STDIN)",
            {
                "ref": write_run(
                    bench._pg_table, bench.pg_append_reference, _count_pg, drop_pg, args.rows
                ),
                "beam": write_run(
                    bench._pg_table, bench.pg_append_beam, _count_pg, drop_pg, args.rows
                ),
            },
            args.repeat,
        )
    half = lambda: bench._pg_table(half=True)  # noqa: E731
    if "pg_merge" in cases:
        compare(
            "PostgreSQL merge (COPY + ON CONFLICT)",
            {
                "ref": write_run(half, bench.pg_merge_reference, _count_pg, drop_pg, args.rows),
                "beam": write_run(half, bench.pg_merge_beam, _count_pg, drop_pg, args.rows),
            },
            args.repeat,
        )
    if "my_append" in cases:
        compare(
            "MariaDB append (LOAD DATA LOCAL)",
            {
                "ref": write_run(
                    bench.my_table, bench.my_append_reference, _count_my, drop_my, args.rows
                ),
                "beam": write_run(
                    bench.my_table, bench.my_append_beam, _count_my, drop_my, args.rows
                ),
            },
            args.repeat,
        )
    if "reads" in cases:
        read_benchmarks(bench, args)


def read_benchmarks(bench: Bench, args) -> None:
    pg_table, my_table = bench._pg_table(), bench.my_table()
    try:
        bench.copy_pg(pg_table)
        bench.my_append_reference(my_table)

        def pg_copy_out() -> float:
            connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test")
            with open(os.devnull, "wb") as sink, connection.cursor() as cursor:
                seconds = timed(
                    lambda: cursor.copy_expert(
                        f'COPY "{pg_table}" TO STDOUT WITH (FORMAT csv)', sink
                    )
                )
            connection.close()
            return seconds

        def my_unbuffered() -> float:
            connection = pymysql.connect(
                host="127.0.0.1", user="root", password="", database="test"
            )

            def fetch_all() -> None:
                with connection.cursor(pymysql.cursors.SSCursor) as cursor:
                    cursor.execute(f"SELECT * FROM `{my_table}`")
                    while cursor.fetchmany(50_000):
                        pass

            seconds = timed(fetch_all)
            connection.close()
            return seconds

        def beam_read(source) -> Callable[[], float]:
            return lambda: timed(
                lambda: run_pipeline(
                    lambda p: (
                        p | source() | beam.Map(lambda b: b.num_rows) | beam.CombineGlobally(sum)
                    )
                )
            )

        compare(
            "PostgreSQL read (COPY TO STDOUT)",
            {
                "ref": pg_copy_out,
                "beam": beam_read(lambda: ReadFromPostgres(table=pg_table, database="test")),
            },
            args.repeat,
        )
        compare(
            "MariaDB read (SSCursor fetchmany)",
            {
                "ref": my_unbuffered,
                "beam": beam_read(lambda: ReadFromMySql(table=my_table, database="test")),
            },
            args.repeat,
        )
    finally:
        pg(f'DROP TABLE IF EXISTS "{pg_table}"')
        my(f"DROP TABLE IF EXISTS `{my_table}`")


if __name__ == "__main__":
    main()
