"""Column lineage from the plan: the example checked column by column, and each step's rule."""

import os
import pathlib

import pytest

from beam_etl.lineage import column_lineage
from beam_etl.pipeline import load_plan
from beam_etl.run import DEMO_DIR

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "revenue_by_region.yaml"
ORDERS = f"file://{DEMO_DIR}/orders.csv"
COUNTRIES = f"file://{ROOT}/examples/data/countries.csv"


def _plan(path, tmp_path):
    names = {"OUTPUT_DIR": str(tmp_path), "DEMO_DIR": DEMO_DIR}
    return load_plan(str(path), run_id="lineage-test", variables=names)


def _short(entries):
    """(dataset, column, via, transformation) of each entry, for exact comparisons."""
    return [(e["dataset"], e["column"], tuple(e["via"]), e["transformation"]) for e in entries]


# Derived by reading examples/revenue_by_region.yaml: `tidy` trims every text column of
# `orders` (customer_email, country, amount, status), lower-cases customer_email and casts
# amount to float64; `with_region` adds region and vat_rate from `countries` by country;
# `route` sends status == 'cancelled' to `cancelled`, the rest on; `revenue` groups by region.
_TIDY = ("tidy",)
_ROUTED = ("tidy", "with_region", "route")
CANCELLED = {
    "order_id": [(ORDERS, "order_id", _ROUTED, "identity")],
    "customer_id": [(ORDERS, "customer_id", _ROUTED, "identity")],
    "customer_email": [(ORDERS, "customer_email", _ROUTED, "text")],
    "country": [(ORDERS, "country", _ROUTED, "text")],
    "order_date": [(ORDERS, "order_date", _ROUTED, "identity")],
    "amount": [(ORDERS, "amount", _ROUTED, "cast")],
    "status": [(ORDERS, "status", _ROUTED, "text")],
    "updated_at": [(ORDERS, "updated_at", _ROUTED, "identity")],
    "region": [(COUNTRIES, "region", ("with_region", "route"), "identity")],
    "vat_rate": [(COUNTRIES, "vat_rate", ("with_region", "route"), "identity")],
}
REVENUE = {
    "region": [(COUNTRIES, "region", ("with_region", "route", "revenue"), "identity")],
    "orders": [],
    "revenue": [(ORDERS, "amount", (*_ROUTED, "revenue"), "aggregation")],
    "average": [(ORDERS, "amount", (*_ROUTED, "revenue"), "aggregation")],
}
JOINED_AND_ROUTED = [
    (ORDERS, "country", ("tidy", "with_region"), "join"),
    (COUNTRIES, "country", ("with_region",), "join"),
    (ORDERS, "status", _ROUTED, "filter"),
]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return column_lineage(_plan(EXAMPLE, tmp_path_factory.mktemp("out")))


@pytest.mark.parametrize("column", list(CANCELLED))
def test_example_cancelled_orders_column(example, column):
    assert _short(example["columns"][f"cancelled_orders.{column}"]) == CANCELLED[column]


@pytest.mark.parametrize("column", list(REVENUE))
def test_example_revenue_table_column(example, column):
    assert _short(example["columns"][f"revenue_table.{column}"]) == REVENUE[column]


def test_example_has_exactly_the_expected_columns_and_no_others(example):
    expected = [f"revenue_table.{c}" for c in REVENUE] + [
        f"cancelled_orders.{c}" for c in CANCELLED
    ]
    assert sorted(example["columns"]) == sorted(expected)


def test_example_says_what_each_step_did_to_a_column(example):
    (revenue,) = example["columns"]["revenue_table.revenue"]
    assert revenue["description"] == (
        "tidy/TrimWhitespace: whitespace trimmed; tidy/cast: cast to double; revenue: sum(amount)"
    )
    (email,) = example["columns"]["cancelled_orders.customer_email"]
    assert email["description"] == (
        "tidy/TrimWhitespace: whitespace trimmed; tidy/ChangeCase: changed to lower case"
    )
    assert example["computed"] == {"revenue_table.orders": "revenue: count(*)"}


def test_example_rows_are_decided_by_join_keys_the_split_and_the_grouping(example):
    assert _short(example["indirect"]["cancelled_orders"]) == JOINED_AND_ROUTED
    assert _short(example["indirect"]["revenue_table"]) == [
        *JOINED_AND_ROUTED,
        (COUNTRIES, "region", ("with_region", "route", "revenue"), "group_by"),
    ]


def test_example_datasets_and_the_dead_letter_sink(example, tmp_path_factory):
    inputs = {d["node"]: (d["namespace"], d["name"]) for d in example["datasets"]["inputs"]}
    assert inputs == {
        "orders": ("file", os.path.join(DEMO_DIR, "orders.csv")),
        "countries": ("file", str(ROOT / "examples" / "data" / "countries.csv")),
    }
    outputs = {d["node"]: d for d in example["datasets"]["outputs"]}
    assert outputs["revenue_table"]["namespace"] == "file"
    assert outputs["revenue_table"]["name"].endswith("/revenue_by_region.md")
    assert outputs["revenue_table"]["columns"] == list(REVENUE)
    # dead letters carry the rejected row as their payload: no column lineage is claimed
    assert outputs["rejects"]["columns"] is None
    assert example["unknown"] == {
        "rejects": "dead letters of `orders`, `countries`, `tidy`, `with_region`, `route` "
        "(the rejected row is their payload)"
    }


STEPS_SPEC = """\
name: rules
sources:
  - {name: a, type: ReadFromCsv, config: {path: "${SPEC_DIR}/a.csv"}}
  - {name: b, type: ReadFromCsv, config: {path: "${SPEC_DIR}/b.csv"}}
  - {name: dim, type: ReadFromCsv, config: {path: "${SPEC_DIR}/dim.csv"}}
steps:
  - {name: both, type: UnionInputs, inputs: [a, b]}
  - name: derive
    type: DeriveColumns
    input: both
    config: {columns: {total: "price * qty", big: "total > 100", one: "1"}}
  - {name: keep, type: FilterRows, input: derive, config: {where: "country == 'DE'"}}
  - {name: renamed, type: RenameColumns, input: keep, config: {columns: {name: customer}}}
  - name: picked
    type: SelectColumns
    input: renamed
    config: {columns: [id, customer, total, big, one, country]}
  - name: joined
    type: JoinInputs
    inputs: [picked, dim]
    config: {on: {country: code}}
  - {name: unique, type: DropDuplicates, input: joined, config: {columns: [id]}}
  - {name: filled, type: FillNulls, input: unique, config: {values: {label: none}}}
  - {name: user, type: MapBatches, input: filled, config: {function: "builtins:id"}}
sinks:
  - {name: out, type: WriteToCsv, input: filled, config: {path: "${OUTPUT_DIR}/out.csv"}}
  - {name: mapped, type: WriteToCsv, input: user, config: {path: "${OUTPUT_DIR}/m.csv"}}
  - name: dead
    type: WriteToDeadLetters
    inputs: [a.error, b.error, dim.error, derive.error, keep.error, user.error]
    config: {path: "${OUTPUT_DIR}/dead.jsonl"}
"""


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rules")
    for name in ("a", "b"):
        (folder / f"{name}.csv").write_text("id,name,price,qty,country\n1,Ann,2.5,3,DE\n")
    (folder / "dim.csv").write_text("code,label\nDE,Germany\n")
    (folder / "spec.yaml").write_text(STEPS_SPEC)
    return column_lineage(_plan(folder / "spec.yaml", folder)), folder


def test_rules_of_union_derive_rename_select_join_dedupe_fill(steps):
    found, folder = steps
    a, b, dim = (f"file://{folder}/{name}.csv" for name in ("a", "b", "dim"))
    after_join = ("both", "derive", "keep", "renamed", "picked", "joined", "unique", "filled")
    columns = {name: _short(entries) for name, entries in found["columns"].items()}
    assert columns["out.id"] == [
        (a, "id", after_join, "identity"),
        (b, "id", after_join, "identity"),
    ]
    assert columns["out.customer"] == [
        (a, "name", after_join, "identity"),
        (b, "name", after_join, "identity"),
    ]
    # `big` uses `total`, itself derived: both reach back to price and qty of each input
    expression = [(s, c, after_join, "expression") for s in (a, b) for c in ("price", "qty")]
    assert sorted(columns["out.total"]) == sorted(expression)
    assert sorted(columns["out.big"]) == sorted(expression)
    assert columns["out.one"] == [] and found["computed"]["out.one"] == "derive: one = 1"
    # the join key takes both sides; the dimension's other column is filled afterwards
    assert sorted(columns["out.country"]) == sorted(
        [
            (a, "country", after_join, "identity"),
            (b, "country", after_join, "identity"),
            (dim, "code", ("joined", "unique", "filled"), "identity"),
        ]
    )
    assert columns["out.label"] == [(dim, "label", ("joined", "unique", "filled"), "fill")]
    assert list(found["columns"]).count("out.name") == 0  # renamed away, then not selected
    indirect = {(e["source"], e["column"], e["transformation"]) for e in found["indirect"]["out"]}
    assert indirect == {
        ("a", "country", "filter"),
        ("b", "country", "filter"),
        ("a", "country", "join"),
        ("b", "country", "join"),
        ("dim", "code", "join"),
        ("a", "id", "filter"),
        ("b", "id", "filter"),
    }


def test_a_user_function_is_reported_unknown_never_guessed(steps):
    found, _ = steps
    assert found["unknown"]["mapped"] == (
        "step `user`: its columns come from a user function, which is not analysed"
    )
    assert not [name for name in found["columns"] if name.startswith("mapped.")]


CONFORM_SPEC = """\
name: conform
sources:
  - {name: a, type: ReadFromCsv, config: {path: "${SPEC_DIR}/a.csv"}}
steps:
  - name: shaped
    type: ConformToSchema
    input: a
    config:
      schema:
        version: 1
        fields:
          - {name: id, type: int64}
          - {name: amount, type: "decimal(10,2)"}
          - {name: day, type: date, default: "2024-01-01"}
          - {name: note, type: string}
sinks:
  - {name: out, type: WriteToCsv, input: shaped, config: {path: "${OUTPUT_DIR}/out.csv"}}
  - {name: dl, type: WriteToDeadLetters, inputs: [a.error, shaped.error], config: {path: x.jsonl}}
"""


def test_conform_casts_keeps_and_fills_columns(tmp_path):
    (tmp_path / "a.csv").write_text("id,amount,extra\n1,2.5,x\n")
    (tmp_path / "spec.yaml").write_text(CONFORM_SPEC)
    found = column_lineage(_plan(tmp_path / "spec.yaml", tmp_path))
    a = f"file://{tmp_path}/a.csv"
    assert {name: _short(entries) for name, entries in found["columns"].items()} == {
        "out.id": [(a, "id", ("shaped",), "identity")],
        "out.amount": [(a, "amount", ("shaped",), "conform")],
        "out.day": [],
        "out.note": [],
        "out.extra": [(a, "extra", ("shaped",), "identity")],  # mode evolve keeps it
    }
    (amount,) = found["columns"]["out.amount"]
    assert amount["description"] == "shaped: conformed to decimal128(10, 2)"
    assert found["computed"] == {
        "out.day": "shaped: not in the input: its default 2024-01-01",
        "out.note": "shaped: not in the input: null",
    }
