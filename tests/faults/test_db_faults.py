"""Database sinks under faults, one row each, against the real PostgreSQL and MariaDB servers.

A fault class is one row of `FAULTS`: the target table (DDL), the rows to load, the write mode,
the rows the table must hold afterwards, how many rows the sink reports written, and the dead
letters by reason. Each row runs on every database it names. The rule under test: a value is
stored exactly or its row is refused (one `db_constraint` dead letter), and the other rows are
written. `KILLS` adds the lost connection: the loading connection is killed at a marked
statement, and the retried publish must leave every row in the table exactly once.
"""

import collections
import datetime
import decimal
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from dbfixtures import my, my_connect, pg, pg_connect, unique_table

from beam_etl.core.batches import with_origin
from beam_etl.io._files import discard_staging
from beam_etl.io.mysqlio import WriteToMySql
from beam_etl.io.postgresio import WriteToPostgres
from beam_etl.runner import LocalRunner

DATABASES = ("postgres", "mysql")
DATETIME = {"postgres": "timestamp", "mysql": "datetime(6)"}
SECONDS = {"postgres": "timestamp(0)", "mysql": "datetime"}  # whole seconds
TEXT = {"postgres": "varchar", "mysql": "char"}
D = decimal.Decimal
UTC = datetime.UTC


@dataclass(frozen=True)
class Fault:
    """One class of bad row, and what a database sink must make of it."""

    ddl: str  # the table's columns; {t}: its name, {datetime} and {seconds}: timestamp types
    rows: dict[str, pa.Array]  # the load, column by column (ids 1, 2, 3, ...)
    expected: list[tuple] | dict[str, list[tuple]]  # the table afterwards, by id (per database)
    written: int | dict[str, int]  # rows the sink reports written
    letters: dict[str, int] | dict[str, dict[str, int]] = field(default_factory=dict)
    mode: str = "append"
    key: str | None = "id"
    setup: tuple[str, ...] = ()  # statements run before the load ({t}: the table's name)
    select: str = "*"  # what to read back ({text}: a type casting to text)
    databases: tuple[str, ...] = DATABASES


def ids(n: int) -> pa.Array:
    return pa.array(range(1, n + 1), pa.int64())


def per_db(value: Any, db: str) -> Any:
    return value[db] if isinstance(value, dict) and db in value else value


REFUSED = {"db_constraint": 1}
TEXT5 = "id bigint PRIMARY KEY, x varchar(5)"
AMOUNT = "id bigint PRIMARY KEY, amount numeric(6,2)"
STAMP = datetime.datetime(2024, 5, 1, 10, 30)
BAD_UTF8 = pa.array([b"ok", b"\xff\xfe", b"fine"], pa.binary()).view(pa.string())
SURROGATE = pa.array([b"ok", b"\xed\xa0\x80", b"fine"], pa.binary()).view(pa.string())

FAULTS: dict[str, Fault] = {
    "over-long-text-append": Fault(
        TEXT5,
        {"id": ids(3), "x": pa.array(["ok", "waytoolongvalue", "fine"])},
        [(1, "ok"), (3, "fine")],
        2,
        REFUSED,
    ),
    "over-long-text-merge": Fault(
        TEXT5,
        {"id": ids(3), "x": pa.array(["ok", "waytoolongvalue", "fine"])},
        [(1, "ok"), (3, "fine")],
        2,
        REFUSED,
        mode="merge",
    ),
    "over-long-text-insert-only": Fault(
        TEXT5,
        {"id": ids(3), "x": pa.array(["ok", "waytoolongvalue", "fine"])},
        [(1, "ok"), (3, "fine")],
        2,
        REFUSED,
        mode="insert_only",
    ),
    "over-long-text-replace": Fault(
        TEXT5,
        {"id": ids(3), "x": pa.array(["ok", "waytoolongvalue", "fine"])},
        [(1, "ok"), (3, "fine")],
        2,
        REFUSED,
        mode="replace",
        setup=("INSERT INTO {t} VALUES (9, 'old')",),
    ),
    "trailing-spaces-cut": Fault(
        TEXT5,
        {"id": ids(2), "x": pa.array(["ok", "abc      "])},
        [(1, "ok")],
        1,
        REFUSED,
    ),
    "numeric-rounded": Fault(
        AMOUNT,
        {
            "id": ids(3),
            "amount": pa.array([D("1.10"), D("1.005"), D("2.000")], pa.decimal128(8, 3)),
        },
        [(1, D("1.10")), (3, D("2.00"))],
        2,
        REFUSED,
    ),
    "numeric-rounded-from-float": Fault(
        AMOUNT,
        {"id": ids(3), "amount": pa.array([0.1, 1.005, 2.5])},
        [(1, D("0.10")), (3, D("2.50"))],
        2,
        REFUSED,
        mode="merge",
    ),
    "numeric-overflow": Fault(
        AMOUNT,
        {"id": ids(3), "amount": pa.array([D("1.00"), D("123456.00"), D("9999.99")])},
        [(1, D("1.00")), (3, D("9999.99"))],
        2,
        REFUSED,
    ),
    "integer-overflow": Fault(
        "id bigint PRIMARY KEY, n int",
        {"id": ids(3), "n": pa.array([1, 2**40, -(2**31)], pa.int64())},
        [(1, 1), (3, -(2**31))],
        2,
        REFUSED,
    ),
    "float-not-whole-into-integer": Fault(
        "id bigint PRIMARY KEY, n int",
        {"id": ids(3), "n": pa.array([1.0, 1.5, -7.0])},
        [(1, 1), (3, -7)],
        2,
        REFUSED,
    ),
    "time-of-day-into-date": Fault(
        "id bigint PRIMARY KEY, d date",
        {"id": ids(2), "d": pa.array([datetime.datetime(2024, 5, 1), STAMP], pa.timestamp("us"))},
        [(1, datetime.date(2024, 5, 1))],
        1,
        REFUSED,
    ),
    "fractional-seconds-rounded": Fault(
        "id bigint PRIMARY KEY, at {seconds}",
        {
            "id": ids(2),
            "at": pa.array([STAMP, STAMP.replace(microsecond=500_000)], pa.timestamp("us")),
        },
        [(1, STAMP)],
        1,
        REFUSED,
        mode="merge",
    ),
    "nanoseconds": Fault(
        "id bigint PRIMARY KEY, at {datetime}",
        {"id": ids(2), "at": pa.array([1_000, 1_001], pa.timestamp("ns"))},
        [(1, datetime.datetime(1970, 1, 1, 0, 0, 0, 1))],
        1,
        REFUSED,
    ),
    "not-null": Fault(
        "id bigint PRIMARY KEY, name varchar(20) NOT NULL",
        {"id": ids(3), "name": pa.array(["a", None, "c"])},
        [(1, "a"), (3, "c")],
        2,
        REFUSED,
    ),
    "not-null-merge": Fault(
        "id bigint PRIMARY KEY, name varchar(20) NOT NULL",
        {"id": ids(3), "name": pa.array(["a", None, "c"])},
        [(1, "a"), (3, "c")],
        2,
        REFUSED,
        mode="merge",
    ),
    "duplicate-key-in-load-append": Fault(
        "id bigint PRIMARY KEY, name varchar(20)",
        {"id": pa.array([1, 2, 1], pa.int64()), "name": pa.array(["first", "b", "again"])},
        [(1, "first"), (2, "b")],
        2,
        REFUSED,
    ),
    "duplicate-key-in-load-merge": Fault(
        "id bigint PRIMARY KEY, name varchar(20)",
        {"id": pa.array([1, 2, 1], pa.int64()), "name": pa.array(["first", "b", "last"])},
        [(1, "last"), (2, "b")],
        2,
        mode="merge",
    ),
    "duplicate-key-in-load-insert-only": Fault(
        "id bigint PRIMARY KEY, name varchar(20)",
        {"id": pa.array([1, 2, 1], pa.int64()), "name": pa.array(["first", "b", "again"])},
        [(1, "first"), (2, "b")],
        2,
        mode="insert_only",
    ),
    "existing-key-append": Fault(
        "id bigint PRIMARY KEY, name varchar(20)",
        {"id": ids(3), "name": pa.array(["a", "new", "c"])},
        [(1, "a"), (2, "old"), (3, "c")],
        2,
        REFUSED,
        setup=("INSERT INTO {t} VALUES (2, 'old')",),
    ),
    "second-unique-key-merge": Fault(
        "id bigint PRIMARY KEY, name varchar(20) UNIQUE",
        {"id": ids(3), "name": pa.array(["a", "b", "a"])},
        [(1, "a"), (2, "b")],
        2,
        REFUSED,
        mode="merge",
    ),
    "second-unique-key-merge-existing-row": Fault(
        "id bigint PRIMARY KEY, name varchar(20) UNIQUE",
        {"id": pa.array([5, 2], pa.int64()), "name": pa.array(["e", "a"])},
        [(1, "a"), (2, "two"), (5, "e")],
        1,
        REFUSED,
        mode="merge",
        setup=("INSERT INTO {t} VALUES (1, 'a'), (2, 'two')",),
    ),
    "second-unique-key-insert-only": Fault(
        "id bigint PRIMARY KEY, name varchar(20) UNIQUE",
        {"id": ids(3), "name": pa.array(["a", "b", "a"])},
        [(1, "a"), (2, "b")],
        2,
        REFUSED,
        mode="insert_only",
    ),
    "check-constraint": Fault(
        "id bigint PRIMARY KEY, amount int, CONSTRAINT {t}_positive CHECK (amount >= 0)",
        {"id": ids(3), "amount": pa.array([1, -1, 3], pa.int64())},
        [(1, 1), (3, 3)],
        2,
        REFUSED,
    ),
    "check-constraint-merge": Fault(
        "id bigint PRIMARY KEY, amount int, CONSTRAINT {t}_positive CHECK (amount >= 0)",
        {"id": ids(3), "amount": pa.array([1, -1, 3], pa.int64())},
        [(1, 1), (2, 20), (3, 3)],
        2,
        REFUSED,
        mode="merge",
        setup=("INSERT INTO {t} VALUES (2, 20)",),
    ),
    "foreign-key": Fault(
        "id bigint PRIMARY KEY, parent bigint, FOREIGN KEY (parent) REFERENCES {t}_parent (id)",
        {"id": ids(3), "parent": pa.array([10, 99, None], pa.int64())},
        [(1, 10), (3, None)],
        2,
        REFUSED,
        setup=("INSERT INTO {t}_parent VALUES (10)",),
    ),
    "nul-byte": Fault(
        TEXT5,
        {"id": ids(3), "x": pa.array(["ok", "b\x00c", "fine"])},
        {"postgres": [(1, "ok"), (3, "fine")], "mysql": [(1, "ok"), (2, "b\x00c"), (3, "fine")]},
        {"postgres": 2, "mysql": 3},
        {"postgres": REFUSED, "mysql": {}},
    ),
    "nul-byte-merge": Fault(
        TEXT5,
        {"id": ids(3), "x": pa.array(["ok", "b\x00c", "fine"])},
        [(1, "ok"), (3, "fine")],
        2,
        REFUSED,
        mode="merge",
        databases=("postgres",),
    ),
    "bad-utf8": Fault(
        "id bigint PRIMARY KEY, x text",
        {"id": ids(3), "x": BAD_UTF8},
        [(1, "ok"), (3, "fine")],
        2,
        REFUSED,
    ),
    "utf8-surrogate": Fault(
        "id bigint PRIMARY KEY, x text",
        {"id": ids(3), "x": SURROGATE},
        [(1, "ok"), (3, "fine")],
        2,
        REFUSED,
        mode="merge",
    ),
    "timestamp-before-year-1": Fault(
        "id bigint PRIMARY KEY, at {datetime}",
        {"id": ids(2), "at": pa.array([0, -62_200_000_000_000_000], pa.timestamp("us"))},
        [(1, datetime.datetime(1970, 1, 1))],
        1,
        REFUSED,
    ),
    "timestamp-after-year-9999": Fault(
        "id bigint PRIMARY KEY, at {datetime}",
        {"id": ids(2), "at": pa.array([0, 253_402_300_800_000_000], pa.timestamp("us"))},
        {
            "postgres": [(1, "1970-01-01 00:00:00"), (2, "10000-01-01 00:00:00")],
            "mysql": [(1, "1970-01-01 00:00:00.000000")],
        },
        {"postgres": 2, "mysql": 1},
        {"postgres": {}, "mysql": REFUSED},
        select="id, CAST(at AS {text})",
    ),
    "nan-and-infinity": Fault(
        "id bigint PRIMARY KEY, f double precision",
        {"id": ids(3), "f": pa.array([1.5, float("nan"), float("inf")])},
        {"postgres": [(1, "1.5"), (2, "NaN"), (3, "Infinity")], "mysql": [(1, "1.5")]},
        {"postgres": 3, "mysql": 1},
        {"postgres": {}, "mysql": {"db_constraint": 2}},
        select="id, CAST(f AS {text})",
    ),
    "zoned-timestamp-into-zoneless-column": Fault(
        "id bigint PRIMARY KEY, at {datetime}",
        {
            "id": ids(2),
            "at": pa.array(
                [datetime.datetime(2024, 5, 1, 10, 30, tzinfo=UTC), datetime.datetime(2024, 1, 1)],
                pa.timestamp("us", "UTC"),
            ).cast(pa.timestamp("us", "Asia/Tokyo")),
        },
        [(1, datetime.datetime(2024, 5, 1, 10, 30)), (2, datetime.datetime(2024, 1, 1))],
        2,
        mode="merge",
    ),
    "zoned-timestamp-into-zoneless-column-append": Fault(
        "id bigint PRIMARY KEY, at {datetime}",
        {
            "id": ids(2),
            "at": pa.array(
                [datetime.datetime(2024, 5, 1, 10, 30, tzinfo=UTC), datetime.datetime(2024, 1, 1)],
                pa.timestamp("us", "UTC"),
            ).cast(pa.timestamp("us", "Asia/Tokyo")),
        },
        [(1, datetime.datetime(2024, 5, 1, 10, 30)), (2, datetime.datetime(2024, 1, 1))],
        2,
    ),
}


@dataclass(frozen=True)
class Kill:
    """The loading connection killed while it runs a statement LIKE `statement` ({t}: table)."""

    database: str
    mode: str
    statement: str
    existing: str | None = None  # the target's columns, created first (else the load creates it)


ROWS_KILLED = 100_000
_PG_TARGET = "id bigint PRIMARY KEY, name text"
KILLS: dict[str, Kill] = {
    "copy-into-target-postgres": Kill("postgres", "append", 'COPY "{t}" %'),
    "copy-into-new-target-merge-postgres": Kill("postgres", "merge", 'COPY "{t}" %'),
    "copy-into-staging-postgres": Kill(
        "postgres", "merge", 'COPY "\\_beam\\_etl\\_stage%', _PG_TARGET
    ),
    "insert-from-staging-postgres": Kill("postgres", "merge", 'INSERT INTO "{t}" %', _PG_TARGET),
    "load-data-into-target-mysql": Kill("mysql", "append", "LOAD DATA %INTO TABLE `{t}` %"),
    "load-data-into-staging-mysql": Kill(
        "mysql", "merge", "LOAD DATA %INTO TABLE `\\_beam\\_etl\\_stage%"
    ),
    "insert-from-staging-mysql": Kill("mysql", "merge", "INSERT INTO `{t}` %"),
}


def _cases():
    for name, fault in FAULTS.items():
        for db in fault.databases:
            yield pytest.param(name, db, id=f"{name}-{db}")


@pytest.fixture
def tables():
    """Table names per database; dropped (with a `_parent` table) with their ledger rows."""
    names = {"postgres": unique_table("pgf"), "mysql": unique_table("myf")}
    yield names
    for run, name in ((pg, names["postgres"]), (my, names["mysql"])):
        run(f"DROP TABLE IF EXISTS {name}")
        run(f"DROP TABLE IF EXISTS {name}_parent")
        run("DELETE FROM _beam_etl_runs WHERE target = %s", (name,))


@pytest.mark.parametrize(("name", "db"), list(_cases()))
def test_a_value_is_stored_exactly_or_its_row_is_refused(tables, name, db):
    fault, table = FAULTS[name], tables[db]  # names need no quoting: letters, digits, `_`
    run = pg if db == "postgres" else my
    if "{t}_parent" in fault.ddl:
        run(f"CREATE TABLE {table}_parent (id bigint PRIMARY KEY)")
    columns = fault.ddl.format(t=table, datetime=DATETIME[db], seconds=SECONDS[db])
    run(f"CREATE TABLE {table} ({columns})")
    for statement in fault.setup:
        run(statement.format(t=table))

    written, letters = write(
        db, [pa.record_batch(fault.rows)], table, mode=fault.mode, primary_key=fault.key
    )

    select = fault.select.format(text=TEXT[db])
    found = [tuple(r) for r in run(f"SELECT {select} FROM {table} ORDER BY id")]
    assert found == per_db(fault.expected, db)
    assert written == [per_db(fault.written, db)]
    reasons = collections.Counter(letter.reason for letter in letters)
    assert reasons == collections.Counter(per_db(fault.letters, db))
    for letter in letters:  # each names where its row came from, and why it was refused
        assert (letter.source, letter.step) == ("faults.csv", "Write")
        assert letter.line is not None and letter.message


@pytest.mark.parametrize("name", list(KILLS))
def test_a_killed_connection_is_retried_and_every_row_lands_once(tables, name):
    kill = KILLS[name]
    table = tables[kill.database]
    batch = pa.record_batch(
        {
            "id": pa.array(range(ROWS_KILLED), pa.int64()),
            "name": pa.array([f"row {i} " + "x" * 40 for i in range(ROWS_KILLED)]),
        }
    )
    run = pg if kill.database == "postgres" else my
    if kill.existing:  # a merge into an existing table stages; into a new one it COPYs in
        run(f"CREATE TABLE {table} ({kill.existing})")
    killer = _Killer(kill.database, table, kill.statement.format(t=table))
    killer.start()
    try:
        written, letters = write(kill.database, [batch], table, mode=kill.mode, primary_key="id")
    finally:
        killer.stop()
    assert killer.killed, f"no connection ran `{kill.statement}`: nothing was killed"
    assert (written, letters) == ([ROWS_KILLED], [])
    found = run(f"SELECT count(*), count(DISTINCT id), sum(id) FROM {table}")
    assert [tuple(r) for r in found] == [(ROWS_KILLED, ROWS_KILLED, sum(range(ROWS_KILLED)))]
    ledger = run("SELECT rows_written FROM _beam_etl_runs WHERE target = %s", (table,))
    assert [tuple(r) for r in ledger] == [(ROWS_KILLED,)]


class _Killer(threading.Thread):
    """Finds the connection that publishes to `table` (the holder of its publish lock) and
    kills it once, as soon as it runs a statement LIKE `statement`."""

    def __init__(self, database: str, table: str, statement: str) -> None:
        super().__init__(daemon=True)
        self.database, self.table, self.statement = database, table, statement
        self.killed: list[str] = []
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        find = self._pg if self.database == "postgres" else self._my
        connection = pg_connect() if self.database == "postgres" else my_connect()
        if self.database == "postgres":
            connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                while not self._done.is_set() and not self.killed:
                    find(cursor)
                    time.sleep(0.001)
        finally:
            connection.close()

    def _pg(self, cursor) -> None:
        key = int.from_bytes(hashlib.blake2b(self.table.encode(), digest_size=8).digest(), "big")
        cursor.execute(
            "SELECT a.pid, a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted "
            "AND a.state = 'active' AND a.query LIKE %s",
            (key >> 32, key & 0xFFFFFFFF, self.statement),
        )
        for pid, query in cursor.fetchall():
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
            self.killed.append(query)

    def _my(self, cursor) -> None:
        lock = "beam_etl:" + hashlib.blake2b(self.table.encode(), digest_size=16).hexdigest()
        cursor.execute(
            "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE ID = IS_USED_LOCK(%s) "
            "AND INFO LIKE %s",
            (lock, self.statement),
        )
        for pid, info in cursor.fetchall():
            cursor.execute(f"KILL {int(pid)}")
            self.killed.append(info)


_RESULTS: dict[str, list] = {}


def _collect(name: str, value: Any) -> None:
    _RESULTS.setdefault(name, []).append(value)


def write(db: str, batches: list[pa.RecordBatch], table: str, **options):
    """Run a pipeline writing `batches` (origin `faults.csv`, lines from 2) to `table`;
    return (rows written, dead letters)."""
    p = test_pipeline.TestPipeline(runner=LocalRunner())
    marked = [with_origin(b, "faults.csv", list(range(2, 2 + b.num_rows))) for b in batches]
    sink_type = WriteToPostgres if db == "postgres" else WriteToMySql
    sink = sink_type(table, database="test", **options)
    written, errors = p | beam.Create(marked) | "Write" >> sink
    _ = written | "W" >> beam.Map(lambda n: _collect("written", n))
    _ = errors | "E" >> beam.Map(lambda letter: _collect("errors", letter))
    _RESULTS.clear()
    try:
        p.run().wait_until_finish()
    finally:
        discard_staging([sink])
    letters = sorted(_RESULTS.get("errors", []), key=lambda letter: letter.line or 0)
    return _RESULTS.get("written", []), letters
