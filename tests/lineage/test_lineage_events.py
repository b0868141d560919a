"""OpenLineage events of real runs, validated against the OpenLineage JSON schemas."""

import http.server
import json
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest
from dbfixtures import pg, pg_connect, unique_table
from olschema import validate_event

from beam_etl.core.errors import SpecError
from beam_etl.lineage.events import ol_run_id
from beam_etl.pipeline import load_plan
from beam_etl.run import DEMO_DIR, main

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "revenue_by_region.yaml")


def _events(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _by_name(datasets: list[dict]) -> dict[str, dict]:
    return {pathlib.Path(d["name"]).name: d for d in datasets}


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    """Run examples/revenue_by_region.yaml once; return its events and its run report."""
    out = tmp_path_factory.mktemp("example")
    assert main(["--pipeline", EXAMPLE, "--output-dir", str(out), "--run-id", "lin-1"]) == 0
    report = json.loads((out / "run_report.json").read_text())
    return _events(out / ".beam_etl" / "lineage.jsonl"), report


def test_a_run_emits_start_then_complete_both_valid_openlineage(example_run):
    events, _ = example_run
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        facets = validate_event(event)
        assert {"schema", "dataSource", "columnLineage", "processing_engine", "jobType"} <= set(
            facets
        )
    assert {e["run"]["runId"] for e in events} == {ol_run_id("revenue_by_region", "lin-1")}
    assert {(e["job"]["namespace"], e["job"]["name"]) for e in events} == {
        ("beam_etl", "revenue_by_region")
    }


def test_complete_carries_the_run_reports_counts_per_dataset(example_run):
    events, report = example_run
    complete = events[1]
    counts = {step["name"]: step for step in report["steps"]}
    inputs = _by_name(complete["inputs"])
    assert (
        inputs["orders.csv"]["inputFacets"]["dataQualityMetrics"]["rowCount"]
        == (counts["orders"]["rows_in"])
    )
    assert inputs["countries.csv"]["inputFacets"]["dataQualityMetrics"]["rowCount"] == 9
    outputs = _by_name(complete["outputs"])
    written = {
        "revenue_by_region.md": counts["revenue_table"]["rows_out"],
        "cancelled.jsonl.gz": counts["cancelled_orders"]["rows_out"],
        "revenue_rejects.jsonl": counts["rejects"]["rows_out"],
    }
    assert {n: d["outputFacets"]["outputStatistics"]["rowCount"] for n, d in outputs.items()} == (
        written
    )
    assert written["revenue_rejects.jsonl"] > 0 and written["cancelled.jsonl.gz"] > 0
    assertions = outputs["revenue_by_region.md"]["facets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a["success"]) for a in assertions] == [("rows_conserved", True)]
    # START knows the datasets and their lineage, not yet any count
    start = events[0]
    assert all(not d["inputFacets"] for d in start["inputs"])
    assert all(not d["outputFacets"] for d in start["outputs"])


def test_column_lineage_facet_of_the_revenue_table(example_run):
    events, _ = example_run
    facet = _by_name(events[1]["outputs"])["revenue_by_region.md"]["facets"]["columnLineage"]
    orders = {"namespace": "file", "name": f"{DEMO_DIR}/orders.csv"}
    countries = {"namespace": "file", "name": str(ROOT / "examples" / "data" / "countries.csv")}

    def fields(column):
        return [
            (f["name"], f["field"], [(t["type"], t["subtype"]) for t in f["transformations"]])
            for f in facet["fields"][column]["inputFields"]
        ]

    assert sorted(facet["fields"]) == ["average", "region", "revenue"]  # orders: count(*)
    assert fields("revenue") == [(orders["name"], "amount", [("DIRECT", "AGGREGATION")])]
    assert fields("average") == [(orders["name"], "amount", [("DIRECT", "AGGREGATION")])]
    assert fields("region") == [(countries["name"], "region", [("DIRECT", "IDENTITY")])]
    indirect = [
        (f["name"], f["field"], f["transformations"][0]["subtype"]) for f in facet["dataset"]
    ]
    assert indirect == [
        (orders["name"], "country", "JOIN"),
        (countries["name"], "country", "JOIN"),
        (orders["name"], "status", "FILTER"),
        (countries["name"], "region", "GROUP_BY"),
    ]


FAILING = """\
name: too_few
sources:
  - {name: src, type: ReadFromCsv, config: {path: "${SPEC_DIR}/in.csv"}}
steps:
  - {name: enough, type: CheckRowCount, input: src, config: {min_rows: 100}}
sinks:
  - {name: out, type: WriteToCsv, input: enough, config: {path: "${OUTPUT_DIR}/out.csv"}}
  - {name: dl, type: WriteToDeadLetters, input: src.error, config: {path: "${OUTPUT_DIR}/dl.jsonl"}}
"""


def test_a_failed_run_emits_fail_with_its_error_and_failed_check(tmp_path, capsys):
    (tmp_path / "in.csv").write_text("id,v\n1,a\n2,b\n")
    (tmp_path / "spec.yaml").write_text(FAILING)
    assert main(["--pipeline", str(tmp_path / "spec.yaml"), "--output-dir", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "run_report.json").read_text())
    events = _events(tmp_path / ".beam_etl" / "lineage.jsonl")
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    for event in events:
        validate_event(event)
    fail = events[1]
    assert fail["run"]["facets"]["errorMessage"]["message"] == report["error"]
    assert "nothing was published" in report["error"]
    out = _by_name(fail["outputs"])["out.csv"]
    assert not out["outputFacets"]  # a failed run published nothing: no output statistics
    checks = {a["assertion"]: a for a in out["facets"]["dataQualityAssertions"]["assertions"]}
    assert checks["row_count"]["success"] is False
    assert checks["row_count"]["name"] == "enough.row_count"
    assert not (tmp_path / "out.csv").exists()


DATABASE = """\
name: to_postgres
lineage: {url: "http://lineage:${LINEAGE_PW}@127.0.0.1:${LINEAGE_PORT}"}
sources:
  - {name: src, type: ReadFromCsv, config: {path: "${SPEC_DIR}/in.csv"}}
sinks:
  - name: db
    type: WriteToPostgres
    input: src
    config: {table: "${TABLE}", dsn_env: LINEAGE_TEST_DSN}
  - name: dl
    type: WriteToDeadLetters
    inputs: [src.error, db.error]
    config: {path: "${OUTPUT_DIR}/dl.jsonl"}
"""


class _Collector(http.server.BaseHTTPRequestHandler):
    """A real HTTP endpoint that keeps what is posted to it (a stand-in for Marquez)."""

    received: list[tuple[str, dict]] = []

    def do_POST(self):  # the name http.server calls
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.received.append((self.path, json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_events_reach_an_http_endpoint_and_never_hold_a_password(
    tmp_path, capsys, monkeypatch, endpoint
):
    pg_connect().close()  # the server must be up (fails, never skips)
    table = unique_table("lineage")
    password = "Pw-d0nt-l3ak"
    dsn = f"postgresql://postgres:{password}@127.0.0.1:5432/test?connect_timeout=10"
    monkeypatch.setenv("LINEAGE_TEST_DSN", dsn)
    monkeypatch.setenv("LINEAGE_PW", "Url-pw-s3cret")
    (tmp_path / "in.csv").write_text("id,v\n1,a\n2,b\n3,c\n")
    (tmp_path / "spec.yaml").write_text(DATABASE)
    args = ["--pipeline", str(tmp_path / "spec.yaml"), "--output-dir", str(tmp_path)]
    args += ["--set", f"TABLE={table}", "--set", f"LINEAGE_PORT={endpoint}"]
    try:
        assert main(args) == 0
        assert pg(f"SELECT count(*) FROM {table}") == [(3,)]
    finally:
        pg(f"DROP TABLE IF EXISTS {table}")
    captured = capsys.readouterr()
    written = (tmp_path / ".beam_etl" / "lineage.jsonl").read_text()
    posted = json.dumps(_Collector.received)
    for text in (written, posted, captured.out, captured.err):
        assert password not in text and "Url-pw-s3cret" not in text
    assert [path for path, _ in _Collector.received] == ["/api/v1/lineage"] * 2
    assert [e["eventType"] for _, e in _Collector.received] == ["START", "COMPLETE"]
    for _, event in _Collector.received:
        validate_event(event)
    (db,) = [d for d in _Collector.received[1][1]["outputs"] if d["namespace"] != "file"]
    assert (db["namespace"], db["name"]) == ("postgres://127.0.0.1:5432", f"test.public.{table}")
    assert db["outputFacets"]["outputStatistics"]["rowCount"] == 3
    assert _events(tmp_path / ".beam_etl" / "lineage.jsonl") == [e for _, e in _Collector.received]


def test_an_unreachable_endpoint_costs_one_warning_line_never_the_run(tmp_path, capsys):
    (tmp_path / "in.csv").write_text("id,v\n1,a\n")
    spec = FAILING.replace("min_rows: 100", "min_rows: 1").replace(
        "name: too_few\n", 'name: ok\nlineage: {url: "http://user:Hidden-pw@127.0.0.1:9"}\n'
    )
    (tmp_path / "spec.yaml").write_text(spec)
    assert main(["--pipeline", str(tmp_path / "spec.yaml"), "--output-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "lineage" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("warning: lineage events not sent to http://user:***@127.0.0.1:9")
    assert "Hidden-pw" not in err and "Traceback" not in err
    # the file still has both events
    events = _events(tmp_path / ".beam_etl" / "lineage.jsonl")
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]


def test_lineage_file_and_namespace_from_the_spec_and_off_switch(tmp_path):
    (tmp_path / "in.csv").write_text("id,v\n1,a\n")
    spec = FAILING.replace("min_rows: 100", "min_rows: 1").replace(
        "name: too_few\n",
        'name: ok\nlineage: {file: "${OUTPUT_DIR}/ol/events.jsonl", namespace: team_a}\n',
    )
    (tmp_path / "spec.yaml").write_text(spec)
    assert main(["--pipeline", str(tmp_path / "spec.yaml"), "--output-dir", str(tmp_path)]) == 0
    events = _events(tmp_path / "ol" / "events.jsonl")
    assert [(e["eventType"], e["job"]["namespace"]) for e in events] == [
        ("START", "team_a"),
        ("COMPLETE", "team_a"),
    ]
    assert not (tmp_path / ".beam_etl" / "lineage.jsonl").exists()
    off = tmp_path / "off"
    off.mkdir()
    (off / "in.csv").write_text("id,v\n1,a\n")
    (off / "spec.yaml").write_text(spec.replace("namespace: team_a", "enabled: false"))
    assert main(["--pipeline", str(off / "spec.yaml"), "--output-dir", str(off)]) == 0
    assert not (off / "ol").exists() and not (off / ".beam_etl" / "lineage.jsonl").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "{fiel: x.jsonl}",
            "Unknown key `fiel` in `lineage`. Did you mean `file`? Accepted: "
            "file, url, namespace, enabled (line 2)",
        ),
        ('{url: "ftp://x"}', "`lineage.url` must start with http:// or https:// (line 2)"),
        ("{enabled: maybe}", "`lineage.enabled` must be true or false (line 2)"),
        ("[a, b]", "`lineage` must be a mapping with keys file, url, namespace, enabled (line 2)"),
    ],
    ids=["unknown-key", "not-http", "not-boolean", "not-a-mapping"],
)
def test_lineage_settings_are_checked_with_their_line(tmp_path, setting, message):
    spec = FAILING.replace("name: too_few\n", f"name: t\nlineage: {setting}\n")
    (tmp_path / "spec.yaml").write_text(spec)
    (tmp_path / "in.csv").write_text("id,v\n1,a\n")
    with pytest.raises(SpecError) as caught:
        load_plan(str(tmp_path / "spec.yaml"), run_id="x", variables={"OUTPUT_DIR": "o"})
    assert str(caught.value) == message


_TIME = re.compile(r'"eventTime": "[^"]*"')


def _without_times(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in event.items() if k != "eventTime"} for event in events]


@pytest.mark.parametrize("min_rows", [1, 100], ids=["complete", "fail"])
def test_the_file_written_without_the_client_is_what_the_client_writes(
    tmp_path, monkeypatch, min_rows
):
    (tmp_path / "in.csv").write_text("id,v\n1,a\n2,b\n")
    (tmp_path / "spec.yaml").write_text(FAILING.replace("min_rows: 100", f"min_rows: {min_rows}"))
    args = ["--pipeline", str(tmp_path / "spec.yaml"), "--output-dir", str(tmp_path / "out")]
    written = tmp_path / "out" / ".beam_etl" / "lineage.jsonl"
    found = []
    for mode in ("direct", "client"):
        if mode == "client":  # OpenLineage configuration present: the client writes the file
            monkeypatch.setenv("OPENLINEAGE_CONFIG", str(tmp_path / "no-such-openlineage.yml"))
        main([*args, "--run-id", "same", "--progress", "off"])
        found.append(written.read_text().splitlines())
        written.unlink()
    direct, client = ([json.loads(line) for line in lines] for lines in found)
    for event in direct:
        validate_event(event)
    assert _without_times(direct) == _without_times(client)
    # byte for byte, but for the time: the same keys in the same order, the same formatting
    direct_lines, client_lines = ([_TIME.sub("", line) for line in lines] for lines in found)
    assert direct_lines == client_lines


def test_facet_schema_versions_are_the_installed_clients():
    from openlineage.client import event_v2
    from openlineage.client.facet_v2 import (
        column_lineage_dataset,
        data_quality_assertions_dataset,
        data_quality_metrics_input_dataset,
        datasource_dataset,
        error_message_run,
        job_type_job,
        output_statistics_output_dataset,
        processing_engine_run,
        schema_dataset,
        tags_run,
    )

    from beam_etl.lineage import events

    expected = {
        events.SCHEMA_FACET: schema_dataset.SchemaDatasetFacet,
        events.DATASOURCE_FACET: datasource_dataset.DatasourceDatasetFacet,
        events.COLUMN_LINEAGE_FACET: column_lineage_dataset.ColumnLineageDatasetFacet,
        events.METRICS_FACET: (
            data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet
        ),
        events.STATISTICS_FACET: (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet
        ),
        events.ASSERTIONS_FACET: data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet,
        events.ENGINE_FACET: processing_engine_run.ProcessingEngineRunFacet,
        events.ERROR_FACET: error_message_run.ErrorMessageRunFacet,
        events.JOB_TYPE_FACET: job_type_job.JobTypeJobFacet,
        events.TAGS_FACET: tags_run.TagsRunFacet,
    }
    for schema, facet in expected.items():
        assert events._facet(schema)["_schemaURL"] == facet._get_schema()
    assert event_v2.RunEvent._get_schema() == events.RUN_EVENT_SCHEMA


def test_a_default_run_does_not_import_the_openlineage_client(tmp_path):
    (tmp_path / "in.csv").write_text("id,v\n1,a\n")
    spec = FAILING.replace("min_rows: 100", "min_rows: 1")
    (tmp_path / "spec.yaml").write_text(spec)
    code = (
        "import sys\n"
        "from beam_etl.run import main\n"
        "code = main(['--pipeline', 'spec.yaml', '--output-dir', 'out', '--progress', 'off'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('openlineage')))\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env["HOME"] = str(tmp_path)  # no ~/.openlineage/openlineage.yml
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    events = _events(tmp_path / "out" / ".beam_etl" / "lineage.jsonl")
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
