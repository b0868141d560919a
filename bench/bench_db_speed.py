"""Benchmark: whole-process CSV -> database loads, as a user waits, against the database's own
bulk path driven by its command-line client, in the same run.

Usage: `PYTHONPATH=. python bench/bench_db_speed.py [--rows N] [--repeat K] [--cases ...]`.

Each case is a pair run interleaved (reference, beam_etl, reference, ...), every run a fresh
process; medians of `--repeat` runs. "x ref" is the reference's wall time over beam_etl's
(1.00 = as fast as the reference). Peak memory is the highest sum of the resident sizes of the
process tree, sampled every 50 ms. Before each case's rounds the tables of the previous case
are dropped, and every timed run waits for PostgreSQL's autovacuum workers to finish (a
3M-row load is vacuumed and analysed after it, and the merge case leaves millions of dead
rows: that work ran beside the next runs and slowed them).

- `pg_append` / `pg_replace`: `python -m beam_etl.run` (ReadFromCsv -> WriteToPostgres, a table
  that does not exist yet) vs `psql -1` with `CREATE TABLE` + `\\copy` of the same CSV.
- `pg_merge`: WriteToPostgres(mode: merge) into a table holding every row already vs `psql -1`
  with `\\copy` into a temporary table + `INSERT ... ON CONFLICT DO UPDATE`.
- `pg_replace_full`: WriteToPostgres(mode: replace) of a table holding every row already vs
  `psql -1` with `CREATE TABLE` new + `\\copy` + `DROP TABLE` old + rename.
- `my_append`: WriteToMySql(mode: append, new table) vs `mariadb -e "CREATE TABLE ...;
  LOAD DATA LOCAL INFILE ..."`.
- `pg_read`: ReadFromPostgres -> WriteToCsv of the full table vs `psql` with
  `\\copy bench_base TO file WITH (FORMAT csv)`.

With `--dlt-python PATH` (a Python that has `dlt[postgres,parquet]` 1.31 installed, kept out of
the project's requirements: e.g. `python -m venv /tmp/dlt && /tmp/dlt/bin/pip install
"dlt[postgres,parquet]==1.31.*"`), the PostgreSQL append and replace cases also time dlt in
the same rounds, on its fastest documented path for this: the CSV read by pyarrow into a table,
`pipeline.run(table, write_disposition=..., loader_file_format="csv")` (PostgreSQL `COPY`),
compression off, without its `_dlt_load_id`/`_dlt_id` columns, a fresh pipeline folder a run.

Needs the test servers (PostgreSQL 127.0.0.1:5432 user `postgres`, MariaDB 127.0.0.1:3306 user
`root`, database `test`) and their clients. Data: the orders CSV of `bench/datagen.py` under
`bench/data/` (never committed). Row counts are checked; timings are printed, never asserted.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen

PG_TABLE_COLUMNS = (
    "id bigint, customer_id bigint, country text, email text, amount text, quantity bigint, "
    "created_at timestamp, active boolean, note text"
)
MY_TABLE_COLUMNS = (
    "id bigint, customer_id bigint, country longtext, email longtext, amount longtext, "
    "quantity bigint, created_at datetime(6), active boolean, note longtext"
)
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-v", "ON_ERROR_STOP=1"]
MARIADB = ["mariadb", "-h", "127.0.0.1", "-u", "root", "test", "--local-infile=1"]
SPEC = """name: bench_db_speed
sources:
  - name: orders
    type: ReadFromCsv
    config:
      path: "{csv}"
      columns: {columns}
sinks:
  - name: load
    type: {sink}
    input: orders
    config: {config}
  - name: rejected
    type: WriteToDeadLetters
    inputs: [orders.error, load.error]
    config: {{path: "${{OUTPUT_DIR}}/rejected.jsonl"}}
"""


def _tree_rss(root: int) -> int:
    """Return the summed resident size (bytes) of `root` and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def timed(command: list[str], env: dict | None = None) -> tuple[float, int]:
    """Run `command`; return its wall time and the peak memory of its process tree."""
    _quiet_server()
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:3])}... failed: {stderr[-2000:]}")
    return wall, peak[0]


def psql(sql: str) -> str:
    return subprocess.run([*PSQL, "-Atc", sql], check=True, capture_output=True, text=True).stdout


def mariadb(sql: str) -> str:
    done = subprocess.run([*MARIADB, "-N", "-e", sql], check=True, capture_output=True, text=True)
    return done.stdout


def beam_run(spec_text: str, work: str) -> list[str]:
    spec = os.path.join(work, "spec.yaml")
    with open(spec, "w", encoding="utf-8") as out:
        out.write(spec_text)
    return [sys.executable, "-m", "beam_etl.run", "--pipeline", spec, "--output-dir", work]


def spec(csv: str, sink: str, config: str) -> str:
    columns = "{" + ", ".join(f"{k}: {v}" for k, v in datagen.COLUMN_TYPES.items()) + "}"
    return SPEC.format(csv=csv, columns=columns, sink=sink, config=config)


DLT = """
import os, sys, tempfile
import pyarrow.csv as pacsv
import dlt
csv, mode, table = sys.argv[1], sys.argv[2], sys.argv[3]
# dlt asks for a password; the test server trusts local users and ignores it
os.environ["DESTINATION__POSTGRES__CREDENTIALS"] = "postgresql://postgres:x@127.0.0.1:5432/test"
os.environ["DATA_WRITER__DISABLE_COMPRESSION"] = "true"
os.environ["NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID"] = "false"
os.environ["NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_ID"] = "false"
options = pacsv.ConvertOptions(column_types={"amount": "string", "created_at": "timestamp[us]"})
data = pacsv.read_csv(csv, convert_options=options)
with tempfile.TemporaryDirectory() as folder:
    pipeline = dlt.pipeline("bench_db_speed", destination="postgres", dataset_name="bench_dlt",
                            pipelines_dir=folder)
    pipeline.run(data, table_name=table, write_disposition=mode, loader_file_format="csv")
"""


def case_dlt(mode: str, csv: str, rows: int, python: str):
    """dlt loading the same CSV into a new table (`bench_dlt.bench_dlt`)."""

    def run() -> tuple[float, int]:
        psql("DROP SCHEMA IF EXISTS bench_dlt CASCADE")
        disposition = "replace" if mode == "replace" else "append"
        result = timed([python, "-c", DLT, csv, disposition, "bench_dlt"])
        assert int(psql("SELECT count(*) FROM bench_dlt.bench_dlt")) == rows
        return result

    return run


def case_pg(mode: str, csv: str, rows: int, work: str):
    def reference() -> tuple[float, int]:
        psql("DROP TABLE IF EXISTS bench_ref")
        if mode == "replace_full":  # a full table replaced: a new table, \\copy, swapped in
            psql(f"CREATE TABLE bench_ref ({PG_TABLE_COLUMNS})")
            psql(f"INSERT INTO bench_ref SELECT * FROM {base}")
            script = [
                "-1",
                "-c",
                f"CREATE TABLE bench_ref_new ({PG_TABLE_COLUMNS})",
                "-c",
                f"\\copy bench_ref_new FROM '{csv}' WITH (FORMAT csv, HEADER)",
                "-c",
                "DROP TABLE bench_ref",
                "-c",
                "ALTER TABLE bench_ref_new RENAME TO bench_ref",
            ]
        elif mode == "merge":
            psql(f"CREATE TABLE bench_ref ({PG_TABLE_COLUMNS}, PRIMARY KEY (id))")
            psql(f"INSERT INTO bench_ref SELECT * FROM {base}")
            script = [
                "-1",
                "-c",
                "CREATE TEMP TABLE s (LIKE bench_ref) ON COMMIT DROP",
                "-c",
                f"\\copy s FROM '{csv}' WITH (FORMAT csv, HEADER)",
                "-c",
                "INSERT INTO bench_ref SELECT * FROM s ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = EXCLUDED.{c}" for c in datagen.COLUMN_TYPES if c != "id"),
            ]
        else:
            script = [
                "-1",
                "-c",
                f"CREATE TABLE bench_ref ({PG_TABLE_COLUMNS})",
                "-c",
                f"\\copy bench_ref FROM '{csv}' WITH (FORMAT csv, HEADER)",
            ]
        result = timed([*PSQL, *script])
        assert int(psql("SELECT count(*) FROM bench_ref")) == rows
        return result

    keys = ", primary_key: id" if mode == "merge" else ""
    sink_mode = "replace" if mode == "replace_full" else mode
    command = beam_run(
        spec(
            csv,
            "WriteToPostgres",
            f"{{table: bench_beam, mode: {sink_mode}, database: test{keys}}}",
        ),
        work,
    )

    def beam_etl() -> tuple[float, int]:
        psql("DROP TABLE IF EXISTS bench_beam")
        if mode == "merge":
            psql(f"CREATE TABLE bench_beam ({PG_TABLE_COLUMNS}, PRIMARY KEY (id))")
            psql(f"INSERT INTO bench_beam SELECT * FROM {base}")
        elif mode == "replace_full":
            psql(f"CREATE TABLE bench_beam ({PG_TABLE_COLUMNS})")
            psql(f"INSERT INTO bench_beam SELECT * FROM {base}")
        result = timed(command)
        assert int(psql("SELECT count(*) FROM bench_beam")) == rows
        return result

    base = "bench_base"
    if mode in ("merge", "replace_full"):  # the full table both sides start from
        _base(csv)
    return reference, beam_etl


def case_my(csv: str, rows: int, work: str):
    def reference() -> tuple[float, int]:
        mariadb("DROP TABLE IF EXISTS bench_ref")
        sql = (
            f"CREATE TABLE bench_ref ({MY_TABLE_COLUMNS}); "
            f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE bench_ref FIELDS TERMINATED BY ',' "
            "OPTIONALLY ENCLOSED BY '\"' IGNORE 1 LINES "
            "(id, customer_id, @country, @email, @amount, @quantity, @created_at, @active, @note) "
            "SET country = NULLIF(@country, ''), email = NULLIF(@email, ''), "
            "amount = NULLIF(@amount, ''), quantity = NULLIF(@quantity, ''), "
            "created_at = NULLIF(@created_at, ''), active = (@active = 'true'), "
            "note = NULLIF(@note, '')"
        )
        result = timed([*MARIADB, "-e", sql])
        assert int(mariadb("SELECT count(*) FROM bench_ref")) == rows
        return result

    command = beam_run(
        spec(csv, "WriteToMySql", "{table: bench_beam, mode: append, database: test}"), work
    )

    def beam_etl() -> tuple[float, int]:
        mariadb("DROP TABLE IF EXISTS bench_beam")
        result = timed(command)
        assert int(mariadb("SELECT count(*) FROM bench_beam")) == rows
        return result

    return reference, beam_etl


READ_SPEC = """name: bench_db_read
sources:
  - name: orders
    type: ReadFromPostgres
    config: {{table: bench_base, database: test}}
sinks:
  - name: out
    type: WriteToCsv
    input: orders
    config: {{path: "{out}"}}
"""


def _lines(path: str) -> int:
    with open(path, "rb") as source:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: source.read(1 << 24), b""))


def case_pg_read(csv: str, rows: int, work: str):
    """ReadFromPostgres -> WriteToCsv against `psql \\copy bench_base TO file` (CSV)."""
    _base(csv)
    ref_out, beam_out = os.path.join(work, "ref.csv"), os.path.join(work, "beam.csv")

    def reference() -> tuple[float, int]:
        result = timed([*PSQL, "-c", f"\\copy bench_base TO '{ref_out}' WITH (FORMAT csv)"])
        assert _lines(ref_out) == rows
        return result

    command = beam_run(READ_SPEC.format(out=beam_out), work)

    def beam_etl() -> tuple[float, int]:
        result = timed(command)
        assert _lines(beam_out) == rows + 1  # with its header
        return result

    return reference, beam_etl


def _base(csv: str) -> None:
    """Load the CSV once into `bench_base` (the table reads and full-table cases start from)."""
    psql("DROP TABLE IF EXISTS bench_base")
    psql(f"CREATE TABLE bench_base ({PG_TABLE_COLUMNS}, PRIMARY KEY (id))")
    subprocess.run(
        [*PSQL, "-c", f"\\copy bench_base FROM '{csv}' WITH (FORMAT csv, HEADER)"], check=True
    )
    psql("VACUUM ANALYZE bench_base")  # settled now, not by autovacuum during timed rounds


def _settle() -> None:
    """Let the servers finish what earlier cases left them: the tables of the last case are
    dropped, and the rounds wait for PostgreSQL's autovacuum workers (a merge leaves millions
    of dead rows; their vacuum ran beside the next case's rounds and slowed both sides)."""
    psql("DROP TABLE IF EXISTS bench_ref; DROP TABLE IF EXISTS bench_beam")
    mariadb("DROP TABLE IF EXISTS bench_ref; DROP TABLE IF EXISTS bench_beam")
    _quiet_server()


def _quiet_server() -> None:
    """Wait (up to 2 minutes) until no autovacuum worker runs: every timed run starts with the
    server idle (a 3M-row load of the round's previous run is vacuumed and analysed after it)."""
    busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    deadline = time.monotonic() + 120
    while int(psql(busy)) and time.monotonic() < deadline:
        time.sleep(0.2)


CASES = ("pg_append", "pg_replace", "pg_replace_full", "pg_merge", "my_append", "pg_read")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--dlt-python", help="a Python with dlt 1.31 installed (see above)")
    args = parser.parse_args(argv)
    csv = os.path.abspath(datagen.ensure_csv(args.rows))
    print(
        f"{args.rows:,} rows, {os.path.getsize(csv) / 2**20:,.0f} MiB CSV; medians of "
        f"{args.repeat}, whole processes"
    )
    print(
        f"{'case':<11} {'reference s':>11} {'beam_etl s':>10} {'x ref':>6} "
        f"{'ref MiB':>8} {'beam MiB':>9}"
        + (f" {'dlt s':>7} {'dlt x ref':>9} {'dlt MiB':>8}" if args.dlt_python else "")
    )
    with tempfile.TemporaryDirectory() as work:
        for name in args.cases:
            if name == "my_append":
                reference, beam_etl = case_my(csv, args.rows, work)
            elif name == "pg_read":
                reference, beam_etl = case_pg_read(csv, args.rows, work)
            elif name == "pg_replace_full":
                reference, beam_etl = case_pg("replace_full", csv, args.rows, work)
            else:
                reference, beam_etl = case_pg(name.split("_")[1], csv, args.rows, work)
            dlt = None
            if args.dlt_python and name in ("pg_append", "pg_replace"):
                dlt = case_dlt(name.split("_")[1], csv, args.rows, args.dlt_python)
            _settle()
            ref_runs, beam_runs, dlt_runs = [], [], []
            for _ in range(args.repeat):
                ref_runs.append(reference())
                beam_runs.append(beam_etl())
                if dlt is not None:
                    dlt_runs.append(dlt())
            ref = statistics.median(w for w, _ in ref_runs)
            ours = statistics.median(w for w, _ in beam_runs)
            ref_peak = max(p for _, p in ref_runs) / 2**20
            our_peak = max(p for _, p in beam_runs) / 2**20
            theirs = ""
            if dlt_runs:
                median = statistics.median(w for w, _ in dlt_runs)
                peak = max(p for _, p in dlt_runs) / 2**20
                theirs = f" {median:>7.2f} {ref / median:>9.2f} {peak:>8.0f}"
            print(
                f"{name:<11} {ref:>11.2f} {ours:>10.2f} {ref / ours:>6.2f} "
                f"{ref_peak:>8.0f} {our_peak:>9.0f}{theirs}",
                flush=True,
            )
    psql(
        "DROP TABLE IF EXISTS bench_ref; DROP TABLE IF EXISTS bench_beam; "
        "DROP TABLE IF EXISTS bench_base; DROP SCHEMA IF EXISTS bench_dlt CASCADE"
    )
    mariadb("DROP TABLE IF EXISTS bench_ref; DROP TABLE IF EXISTS bench_beam")


if __name__ == "__main__":
    main()
