"""`python -m beam_etl.run lineage`: where a column comes from, without running anything."""

import json
import pathlib

import pytest

from beam_etl.run import DEMO_DIR, main

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "revenue_by_region.yaml")


def test_where_does_revenue_come_from(tmp_path, capsys):
    args = ["lineage", "--pipeline", EXAMPLE, "--output-dir", str(tmp_path)]
    assert main([*args, "--column", "revenue_table.revenue"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "revenue_table.revenue (double)",
        f"  <- orders.amount  file://{DEMO_DIR}/orders.csv",
        "     aggregation, via orders -> tidy -> with_region -> route -> revenue",
        "     tidy/TrimWhitespace: whitespace trimmed; tidy/cast: cast to double; "
        "revenue: sum(amount)",
        "  rows decided by (indirect):",
        "     orders.country  join at with_region: tidy/TrimWhitespace: whitespace trimmed; "
        "with_region: looked up in `countries`",
        "     countries.country  join at with_region: with_region: looked up in `countries`",
        "     orders.status  filter at route: tidy/TrimWhitespace: whitespace trimmed; "
        "route: routed by cancelled: status == 'cancelled'",
        "     countries.region  group_by at revenue: revenue: grouped by region",
    ]
    assert not (tmp_path / "revenue_by_region.md").exists()  # nothing ran
    assert not (tmp_path / ".beam_etl").exists()


def test_json_answer_for_a_step_output_and_a_computed_column(tmp_path, capsys):
    args = ["lineage", "--pipeline", EXAMPLE, "--output-dir", str(tmp_path), "--format", "json"]
    assert main([*args, "--column", "route.cancelled.customer_email"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["column"] == "route.cancelled.customer_email"
    assert answer["type"] == "string"
    assert [(e["source"], e["column"], e["transformation"], e["via"]) for e in answer["from"]] == [
        ("orders", "customer_email", "text", ["tidy", "with_region", "route"])
    ]
    assert main([*args, "--column", "revenue_table.orders"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["from"] == [] and answer["computed"] == "revenue: count(*)"


def test_without_a_column_every_sink_is_shown(tmp_path, capsys):
    args = ["lineage", "--pipeline", EXAMPLE, "--output-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"revenue_table -> file://{tmp_path}/revenue_by_region.md\n")
    assert "cancelled_orders.vat_rate (double)" in out
    assert (
        "rejects -> file://" in out
        and "columns unknown: dead letters of `orders`, `countries`, `tidy`" in out
    )
    assert main([*args, "--format", "json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert set(everything) == {"datasets", "columns", "indirect", "unknown", "computed"}
    assert len(everything["columns"]) == 14


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (
            "revenue_table.nope",
            "error: `revenue_table` has no column `nope`. Columns: region, "
            "orders, revenue, average",
        ),
        (
            "revenu_table.region",
            "error: `--column revenu_table.region` must name a node and a "
            "column (`node.column`). Did you mean `revenue_table`?",
        ),
        (
            "rejects.payload",
            "error: The columns of `rejects` are not known: dead letters of `orders`, "
            "`countries`, `tidy`, `with_region`, `route` (the rejected row is their payload)",
        ),
    ],
    ids=["unknown-column", "unknown-node", "unknown-columns"],
)
def test_a_bad_column_is_one_line_and_exit_2(tmp_path, capsys, column, message):
    args = ["lineage", "--pipeline", EXAMPLE, "--output-dir", str(tmp_path), "--column", column]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message)


DATABASES = """\
name: places
sources:
  - {name: src, type: ReadFromCsv, config: {path: "${SPEC_DIR}/in.csv"}}
sinks:
  - {name: pg, type: WriteToPostgres, input: src, config: {table: sales.facts, dsn_env: PG_DSN}}
  - name: my
    type: WriteToMySql
    input: src
    config: {table: facts, host: 127.0.0.1, port: 3306, database: test}
  - name: lite
    type: WriteToSqlite
    input: src
    config: {database: "${OUTPUT_DIR}/x.db", table: t}
  - name: dl
    type: WriteToDeadLetters
    inputs: [src.error, pg.error, my.error]
    config: {path: "${OUTPUT_DIR}/dl.jsonl"}
"""


def test_database_datasets_are_named_without_their_password(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PG_DSN", "host=db.internal port=6543 dbname=shop password='Kv-s3cret'")
    (tmp_path / "in.csv").write_text("id,v\n1,a\n")
    (tmp_path / "spec.yaml").write_text(DATABASES)
    args = ["lineage", "--pipeline", str(tmp_path / "spec.yaml"), "--output-dir", str(tmp_path)]
    assert main([*args, "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "Kv-s3cret" not in out
    outputs = {d["node"]: d for d in json.loads(out)["datasets"]["outputs"]}
    assert (outputs["pg"]["namespace"], outputs["pg"]["name"]) == (
        "postgres://db.internal:6543",
        "shop.sales.facts",
    )
    assert outputs["pg"]["uri"] == "postgres://db.internal:6543/shop.sales.facts"
    assert (outputs["my"]["namespace"], outputs["my"]["name"]) == (
        "mysql://127.0.0.1:3306",
        "test.facts",
    )
    assert (outputs["lite"]["namespace"], outputs["lite"]["name"]) == (
        "sqlite",
        f"{tmp_path}/x.db#t",
    )
    assert outputs["lite"]["columns"] == ["id", "v"]


UNKNOWN_SOURCE = """\
name: pgsrc
sources:
  - name: src
    type: ReadFromPostgres
    config: {table: orders, database: shop, host: db.example, port: 5433}
steps:
  - {name: f, type: FilterRows, input: src, config: {where: "a > 1"}}
sinks:
  - {name: out, type: WriteToCsv, input: f, config: {path: "${OUTPUT_DIR}/o.csv"}}
  - {name: dl, type: WriteToDeadLetters, input: f.error, config: {path: "${OUTPUT_DIR}/d.jsonl"}}
"""


def test_a_source_without_known_columns_makes_everything_after_it_unknown(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(UNKNOWN_SOURCE)
    args = ["lineage", "--pipeline", str(tmp_path / "spec.yaml"), "--output-dir", str(tmp_path)]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"out -> file://{tmp_path}/o.csv",
        "  columns unknown: source `src` declares no columns and its schema is not read",
    ]
    assert main([*args, "--format", "json"]) == 0
    (source,) = json.loads(capsys.readouterr().out)["datasets"]["inputs"]
    assert (source["namespace"], source["name"], source["columns"]) == (
        "postgres://db.example:5433",
        "shop.public.orders",
        None,
    )
