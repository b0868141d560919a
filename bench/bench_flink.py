"""Benchmark (issue 16): the CSV -> validate -> Parquet spec on Flink against the local runner.

Usage: `PYTHONPATH=. python bench/bench_flink.py [--rows N ...] [--repeat K] [--variants ...]`
with a local Flink cluster up (`scripts/clusters.sh up flink && scripts/clusters.sh jars`).

One spec (below) over the cached orders CSV (`bench/datagen.py`, written once to `bench/data/`,
git-ignored): ReadFromCsv (nine typed columns, `amount` as text) -> CastColumns (`amount` to
float64) -> ValidateRecords (not_null customer_id, range amount, allowed country) ->
WriteToParquet, dead letters to JSONL. Each variant is a fresh `python -m beam_etl.run`, so the
wall time includes everything a user waits for (start-up, job submission, publishing):

- `local1`: beam_etl's LocalRunner, one in-process worker (the reference);
- `local2`: the same with two worker processes;
- `flink1`: a real local Flink 1.19.3 cluster through Beam's job server, `--parallelism=1`;
- `flink2`: the same with `--parallelism=2`.

Flink runs use PROCESS workers (`python -m beam_etl.clusters boot`) with
`--sdk_worker_parallelism` equal to `--parallelism`, so parallelism 2 gets two Python worker
processes, as `local2` does (Beam's default is one SDK worker per TaskManager, shared by its
slots); LOOPBACK would put every worker thread into the launching process (one GIL).

Variants run interleaved (local1, local2, flink1, flink2, local1, ...) after an untimed warm-up
round that also checks that all of them write the same rows (count and sum of `amount`, read
back from the Parquet output, and the number of dead letters). Medians and ratios to `local1`
(throughput ratio: local1 time / variant time) are printed per input size; nothing is asserted.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Final

BENCH_DIR: Final = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT: Final = os.path.dirname(BENCH_DIR)
OUT_DIR: Final = os.path.join(BENCH_DIR, "out", "flink")
sys.path.insert(0, BENCH_DIR)
import datagen  # noqa: E402 - the generator lives beside this script

SPEC: Final = """\
name: bench_flink
sources:
  - name: orders
    type: ReadFromCsv
    config:
      path: ${INPUT}
      columns: {id: int64, customer_id: int64, country: string, email: string,
                amount: string, quantity: int64, created_at: timestamp, active: bool,
                note: string}
steps:
  - {name: cast, type: CastColumns, input: orders, config: {columns: {amount: float64}}}
  - name: checks
    type: ValidateRecords
    input: cast
    config:
      checks:
        - {check: not_null, column: customer_id}
        - {check: range, column: amount, min: 0, max: 1000000}
        - {check: allowed_values, column: country,
           values: [FR, DE, US, GB, ES, IT, NL, BE, CH, PL, SE, JP, BR, CA]}
sinks:
  - {name: out, type: WriteToParquet, input: checks, config: {path: "${OUTPUT_DIR}/out"}}
  - {name: dl, type: WriteToDeadLetters, inputs: [orders.error, cast.error, checks.error],
     config: {path: "${OUTPUT_DIR}/dl.jsonl"}}
"""
VARIANTS: Final = ("local1", "local2", "flink1", "flink2")


def _cluster() -> dict[str, str]:
    script = os.path.join(REPO_ROOT, "scripts", "clusters.sh")
    found = subprocess.run(["bash", script, "env"], capture_output=True, text=True, check=True)
    env = dict(line.split("=", 1) for line in found.stdout.split())
    if "BEAM_ETL_FLINK_MASTER" not in env:
        sys.exit("no local Flink cluster: run `scripts/clusters.sh up flink` first")
    if not os.path.exists(env["BEAM_ETL_FLINK_JOB_SERVER_JAR"]):
        sys.exit("no Flink job-server jar: run `scripts/clusters.sh jars` first")
    return env


def _args(variant: str, env: dict[str, str], boot: str) -> list[str]:
    if variant == "local1":
        return []
    if variant == "local2":
        return ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    return [
        "--runner=FlinkRunner",
        f"--flink_master={env['BEAM_ETL_FLINK_MASTER']}",
        f"--flink_job_server_jar={env['BEAM_ETL_FLINK_JOB_SERVER_JAR']}",
        "--flink_version=1.19",
        f"--parallelism={variant[-1]}",
        f"--sdk_worker_parallelism={variant[-1]}",
        "--environment_type=PROCESS",
        f"--environment_config={json.dumps({'command': boot})}",
    ]


def _run(variant: str, spec: str, csv: str, env: dict[str, str], boot: str) -> tuple[float, dict]:
    output = os.path.join(OUT_DIR, variant)
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", spec, "--output-dir", output]
    command += ["--set", f"INPUT={csv}", *_args(variant, env, boot)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{variant} failed: {result.stderr.strip()[-1500:]}")
    return seconds, _check(output)


def _check(output: str) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(os.path.join(output, "out"), columns=["amount"])
    with open(os.path.join(output, "dl.jsonl"), "rb") as letters:
        rejected = sum(1 for _ in letters)
    return {
        "rows": table.num_rows,
        "amount": round(pc.sum(table["amount"]).as_py(), 2),
        "dead_letters": rejected,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[3_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    env = _cluster()
    from beam_etl.clusters import boot_command

    boot = boot_command()
    os.makedirs(OUT_DIR, exist_ok=True)
    spec = os.path.join(OUT_DIR, "spec.yaml")
    with open(spec, "w", encoding="utf-8") as out:
        out.write(SPEC)
    print(f"Flink master {env['BEAM_ETL_FLINK_MASTER']}, {os.cpu_count()} cores")
    for rows in args.rows:
        csv = datagen.ensure_csv(rows)
        size = os.path.getsize(csv) / 2**20
        print(f"\n{rows:,} rows ({size:.0f} MiB CSV)")
        checks = {}
        for variant in variants:  # untimed warm-up; every variant must write the same rows
            _, checks[variant] = _run(variant, spec, csv, env, boot)
        if len({json.dumps(c, sort_keys=True) for c in checks.values()}) != 1:
            sys.exit(f"variants disagree: {checks}")
        print(f"  every variant wrote {checks[variants[0]]}")
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeat):
            for variant in variants:
                seconds, found = _run(variant, spec, csv, env, boot)
                if found != checks[variant]:
                    sys.exit(f"{variant} wrote {found}, expected {checks[variant]}")
                times[variant].append(seconds)
        reference = statistics.median(times[variants[0]])
        for variant in variants:
            median = statistics.median(times[variant])
            runs = ", ".join(f"{t:.1f}" for t in times[variant])
            print(
                f"  {variant:<7} median {median:6.1f} s  {rows / median:>9,.0f} rows/s  "
                f"x{reference / median:.2f} of {variants[0]}  (runs: {runs})"
            )


if __name__ == "__main__":
    main()
