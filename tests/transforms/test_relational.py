"""Relational processors: lookup join, keyed join, aggregation, union, split."""

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.core.batches import visible, with_origin
from beam_etl.core.errors import ExpressionError
from beam_etl.transforms.aggregate import Aggregate
from beam_etl.transforms.relational import JoinInputs, LookupJoin
from beam_etl.transforms.routing import SplitRows, UnionInputs

ORDERS = [
    with_origin(
        pa.record_batch({"id": [1, 2, 3], "cust": [10, 20, None], "name": ["a", "b", "c"]}),
        "orders.csv",
        [2, 3, 4],
    ),
    with_origin(pa.record_batch({"id": [4], "cust": [30], "name": ["d"]}), "orders.csv", [5]),
]
CUSTOMERS = [
    pa.record_batch({"cust": [10], "name": ["Ann"], "city": ["Oslo"]}),
    pa.record_batch({"cust": [20, None], "name": ["Bob", "Nul"], "city": ["Rome", "Nowhere"]}),
]


def test_lookup_join_left_keeps_unmatched_rows_with_nulls(pipeline):
    orders = pipeline | "Orders" >> beam.Create(ORDERS)
    customers = pipeline | "Customers" >> beam.Create(CUSTOMERS)
    out = orders | "enrich" >> LookupJoin(customers, ["cust"])
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to(
            [
                {"id": 1, "cust": 10, "name": "a", "name_dim": "Ann", "city": "Oslo"},
                {"id": 2, "cust": 20, "name": "b", "name_dim": "Bob", "city": "Rome"},
                {"id": 3, "cust": None, "name": "c", "name_dim": None, "city": None},
                {"id": 4, "cust": 30, "name": "d", "name_dim": None, "city": None},
            ]
        ),
        label="Output",
    )
    assert_that(out.error, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()


def test_lookup_join_rejects_misses_from_spec_style_inputs(pipeline):
    inputs = {
        "orders": pipeline | "Orders" >> beam.Create(ORDERS),
        "customers": pipeline | "Customers" >> beam.Create(CUSTOMERS),
    }
    join = LookupJoin(
        "customers", {"cust": "cust"}, how="inner", columns=["city"], unmatched="reject"
    )
    out = inputs | "enrich" >> join
    assert join.SIDE_INPUTS == ("customers",)
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to(
            [
                {"id": 1, "cust": 10, "name": "a", "city": "Oslo"},
                {"id": 2, "cust": 20, "name": "b", "city": "Rome"},
            ]
        ),
        label="Output",
    )
    assert_that(
        out.error | beam.Map(lambda letter: (*letter_summary(letter), letter.message)),
        equal_to(
            [
                (
                    "enrich",
                    "lookup_miss",
                    4,
                    {"id": 3, "cust": None, "name": "c"},
                    "Null key `cust`: null keys never match `customers`",
                ),
                (
                    "enrich",
                    "lookup_miss",
                    5,
                    {"id": 4, "cust": 30, "name": "d"},
                    "No row of `customers` for `cust`=`30`",
                ),
            ]
        ),
        label="Errors",
    )
    pipeline.run().wait_until_finish()


def test_lookup_join_on_two_keys_with_other_names_and_types(pipeline):
    stream = pa.record_batch({"a": [1, 1, 2], "b": ["x", "y", "x"]})
    dimension = pa.record_batch(
        {"ka": pa.array([1, 2], pa.int32()), "kb": ["x", "x"], "v": [1.5, 2.5]}
    )
    out = (
        pipeline
        | "Stream" >> beam.Create([stream])
        | LookupJoin(pipeline | "Dim" >> beam.Create([dimension]), {"a": "ka", "b": "kb"})
    )
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to(
            [
                {"a": 1, "b": "x", "v": 1.5},
                {"a": 1, "b": "y", "v": None},
                {"a": 2, "b": "x", "v": 2.5},
            ]
        ),
        label="Output",
    )
    assert_that(out.error, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()


def test_lookup_join_fails_on_a_dimension_key_seen_twice(pipeline):
    dimension = pa.record_batch({"cust": [10, 10], "city": ["Oslo", "Bergen"]})
    orders = pipeline | "Orders" >> beam.Create(ORDERS)
    _ = orders | LookupJoin(pipeline | "Dim" >> beam.Create([dimension]), ["cust"])
    with pytest.raises(Exception, match=r"holds 1 key\(s\) more than once, e.g. \{'cust': 10\}"):
        pipeline.run().wait_until_finish()


LEFT = [
    pa.record_batch({"k": [1, 1, 2, None], "v": ["a", "b", "c", "n"]}),
    pa.record_batch({"k": [4], "v": ["d"]}),
]
RIGHT = [pa.record_batch({"k": [1, 2, 3, None], "v": ["x", "y", "z", "m"]})]
ALL_PAIRS = [
    {"k": 1, "v": "a", "v_right": "x"},
    {"k": 1, "v": "b", "v_right": "x"},
    {"k": 2, "v": "c", "v_right": "y"},
]
LEFT_ONLY = [{"k": None, "v": "n", "v_right": None}, {"k": 4, "v": "d", "v_right": None}]
RIGHT_ONLY = [{"k": 3, "v": None, "v_right": "z"}, {"k": None, "v": None, "v_right": "m"}]


def _rebatched(batches, size):
    table = pa.Table.from_batches(batches)
    return table.to_batches(max_chunksize=size)


JOINED = {
    "inner": ALL_PAIRS,
    "left": ALL_PAIRS + LEFT_ONLY,
    "right": ALL_PAIRS + RIGHT_ONLY,
    "full": ALL_PAIRS + LEFT_ONLY + RIGHT_ONLY,
}


def test_join_inputs_is_the_same_whatever_the_batching(pipeline):
    for size in (1, 10):  # one row per batch, or everything in one batch
        left = pipeline | f"Left{size}" >> beam.Create(_rebatched(LEFT, size))
        right = pipeline | f"Right{size}" >> beam.Create(_rebatched(RIGHT, size))
        for how, expected in JOINED.items():
            out = (left, right) | f"Join{how}{size}" >> JoinInputs(["k"], how=how)
            rows = out | f"Rows{how}{size}" >> beam.FlatMap(visible_rows)
            assert_that(rows, equal_to(expected), label=f"{how}-batches-of-{size}")
    pipeline.run().wait_until_finish()


def test_join_inputs_keeps_types_and_origin(pipeline):
    left = with_origin(pa.record_batch({"id": pa.array([1], pa.int16()), "a": [1.5]}), "l.csv", [7])
    right = pa.record_batch({"rid": pa.array([1], pa.int16()), "b": [True]})
    joined = (
        pipeline | "L" >> beam.Create([left]),
        pipeline | "R" >> beam.Create([right]),
    ) | JoinInputs({"id": "rid"}, how="full")
    assert_that(
        joined | beam.Map(lambda b: (str(b.schema), b.to_pylist())),
        equal_to(
            [
                (
                    "id: int16\na: double\nb: bool\n"
                    "__beam_etl_file: dictionary<values=string, indices=int32, ordered=0>\n"
                    "__beam_etl_line: int64",
                    [
                        {
                            "id": 1,
                            "a": 1.5,
                            "b": True,
                            "__beam_etl_file": "l.csv",
                            "__beam_etl_line": 7,
                        }
                    ],
                )
            ]
        ),
    )
    pipeline.run().wait_until_finish()


SALES = pa.record_batch(
    {
        "shop": ["a", "a", "b", None, "a", "b", None],
        "amount": [1, 2, 3, 4, None, 5, 6],
        "price": [1.5, 2.5, None, 0.5, 4.0, 1.0, 2.0],
        "sku": ["x", "y", "x", "x", "x", None, "z"],
    }
)
AGGREGATIONS = {
    "n": "count(*)",
    "amounts": "count(amount)",
    "skus": "count_distinct(sku)",
    "total": "sum(amount)",
    "low": "min(price)",
    "high": "max(`price`)",
    "avg": "mean(amount)",
}
EXPECTED_SALES = [
    {"shop": "a", "n": 3, "amounts": 2, "skus": 2, "total": 3, "low": 1.5, "high": 4.0, "avg": 1.5},
    {"shop": "b", "n": 2, "amounts": 2, "skus": 1, "total": 8, "low": 1.0, "high": 1.0, "avg": 4.0},
    {
        "shop": None,
        "n": 2,
        "amounts": 2,
        "skus": 2,
        "total": 10,
        "low": 0.5,
        "high": 2.0,
        "avg": 5.0,
    },
]


def test_aggregate_is_the_same_whatever_the_batching(pipeline):
    for size in (1, 3, 7):
        batches = pa.Table.from_batches([SALES]).to_batches(max_chunksize=size)
        out = (
            pipeline
            | f"Sales{size}" >> beam.Create(batches)
            | f"Agg{size}" >> Aggregate(["shop"], AGGREGATIONS)
        )
        assert_that(
            out | f"Rows{size}" >> beam.FlatMap(visible_rows),
            equal_to(EXPECTED_SALES),
            label=f"B{size}",
        )
    pipeline.run().wait_until_finish()


def test_aggregate_types_and_whole_input_group(pipeline):
    out = pipeline | beam.Create([SALES]) | Aggregate([], {"n": "count(*)", "total": "sum(amount)"})
    assert_that(
        out | beam.Map(lambda b: (str(b.schema), b.to_pylist())),
        equal_to([("n: int64\ntotal: int64", [{"n": 7, "total": 21}])]),
    )
    schema = Aggregate(["shop"], AGGREGATIONS).infer_schema(SALES.schema)
    assert [str(f.type) for f in schema] == [
        "string",
        "int64",
        "int64",
        "int64",
        "int64",
        "double",
        "double",
        "double",
    ]
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("group_by", "aggregations", "message"),
    [
        pytest.param(
            ["shop"], {"t": "sum(sku)"}, "do not apply to these column types", id="sum-string"
        ),
        pytest.param(
            ["nope"], {"n": "count(*)"}, "Column\\(s\\) `nope` not in the input", id="missing"
        ),
    ],
)
def test_aggregate_checks_columns_and_types_at_load_time(group_by, aggregations, message):
    with pytest.raises(ValueError, match=message):
        Aggregate(group_by, aggregations).infer_schema(SALES.schema)


def test_union_aligns_schemas(pipeline):
    first = with_origin(pa.record_batch({"a": pa.array([1], pa.int32()), "b": ["x"]}), "f.csv", [2])
    second = pa.record_batch({"c": [True], "a": pa.array([2], pa.int64())})
    out = {
        "first": pipeline | "First" >> beam.Create([first]),
        "second": pipeline | "Second" >> beam.Create([second]),
    } | UnionInputs()
    assert_that(
        out | beam.Map(lambda b: (str(visible(b).schema), visible_rows(b))),
        equal_to(
            [
                ("a: int64\nb: string\nc: bool", [{"a": 1, "b": "x", "c": None}]),
                ("a: int64\nb: string\nc: bool", [{"a": 2, "b": None, "c": True}]),
            ]
        ),
    )
    pipeline.run().wait_until_finish()


def test_split_rows_sends_each_row_to_its_first_matching_output(pipeline):
    batch = with_origin(
        pa.record_batch({"amount": [5, 50, 500, None], "d": [1, 1, 0, 1]}), "s.csv", [2, 3, 4, 5]
    )
    split = SplitRows({"big": "amount > 100", "medium": "amount > 10"}, default="small")
    assert split.OUTPUTS == ("big", "medium", "small", "error")
    out = pipeline | "In" >> beam.Create([batch]) | "split" >> split
    amounts = {
        name: out[name] | f"A{name}" >> beam.FlatMap(lambda b: b.column("amount").to_pylist())
        for name in ("big", "medium", "small")
    }
    assert_that(amounts["big"], equal_to([500]), label="Big")
    assert_that(amounts["medium"], equal_to([50]), label="Medium")
    assert_that(amounts["small"], equal_to([5, None]), label="Small")
    assert_that(out["error"], equal_to([]), label="Errors")
    failing = (
        pipeline | "Bad" >> beam.Create([batch]) | "ratio" >> SplitRows({"r": "amount / d > 1"})
    )
    amount = "amount"
    assert_that(
        failing["r"] | "R" >> beam.FlatMap(lambda b: b.column(amount).to_pylist()),
        equal_to([5, 50]),
        label="FailR",
    )
    assert_that(
        failing["rest"] | "Rest" >> beam.FlatMap(lambda b: b.column(amount).to_pylist()),
        equal_to([None]),
        label="FailRest",
    )
    assert_that(  # only the row dividing by zero
        failing["error"] | beam.Map(lambda letter: (letter.reason, letter.line)),
        equal_to([("expression_failed", 4)]),
        label="FailErrors",
    )
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("factory", "config", "message"),
    [
        pytest.param(
            LookupJoin, {"dimension": "d", "on": []}, "`on` must list", id="lookup-no-keys"
        ),
        pytest.param(
            LookupJoin,
            {"dimension": "d", "on": ["k"], "how": "right"},
            "`how` must be `left` or `inner`",
            id="lookup-how",
        ),
        pytest.param(
            LookupJoin,
            {"dimension": "d", "on": ["k"], "unmatched": "drop"},
            "`unmatched` must be",
            id="lookup-unmatched",
        ),
        pytest.param(
            JoinInputs, {"on": ["k"], "how": "cross"}, "`how` must be one of inner", id="join-how"
        ),
        pytest.param(
            Aggregate,
            {"group_by": ["a"], "aggregations": {"x": "median(b)"}},
            "`median\\(b\\)` is not one of",
            id="agg-function",
        ),
        pytest.param(
            Aggregate,
            {"group_by": ["a"], "aggregations": {"x": "sum(*)"}},
            "only count takes",
            id="agg-star",
        ),
        pytest.param(
            Aggregate,
            {"group_by": ["a"], "aggregations": {"a": "count(*)"}},
            "also a `group_by` column",
            id="agg-clash",
        ),
        pytest.param(
            SplitRows,
            {"conditions": {"error": "a > 1"}},
            "other than `error`",
            id="split-error-name",
        ),
        pytest.param(
            SplitRows,
            {"conditions": {"rest": "a > 1"}},
            "`default` `rest` is also",
            id="split-default-clash",
        ),
    ],
)
def test_bad_configuration_is_rejected_at_construction(factory, config, message):
    with pytest.raises(ValueError, match=message):
        factory(**config)


def test_split_rows_reports_expression_errors_with_their_position():
    with pytest.raises(ExpressionError, match="Syntax error at position 3"):
        SplitRows({"x": "a >"})


def test_spec_builder_wires_multi_input_and_named_outputs(pipeline):
    from beam_etl.pipeline.builder import build
    from beam_etl.pipeline.model import InputRef, Node

    def node(name, kind, inputs=()):
        refs = [InputRef(*ref.partition(".")[::2], 1) for ref in inputs]
        refs = [InputRef(r.node, r.output or "output", 1) for r in refs]
        return Node(name, kind, "T", {}, refs, 1, 1)

    ordered = [
        node("orders", "source"),
        node("customers", "source"),
        node("enrich", "step", ["orders", "customers"]),
        node("split", "step", ["enrich"]),
    ]
    transforms = {
        "orders": beam.Create(ORDERS),
        "customers": beam.Create(CUSTOMERS),
        "enrich": LookupJoin("customers", ["cust"], columns=["city"]),
        "split": SplitRows({"north": "city == 'Oslo'"}),
    }
    outputs = build(pipeline, ordered, transforms)
    assert sorted(k for k in outputs if k[0] == "split") == [
        ("split", "error"),
        ("split", "north"),
        ("split", "rest"),
    ]
    ids = {
        name: outputs[("split", name)] | f"Ids{name}" >> beam.FlatMap(lambda b: b["id"].to_pylist())
        for name in ("north", "rest")
    }
    assert_that(ids["north"], equal_to([1]), label="North")
    assert_that(ids["rest"], equal_to([2, 3, 4]), label="Rest")
    assert_that(outputs[("split", "error")], equal_to([]), label="SplitErrors")
    assert_that(outputs[("enrich", "error")], equal_to([]), label="EnrichErrors")
    pipeline.run().wait_until_finish()
