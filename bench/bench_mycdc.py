"""Benchmark: MariaDB binlog -> PostgreSQL merge with `ReadFromMySqlChanges`, as a user waits,
against a plain `mysql-replication` loop that only reads and decodes the same binlog range, in
the same run.

Usage: `PYTHONPATH=. python bench/bench_mycdc.py [--changes N,M] [--repeat K]`.

For each size N: a table gets N inserts (one `INSERT ... SELECT`), N updates and N/10 deletes
(about 2.1 N row changes, in a few large transactions), after a first capture run that took
the (empty) snapshot and confirmed the position before them. Then, interleaved, every run a
fresh process, medians of `--repeat` runs:

- `reference`: `BinLogStreamReader` from that position to the end, every row decoded
  (`event.rows`), nothing written;
- `beam_etl`: `python -m beam_etl.run` (ReadFromMySqlChanges -> WriteToPostgres merge with
  `hard_delete_column: deleted`, `dedup_sort: source_seq`) from a copy of the state the first
  run left, into an empty target table.

"x ref" is the reference's wall time over beam_etl's (1.00 = as fast). Peak memory is the
largest resident size of the measured process tree (`ru_maxrss` of its children). The target
is checked against the source after every beam_etl run. Needs the test servers; timings are
printed, never asserted (the machine is shared: read them as ratios of one run).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg2
import pymysql

TABLE = "bench_mycdc"
SPEC = f"""
name: bench_mycdc
sources:
  - name: changes
    type: ReadFromMySqlChanges
    config: {{tables: [{TABLE}], database: test, batch_rows: 20000}}
sinks:
  - name: target
    type: WriteToPostgres
    input: changes
    config: {{table: {TABLE}, database: test, mode: merge, primary_key: id,
              hard_delete_column: deleted, dedup_sort: source_seq}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [changes.error, target.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""
REFERENCE = """
import sys
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
file, pos, end_file, end_pos = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
stream = BinLogStreamReader(
    connection_settings={"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": ""},
    server_id=424242, resume_stream=True, log_file=file, log_pos=pos, blocking=False,
    only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent],
    only_tables=[sys.argv[5]], only_schemas=["test"], enable_logging=False)
rows = 0
for event in stream:
    if not isinstance(event, XidEvent):
        rows += len(event.rows)
    if (stream.log_file, event.packet.log_pos) >= (end_file, end_pos):
        break
stream.close()
print(rows)
"""
MEASURE = """
import resource, subprocess, sys, time
start = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.monotonic() - start
if done.returncode:
    sys.exit(done.stderr)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(seconds, peak, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
"""


def my(sql: str) -> list[tuple]:
    connection = pymysql.connect(host="127.0.0.1", user="root", password="", database="test")
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            found = cursor.fetchall()
        connection.commit()
        return list(found)
    finally:
        connection.close()


def pg(sql: str) -> list[tuple]:
    connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def measure(command: list[str]) -> tuple[float, float, str]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=2)
    return float(out[0]), float(out[1]), out[2] if len(out) > 2 else ""


def prepare(changes: int, work: str) -> tuple[list[str], str]:
    """Make the table, take the empty snapshot, make the changes; return the reference's
    arguments and the folder holding the state after the snapshot."""
    my(f"DROP TABLE IF EXISTS {TABLE}")
    pg(f"DROP TABLE IF EXISTS {TABLE}")
    my(
        f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, customer_id bigint, "
        "amount decimal(12,2), note varchar(64), created_at datetime(6))"
    )
    spec = os.path.join(work, "spec.yaml")
    with open(spec, "w", encoding="utf-8") as out:
        out.write(SPEC)
    template = os.path.join(work, "template")
    run = [sys.executable, "-m", "beam_etl.run", "--pipeline", spec, "--output-dir", template]
    subprocess.run(run, check=True, capture_output=True)
    start = my("SHOW MASTER STATUS")[0][:2]
    my(
        f"INSERT INTO {TABLE} SELECT seq, seq % 997, seq / 100, CONCAT('note ', seq), "
        f"'2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_{changes}"
    )
    my(f"UPDATE {TABLE} SET amount = amount + 1, note = CONCAT(note, '!')")
    my(f"DELETE FROM {TABLE} WHERE id % 10 = 0")
    end = my("SHOW MASTER STATUS")[0][:2]
    return [start[0], str(start[1]), end[0], str(end[1]), TABLE], template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", default="50000,200000", help="inserted rows per size")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("size      events  variant    seconds  events/s   x ref  peak MiB")
    for changes in [int(n) for n in args.changes.split(",")]:
        with tempfile.TemporaryDirectory() as work:
            window, template = prepare(changes, work)
            spec = os.path.join(work, "spec.yaml")
            times: dict[str, list[float]] = {"reference": [], "beam_etl": []}
            peaks: dict[str, list[float]] = {"reference": [], "beam_etl": []}
            events = 0
            for _ in range(args.repeat):
                seconds, peak, found = measure([sys.executable, "-c", REFERENCE, *window])
                events = int(found)
                times["reference"].append(seconds)
                peaks["reference"].append(peak)
                pg(f"DROP TABLE IF EXISTS {TABLE}")
                out = os.path.join(work, "run")
                shutil.rmtree(out, ignore_errors=True)
                shutil.copytree(template, out)
                command = ["--pipeline", spec, "--output-dir", out]
                seconds, peak, _ = measure([sys.executable, "-m", "beam_etl.run", *command])
                times["beam_etl"].append(seconds)
                peaks["beam_etl"].append(peak)
                source = my(f"SELECT count(*), sum(amount), sum(length(note)) FROM {TABLE}")
                target = pg(f"SELECT count(*), sum(amount), sum(length(note)) FROM {TABLE}")
                assert [tuple(map(str, source[0]))] == [tuple(map(str, target[0]))], (
                    source,
                    target,
                )
            reference = statistics.median(times["reference"])
            for name in ("reference", "beam_etl"):
                median = statistics.median(times[name])
                print(
                    f"{changes:<9} {events:<7} {name:<10} {median:7.2f} {events / median:9.0f} "
                    f"{reference / median:7.2f} {max(peaks[name]):9.0f}"
                )
        my(f"DROP TABLE IF EXISTS {TABLE}")
        pg(f"DROP TABLE IF EXISTS {TABLE}")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"({time.monotonic() - start:.0f} s in all)")
