"""ReadFromMySqlChanges on the real MariaDB binlog, applied to PostgreSQL with `merge`: the
target equals the source after snapshots, changes, failed and killed runs."""

import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pyarrow.parquet as pq
import pymysql
import pytest
from dbfixtures import my, my_connect, pg, unique_table

from beam_etl.core.state import StateStore
from beam_etl.io._binlog import Position, plain, time_text
from beam_etl.io._changes import CHANGE_FIELDS
from beam_etl.io.mysqlio import ReadFromMySql
from beam_etl.run import main

SPEC = """
name: mycdc_{table}
sources:
  - name: changes
    type: ReadFromMySqlChanges
    config: {{tables: [{table}], database: test, batch_rows: 200{extra}}}
sinks:
  - name: target
    type: WriteToPostgres
    input: changes
    config: {{table: {table}, database: test, mode: merge, primary_key: id,
              hard_delete_column: deleted, dedup_sort: source_seq, on_reject: {on_reject}}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [changes.error, target.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""
COLUMNS = "id, name, amount, at, flag"
TABLE = "(id int PRIMARY KEY, name varchar(40), amount decimal(12,2), at datetime(6), flag bool)"
RUN = [sys.executable, "-m", "beam_etl.run"]


@pytest.fixture(scope="module", autouse=True)
def binlog_metadata():
    """Column names in the binlog: `binlog_row_metadata = FULL` (dynamic; the services script
    configures ROW format and full images, not yet this)."""
    if my("SELECT @@GLOBAL.binlog_row_metadata")[0][0] != "FULL":
        my("SET GLOBAL binlog_row_metadata = FULL")


@pytest.fixture
def case(tmp_path):
    table = unique_table("mycdc")
    my(f"CREATE TABLE {table} {TABLE}")
    out = tmp_path / "out"

    def spec(on_reject: str, extra: str) -> str:
        path = tmp_path / f"spec_{on_reject}.yaml"
        path.write_text(SPEC.format(table=table, on_reject=on_reject, extra=extra))
        return str(path)

    def command(on_reject: str = "dead_letter", extra: str = "") -> list[str]:
        return [*RUN, "--pipeline", spec(on_reject, extra), "--output-dir", str(out)]

    yield table, command, out
    my(f"DROP TABLE IF EXISTS {table}")
    pg(f"DROP TABLE IF EXISTS {table}")


def source_rows(table: str) -> dict[int, tuple]:
    rows = my(f"SELECT {COLUMNS} FROM {table}")
    return {r[0]: (r[1], r[2], r[3], None if r[4] is None else bool(r[4])) for r in rows}


def target_rows(table: str) -> dict[int, tuple]:
    return {r[0]: tuple(r[1:]) for r in pg(f"SELECT {COLUMNS} FROM {table}")}


def report(out) -> dict:
    return json.loads((out / "run_report.json").read_text())


def rows_read(out) -> int:
    return next(s["rows_in"] for s in report(out)["steps"] if s["name"] == "changes")


def run_ok(command: list[str]) -> None:
    """Run the capture in this process (Beam imported once: about 0.5 s a run)."""
    assert main(command[len(RUN) :]) == 0


def run_process(command: list[str], timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr


def confirmed(out, table: str) -> dict:
    """The position the capture's state holds."""
    return StateStore(str(out / ".beam_etl" / "state.sqlite")).get(f"mycdc_{table}", "changes")


def test_snapshot_then_inserts_updates_deletes_keep_postgres_equal_to_mariadb(case):
    table, command, out = case
    values = ", ".join(
        f"({i}, 'name{i}', {i}.25, '2024-01-0{1 + i % 9} 10:00:00.{i:06d}', {i % 2})"
        for i in range(1, 41)
    )
    my(f"INSERT INTO {table} VALUES {values}")
    run_ok(command())
    assert rows_read(out) == 40  # the snapshot
    assert target_rows(table) == source_rows(table)
    with my_connect(autocommit=False) as connection, connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (100, 'new', 1.5, NULL, 1)")
        cursor.execute(f"UPDATE {table} SET name = 'changed' WHERE id <= 5")
        cursor.execute(f"DELETE FROM {table} WHERE id BETWEEN 6 AND 10")
        connection.commit()
        cursor.execute(f"UPDATE {table} SET id = 200 WHERE id = 11")  # a key change
        cursor.execute(f"INSERT INTO {table} VALUES (101, 'gone', 1, NULL, 0)")
        cursor.execute(f"DELETE FROM {table} WHERE id = 101")
        connection.commit()
        cursor.execute(f"INSERT INTO {table} VALUES (102, 'rolled back', 1, NULL, 0)")
        connection.rollback()
    run_ok(command())
    # 1 + 5 + 5 rows, the key change as a delete and an insert, insert + delete of 101
    assert rows_read(out) == 1 + 5 + 5 + 2 + 2
    assert target_rows(table) == source_rows(table)
    assert 11 not in target_rows(table) and 102 not in target_rows(table)
    run_ok(command())  # nothing changed: nothing read, nothing written
    assert rows_read(out) == 0
    assert target_rows(table) == source_rows(table)


def test_a_column_added_to_the_source_reaches_the_target(case):
    table, command, out = case
    my(f"INSERT INTO {table} VALUES (1, 'a', 1, NULL, 1), (2, 'b', 2, NULL, 0)")
    run_ok(command())
    my(f"UPDATE {table} SET name = 'before' WHERE id = 2")
    my(f"ALTER TABLE {table} ADD COLUMN extra int")
    my(f"INSERT INTO {table} (id, name, extra) VALUES (3, 'c', 7)")
    run_ok(command())
    assert rows_read(out) == 2
    assert target_rows(table) == source_rows(table)
    assert dict(pg(f"SELECT id, extra FROM {table}")) == {1: None, 2: None, 3: 7}


def test_a_bounded_run_stops_at_the_position_current_when_it_started(case):
    table, command, _out = case
    stop = threading.Event()
    written = []

    def writer():
        with my_connect(autocommit=True) as connection, connection.cursor() as cursor:
            key = 1
            while not stop.is_set():
                cursor.execute(f"INSERT INTO {table} (id, name) VALUES ({key}, 'w')")
                written.append(key)
                key += 1
                time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        run_process(command(), timeout=120)  # returns although rows keep arriving
        assert thread.is_alive()
        first = len(target_rows(table))
        time.sleep(0.3)
        run_process(command(), timeout=120)
        assert thread.is_alive() and len(target_rows(table)) > first
    finally:
        stop.set()
        thread.join()
    run_ok(command())
    assert sorted(target_rows(table)) == written == sorted(source_rows(table))


def test_a_failed_sink_confirms_no_position_and_the_next_run_redelivers(case):
    table, command, out = case
    my(f"INSERT INTO {table} VALUES (1, 'a', 1, NULL, 1), (2, 'b', 2, NULL, 0)")
    run_ok(command())
    before = confirmed(out, table)
    assert before is not None and "snapshot" in before
    pg(f"ALTER TABLE {table} ADD CONSTRAINT small CHECK (amount < 1000)")
    my(f"INSERT INTO {table} VALUES (3, 'c', 3, NULL, 1)")
    my(f"UPDATE {table} SET amount = 5000 WHERE id = 1")  # the target refuses it
    my(f"DELETE FROM {table} WHERE id = 2")
    failed = subprocess.run(command("fail"), capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    assert "small" in failed.stderr and "Traceback" not in failed.stderr
    assert confirmed(out, table) == before  # the position did not move
    assert sorted(target_rows(table)) == [1, 2]  # nothing was published
    pg(f"ALTER TABLE {table} DROP CONSTRAINT small")
    run_ok(command("fail"))
    assert rows_read(out) == 3  # the same three changes again
    assert target_rows(table) == source_rows(table)
    after = confirmed(out, table)
    assert "position" in after and after != before


def test_a_snapshot_published_but_not_confirmed_leaves_no_deleted_row_behind(case):
    table, command, out = case
    my(f"INSERT INTO {table} (id, name) VALUES " + ", ".join(f"({i}, 'a')" for i in range(1, 11)))
    env = {**os.environ, "BEAM_ETL_KILL_AT": "before_state_commit"}
    killed = subprocess.run(command(), env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(target_rows(table)) == list(range(1, 11))  # published, not confirmed
    assert confirmed(out, table) is None
    my(f"DELETE FROM {table} WHERE id <= 3")
    my(f"UPDATE {table} SET id = 40 WHERE id = 4")
    my(f"INSERT INTO {table} (id, name) VALUES (11, 'b')")
    run_ok(command())  # a new snapshot, and the binlog since the first one
    assert target_rows(table) == source_rows(table)
    assert sorted(target_rows(table)) == [5, 6, 7, 8, 9, 10, 11, 40]
    my(f"DELETE FROM {table} WHERE id = 5")
    run_ok(command())
    assert rows_read(out) == 1
    assert target_rows(table) == source_rows(table)


def _mutate(table: str, seed: int, keys: range, deadline: float, counts: dict) -> None:
    """Insert, update (keys too), delete rows of `keys` in small transactions until
    `deadline`; deadlocks are retried by the next iteration (their transaction rolled back)."""
    rng = random.Random(seed)
    with my_connect(autocommit=False) as connection, connection.cursor() as cursor:
        while time.monotonic() < deadline:
            try:
                for _ in range(rng.randint(1, 3)):
                    key = rng.choice(keys)
                    choice = rng.random()
                    if choice < 0.45:
                        cursor.execute(
                            f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY "
                            "UPDATE name = VALUES(name), amount = VALUES(amount)",
                            (key, f"n{rng.random():.6f}", Decimal(rng.randint(0, 99999)) / 100,
                             dt.datetime(2024, 1, 1) + dt.timedelta(seconds=rng.random() * 1e6),
                             rng.random() < 0.5),
                        )  # fmt: skip
                    elif choice < 0.75:
                        cursor.execute(
                            f"UPDATE {table} SET name = %s, flag = NOT flag WHERE id = %s",
                            (f"u{rng.random():.6f}", key),
                        )
                    elif choice < 0.8:
                        cursor.execute(
                            f"UPDATE IGNORE {table} SET id = %s WHERE id = %s",
                            (rng.choice(keys), key),
                        )
                    else:
                        cursor.execute(f"DELETE FROM {table} WHERE id = %s", (key,))
                connection.commit()
                counts["transactions"] += 1
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in (1205, 1213):  # lock wait timeout, deadlock
                    raise
                connection.rollback()


def test_kill_9_of_the_capture_during_mutations_loses_and_duplicates_nothing(case):
    """The capture runs in follow mode (a run every second) and is killed at random moments
    (and once right before a run's state commit) while three threads mutate the table."""
    table, command, _out = case
    follow = command(extra=", mode: follow, interval: 1s")
    my(f"INSERT INTO {table} (id, name, amount, flag) VALUES " + ", ".join(
        f"({i}, 'seed', 1, 1)" for i in range(1, 101)))  # fmt: skip
    counts = {"transactions": 0}
    deadline = time.monotonic() + 12
    threads = [
        threading.Thread(target=_mutate, args=(table, seed, range(1, 161), deadline, counts))
        for seed in range(3)
    ]
    for thread in threads:
        thread.start()
    rng = random.Random(15)
    kills, finished, attempt = 0, 0, 0
    try:
        while any(thread.is_alive() for thread in threads) or kills < 4:
            env = dict(os.environ)
            if attempt % 4 == 3:  # published, killed before the position is confirmed
                env["BEAM_ETL_KILL_AT"] = "before_state_commit"
            runs = ["--follow-runs", "2"] if attempt % 4 == 1 else []
            process = subprocess.Popen(
                follow + runs, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if runs:  # some follow two runs to their end
                assert process.wait(timeout=120) == 0, process.stderr.read()
                finished += 1
            else:
                try:
                    process.wait(timeout=rng.uniform(0.5, 5.0))
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                if process.returncode == -signal.SIGKILL:
                    kills += 1
            process.stderr.close()
            attempt += 1
    finally:
        for thread in threads:
            thread.join()
    print(f"kill -9: {kills} kills, {finished} finished, {attempt} processes, {counts}")
    assert finished >= 1 and counts["transactions"] > 100
    run_ok([*follow, "--follow-runs", "1"])  # catch up
    source, target = source_rows(table), target_rows(table)
    assert len(source) > 50
    lost = {k: v for k, v in source.items() if target.get(k) != v}
    extra = set(target) - set(source)
    assert (lost, extra) == ({}, set())
    assert target == source


TYPES = """(id int PRIMARY KEY, u int unsigned, big bigint unsigned, d decimal(20,6),
 f float, g double, dt datetime(6), ts timestamp(3) NULL, da date, y year, tm time(6),
 j json, b bit(8), e enum('a','b','c'), s set('x','y','z'), bl blob, vb varbinary(8),
 t text, v varchar(10), ok bool, l varchar(10) CHARACTER SET latin1)"""
TYPE_ROW = (
    "(%s, 4000000000, 18446744073709551615, 12345678901234.123456, 1.5, 2.25,"
    " '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123', '2024-02-03', 2024,"
    " '-838:59:58.5', '{\"a\": [1, 2]}', b'10101', 'b', 'z,x', x'00ff', x'01',"
    " 'héllo ✓ 😀', 'abc', 1, 'été')"
)


def test_events_have_the_types_read_from_mysql_gives_and_the_change_columns(tmp_path):
    table = unique_table("mycdct")
    my(f"CREATE TABLE {table} {TYPES}")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
name: mycdc_types_{table}
sources:
  - name: changes
    type: ReadFromMySqlChanges
    config: {{tables: [test.{table}]}}
sinks:
  - name: files
    type: WriteToParquet
    input: changes
    config: {{path: "${{OUTPUT_DIR}}/${{PART}}"}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [changes.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
""")
    out = tmp_path / "out"

    def run(part: str) -> object:
        code = main(["--pipeline", str(spec), "--output-dir", str(out), "--set", f"PART={part}"])
        assert code == 0
        return pq.read_table(out / part)

    try:
        my(f"INSERT INTO {table} VALUES {TYPE_ROW}", (1,))
        my(f"INSERT INTO {table} (id) VALUES (2)")
        snapshot = run("snapshot")
        my(f"INSERT INTO {table} VALUES {TYPE_ROW}", (3,))
        my(f"INSERT INTO {table} (id) VALUES (4)")
        my(f"UPDATE {table} SET v = 'def' WHERE id = 1")
        my(f"DELETE FROM {table} WHERE id = 2")
        changes = run("changes")
        my(f"UPDATE {table} SET b = b'10010101' WHERE id = 3")  # not UTF-8 as a byte
        high = run("high")
        my(f"UPDATE {table} SET b = b'10101' WHERE id = 3")  # ReadFromMySql cannot read it
        my(f"ALTER TABLE {table} DROP COLUMN tm")  # ReadFromMySql cannot read TIME (timedelta)
        expected = ReadFromMySql(table=table, database="test").sample(None)
    finally:
        my(f"DROP TABLE IF EXISTS {table}")
    names = expected.schema.names
    change_names = [f.name for f in CHANGE_FIELDS]
    assert snapshot.schema.names == [*names[:10], "tm", *names[10:], *change_names]
    for events in (snapshot, changes):
        assert events.select(names).schema == expected.schema
        assert [events.schema.field(n).type for n in change_names] == [
            f.type for f in CHANGE_FIELDS
        ]
    rows = {r["id"]: r for r in expected.to_pylist()}
    got = snapshot.to_pylist()
    assert [r["id"] for r in got] == [1, 2] and {r["op"] for r in got} == {"r"}
    assert [{n: r[n] for n in names} for r in got] == [{**rows[3], "id": 1}, {**rows[4], "id": 2}]
    assert got[0]["tm"] == "-838:59:58.500000" and got[0]["s"] == "x,z"
    assert got[0]["b"] == "\x15" and got[0]["j"] == '{"a": [1, 2]}'
    got = changes.sort_by("source_seq").to_pylist()
    assert [(r["id"], r["op"], r["deleted"]) for r in got] == [
        (3, "c", False), (4, "c", False), (1, "u", False), (2, "d", True)
    ]  # fmt: skip
    assert {n: got[0][n] for n in names} == rows[3] and got[0]["tm"] == "-838:59:58.500000"
    assert (got[0]["t"], got[0]["l"]) == ("héllo ✓ 😀", "été")  # utf8mb4 and latin1
    assert {n: got[2][n] for n in names} == rows[1]
    assert high.select(["id", "op", "b"]).to_pylist() == [{"id": 3, "op": "u", "b": "\x95"}]
    assert len({r["source_txid"] for r in got}) == 4 and all(r["source_txid"] for r in got)
    assert {r["source_table"] for r in got} == {f"test.{table}"}
    assert {r["source_name"] for r in got} == {"changes"}
    assert all(
        Position.parse(a["source_position"]).key() < Position.parse(b["source_position"]).key()
        for a, b in itertools.pairwise(got)
    )
    assert max(r["source_seq"] for r in snapshot.to_pylist()) < got[0]["source_seq"]
    now = dt.datetime.now(dt.UTC)
    assert all(now - dt.timedelta(minutes=5) < r["source_ts"] <= now for r in got)


def test_before_adds_the_old_row_of_updates_and_deletes(tmp_path):
    table = unique_table("mycdcb")
    my(f"CREATE TABLE {table} (id int PRIMARY KEY, name varchar(10), flag bool)")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
name: mycdc_before_{table}
sources:
  - name: changes
    type: ReadFromMySqlChanges
    config: {{tables: [{table}], database: test, before: true}}
sinks:
  - name: files
    type: WriteToParquet
    input: changes
    config: {{path: "${{OUTPUT_DIR}}/${{PART}}"}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [changes.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
""")
    out = tmp_path / "out"

    def run(part: str) -> list[tuple]:
        code = main(["--pipeline", str(spec), "--output-dir", str(out), "--set", f"PART={part}"])
        assert code == 0
        events = pq.read_table(out / part).sort_by("source_seq").to_pylist()
        return [(e["op"], e["id"], e["before"]) for e in events]

    try:
        my(f"INSERT INTO {table} VALUES (1, 'a', 1)")
        assert run("snapshot") == [("r", 1, None)]
        my(f"INSERT INTO {table} VALUES (2, 'b', 0)")
        my(f"UPDATE {table} SET name = 'c', flag = 0 WHERE id = 1")
        my(f"UPDATE {table} SET id = 3 WHERE id = 2")
        my(f"DELETE FROM {table} WHERE id = 1")
        old_1, old_2 = {"id": 1, "name": "a", "flag": True}, {"id": 2, "name": "b", "flag": False}
        assert run("changes") == [
            ("c", 2, None),
            ("u", 1, old_1),
            ("d", 2, old_2),
            ("c", 3, None),
            ("d", 1, {"id": 1, "name": "c", "flag": False}),
        ]
    finally:
        my(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (dt.timedelta(hours=838, minutes=59, seconds=59), "838:59:59"),
        (dt.timedelta(seconds=-1.5), "-00:00:01.500000"),
        (dt.timedelta(0), "00:00:00"),
    ],
    ids=["largest", "negative-fraction", "zero"],
)
def test_time_values_are_written_as_mysql_writes_them(value, text):
    assert time_text(value) == text
    assert plain(value) == text


def test_a_truncated_table_goes_to_the_dead_letters_with_its_position(case):
    table, command, out = case
    my(f"INSERT INTO {table} (id) VALUES (1), (2)")
    run_ok(command())
    my(f"TRUNCATE TABLE {table}")
    my(f"INSERT INTO {table} (id) VALUES (3)")
    run_ok(command())
    letters = [json.loads(line) for line in (out / "letters.jsonl").read_text().splitlines()]
    assert [(x["step"], x["reason"], x["source"]) for x in letters] == [
        ("changes", "truncate", f"test.{table}")
    ]
    assert "was truncated at `mysql-bin." in letters[0]["message"]
    assert rows_read(out) == 2  # the insert and the dead letter
    assert sorted(target_rows(table)) == [1, 2, 3]  # the target is the user's to empty


def test_follow_mode_repeats_bounded_runs_at_its_interval(case, capsys):
    table, command, _ = case
    stop = threading.Event()

    def writer():
        with my_connect(autocommit=True) as connection, connection.cursor() as cursor:
            for key in range(1, 10_000):
                if stop.wait(0.05):
                    break
                cursor.execute(f"INSERT INTO {table} (id, name) VALUES ({key}, 'f')")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        follow = command(extra=", mode: follow, interval: 1s")
        assert main([*follow[len(RUN) :], "--follow-runs", "3"]) == 0
    finally:
        stop.set()
        thread.join()
    assert capsys.readouterr().out.count(" succeeded in ") == 3
    assert main([*follow[len(RUN) :], "--follow-runs", "1"]) == 0  # catch up
    assert len(source_rows(table)) > 10
    assert target_rows(table) == source_rows(table)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (", server_id: 1", "`server_id` 1 is the server's own: choose another (step `changes`)"),
        (", mode: stream", "`mode` must be one of bounded, follow, not `stream`"),
        (", interval: soon", "`interval` must look like 30s, 5m, 1h, not `soon`"),
    ],
    ids=["server-id-of-the-server", "unknown-mode", "bad-interval"],
)
def test_configuration_errors_are_one_line(case, capsys, extra, message):
    _, command, _ = case
    assert main(command(extra=extra)[len(RUN) :]) in (1, 2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_an_unknown_table_is_one_line_naming_the_step(tmp_path):
    table = unique_table("mycdcx")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(table=table, on_reject="fail", extra=""))
    done = subprocess.run(
        [*RUN, "--pipeline", str(spec), "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (1, 2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "step `changes`" in lines[0] and table in lines[0], done.stderr
