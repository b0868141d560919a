"""Benchmark: `DiffSnapshots` against a plain pyarrow join-based diff of the same two snapshots.

Usage: `python bench/bench_diff.py [--rows N] [--repeat K]` (default 3,000,000 rows, 3 rounds).

Two Parquet snapshots of one table (`id`, `name`, `city`, `amount`, `updated`) are generated
once under `bench/data/` (git-ignored): the second has 1% of rows changed, 0.5% deleted and
0.5% new. Each timed run is a whole process, start-up included (as a user waits), interleaved
with the other variant:

- `pyarrow`: read both snapshots, full outer join on `id`, compare every column, write the
  change events (`c`/`u`/`d`) to Parquet. The reference.
- `beam_etl`: `python -m beam_etl.run` on a spec `ReadFromParquet -> DiffSnapshots ->
  WriteToParquet`, whose state already holds the first snapshot (an untimed run loads it).

Both must find the same number of events of each kind, or the benchmark stops. Peak memory is
the largest resident set of the process tree (`/usr/bin/time -f %M` of the launcher; workers
are in-process). Timings are printed, never asserted.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(BENCH_DIR, "data")
OUT = os.path.join(BENCH_DIR, "out", "diff")

REFERENCE = r"""
import sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
old = pq.read_table(sys.argv[1]); new = pq.read_table(sys.argv[2])
columns = [c for c in new.column_names if c != "id"]
joined = new.join(old.rename_columns([f"old_{c}" if c != "id" else c for c in old.column_names]),
                  "id", join_type="full outer")
in_new = pc.is_valid(joined["name"])  # never null in a row that exists
in_old = pc.is_valid(joined["old_name"])
same = None
for c in columns:
    eq = pc.fill_null(pc.equal(joined[c], joined[f"old_{c}"]), False)
    both_null = pc.and_(pc.is_null(joined[c]), pc.is_null(joined[f"old_{c}"]))
    eq = pc.or_(eq, both_null)
    same = eq if same is None else pc.and_(same, eq)
changed = pc.if_else(same, "r", "u")
op = pc.if_else(pc.invert(in_old), "c", pc.if_else(pc.invert(in_new), "d", changed))
events = joined.select(["id", *columns]).append_column("op", op).filter(pc.not_equal(op, "r"))
pq.write_table(events, sys.argv[3])
"""

SPEC = """
name: bench_diff
sources:
  - name: snap
    type: ReadFromParquet
    config: {{path: "{path}"}}
steps:
  - name: changes
    type: DiffSnapshots
    input: snap
    config: {{primary_key: id}}
sinks:
  - name: events
    type: WriteToParquet
    input: changes
    config: {{path: "{out}/events"}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [changes.error]
    config: {{path: "{out}/letters.jsonl"}}
"""


def make_data(rows: int) -> tuple[str, str]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(DATA, exist_ok=True)
    old_path = os.path.join(DATA, f"snapshot_old_{rows}.parquet")
    new_path = os.path.join(DATA, f"snapshot_new_{rows}.parquet")
    if os.path.exists(old_path) and os.path.exists(new_path):
        return old_path, new_path
    rng = np.random.default_rng(7)
    ids = np.arange(rows, dtype=np.int64)
    cities = np.array(["Berlin", "Paris", "Rome", "Madrid", "Vienna", "Oslo"])
    old = pa.table(
        {
            "id": ids,
            "name": pa.array([f"customer {i}" for i in ids]),
            "city": pa.array(cities[rng.integers(0, len(cities), rows)]),
            "amount": pa.array(np.round(rng.random(rows) * 1000, 2)),
            "updated": pa.array(np.full(rows, 1_700_000_000_000_000), pa.timestamp("us")),
        }
    )
    pq.write_table(old, old_path)
    pick = rng.random(rows)
    changed, deleted = pick < 0.01, (pick >= 0.01) & (pick < 0.015)
    amount = old.column("amount").to_numpy().copy()
    amount[changed] += 1
    new = old.set_column(3, "amount", pa.array(amount)).filter(pa.array(~deleted))
    extra = rows // 200
    added = old.slice(0, extra).set_column(
        0, "id", pa.array(np.arange(rows, rows + extra, dtype=np.int64))
    )
    pq.write_table(pa.concat_tables([new, added]), new_path)
    return old_path, new_path


def timed(command: list[str], env: dict | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True, env=env
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return elapsed, int(result.stderr.strip().splitlines()[-1]) // 1024


def events_by_op(path: str) -> dict[str, int]:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(path).to_table(columns=["op"])
    counts = pc.value_counts(table.column("op")).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    old_path, new_path = make_data(args.rows)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    reference = os.path.join(OUT, "reference.py")
    with open(reference, "w") as out:
        out.write(REFERENCE)
    spec = os.path.join(OUT, "spec.yaml")
    work = os.path.join(OUT, "run")
    beam = [sys.executable, "-m", "beam_etl.run", "--pipeline", spec, "--output-dir", work]

    def load_old() -> None:  # the state holds the first snapshot before every timed run
        shutil.rmtree(work, ignore_errors=True)
        with open(spec, "w") as out:
            out.write(SPEC.format(path=old_path, out=work))
        timed(beam)
        with open(spec, "w") as out:
            out.write(SPEC.format(path=new_path, out=work))

    times: dict[str, list[float]] = {"pyarrow": [], "beam_etl": []}
    memory: dict[str, list[int]] = {"pyarrow": [], "beam_etl": []}
    expected = None
    for round_ in range(args.repeat + 1):  # round 0 warms the page cache, untimed
        events = os.path.join(OUT, "reference_events.parquet")
        seconds, peak = timed([sys.executable, reference, old_path, new_path, events])
        found = events_by_op(events)
        expected = expected or found
        if round_:
            times["pyarrow"].append(seconds)
            memory["pyarrow"].append(peak)
        load_old()
        seconds, peak = timed(beam)
        with open(os.path.join(work, "run_report.json")) as source:
            report = json.load(source)
        assert report["status"] == "succeeded", report
        got = events_by_op(os.path.join(work, "events"))
        if got != expected:
            sys.exit(f"beam_etl found {got}, pyarrow {expected}")
        if round_:
            times["beam_etl"].append(seconds)
            memory["beam_etl"].append(peak)
    ref = statistics.median(times["pyarrow"])
    print(f"{args.rows:,} rows, events {expected}, medians of {args.repeat}, whole processes")
    for name in ("pyarrow", "beam_etl"):
        median = statistics.median(times[name])
        print(
            f"{name:10} {median:7.2f} s  {ref / median:5.2f}x pyarrow's speed  "
            f"peak {max(memory[name]):,} MiB"
        )


if __name__ == "__main__":
    main()
