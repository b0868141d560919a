"""Benchmark: PostgreSQL logical replication -> PostgreSQL merge with `ReadFromPostgresChanges`,
as a user waits, against a plain psycopg2 loop that only reads and decodes (pgoutput) the same
slot range, in the same run.

Usage: `PYTHONPATH=. python bench/bench_pgcdc.py [--changes N,M] [--repeat K]`.

For each size N: a table gets N inserts (one `INSERT ... SELECT`), N updates and N/10 deletes
(about 2.1 N row changes in three large transactions), after a first capture run that took the
(empty) snapshot and confirmed the slot before them. A logical slot cannot be rewound, so every
measured run reads its own copy of that slot (`pg_copy_logical_replication_slot`). Then,
interleaved, every run a fresh process, medians of `--repeat` runs:

- `reference`: psycopg2's `LogicalReplicationConnection`, `start_replication` (pgoutput) from
  the slot's position up to the WAL position current when it starts (as a bounded run of
  `ReadFromPostgresChanges`: the WAL the other variants' targets wrote since is decoded by
  both), every message decoded (`beam_etl.io._pgoutput.decode`), nothing written;
- `beam_etl`: `python -m beam_etl.run` (ReadFromPostgresChanges -> WriteToPostgres merge with
  `hard_delete_column: deleted`, `dedup_sort: source_seq`) from a copy of the state the first
  run left, into an empty target table;
- `apply`: the same with `ApplyChanges` (the stateful DoFn) netting the events per key first;
- `existing`: as `beam_etl`, into a target table that exists already (empty, created with the
  types the sink would give it): the general merge path (staging table + `INSERT ... ON
  CONFLICT` + `DELETE`), where `beam_etl` into a new table COPYs the last row per key in;
- `parquet`: the capture alone, every event into Parquet (what the merge sink costs on top).

"x ref" is the reference's wall time over the variant's (1.00 = as fast). Peak memory is the
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
import pyarrow.parquet as pq

TABLE = "bench_pgcdc"
TARGET = "bench_pgcdc_dst"
SLOT = "beam_etl_bench_pgcdc_changes"
COLUMNS = "op, source_ts, source_name, source_position, source_table, source_txid, source_seq"
SPEC = f"""
name: bench_pgcdc
sources:
  - name: changes
    type: ReadFromPostgresChanges
    config: {{publication: {SLOT}, database: test, slot: "${{SLOT}}", batch_rows: 20000}}
steps:
  - name: net
    type: ApplyChanges
    input: changes
    config: {{primary_key: id}}
  - name: rows
    type: DropColumns
    input: net
    config: {{columns: [{COLUMNS}]}}
sinks:
  - name: target
    type: WriteToPostgres
    input: {{INPUT}}
    config: {{table: {TARGET}, database: test, mode: merge, primary_key: id,
              hard_delete_column: deleted{{SORT}}}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [changes.error, net.error, target.error]
    config: {{path: "${{OUTPUT_DIR}}/letters.jsonl"}}
"""
REFERENCE = """
import select, sys
import psycopg2
from psycopg2.extras import LogicalReplicationConnection
from beam_etl.io._pgoutput import Begin, Change, Commit, decode, lsn_int
slot, start, publication = sys.argv[1], sys.argv[2], sys.argv[4]
# Up to the WAL position current at the start, as a bounded run of ReadFromPostgresChanges:
# both decode the WAL written since the changes (the other variants' target tables) too.
with psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test") as now:
    with now.cursor() as query:
        query.execute("SELECT pg_current_wal_insert_lsn()::text")
        end = lsn_int(query.fetchone()[0])
connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test",
                              connection_factory=LogicalReplicationConnection)
cursor = connection.cursor()
cursor.start_replication(slot_name=slot, decode=False, start_lsn=start,
                         options={"proto_version": "1", "publication_names": publication})
changes, open_ = 0, False
while True:
    message = cursor.read_message()
    if message is None:
        if not open_ and cursor.wal_end >= end:
            break
        if not select.select([cursor], [], [], 1.0)[0]:
            cursor.send_feedback(reply=True)
        continue
    item = decode(message.payload)
    if isinstance(item, Begin):
        if item.final_lsn >= end:
            break
        open_ = True
    elif isinstance(item, Commit):
        open_ = False
    elif isinstance(item, Change):
        changes += 1
connection.close()
print(changes)
"""
MEASURE = """
import resource, subprocess, sys, time
start = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.monotonic() - start
if done.returncode:
    sys.exit(done.stderr + done.stdout)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(seconds, peak, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
"""


def pg(sql: str, params=None) -> list[tuple]:
    connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="test")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def measure(command: list[str]) -> tuple[float, float, str]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=2)
    return float(out[0]), float(out[1]), out[2] if len(out) > 2 else ""


def drop_slot(name: str) -> None:
    pg(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )


def cleanup() -> None:
    for slot in pg(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s", (SLOT + "%",)
    ):
        drop_slot(slot[0])
    pg(f"DROP PUBLICATION IF EXISTS {SLOT}")
    pg(f"DROP TABLE IF EXISTS {TABLE}")
    pg(f"DROP TABLE IF EXISTS {TARGET}")


PARQUET_SINKS = """sinks:
  - name: target
    type: WriteToParquet
    input: changes
    config: {path: "${OUTPUT_DIR}/events"}
  - name: letters
    type: WriteToDeadLetters
    inputs: [changes.error]
    config: {path: "${OUTPUT_DIR}/letters.jsonl"}
"""


EXISTING = (
    f"CREATE TABLE {TARGET} (id bigint PRIMARY KEY, customer_id bigint, amount numeric(12,2), "
    "note varchar(64), created_at timestamp, op text, source_ts timestamptz, source_name text, "
    "source_position text, source_table text, source_txid bigint, source_seq bigint)"
)


def write_spec(work: str, variant: str) -> str:
    if variant == "parquet":  # the capture alone: every event into Parquet
        path = os.path.join(work, "parquet.yaml")
        with open(path, "w", encoding="utf-8") as out:
            out.write(SPEC.partition("steps:")[0] + PARQUET_SINKS)
        return path
    if variant == "existing":  # the same spec as `beam_etl`
        return write_spec(work, "beam_etl")
    spec = SPEC.replace("{INPUT}", "rows" if variant == "apply" else "changes")
    spec = spec.replace("{SORT}", "" if variant == "apply" else ", dedup_sort: source_seq")
    if variant != "apply":  # the plain variant: no ApplyChanges step
        head, _, rest = spec.partition("steps:")
        spec = head + "sinks:" + rest.partition("sinks:")[2]
        spec = spec.replace("changes.error, net.error, target.error", "changes.error, target.error")
    path = os.path.join(work, f"{variant}.yaml")
    with open(path, "w", encoding="utf-8") as out:
        out.write(spec)
    return path


def prepare(changes: int, work: str) -> tuple[str, str, str]:
    """Make the table, take the empty snapshot, make the changes; return the slot's start, the
    end position and the folder holding the state after the snapshot."""
    cleanup()
    pg(
        f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, customer_id bigint, "
        "amount numeric(12,2), note varchar(64), created_at timestamp)"
    )
    pg(f"CREATE PUBLICATION {SLOT} FOR TABLE {TABLE}")
    spec = write_spec(work, "beam_etl")
    template = os.path.join(work, "template")
    run = [sys.executable, "-m", "beam_etl.run", "--pipeline", spec, "--output-dir", template]
    subprocess.run([*run, "--set", f"SLOT={SLOT}"], check=True, capture_output=True)
    start = pg(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
    )[0][0]
    pg(
        f"INSERT INTO {TABLE} SELECT i, i % 997, i / 100.0, 'note ' || i, "
        f"timestamp '2024-01-01' + i * interval '1 second' FROM generate_series(1, {changes}) i"
    )
    pg(f"UPDATE {TABLE} SET amount = amount + 1, note = note || '!'")
    pg(f"DELETE FROM {TABLE} WHERE id % 10 = 0")
    end = pg("SELECT pg_current_wal_insert_lsn()::text")[0][0]
    return start, end, template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", default="50000,200000", help="inserted rows per size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", action="store_true", help="print every run's time")
    args = parser.parse_args()
    variants = ("reference", "parquet", "beam_etl", "existing", "apply")
    print("size      events  variant    seconds  events/s   x ref  peak MiB")
    try:
        for changes in [int(n) for n in args.changes.split(",")]:
            with tempfile.TemporaryDirectory() as work:
                start, end, template = prepare(changes, work)
                specs = {v: write_spec(work, v) for v in variants[1:]}
                times: dict[str, list[float]] = {v: [] for v in variants}
                peaks: dict[str, list[float]] = {v: [] for v in variants}
                events = 0
                for round_ in range(args.repeat):
                    for variant in variants:
                        copy = f"{SLOT}_{round_}_{variant}"
                        pg("SELECT pg_copy_logical_replication_slot(%s, %s)", (SLOT, copy))
                        try:
                            if variant == "reference":
                                command = [sys.executable, "-c", REFERENCE, copy, start, end, SLOT]
                            else:
                                pg(f"DROP TABLE IF EXISTS {TARGET}")
                                if variant == "existing":
                                    pg(EXISTING)
                                out = os.path.join(work, "run")
                                shutil.rmtree(out, ignore_errors=True)
                                shutil.copytree(template, out)
                                command = [
                                    sys.executable,
                                    "-m",
                                    "beam_etl.run",
                                    "--pipeline",
                                    specs[variant],
                                    "--output-dir",
                                    out,
                                    "--set",
                                    f"SLOT={copy}",
                                    "--progress",
                                    "off",
                                ]
                            seconds, peak, found = measure(command)
                        finally:
                            drop_slot(copy)
                        if variant == "reference":
                            events = int(found)
                        elif variant == "parquet":
                            written = pq.read_table(os.path.join(work, "run", "events"))
                            assert written.num_rows == events, (written.num_rows, events)
                        else:
                            check = "SELECT count(*), sum(amount), sum(length(note)) FROM {}"
                            source, target = pg(check.format(TABLE)), pg(check.format(TARGET))
                            assert source == target, (variant, source, target)
                        times[variant].append(seconds)
                        peaks[variant].append(peak)
                        if args.rounds:
                            print(f"  round {round_ + 1} {variant:<10} {seconds:7.2f}", flush=True)
                reference = statistics.median(times["reference"])
                for name in variants:
                    median = statistics.median(times[name])
                    print(
                        f"{changes:<9} {events:<7} {name:<10} {median:7.2f} "
                        f"{events / median:9.0f} {reference / median:7.2f} "
                        f"{max(peaks[name]):9.0f}"
                    )
    finally:
        cleanup()


if __name__ == "__main__":
    began = time.monotonic()
    main()
    print(f"({time.monotonic() - began:.0f} s in all)")
