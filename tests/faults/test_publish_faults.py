"""The run-level publish protocol under faults: the verdict comes first, then every sink publishes.

Each case runs a real spec (CSV -> PostgreSQL + MariaDB + Parquet + dead letters) through the
command line against the real servers, breaks one thing, and checks that nothing was
published (or, after a fix and a re-run with the same run id, that everything was, once).
"""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from dbfixtures import my, pg, unique_table

from beam_etl.io.sql import options as _db
from beam_etl.io.sql.postgres import publisher as _PgPublish
from beam_etl.run import main

ROWS = 50
SPEC = """
name: protocol
sources:
  - name: src
    type: ReadFromCsv
    config: {{path: "{data}"}}
steps:
  - name: grow
    type: MapBatches
    input: src
    config: {{function: "{function}"}}
  - name: unique_ids
    type: CheckUnique
    input: grow
    config: {{columns: [id], severity: fail}}
sinks:
  - name: pg
    type: WriteToPostgres
    input: unique_ids
    config: {{table: {table}, database: test, mode: append}}
  - name: maria
    type: WriteToMySql
    input: unique_ids
    config: {{table: {table}, database: test, mode: append}}
  - name: files
    type: WriteToParquet
    input: unique_ids
    config: {{path: "{out}/parquet"}}
  - name: letters
    type: WriteToDeadLetters
    inputs: [src.error, grow.error, unique_ids.error, pg.error, maria.error]
    config: {{path: "{letters}"}}
"""

FUNCTIONS = """
import pyarrow as pa


def same(batch):
    return batch


def doubled(batch):  # returns more rows than it got (new ids): the counts cannot add up
    ids = pa.array([i + 1000 for i in batch.column(0).to_pylist()], pa.int64())
    return pa.Table.from_batches([batch, batch.set_column(0, "id", ids)])


def repeat_ids(batch):  # duplicate ids: the `CheckUnique` gate fails
    return batch.set_column(0, "id", pa.array([1] * batch.num_rows, pa.int64()))
"""


@pytest.fixture
def case(tmp_path, monkeypatch):
    """A spec, its data and unique target tables; the tables are dropped afterwards."""
    (tmp_path / "faultfns.py").write_text(FUNCTIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    data = tmp_path / "in.csv"
    data.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(1, ROWS + 1)))
    table = unique_table("pub")

    def spec(function="same", letters=None):
        path = tmp_path / f"{function}.yaml"
        path.write_text(
            SPEC.format(
                data=data,
                function=f"faultfns:{function}",
                table=table,
                out=tmp_path / "out",
                letters=letters or tmp_path / "out" / "letters.jsonl",
            )
        )
        return str(path)

    yield tmp_path, table, spec
    pg(f"DROP TABLE IF EXISTS {table}")
    my(f"DROP TABLE IF EXISTS {table}")


def _published(tmp_path, table) -> dict:
    pg_rows = (
        pg(f"SELECT count(*) FROM pg_tables WHERE tablename = '{table}'")[0][0]
        and pg(f"SELECT count(*) FROM {table}")[0][0]
    )
    my_rows = my(f"SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'")
    my_rows = my_rows[0][0] and my(f"SELECT count(*) FROM {table}")[0][0]
    parquet = tmp_path / "out" / "parquet"
    files = pq.read_table(parquet).num_rows if (parquet / "_SUCCESS").exists() else 0
    letters = tmp_path / "out" / "letters.jsonl"
    return {"pg": pg_rows, "maria": my_rows, "parquet": files, "letters": letters.exists()}


NOTHING = {"pg": 0, "maria": 0, "parquet": 0, "letters": False}


def _run(spec, tmp_path, *extra) -> int:
    return main(["--pipeline", spec, "--output-dir", str(tmp_path / "out"), *extra])


def _staging_left(tmp_path) -> list[str]:
    found = []
    work = os.path.join(tmp_path, "out", ".beam_etl")  # the run history and lineage stay there
    for root, folders, _ in os.walk(tmp_path):
        paths = [os.path.join(root, f) for f in folders if f.startswith(".beam_etl")]
        found += [path for path in paths if path != work]
    if os.path.isdir(work):  # ... but no staging or run folder
        found += [e.path for e in os.scandir(work) if e.is_dir()]
    return found


def test_a_dead_letter_path_that_is_a_folder_publishes_nothing(case, capsys):
    tmp_path, table, spec = case
    folder = tmp_path / "letters_dir"
    folder.mkdir()
    assert _run(spec(letters=folder), tmp_path, "--run-id", "r1") == 1
    assert "is a folder" in capsys.readouterr().err
    assert _published(tmp_path, table) == NOTHING
    assert _staging_left(tmp_path) == []
    # Fixed and re-run under the same run id: everything published, once.
    assert _run(spec(), tmp_path, "--run-id", "r1") == 0
    assert _published(tmp_path, table) == {
        "pg": ROWS,
        "maria": ROWS,
        "parquet": ROWS,
        "letters": True,
    }


def test_counts_that_do_not_add_up_publish_nothing(case, capsys):
    tmp_path, table, spec = case
    assert _run(spec("doubled"), tmp_path) == 1
    err = capsys.readouterr().err
    assert "Row counts do not add up: grow; nothing was published" in err
    assert _published(tmp_path, table) == NOTHING
    assert _staging_left(tmp_path) == []


def test_a_failed_quality_gate_publishes_nothing_and_keeps_counts(case, capsys):
    tmp_path, table, spec = case
    assert _run(spec("repeat_ids"), tmp_path) == 1
    err = capsys.readouterr().err
    assert "A quality check failed" in err and "nothing was published" in err
    assert _published(tmp_path, table) == NOTHING
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert report["status"] == "failed"
    assert steps["src"]["rows_in"] == ROWS  # a failed run keeps its counts
    assert report["quality"] is not None
    assert (tmp_path / "out" / "run_report.quality.md").exists()


def test_a_rerun_of_a_published_run_id_says_skipped(case, capsys):
    tmp_path, table, spec = case
    assert _run(spec(), tmp_path, "--run-id", "same") == 0
    capsys.readouterr()
    assert _run(spec(), tmp_path, "--run-id", "same") == 0
    out = capsys.readouterr().out
    assert "pg: run same was already published there: skipped" in out
    assert "maria: run same was already published there: skipped" in out
    assert _published(tmp_path, table)["pg"] == ROWS
    assert _published(tmp_path, table)["maria"] == ROWS
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    assert sorted(report["already_published"]) == ["maria", "pg"]


@pytest.mark.parametrize("point", ["after_prepare", "between_publishes"])
def test_kill_9_at_a_marked_point_then_rerun_gives_every_row_once(case, point):
    tmp_path, table, spec = case
    command = [sys.executable, "-m", "beam_etl.run", "--pipeline", spec(), "--run-id", "k1"]
    command += ["--output-dir", str(tmp_path / "out")]
    env = {**os.environ, "BEAM_ETL_KILL_AT": point}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    published = _published(tmp_path, table)
    if point == "after_prepare":
        assert published == NOTHING
    else:  # killed after the first database (by name: `maria`) published
        assert (published["maria"], published["pg"], published["parquet"]) == (ROWS, 0, 0)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _published(tmp_path, table) == {
        "pg": ROWS,
        "maria": ROWS,
        "parquet": ROWS,
        "letters": True,
    }
    assert _staging_left(tmp_path) == []  # what the killed run staged was swept


def test_a_table_changed_between_prepare_and_publish_publishes_nothing(tmp_path):
    """The trial found no refused row; a conflicting row appears before the publish."""
    import pyarrow as pa

    from beam_etl.io._ipcparts import IpcPartWriter

    table = unique_table("pub")
    pg(f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text)")
    try:
        writer = IpcPartWriter(str(tmp_path / "stage"))
        writer.write(pa.record_batch({"id": pa.array([1, 2, 3]), "name": pa.array(list("abc"))}))
        parts = writer.close()
        config = _db.make_config(
            "postgres",
            dsn=None,
            dsn_env=None,
            host="127.0.0.1",
            port=5432,
            database="test",
            user="postgres",
            password_env=None,
            connect_timeout=10,
            statement_timeout=None,
        )
        settings = {"mode": "append", "keys": [], "hard_delete": None, "dedup_sort": None}
        settings |= {"create_table": True, "drift": "evolve", "on_reject": "dead_letter"}
        publish = _PgPublish(config, table, {**settings, "run_id": "t1", "step": "pg"})
        trial = publish(parts, commit=False)
        assert (trial.written, trial.rejects) == (3, [])
        assert pg(f"SELECT count(*) FROM {table}") == [(0,)]  # the trial left nothing
        pg(f"INSERT INTO {table} VALUES (2, 'someone else')")
        with pytest.raises(Exception, match="changed while the run was deciding"):
            publish(parts, expect=trial)
        assert pg(f"SELECT id, name FROM {table}") == [(2, "someone else")]
    finally:
        pg(f"DROP TABLE IF EXISTS {table}")
