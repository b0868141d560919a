"""One spec, the same rows: in process, on 2 worker processes, and on a Beam job service."""

import contextlib
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from dbfixtures import pg_connect

SPEC = """\
name: runners
sources:
  - {name: src, type: ReadFromCsv, config: {path: "${SPEC_DIR}/in/*.csv", split_size_mb: 0.02}}
steps:
  - {name: cast, type: CastColumns, input: src, config: {columns: {v: float64}}}
  - {name: dedupe, type: DropDuplicates, input: cast, config: {columns: [k], keep: last,
     order_by: v}}
  - {name: big, type: FilterRows, input: dedupe, config: {where: "v >= 10"}}
sinks:
  - {name: out, type: WriteToParquet, input: big, config: {path: "${OUTPUT_DIR}/out"}}
  - {name: dl, type: WriteToDeadLetters, inputs: [src.error, cast.error, big.error],
     config: {path: "${OUTPUT_DIR}/dl.jsonl"}}
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runners")
    (folder / "in").mkdir()
    for part in range(3):  # duplicates of a key sit in different files and batches
        rows = [f"{(i * 7 + part) % 5000},{(i * 13 + part) % 97}" for i in range(8000)]
        rows[part * 100 + 5] = "bad,value"
        (folder / "in" / f"p{part}.csv").write_text("k,v\n" + "\n".join(rows) + "\n")
    (folder / "spec.yaml").write_text(SPEC)
    return folder


def _run(spec, name: str, *beam_args: str) -> list[tuple]:
    output = spec / name
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_etl.run",
            "--pipeline",
            str(spec / "spec.yaml"),
            "--output-dir",
            str(output),
            *beam_args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    table = pq.read_table(output / "out")
    return sorted(zip(table.column("k").to_pylist(), table.column("v").to_pylist()))


@pytest.fixture(scope="module")
def in_process(spec):
    return _run(spec, "in_process")


def test_in_process_result_is_what_the_spec_says(in_process):
    assert len(in_process) == len({k for k, _ in in_process})
    assert all(v >= 10 for _, v in in_process)
    assert len(in_process) > 1000


def test_two_worker_processes_give_the_same_rows(spec, in_process):
    rows = _run(spec, "multi", "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert rows == in_process


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def job_service():
    """Beam's Python job service on loopback, started for these tests and stopped after."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket()) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the Beam job service did not start within 60 s")
    yield f"localhost:{port}"
    process.terminate()
    process.wait(timeout=30)


def test_portable_runner_on_a_job_service_gives_the_same_rows(spec, in_process, job_service):
    rows = _run(spec, "portable", "--runner=PortableRunner", f"--job_endpoint={job_service}")
    assert rows == in_process


@pytest.fixture
def pg_table():
    """A PostgreSQL table of 20,000 rows on the test server, dropped afterwards."""
    import uuid

    name = f"runners_{uuid.uuid4().hex[:8]}"
    connection = pg_connect()
    with connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, v double precision, s text)")
        cursor.execute(
            f"INSERT INTO {name} SELECT g, g * 0.5, 'row ' || g FROM generate_series(1, 20000) g"
        )
    yield name
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
    connection.close()


def test_partitioned_database_read_on_two_workers_reads_every_row_once(tmp_path, pg_table):
    import sqlite3

    spec = tmp_path / "pg.yaml"
    spec.write_text(f"""\
sources:
  - name: src
    type: ReadFromPostgres
    config: {{table: {pg_table}, database: test, partition_column: id, num_partitions: 4}}
sinks:
  - name: out
    type: WriteToSqlite
    input: src
    config: {{database: "${{OUTPUT_DIR}}/copy.sqlite", table: copy}}
""")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_etl.run",
            "--pipeline",
            str(spec),
            "--output-dir",
            str(tmp_path),
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    copy = sqlite3.connect(tmp_path / "copy.sqlite")
    count, ids, total = copy.execute(
        "SELECT count(*), count(DISTINCT id), sum(v) FROM copy"
    ).fetchone()
    assert (count, ids, total) == (20000, 20000, sum(g * 0.5 for g in range(1, 20001)))
