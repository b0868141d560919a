"""The demo and an ETL spec give the same rows on every runner, real Flink and Spark included.

Runners: in process, 2 worker processes, Beam's Python job service (LOOPBACK and an EXTERNAL
worker pool), a local Flink 1.19.3 cluster (LOOPBACK and PROCESS workers) and a local Spark
3.5.7 cluster, both started once for this module by `scripts/clusters.sh` and stopped after
(unless they were already running). Outputs are compared as sorted, hashed rows: Parquet and
SQLite files, the PostgreSQL table, dead letters (without their run id) and the per-step counts
of the run report. A cluster that cannot be started fails these tests with its reason.
"""

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dbfixtures import pg, pg_connect

from beam_etl import clusters
from beam_etl.clusters import ClusterError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "clusters.sh"

ETL_SPEC = """\
name: flink_spark_etl
sources:
  - {name: src, type: ReadFromCsv,
     config: {path: "${SPEC_DIR}/in/*.csv", split_size_mb: 0.05, columns: {v: string}}}
steps:
  - {name: cast, type: CastColumns, input: src, config: {columns: {v: float64}}}
  - {name: dedupe, type: DropDuplicates, input: cast,
     config: {columns: [k], keep: last, order_by: v}}
  - {name: unique_codes, type: CheckUnique, input: dedupe,
     config: {columns: [code], reject: true, severity: warn}}
  - {name: by_bucket, type: Aggregate, input: unique_codes,
     config: {group_by: [bucket], aggregations: {n: count(*), total: sum(v), top: max(v)}}}
sinks:
  - {name: rows_pg, type: WriteToPostgres, input: unique_codes,
     config: {table: "${PG_TABLE}", database: test, mode: replace}}
  - {name: buckets, type: WriteToParquet, input: by_bucket, config: {path: "${OUTPUT_DIR}/buckets"}}
  - {name: dl, type: WriteToDeadLetters,
     inputs: [src.error, cast.error, unique_codes.error, rows_pg.error],
     config: {path: "${OUTPUT_DIR}/dl.jsonl"}}
"""


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with code {process.returncode} at start")
        with contextlib.closing(socket.socket()) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"{what} did not answer on port {port} within {seconds:.0f} s")


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster_env():
    """A local Flink and Spark cluster and the job-server jars (BEAM_ETL_* names to values)."""
    already = _script("status").returncode == 0
    started = _script("jars") if already else _script("up", "flink", "spark")
    if started.returncode == 0:
        started = _script("jars")
    if started.returncode != 0:
        _script("down", "flink", "spark")
        lines = (started.stderr.strip() or started.stdout.strip()).splitlines()
        pytest.fail(f"scripts/clusters.sh could not start the clusters: {lines[-1:]}")
    found = _script("env").stdout.split()
    yield dict(line.split("=", 1) for line in found)
    if not already:
        _script("down", "flink", "spark")


@pytest.fixture(scope="module")
def job_service():
    """Beam's Python job service on loopback."""
    port = _free_port()
    command = [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main"]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for_port(port, process, "the Beam job service")
    yield f"localhost:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker_pool():
    """An EXTERNAL worker pool from this venv (its python imports beam_etl)."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port, process, "the worker pool")
    yield f"localhost:{port}"
    process.terminate()
    process.wait(timeout=30)


def _runner_args(name: str, request) -> list[str]:
    """The Beam options of runner `name` (fixtures are asked for only when needed)."""
    if name == "in_process":
        return []
    if name == "two_processes":
        return ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    if name.startswith("portable"):
        endpoint = request.getfixturevalue("job_service")
        args = ["--runner=PortableRunner", f"--job_endpoint={endpoint}"]
        if name == "portable_external":
            pool = request.getfixturevalue("worker_pool")
            return [*args, "--environment_type=EXTERNAL", f"--environment_config={pool}"]
        return [*args, "--environment_type=LOOPBACK"]
    env = request.getfixturevalue("cluster_env")
    if name.startswith("flink"):
        args = [
            "--runner=FlinkRunner",
            f"--flink_master={env['BEAM_ETL_FLINK_MASTER']}",
            f"--flink_job_server_jar={env['BEAM_ETL_FLINK_JOB_SERVER_JAR']}",
            "--flink_version=1.19",
            "--parallelism=2",
        ]
        if name == "flink_process":
            boot = clusters.boot_command()
            config = json.dumps({"command": boot})
            return [*args, "--environment_type=PROCESS", f"--environment_config={config}"]
        return [*args, "--environment_type=LOOPBACK"]
    return [
        "--runner=SparkRunner",
        f"--spark_master_url={env['BEAM_ETL_SPARK_MASTER_URL']}",
        f"--spark_job_server_jar={env['BEAM_ETL_SPARK_JOB_SERVER_JAR']}",
        "--environment_type=LOOPBACK",
    ]


def _digest(rows: list) -> str:
    text = json.dumps(sorted(json.dumps(r, sort_keys=True, default=str) for r in rows))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dead_letters(path: Path) -> list:
    letters = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in letter.items() if k != "run_id"} for letter in letters]


def _steps(output: Path) -> list:
    report = json.loads((output / "run_report.json").read_text())
    kept = ("name", "rows_in", "rows_out", "rows_rejected", "rows_dropped")
    return [{k: v for k, v in step.items() if k in kept} for step in report["steps"]]


def _run(args: list[str], output: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "beam_etl.run", "--output-dir", str(output), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"{args}: {result.stderr[-2000:]}{result.stdout[-2000:]}"
    print(f"{output.name}: {seconds:.1f} s")


@pytest.fixture(scope="module")
def etl_input(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("etl")
    (folder / "in").mkdir()
    for part in range(3):  # a key's duplicates sit in different files and split ranges
        rows = [
            f"{(i * 7 + part) % 6000},{(i * 13 + part) % 997}.5,b{i % 11},c{(i * 31 + part) % 5900}"
            for i in range(9000)
        ]
        rows[part * 100 + 5] = f"{part},not-a-number,b1,cbad{part}"
        rows[part * 100 + 7] = "1,2"  # too few fields
        (folder / "in" / f"p{part}.csv").write_text("k,v,bucket,code\n" + "\n".join(rows) + "\n")
    (folder / "spec.yaml").write_text(ETL_SPEC)
    return folder


def _etl_outputs(etl_input: Path, name: str, args: list[str]) -> dict:
    table = f"flink_spark_{name}_{uuid.uuid4().hex[:6]}"
    output = etl_input / name
    pg_connect().close()  # fails naming scripts/services.sh when PostgreSQL is down
    try:
        _run(
            [
                "--pipeline",
                str(etl_input / "spec.yaml"),
                "--set",
                f"PG_TABLE={table}",
                *args,
            ],
            output,
        )
        rows = pg(f"SELECT k, v, bucket, code FROM {table}")
    finally:
        pg(f"DROP TABLE IF EXISTS {table}")
    return {
        "postgres": _digest([list(r) for r in rows]),
        "postgres_rows": len(rows),
        "buckets": _digest(pq.read_table(output / "buckets").to_pylist()),
        "dead_letters": _digest(_dead_letters(output / "dl.jsonl")),
        "steps": _steps(output),
    }


def _demo_outputs(root: Path, name: str, args: list[str]) -> dict:
    output = root / name
    _run(args, output)
    with contextlib.closing(sqlite3.connect(output / "warehouse.sqlite")) as db:
        sqlite_rows = [list(r) for r in db.execute("SELECT * FROM orders")]
    return {
        "parquet": _digest(pq.read_table(output / "orders").to_pylist()),
        "sqlite": _digest(sqlite_rows),
        "dead_letters": _digest(_dead_letters(output / "dead_letters.jsonl")),
        "steps": _steps(output),
    }


@pytest.fixture(scope="module")
def expected(etl_input, tmp_path_factory) -> dict:
    """What the in-process run writes, for both specs."""
    demo = _demo_outputs(tmp_path_factory.mktemp("demo"), "in_process", [])
    etl = _etl_outputs(etl_input, "in_process", [])
    return {"demo": demo, "etl": etl}


def test_in_process_etl_run_does_what_the_spec_says(expected):
    steps = {step["name"]: step for step in expected["etl"]["steps"]}
    assert steps["src"]["rows_rejected"] == 3  # one short row per file
    assert steps["cast"]["rows_rejected"] == 3  # one bad number per file
    assert steps["dedupe"]["rows_out"] == 6000
    assert steps["unique_codes"]["rows_rejected"] > 0
    assert expected["etl"]["postgres_rows"] == steps["unique_codes"]["rows_out"]
    assert steps["by_bucket"]["rows_out"] == 11


RUNNERS = [
    "two_processes",
    "portable_loopback",
    "portable_external",
    "flink",
    "flink_process",
    "spark",
]


@pytest.mark.parametrize("runner", RUNNERS)
def test_etl_spec_gives_the_same_rows_as_in_process(runner, request, etl_input, expected):
    outputs = _etl_outputs(etl_input, runner, _runner_args(runner, request))
    assert outputs == expected["etl"]


@pytest.mark.parametrize("runner", [r for r in RUNNERS if r != "flink_process"])
def test_demo_gives_the_same_rows_as_in_process(runner, request, tmp_path, expected):
    outputs = _demo_outputs(tmp_path, runner, _runner_args(runner, request))
    assert outputs == expected["demo"]


TIMERS_PIPELINE = """\
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue

TOTAL = userstate.CombiningValueStateSpec("total", sum)
FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)


class SumAtEndFn(beam.DoFn):
    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                total=beam.DoFn.StateParam(TOTAL), flush=beam.DoFn.TimerParam(FLUSH)):
        total.add(element[1])
        flush.set(timestamp + 100)

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, total=beam.DoFn.StateParam(TOTAL)):
        yield f"{key},{total.read()}"


with beam.Pipeline(options=PipelineOptions(sys.argv[2:])) as p:
    (p
     | beam.Create([(f"k{i % 5}", i) for i in range(1000)])
     | beam.Map(lambda kv: TimestampedValue(kv, kv[1]))
     | beam.ParDo(SumAtEndFn())
     | beam.io.WriteToText(sys.argv[1], shard_name_template=""))
"""


def test_stateful_dofn_with_event_time_timers_runs_on_flink(cluster_env, tmp_path):
    """What streaming CDC needs: per-key state and event-time timers, on the Flink cluster."""
    script = tmp_path / "timers.py"
    script.write_text(TIMERS_PIPELINE)
    out = tmp_path / "sums"
    options = [
        "--runner=FlinkRunner",
        f"--flink_master={cluster_env['BEAM_ETL_FLINK_MASTER']}",
        f"--flink_job_server_jar={cluster_env['BEAM_ETL_FLINK_JOB_SERVER_JAR']}",
        "--flink_version=1.19",
        "--environment_type=LOOPBACK",
        "--parallelism=2",
    ]
    result = subprocess.run(
        [sys.executable, str(script), str(out), *options],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(out.read_text().split())
    assert lines == [f"k{k},{sum(i for i in range(1000) if i % 5 == k)}" for k in range(5)]


# ------------------------------------------------------------------ checks before submitting


def _closed_port() -> int:
    return _free_port()  # nothing listens on a port just released


def _fails_fast(args: list[str], runner: str) -> str:
    started = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        clusters.prepare(args, runner)
    assert time.monotonic() - started < 8
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unreachable_flink_master_is_one_line_naming_the_script(cluster_env):
    port = _closed_port()
    message = _fails_fast([f"--flink_master=127.0.0.1:{port}"], "FlinkRunner")
    assert f"The Flink master does not answer at `http://127.0.0.1:{port}/overview`" in message
    assert "scripts/clusters.sh up flink" in message


def test_a_flink_master_that_is_not_flink_is_named(cluster_env):
    # the Spark master's web UI answers HTTP, but not as Flink's REST API
    state = (Path(clusters.cache_dir()) / "run" / "spark" / "ports.env").read_text()
    ui_port = dict(line.split("=") for line in state.split())["SPARK_MASTER_WEBUI_PORT"]
    message = _fails_fast([f"--flink_master=127.0.0.1:{ui_port}"], "FlinkRunner")
    assert "Flink" in message and "scripts/clusters.sh up flink" in message


def test_missing_job_server_jar_says_how_to_build_it(tmp_path):
    missing = tmp_path / "nowhere.jar"
    message = _fails_fast(
        ["--flink_master=127.0.0.1:1", f"--flink_job_server_jar={missing}"], "FlinkRunner"
    )
    assert message.startswith(f"The FlinkRunner job-server jar `{missing}` does not exist")
    assert "scripts/clusters.sh jars" in message


def test_default_options_name_the_cached_jar_and_loopback(cluster_env):
    master = cluster_env["BEAM_ETL_FLINK_MASTER"]
    args = clusters.prepare([f"--flink_master={master}"], "FlinkRunner")
    assert f"--flink_job_server_jar={clusters.job_server_jar('FlinkRunner')}" in args
    assert "--flink_version=1.19" in args and "--environment_type=LOOPBACK" in args
    spark = clusters.prepare(
        [f"--spark_master_url={cluster_env['BEAM_ETL_SPARK_MASTER_URL']}"], "SparkRunner"
    )
    assert f"--spark_job_server_jar={clusters.job_server_jar('SparkRunner')}" in spark


def test_wrong_flink_version_is_named(cluster_env):
    master = cluster_env["BEAM_ETL_FLINK_MASTER"]
    message = _fails_fast([f"--flink_master={master}", "--flink_version=1.20"], "FlinkRunner")
    assert "runs Flink 1.19.3, and `--flink_version` is 1.20" in message


def test_unreachable_spark_master_and_job_endpoint_are_one_line(cluster_env):
    port = _closed_port()
    spark = _fails_fast([f"--spark_master_url=spark://127.0.0.1:{port}"], "SparkRunner")
    assert spark.startswith(f"The Spark master does not answer at `spark://127.0.0.1:{port}`")
    assert "scripts/clusters.sh up spark" in spark
    portable = _fails_fast([f"--job_endpoint=localhost:{port}"], "PortableRunner")
    assert portable.startswith(f"No Beam job service answers at `--job_endpoint=localhost:{port}`")


def test_external_worker_pool_that_does_not_answer_is_named(job_service):
    port = _closed_port()
    message = _fails_fast(
        [
            f"--job_endpoint={job_service}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{port}",
        ],
        "PortableRunner",
    )
    assert message.startswith(f"No worker pool answers at `--environment_config=localhost:{port}`")
    assert "worker_pool_main" in message


def test_process_workers_that_cannot_import_beam_etl_are_named(job_service, tmp_path):
    boot = tmp_path / "boot"
    python = "/usr/bin/python3"  # the system python: no apache_beam, no beam_etl
    boot.write_text(f'#!/bin/sh\nexec {python} -m beam_etl.clusters boot "$@"\n')
    boot.chmod(0o755)
    message = _fails_fast(
        [
            f"--job_endpoint={job_service}",
            "--environment_type=PROCESS",
            f'--environment_config={{"command": "{boot}"}}',
        ],
        "PortableRunner",
    )
    assert message.startswith(f"The workers' python `{python}` cannot import apache_beam")
    assert "No module named" in message


# ------------------------------------------------- the README's Flink and Spark sections (last:
# they end with `scripts/clusters.sh down ...`)


def _readme_section(title: str) -> list[str]:
    """The lines of the ```bash blocks of the README section `### {title}`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert f"### {title}" in lines, f"README.md has no `### {title}` section (runner guide)"
    commands: list[str] = []
    fence = None
    for line in lines[lines.index(f"### {title}") + 1 :]:
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence is None and line.startswith("#"):
            break
        elif fence == "bash":
            commands.append(line)
    assert commands, f"README.md's `### {title}` section has no ```bash block"
    return commands


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--runner=FlinkRunner", "--flink_master=127.0.0.1:{port}"],
            "The Flink master does not answer",
        ),
        (
            ["--runner=SparkRunner", "--spark_master_url=spark://127.0.0.1:{port}"],
            "The Spark master does not answer",
        ),
        (
            ["--runner=PortableRunner", "--job_endpoint=localhost:{port}"],
            "No Beam job service answers",
        ),
        (
            [
                "--runner=FlinkRunner",
                "--flink_master=127.0.0.1:{port}",
                "--flink_job_server_jar=/nowhere.jar",
            ],
            "The FlinkRunner job-server jar `/nowhere.jar` does not exist",
        ),
    ],
    ids=["flink_master", "spark_master", "job_endpoint", "jar"],
)
def test_cli_says_in_one_line_within_seconds_what_is_missing(args, expected, cluster_env, tmp_path):
    port = _closed_port()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "beam_etl.run", "--output-dir", str(tmp_path)]
        + [arg.format(port=port) for arg in args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.stderr


def test_cli_gives_flink_the_cached_jar_and_loopback(cluster_env, tmp_path):
    """The short form the README's prose promises: only the runner and the master."""
    _run(
        ["--runner=FlinkRunner", f"--flink_master={cluster_env['BEAM_ETL_FLINK_MASTER']}"],
        tmp_path / "short",
    )


@pytest.mark.parametrize("title", ["Flink", "Spark"])
def test_readme_section_followed_word_for_word_in_a_clean_clone_finishes_a_job(
    title, cluster_env, tmp_path
):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    commands = _readme_section(title)
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=clone,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert "succeeded" in result.stdout
