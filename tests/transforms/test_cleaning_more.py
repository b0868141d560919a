"""Value cleaning and column shaping: fill, standardise, trim, case, drop, reorder."""

import datetime

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.transforms.cleaning import DropColumns, FillNulls, ReorderColumns
from beam_etl.transforms.text import ChangeCase, StandardizeNulls, TrimWhitespace

BATCH = with_origin(
    pa.record_batch(
        {
            "name": ["  Ann   Lee ", "N/A", None, " ", "ÉVA\tnull"],
            "city": ["oslo", "null", "rome", "NULL", " n/a "],
            "n": pa.array([1, None, 3, None, 5], pa.int32()),
            "x": [1.5, None, float("nan"), 2.0, None],
            "day": [datetime.date(2024, 1, 2), None, None, None, None],
        }
    ),
    "in.csv",
    [2, 3, 4, 5, 6],
)


def _columns(*names):
    def pick(batch):
        return list(zip(*(batch.column(n).to_pylist() for n in names)))

    return pick


def test_standardize_trim_and_change_case(pipeline):
    batches = pipeline | "In" >> beam.Create([BATCH])
    nulls = batches | "nulls" >> StandardizeNulls()
    trimmed = nulls.output | "trim" >> TrimWhitespace(["name"], normalize_spaces=True)
    cased = trimmed.output | "case" >> ChangeCase(["name", "city"], case="title")
    assert_that(
        cased.output | beam.FlatMap(_columns("name", "city")),
        equal_to(
            [("Ann Lee", "Oslo"), (None, None), (None, "Rome"), (None, None), ("Éva Null", None)]
        ),
        label="Output",
    )
    errors = (nulls.error, trimmed.error, cased.error) | beam.Flatten()
    assert_that(errors, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()


def test_trim_without_normalizing_and_custom_markers(pipeline):
    batches = pipeline | "In" >> beam.Create([BATCH])
    trimmed = batches | "trim" >> TrimWhitespace()
    marked = trimmed.output | "nulls" >> StandardizeNulls(["city"], markers=["null", "rome"])
    upper = marked.output | "upper" >> ChangeCase(["city"], case="upper")
    assert_that(
        upper.output | beam.FlatMap(_columns("name", "city")),
        equal_to(
            [
                ("Ann   Lee", "OSLO"),
                ("N/A", None),
                (None, None),
                ("", "NULL"),
                ("ÉVA\tnull", "N/A"),
            ]
        ),
        label="Output",
    )
    assert_that(upper.error, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()


def _nan_as_text(row):
    return tuple("NaN" if isinstance(v, float) and v != v else v for v in row)


def test_fill_nulls_per_column_and_by_kind(pipeline):
    batches = pipeline | "In" >> beam.Create([BATCH])
    filled = batches | "fill" >> FillNulls({"name": "?", "day": datetime.date(2000, 1, 1)}, value=0)
    rows = filled.output | beam.FlatMap(_columns("name", "city", "n", "x", "day"))
    assert_that(
        rows | beam.Map(_nan_as_text),
        equal_to(
            [
                ("  Ann   Lee ", "oslo", 1, 1.5, datetime.date(2024, 1, 2)),
                ("N/A", "null", 0, 0.0, datetime.date(2000, 1, 1)),
                ("?", "rome", 3, "NaN", datetime.date(2000, 1, 1)),  # NaN is not null
                (" ", "NULL", 0, 2.0, datetime.date(2000, 1, 1)),
                ("ÉVA\tnull", " n/a ", 5, 0.0, datetime.date(2000, 1, 1)),
            ]
        ),
        label="Output",
    )
    assert_that(
        filled.output | "Types" >> beam.Map(lambda b: str(b.schema.field("n").type)),
        equal_to(["int32"]),
        label="Types",
    )
    assert_that(filled.error, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()


def test_drop_and_reorder_columns_keep_origin_columns(pipeline):
    batches = pipeline | "In" >> beam.Create([BATCH])
    dropped = batches | "drop" >> DropColumns(["x", "day"])
    moved = dropped.output | "reorder" >> ReorderColumns(["n", "city"])
    assert_that(
        moved.output | beam.Map(lambda b: b.schema.names),
        equal_to([["n", "city", "name", "__beam_etl_file", "__beam_etl_line"]]),
        label="Names",
    )
    assert_that(
        moved.output | "Rows" >> beam.FlatMap(visible_rows) | beam.Map(lambda r: r["n"]),
        equal_to([1, None, 3, None, 5]),
        label="Rows",
    )
    errors = (dropped.error, moved.error) | beam.Flatten()
    assert_that(errors, equal_to([]), label="Errors")
    pipeline.run().wait_until_finish()


def test_a_missing_column_fails_the_run_naming_the_step(pipeline):
    _ = pipeline | beam.Create([BATCH]) | "drop" >> DropColumns(["nope"])
    with pytest.raises(Exception, match=r"Column\(s\) `nope` not in the input .*step `drop`"):
        pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("step", "message"),
    [
        pytest.param(TrimWhitespace(["nope"]), "`nope` not in the input", id="trim-missing"),
        pytest.param(
            ChangeCase(["n"]),
            "ChangeCase applies to text columns; `n` is int32",
            id="case-not-text",
        ),
        pytest.param(
            FillNulls({"n": "zero"}),
            "Fill value `zero` does not fit column `n` of type int32",
            id="fill-kind",
        ),
        pytest.param(
            FillNulls({"n": 2**40}),
            "Fill value `1099511627776` does not fit column `n`",
            id="fill-range",
        ),
        pytest.param(FillNulls({"nope": 1}), "`nope` not in the input", id="fill-missing"),
        pytest.param(ReorderColumns(["nope"]), "`nope` not in the input", id="reorder-missing"),
        pytest.param(DropColumns(["nope"]), "`nope` not in the input", id="drop-missing"),
    ],
)
def test_schema_problems_are_found_at_load_time(step, message):
    with pytest.raises(ValueError, match=message):
        step.infer_schema(BATCH.schema)


def test_infer_schema_gives_the_output_schema():
    assert DropColumns(["x"]).infer_schema(BATCH.schema).names[:4] == ["name", "city", "n", "day"]
    assert ReorderColumns(["day"]).infer_schema(BATCH.schema).names[:2] == ["day", "name"]
    assert FillNulls(value="?").infer_schema(BATCH.schema) == BATCH.schema


@pytest.mark.parametrize(
    ("factory", "config", "message"),
    [
        pytest.param(FillNulls, {}, "Give `values`", id="fill-nothing"),
        pytest.param(FillNulls, {"values": {"a": None}}, "must not fill with null", id="fill-null"),
        pytest.param(
            ChangeCase,
            {"columns": ["a"], "case": "camel"},
            "`case` must be one of lower",
            id="case",
        ),
        pytest.param(TrimWhitespace, {"columns": []}, "at least one column", id="trim-empty"),
        pytest.param(
            StandardizeNulls, {"markers": [1]}, "`markers` must list strings", id="markers"
        ),
        pytest.param(DropColumns, {"columns": ["a", "a"]}, "distinct", id="drop-duplicate"),
        pytest.param(
            DropColumns, {"columns": ["__beam_etl_line"]}, "origin columns", id="drop-origin"
        ),
        pytest.param(ReorderColumns, {"columns": []}, "at least one column", id="reorder-empty"),
    ],
)
def test_bad_configuration_is_rejected_at_construction(factory, config, message):
    with pytest.raises(ValueError, match=message):
        factory(**config)
