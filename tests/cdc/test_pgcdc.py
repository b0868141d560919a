"""ReadFromPostgresChanges on the real PostgreSQL (wal_level=logical): snapshot and changes into
a PostgreSQL merge target and a Parquet change log, bounded runs, the slot confirmed only after
publish, and kill -9 of the capture during a pgbench mutation run."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import pyarrow.parquet as pq
import pytest
from dbfixtures import pg_connection

from beam_etl.io._pgoutput import lsn_int
from beam_etl.run import main

CHANGE = "op, source_ts, source_name, source_position, source_table, source_txid, source_seq"
SPEC = """
name: {name}
sources:
  - name: src
    type: ReadFromPostgresChanges
    config: {{tables: [{tables}], database: test, batch_rows: 500}}
steps:
  - name: net
    type: ApplyChanges
    input: src
    config: {{primary_key: [{key}]}}
  - name: rows
    type: DropColumns
    input: net
    config: {{columns: [{change}]}}
sinks:
  - name: target
    type: WriteToPostgres
    input: rows
    config: {{table: {target}, database: test, mode: merge, primary_key: {key},
              hard_delete_column: deleted}}
  - name: log
    type: WriteToParquet
    input: src
    config: {{path: "{out}/log/${{RUN_ID}}"}}
{extra}  - name: letters
    type: WriteToDeadLetters
    inputs: [src.error, net.error, target.error{extra_errors}]
    config: {{path: "{out}/letters.jsonl"}}
"""
# The pgbench capture also keeps a MariaDB replica (merge) and a Parquet SCD2 history.
REPLICA_AND_HISTORY = """  - name: replica
    type: WriteToMySql
    input: rows
    config: {{table: {target}, database: test, mode: merge, primary_key: {key},
              hard_delete_column: deleted}}
  - name: history
    type: WriteToParquet
    input: rows
    config: {{path: "{out}/history", mode: scd2, primary_key: {key},
              hard_delete_column: deleted}}
"""


def sql(statement: str, params=None) -> list[tuple]:
    with pg_connection() as connection, connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


class Capture:
    """A pipeline capturing `tables` into `target`; drops its slot, publication and tables."""

    def __init__(self, tmp_path, tables: list[str], key: str, replicas: bool = False) -> None:
        self.name = f"cdc_{uuid.uuid4().hex[:8]}"
        self.target = f"{self.name}_dst"
        self.slot = f"beam_etl_{self.name}_src"
        self.out = tmp_path / "out"
        self.spec = tmp_path / "spec.yaml"
        names = {"target": self.target, "out": self.out, "key": key}
        self.spec.write_text(
            SPEC.format(
                name=self.name,
                tables=", ".join(tables),
                key=key,
                change=CHANGE,
                target=self.target,
                out=self.out,
                extra=REPLICA_AND_HISTORY.format(**names) if replicas else "",
                extra_errors=", replica.error" if replicas else "",
            )
        )
        self.tables = tables
        self.replicas = replicas

    def run(self, *extra: str) -> int:
        return main(["--pipeline", str(self.spec), "--output-dir", str(self.out), *extra])

    def command(self) -> list[str]:
        launcher = [sys.executable, "-m", "beam_etl.run"]
        return [*launcher, "--pipeline", str(self.spec), "--output-dir", str(self.out)]

    def confirmed(self) -> int:
        found = sql(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        return lsn_int(found[0][0])

    def state_position(self) -> int | None:
        path = self.out / ".beam_etl" / "state.sqlite"
        if not path.exists():
            return None
        with sqlite3.connect(path) as state:
            row = state.execute("SELECT value FROM state WHERE source = 'src'").fetchone()
        return None if row is None else lsn_int(json.loads(row[0])["position"])

    def log(self) -> list[dict]:
        """The change events of the last run that wrote its change log."""
        runs = sorted((self.out / "log").iterdir(), key=lambda p: p.stat().st_mtime)
        return pq.read_table(runs[-1]).to_pylist()

    def replayed(self, columns: list[str]) -> list[tuple]:
        """The table rebuilt from every run's change log, event by event in source_seq order."""
        events = [e for run in (self.out / "log").iterdir() for e in pq.read_table(run).to_pylist()]
        table: dict = {}
        for event in sorted(events, key=lambda e: e["source_seq"]):
            if event["op"] == "d":
                table.pop(event["id"], None)
            else:
                table[event["id"]] = tuple(event[c] for c in columns)
        return [table[k] for k in sorted(table)]

    def drop(self) -> None:
        sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (self.slot,),
        )
        sql(f"DROP PUBLICATION IF EXISTS {self.slot}")
        sql(f"DROP TABLE IF EXISTS {self.target}")
        if self.replicas:
            from dbfixtures import my

            my(f"DROP TABLE IF EXISTS `{self.target}`")
        for table in self.tables:
            sql(f"DROP TABLE IF EXISTS {table}")


def rows(table: str, columns: str, key: str) -> list[tuple]:
    return sql(f"SELECT {columns} FROM {table} ORDER BY {key}")


@pytest.fixture
def shop(tmp_path):
    table = f"src_{uuid.uuid4().hex[:8]}"
    sql(
        f"CREATE TABLE {table} (id int PRIMARY KEY, name text, big text, amount numeric(10,2), "
        "at timestamptz, flag boolean)"
    )
    sql(f"ALTER TABLE {table} ALTER COLUMN big SET STORAGE EXTERNAL")  # TOASTed out of line
    sql(
        f"INSERT INTO {table} SELECT i, 'n' || i, CASE WHEN i % 5 = 0 THEN "
        "(SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 200) j) END, "
        "i * 1.25, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 hour', i % 2 = 0 "
        "FROM generate_series(1, 60) i"
    )
    capture = Capture(tmp_path, [table], "id")
    yield capture, table
    capture.drop()


COLUMNS = "id, name, big, amount, at, flag"


def test_snapshot_and_changes_reach_the_merge_target_and_the_change_log(shop):
    capture, table = shop
    assert capture.run() == 0
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")
    assert sorted(e["op"] for e in capture.log()) == ["r"] * 60
    for statement in [
        f"INSERT INTO {table} SELECT i, 'new' || i, NULL, i, now(), true "
        "FROM generate_series(100, 109) i",
        f"UPDATE {table} SET name = name || '!' WHERE id % 5 = 0",  # big: TOAST unchanged
        f"UPDATE {table} SET amount = amount + 1 WHERE id BETWEEN 1 AND 4",
        f"DELETE FROM {table} WHERE id BETWEEN 20 AND 24",
        f"INSERT INTO {table} (id, name) VALUES (200, 'gone'); DELETE FROM {table} WHERE id = 200",
        f"DELETE FROM {table} WHERE id = 30; INSERT INTO {table} (id, name) VALUES (30, 'back')",
        f"UPDATE {table} SET id = 300 WHERE id = 31",  # a new primary key
        f"UPDATE {table} SET name = 'late' WHERE id = 100",
    ]:
        sql(statement)
    assert capture.run() == 0
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")
    log = capture.log()
    toasted = [e for e in log if e["op"] == "u" and e["id"] % 5 == 0 and e["id"] < 100]
    assert len(toasted) == 12
    # The unchanged TOAST value is read by key: 20 and 30 were deleted (30 re-inserted) later
    # in the same run, so their intermediate event has the current value; the net is right.
    assert all(len(e["big"]) == 6400 for e in toasted if e["id"] not in (20, 30))
    seqs = [e["source_seq"] for e in log]
    assert len(set(seqs)) == len(seqs) and min(seqs) >= 60  # continues after the snapshot
    assert {(e["id"], e["op"]) for e in log if e["id"] in (31, 300)} == {(31, "d"), (300, "c")}

    # The append-only change log, replayed, is the source too.
    assert capture.replayed(COLUMNS.split(", ")) == rows(table, COLUMNS, "id")

    sql(f"ALTER TABLE {table} ADD COLUMN extra int")  # a new column widens the events
    sql(f"UPDATE {table} SET extra = id * 2 WHERE id < 10")
    sql(f"TRUNCATE {table}")  # to the dead letters, the target untouched
    assert capture.run() == 0
    assert rows(capture.target, "id, extra", "id")[:3] == [(1, 2), (2, 4), (3, 6)]
    letters = (capture.out / "letters.jsonl").read_text().splitlines()
    assert len(letters) == 1 and '"reason":"truncate"' in letters[0] and table in letters[0]


def test_a_bounded_run_stops_while_the_source_keeps_changing(shop):
    capture, table = shop
    assert capture.run() == 0
    stop = threading.Event()

    def write() -> None:
        key = 1000
        while not stop.is_set():
            sql(f"INSERT INTO {table} (id, name) VALUES (%s, 'w')", (key,))
            key += 1
            time.sleep(0.01)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert capture.run() == 0  # returns although changes keep coming
        assert time.monotonic() - started < 60
    finally:
        stop.set()
        writer.join()
    assert len(rows(capture.target, "id", "id")) < len(rows(table, "id", "id"))
    assert capture.run() == 0  # the rest: the next run takes up where this one stopped
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")


@pytest.mark.parametrize("point", ["after_prepare", "between_publishes", "before_state_commit"])
def test_the_slot_is_confirmed_only_after_every_sink_published(shop, point):
    capture, table = shop
    assert capture.run() == 0
    sql(f"UPDATE {table} SET name = 'changed' WHERE id <= 30")
    sql(f"DELETE FROM {table} WHERE id > 50")
    before = capture.confirmed()
    killed = subprocess.run(
        capture.command(), env={**os.environ, "BEAM_ETL_KILL_AT": point}, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL
    assert capture.confirmed() == before  # the server was not told
    assert capture.run() == 0  # re-delivered: the target is right, nothing twice
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")
    assert capture.confirmed() > before


def test_psycopg2_confirms_the_wal_end_before_the_first_change_so_runs_read_a_copy(shop):
    """Why a run streams from a temporary copy of its slot: psycopg2 reports the server's WAL
    end as flushed on a keepalive that arrives before any change was read, and the server
    confirms the slot there. On the slot itself that would skip changes no target has."""
    import psycopg2
    from psycopg2.extras import LogicalReplicationConnection

    capture, table = shop
    assert capture.run() == 0
    probe = f"{capture.slot}_probe"
    sql("SELECT pg_copy_logical_replication_slot(%s, %s)", (capture.slot, probe))
    try:
        before = capture.confirmed()
        other = f"{capture.name}_other"  # WAL the slot has to pass, none of it published
        sql(f"CREATE TABLE {other} AS SELECT generate_series(1, 1000) AS n")
        sql(f"DROP TABLE {other}")
        connection = psycopg2.connect(
            host="127.0.0.1",
            user="postgres",
            dbname="test",
            connection_factory=LogicalReplicationConnection,
        )
        try:
            cursor = connection.cursor()
            cursor.start_replication(
                slot_name=probe,
                decode=False,
                options={"proto_version": "1", "publication_names": capture.slot},
            )
            deadline = time.monotonic() + 10
            while cursor.wal_end <= before and time.monotonic() < deadline:
                assert cursor.read_message() is None  # keepalives only: nothing to read
                time.sleep(0.01)
            cursor.send_feedback(reply=True)  # no flush position given
            time.sleep(0.5)
        finally:
            connection.close()
        (moved,) = sql(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (probe,),
        )[0]
        assert lsn_int(moved) > before  # confirmed, though the client confirmed nothing
        assert capture.confirmed() == before
        sql(f"UPDATE {table} SET name = 'later' WHERE id <= 3")
        assert capture.run() == 0  # read through a copy: its own slot moves on publish only
        assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")
        assert capture.confirmed() == capture.state_position()
    finally:
        sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (probe,),
        )


def test_a_run_that_fails_confirms_nothing_and_the_next_one_redelivers(shop):
    capture, table = shop
    assert capture.run() == 0
    sql(f"UPDATE {table} SET amount = 0 WHERE id <= 10")
    before = capture.confirmed()
    log = capture.out / "log" / "broken"
    log.write_text("a file where the change log's folder should be")
    assert capture.run("--run-id", "broken") == 1
    assert capture.confirmed() == before
    assert rows(capture.target, "id, amount", "id")[0] == (1, 1.25)
    log.unlink()
    assert capture.run("--run-id", "broken") == 0
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")
    assert {e["id"] for e in capture.log()} == set(range(1, 11))


PGBENCH_SCRIPT = """\\set aid random(1, 100000 * :scale)
\\set new random(1000000, 2000000000)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES (:new, 1, :delta, 'x')
  ON CONFLICT (aid) DO NOTHING;
DELETE FROM pgbench_accounts WHERE aid = :aid + 1;
END;
"""


def test_kill_9_of_the_capture_during_pgbench_loses_and_duplicates_nothing(tmp_path):
    # CI runs it small; the size: BEAM_ETL_PGBENCH="5,30,10" (scale, seconds, kills).
    scale, seconds, least = os.environ.get("BEAM_ETL_PGBENCH", "1,10,3").split(",")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    sql(f"CREATE SCHEMA {schema}")
    env = {**os.environ, "PGOPTIONS": f"-c search_path={schema}", "PGHOST": "127.0.0.1"}
    bench = ["pgbench", "-U", "postgres", "test"]
    subprocess.run(
        [*bench[:3], "-i", "-s", scale, "-q", "test"], env=env, check=True, capture_output=True
    )
    script = tmp_path / "mutate.sql"
    script.write_text(PGBENCH_SCRIPT)
    capture = Capture(tmp_path, [f"{schema}.pgbench_accounts"], "aid", replicas=True)
    try:
        mutation = subprocess.Popen(
            [*bench[:3], "-n", "-c", "4", "-T", seconds, "-f", str(script), "test"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kills, runs, rng = 0, 0, random.Random(15)
        while mutation.poll() is None or kills < int(least):
            run = subprocess.Popen(
                capture.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if runs % 2 == 0:  # every other run is killed at a random moment
                time.sleep(rng.uniform(0.3, 3.0))
                if run.poll() is None:
                    run.send_signal(signal.SIGKILL)
                    kills += 1
            run.wait()
            runs += 1
            position = capture.state_position()
            if position is not None:  # the slot never runs ahead of what the target has
                assert capture.confirmed() <= position
        assert mutation.wait() == 0
        assert kills >= int(least)
        assert capture.run() == 0  # catch up after the mutation stopped
        columns = "aid, bid, abalance, filler"
        source = rows(f"{schema}.pgbench_accounts", columns, "aid")
        assert rows(capture.target, columns, "aid") == source
        assert capture.confirmed() <= capture.state_position()
        # The same changes reached MariaDB (merge) and the Parquet SCD2 history.
        from dbfixtures import my

        from beam_etl.io import parquet_history

        replica = my(f"SELECT {columns} FROM `{capture.target}` ORDER BY aid")
        assert [tuple(r) for r in replica] == [tuple(r) for r in source]
        current = parquet_history(str(capture.out / "history")).sort_by("aid")
        assert [(r["aid"], r["bid"], r["abalance"], r["filler"]) for r in current.to_pylist()] == [
            tuple(r) for r in source
        ]
    finally:
        capture.drop()
        sql(f"DROP SCHEMA {schema} CASCADE")


def test_follow_repeats_bounded_runs(shop, capsys):
    capture, table = shop
    assert capture.run("--follow", "--follow-runs", "2") == 0
    assert capsys.readouterr().out.count("succeeded") == 2
    sql(f"UPDATE {table} SET flag = NOT flag")
    assert capture.run("--follow", "--follow-runs", "1") == 0
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")


def test_two_worker_processes_give_the_same_target(shop):
    capture, table = shop
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    assert capture.run(*workers) == 0
    sql(f"UPDATE {table} SET name = name || '?' WHERE id % 3 = 0")
    sql(f"DELETE FROM {table} WHERE id % 7 = 0")
    assert capture.run(*workers) == 0
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")
    assert capture.replayed(COLUMNS.split(", ")) == rows(table, COLUMNS, "id")


def test_a_lost_slot_fails_the_run_in_one_line_saying_how_to_start_over(shop, capsys):
    capture, table = shop
    assert capture.run() == 0
    sql("SELECT pg_drop_replication_slot(%s)", (capture.slot,))
    capsys.readouterr()
    assert capture.run() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Replication slot")
    assert "state reset --source src" in err[0] and "Traceback" not in err[0]
    assert (
        main(["state", "reset", "--pipeline", str(capture.spec), "--output-dir", str(capture.out)])
        == 0
    )
    assert capture.run() == 0  # a new slot and snapshot
    assert rows(capture.target, COLUMNS, "id") == rows(table, COLUMNS, "id")
