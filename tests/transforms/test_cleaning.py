"""Cleaning processors: both outputs asserted exactly."""

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import letter_summary, visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.transforms.cleaning import CastColumns, DropNulls, RenameColumns, SelectColumns

BATCH = with_origin(
    pa.record_batch({"id": ["1", " 2 ", "x", None], "v": ["1.5", "2", "3", "y"]}),
    "in.csv",
    [2, 3, 4, 5],
)


def test_cast_columns_rejects_rows_naming_every_failing_column(pipeline):
    out = pipeline | beam.Create([BATCH]) | "cast" >> CastColumns({"id": "int32", "v": "float64"})
    assert_that(
        out.output | beam.FlatMap(visible_rows),
        equal_to([{"id": 1, "v": 1.5}, {"id": 2, "v": 2.0}]),
        label="Valid",
    )
    assert_that(
        out.error | beam.Map(letter_summary),
        equal_to(
            [
                ("cast", "cast_failed", 4, {"id": "x", "v": "3"}),
                ("cast", "cast_failed", 5, {"id": None, "v": "y"}),
            ]
        ),
        label="Invalid",
    )
    messages = out.error | beam.Map(lambda letter: letter.message)
    assert_that(
        messages,
        equal_to(
            [
                "Value `x` in column `id` is not a valid int32",
                "Value `y` in column `v` is not a valid float64",
            ]
        ),
        label="Messages",
    )
    pipeline.run().wait_until_finish()


def test_cast_columns_rejects_batches_missing_a_column(pipeline):
    out = pipeline | beam.Create([BATCH]) | "cast" >> CastColumns({"nope": "int64"})
    assert_that(out.output, equal_to([]), label="Valid")
    reasons = out.error | beam.Map(lambda letter: (letter.reason, letter.line))
    assert_that(
        reasons, equal_to([("missing_column", line) for line in (2, 3, 4, 5)]), label="Invalid"
    )
    pipeline.run().wait_until_finish()


def test_drop_nulls_rejects_or_drops(pipeline):
    batch = pa.record_batch({"a": [1, None, 3], "b": [float("nan"), 2.0, 3.0]})
    rejected = pipeline | "r" >> beam.Create([batch]) | "need" >> DropNulls(["a", "b"])
    dropped = pipeline | "d" >> beam.Create([batch]) | "drop" >> DropNulls(["a"], reject=False)
    assert_that(
        rejected.output | "rows1" >> beam.FlatMap(visible_rows),
        equal_to([{"a": 3, "b": 3.0}]),
        label="RejectValid",
    )
    assert_that(
        rejected.error | "m" >> beam.Map(lambda letter: (letter.reason, letter.message)),
        equal_to([("null_value", "Null in `b`"), ("null_value", "Null in `a`")]),
        label="RejectInvalid",
    )
    # NaN != NaN, so compare the kept `a` values only
    kept = dropped.output | "a" >> beam.FlatMap(lambda b: b.column("a").to_pylist())
    assert_that(kept, equal_to([1, 3]), label="DropValid")
    assert_that(dropped.error, equal_to([]), label="DropInvalid")
    pipeline.run().wait_until_finish()


def test_select_and_rename_keep_origin_columns(pipeline):
    out = pipeline | beam.Create([BATCH]) | SelectColumns(["v"])
    renamed = out.output | RenameColumns({"v": "value"})
    assert_that(
        renamed.output | beam.Map(lambda b: b.schema.names),
        equal_to([["value", "__beam_etl_file", "__beam_etl_line"]]),
    )
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("factory", "config", "message"),
    [
        pytest.param(CastColumns, {"columns": {}}, "at least one column", id="cast-empty"),
        pytest.param(
            CastColumns, {"columns": {"a": "money"}}, "Unknown type `money`", id="cast-unknown-type"
        ),
        pytest.param(DropNulls, {"columns": []}, "at least one column", id="dropnulls-empty"),
        pytest.param(SelectColumns, {"columns": ["a", "a"]}, "distinct", id="select-duplicate"),
        pytest.param(
            RenameColumns, {"columns": {"a": "x", "b": "x"}}, "same new name", id="rename-collision"
        ),
    ],
)
def test_bad_configuration_is_rejected_at_construction(factory, config, message):
    with pytest.raises(ValueError, match=message):
        factory(**config)
