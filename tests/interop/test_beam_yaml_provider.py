"""The Beam YAML provider: beam_etl's transforms mixed with Beam YAML's own, on the local
runner, through `python -m apache_beam.yaml.main` and through a portable job service."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
from decimal import Decimal

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.yaml import yaml_transform

from beam_etl.core.catalogue import catalogue
from beam_etl.interop.provider import PROVIDER_FILE, SUFFIX, provider_text, yaml_providers
from beam_etl.runner import LocalRunner

HERE = pathlib.Path(__file__).parent
PIPELINE = HERE / "beam_yaml_orders.yaml"
CSV = """order_id,customer,amount,day,at
1,ann,10.50,2024-01-01,2024-01-01T10:00:00+01:00
2,bo,abc,2024-01-02,2024-01-02T10:00:00+01:00
3,cy,99.99,2024-01-03,2024-01-03T10:00:00+01:00
3,cy,99.99,2024-01-03,2024-01-03T10:00:00+01:00
4,Dan,5.00,2024-01-04,2024-01-04T10:00:00+01:00
5,eve,1000.00,2024-01-05,2024-01-05T10:00:00+01:00
"""
EXPECTED = [(1, "ann", Decimal("10.50"), False), (3, "cy", Decimal("99.99"), True)]


@pytest.fixture
def orders(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_text(CSV)
    return {"data": str(data), "out": str(tmp_path / "out"), "provider": PROVIDER_FILE}


def _spec(variables: dict[str, str]) -> str:
    return yaml_transform.expand_jinja(PIPELINE.read_text(), variables, [])


def _json_lines(path: str) -> list:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _check_outputs(out: str) -> None:
    table = pq.read_table(os.path.join(out, "orders"))
    rows = sorted((r["order_id"], r["customer"], r["amount"], r["big"]) for r in table.to_pylist())
    assert rows == EXPECTED
    # Types after Beam's own MapToFields: the zone comes from the source; decimals, which Beam
    # knows without precision, are decimal(38, 18) (a CastColumns step pins them again).
    assert str(table.schema.field("at").type) == "timestamp[us, tz=Europe/Berlin]"
    assert str(table.schema.field("amount").type) == "decimal128(38, 18)"
    assert str(table.schema.field("day").type) == "date32[day]"
    letters = _json_lines(os.path.join(out, "rejects.jsonl"))
    found = sorted((x["step"], x["reason"], x["line"], x["payload"]["order_id"]) for x in letters)
    # Rows that went through Beam's own transforms no longer know their line (rows do not
    # carry the hidden origin columns); rows straight from the source do.
    assert found == [("Read", "cast_failed", 3, 2), ("Validate", "check_failed", None, 4)]


def test_mixed_pipeline_on_the_local_runner(orders):
    with beam.Pipeline(runner=LocalRunner()) as p:
        yaml_transform.expand_pipeline(p, _spec(orders))
    _check_outputs(orders["out"])


def test_mixed_pipeline_through_beam_yaml_main(orders):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "apache_beam.yaml.main",
            f"--yaml_pipeline_file={PIPELINE}",
            f"--jinja_variables={json.dumps(orders)}",
            "--runner=beam_etl.runner.LocalRunner",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_outputs(orders["out"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.fixture
def job_service():
    port = _free_port()
    server = subprocess.Popen(
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
        with socket.socket() as probe:
            if probe.connect_ex(("localhost", port)) == 0:
                break
        time.sleep(0.2)
    try:
        yield f"localhost:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_mixed_pipeline_on_a_portable_job_service(orders, job_service):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "apache_beam.yaml.main",
            f"--yaml_pipeline_file={PIPELINE}",
            f"--jinja_variables={json.dumps(orders)}",
            "--runner=PortableRunner",
            f"--job_endpoint={job_service}",
            "--environment_type=LOOPBACK",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_outputs(orders["out"])


def test_a_rejected_row_fails_the_pipeline_without_error_handling(orders):
    spec = f"""
pipeline:
  transforms:
    - type: ReadFromCsv
      config: {{path: "{orders["data"]}/orders.csv", columns: {{amount: "decimal(10,2)"}}}}
    - type: WriteToParquet
      input: ReadFromCsv
      config: {{path: "{orders["out"]}/x"}}
"""
    rejected = r"Step `ReadFromCsv` rejected a row \(cast_failed"
    with pytest.raises(Exception, match=rejected), beam.Pipeline(runner=LocalRunner()) as p:
        yaml_transform.expand_pipeline(p, spec, providers=yaml_providers())
    assert not os.path.exists(os.path.join(orders["out"], "x"))


def test_unknown_config_key_lists_the_accepted_ones(orders):
    spec = f"""
pipeline:
  transforms:
    - type: ReadFromCsv-beam_etl
      config: {{path: "{orders["data"]}/orders.csv", colums: {{}}}}
    - type: LogForTesting
      input: ReadFromCsv-beam_etl
"""
    unknown = r"Unknown config key `colums`.*Did you mean `columns`"
    with pytest.raises(ValueError, match=unknown), beam.Pipeline(runner=LocalRunner()) as p:
        yaml_transform.expand_pipeline(p, spec, providers=yaml_providers())


def test_the_provider_file_lists_every_built_in_type_under_both_names():
    assert pathlib.Path(PROVIDER_FILE).read_text() == provider_text()
    (provider,) = yaml.safe_load(pathlib.Path(PROVIDER_FILE).read_text())
    builtin = {name for name, entry in catalogue().items() if entry.kind != "any"}
    assert set(provider["transforms"]) == builtin | {name + SUFFIX for name in builtin}
    assert provider["type"] == "python"


def test_every_listed_transform_loads_with_the_factorys_config_keys():
    import inspect

    from beam_etl.core.catalogue import arguments
    from beam_etl.interop import yaml_transforms

    for name, entry in catalogue().items():
        cls = getattr(yaml_transforms, name)
        accepted = {a.name for a in arguments(entry.load())[0]}
        keys = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert keys == accepted | {"error_handling", "output_columns"}, name


def test_database_source_and_sink_names_pick_beam_etl_next_to_beam_transforms(tmp_path):
    from dbfixtures import pg, unique_table

    source, target = unique_table("yaml_src"), unique_table("yaml_dst")
    pg(f"CREATE TABLE {source} (id int PRIMARY KEY, qty int, price numeric(8,2))")
    pg(f"INSERT INTO {source} VALUES (1, 2, 1.25), (2, 3, 10.00), (3, NULL, 0.50)")
    db = "host: 127.0.0.1, database: test, user: postgres"
    spec = f"""
pipeline:
  transforms:
    - type: ReadFromPostgres
      config: {{table: {source}, {db}}}
    - type: MapToFields
      input: ReadFromPostgres
      config:
        language: python
        append: true
        fields: {{double: "qty * 2 if qty is not None else None"}}
    - type: WriteToPostgres
      input: MapToFields
      config: {{table: {target}, mode: append, {db}}}
"""
    try:
        with beam.Pipeline(runner=LocalRunner()) as p:
            yaml_transform.expand_pipeline(p, spec, providers=yaml_providers())
        rows = pg(f"SELECT id, qty, price, double FROM {target} ORDER BY id")
        assert [(r[0], r[1], str(r[2]), r[3]) for r in rows] == [
            (1, 2, "1.250000000000000000", 4),
            (2, 3, "10.000000000000000000", 6),
            (3, None, "0.500000000000000000", None),
        ]
    finally:
        pg(f"DROP TABLE IF EXISTS {source}")
        pg(f"DROP TABLE IF EXISTS {target}")


def test_split_routes_and_a_lookup_join_with_declared_output_columns(orders):
    data = orders["data"]
    pathlib.Path(data, "customers.csv").write_text("customer,tier\nann,gold\ncy,silver\n")
    spec = f"""
pipeline:
  transforms:
    - type: ReadFromCsv
      name: Orders
      config:
        path: "{data}/orders.csv"
        columns: {{amount: "decimal(10,2)", at: "timestamp[us, UTC]"}}
        error_handling: {{output: bad}}
    - type: ReadFromCsv
      name: Customers
      config: {{path: "{data}/customers.csv"}}
    - type: SplitRows
      name: Split
      input: Orders
      config: {{conditions: {{small: "amount < 50"}}}}
    - type: LookupJoin
      name: Tier
      input: {{orders: Split.small, customers: Customers}}
      config:
        dimension: customers
        "on": [customer]  # quoted: YAML 1.1 reads a bare `on` as true
        output_columns: {{order_id: int64, customer: string, amount: "decimal(10,2)",
                          day: string, at: "timestamp[us, UTC]", tier: string}}
    - type: MapToFields
      input: Tier
      config: {{language: python, fields: {{order_id: order_id, tier: tier}}}}
    - type: WriteToJson
      name: Small
      input: MapToFields
      config: {{path: "{orders["out"]}/small.jsonl"}}
    - type: WriteToJson-beam_etl
      name: Rest
      input: Split.rest
      config: {{path: "{orders["out"]}/rest.jsonl"}}
    - type: WriteToDeadLetters
      input: Orders.bad
      config: {{path: "{orders["out"]}/bad.jsonl"}}
"""
    with beam.Pipeline(runner=LocalRunner()) as p:
        yaml_transform.expand_pipeline(p, spec, providers=yaml_providers())
    small = _json_lines(os.path.join(orders["out"], "small.jsonl"))
    assert sorted((r["order_id"], r["tier"]) for r in small) == [(1, "gold"), (4, None)]
    rest = [row["order_id"] for row in _json_lines(os.path.join(orders["out"], "rest.jsonl"))]
    assert sorted(rest) == [3, 3, 5]


def test_error_handling_on_a_transform_that_rejects_nothing_is_refused():
    from beam_etl.interop.yaml_transforms import transform_class

    with pytest.raises(ValueError, match=r"`DropDuplicates` rejects no rows"):
        transform_class("DropDuplicates")(columns=["id"], error_handling={"output": "bad"})


def test_python_m_beam_etl_interop_prints_the_provider_file():
    result = subprocess.run(
        [sys.executable, "-m", "beam_etl.interop"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert result.stdout.strip() == PROVIDER_FILE


def test_rows_passed_between_beam_etl_transforms_keep_their_origin(orders):
    spec = f"""
pipeline:
  transforms:
    - type: ReadFromCsv
      config: {{path: "{orders["data"]}/orders.csv", columns: {{amount: string}}}}
    - type: CastColumns
      input: ReadFromCsv
      config: {{columns: {{amount: "decimal(10,2)"}}, error_handling: {{output: bad}}}}
    - type: WriteToParquet
      input: CastColumns
      config: {{path: "{orders["out"]}/orders"}}
    - type: WriteToDeadLetters
      input: CastColumns.bad
      config: {{path: "{orders["out"]}/bad.jsonl"}}
"""
    with beam.Pipeline(runner=LocalRunner()) as p:
        yaml_transform.expand_pipeline(p, spec, providers=yaml_providers())
    letters = _json_lines(os.path.join(orders["out"], "bad.jsonl"))
    assert [(x["step"], x["line"], x["payload"]["amount"]) for x in letters] == [
        ("CastColumns", 3, "abc")
    ]
    assert pq.read_table(os.path.join(orders["out"], "orders")).num_rows == 5
