"""Inference on a messy CSV; ConformToSchema per contract mode with both outputs asserted."""

import datetime
from decimal import Decimal

import apache_beam as beam
import pyarrow as pa
import pytest
import yaml
from apache_beam.testing.util import assert_that, equal_to
from conftest import visible_rows

from beam_etl.core.batches import with_origin
from beam_etl.core.errors import ConnectorError
from beam_etl.schema.conform import ConformToSchema
from beam_etl.schema.infer import infer_schema, infer_schema_text
from beam_etl.schema.model import Schema

MESSY = (
    "id,amount,qty,day,seen_at,zip,score,flag,note\n"
    "1,12.50,3,2024-01-31,2024-01-31 10:00:00,01234,10,true,hello\n"
    "2,7,,2024-02-01,2024-02-01T11:30:00,99999,n/a,false,\n"
    '3, 8.25 ,5,,2024-02-02 09:00:00,12345,7.5,TRUE,"a, b"\n'
    "4,,2,2024-02-03,,54321,3,,é\n"
)


def test_inference_on_a_messy_csv(write_file):
    schema = infer_schema(write_file("messy.csv", MESSY))
    assert [(f.name, str(f.type), f.nullable) for f in schema.fields] == [
        ("id", "int64", False),
        ("amount", "double", True),  # ints and floats mixed, one empty
        ("qty", "int64", True),
        ("day", "date32[day]", True),  # dates in one format, one empty
        ("seen_at", "timestamp[us]", True),
        ("zip", "string", False),  # leading zero: a code, not a number
        ("score", "string", False),  # numeric except one value
        ("flag", "bool", True),
        ("note", "string", True),
    ]
    assert schema.candidate_keys == (("id",), ("zip",), ("score",))


def test_inference_sample_rows_and_printed_formats(write_file):
    path = write_file("messy.csv", MESSY)
    first = infer_schema(path, sample_rows=1)
    assert (first.field("score").type, first.field("qty").nullable) == (pa.int64(), False)
    assert Schema.from_json(infer_schema_text(path)) == infer_schema(path)
    assert Schema.from_dict(yaml.safe_load(infer_schema_text(path, output_format="yaml"))) == (
        infer_schema(path)
    )
    with pytest.raises(ConnectorError, match="Cannot read a sample of"):
        infer_schema(path + ".missing")


SCHEMA = {
    "version": 1,
    "fields": [
        {"name": "id", "type": "int64", "nullable": False},
        {"name": "amount", "type": "decimal(10,2)"},
        {"name": "day", "type": "date", "default": "2024-01-01"},
    ],
}
BATCH = with_origin(
    pa.record_batch(
        {
            "id": ["1", "x", None, "4", "5"],
            "amount": ["1.5", "2", " 3.25 ", "1.234", None],
            "extra": [None, "e", None, None, "f"],
        }
    ),
    "in.csv",
    [2, 3, 4, 5, 6],
)
ROW_1 = {"id": 1, "amount": Decimal("1.50"), "day": datetime.date(2024, 1, 1)}
ROW_5 = {"id": 5, "amount": None, "day": datetime.date(2024, 1, 1)}
COMMON_ERRORS = [
    ("schema_mismatch", 4, "Null in non-nullable column `id`"),
    ("cast_failed", 5, "Value `1.234` in column `amount` is not a valid decimal(10,2)"),
]
MODES = {
    "evolve": (
        [{**ROW_1, "extra": None}, {**ROW_5, "extra": "f"}],
        [("cast_failed", 3, "Value `x` in column `id` is not a valid int64"), *COMMON_ERRORS],
    ),
    "discard_columns": (
        [ROW_1, ROW_5],
        [("cast_failed", 3, "Value `x` in column `id` is not a valid int64"), *COMMON_ERRORS],
    ),
    "discard_rows": (
        [ROW_1],
        [
            (
                "schema_mismatch",
                3,
                "Value `x` in column `id` is not a valid int64; "
                "Column `extra` is not in the schema (value `e`)",
            ),
            *COMMON_ERRORS,
            ("schema_mismatch", 6, "Column `extra` is not in the schema (value `f`)"),
        ],
    ),
}


@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
def test_conform_per_mode_both_outputs(pipeline, mode):
    rows, errors = MODES[mode]
    out = pipeline | beam.Create([BATCH]) | "conform" >> ConformToSchema(SCHEMA, mode=mode)
    assert_that(out.output | beam.FlatMap(visible_rows), equal_to(rows), label="Valid")
    assert_that(
        out.error | beam.Map(lambda d: (d.reason, d.line, d.message)),
        equal_to(errors),
        label="Invalid",
    )
    pipeline.run().wait_until_finish()


def test_conform_output_schema_is_the_declared_one():
    conform = ConformToSchema(SCHEMA, mode="discard_columns")
    out, _, _ = conform.batch_function()(BATCH, "conform")
    assert out.schema.field("id") == pa.field("id", pa.int64(), nullable=False)
    assert conform.infer_schema(BATCH.schema).names == ["id", "amount", "day"]


def test_freeze_fails_the_run_listing_every_difference(pipeline):
    _ = pipeline | beam.Create([BATCH]) | "conform" >> ConformToSchema(SCHEMA, mode="freeze")
    message = "columns not in the schema: `extra`; columns missing: `day`"
    with pytest.raises(Exception, match=message):
        pipeline.run().wait_until_finish()
    with pytest.raises(ValueError, match=message):
        ConformToSchema(SCHEMA, mode="freeze").infer_schema(BATCH.schema)


def test_missing_required_column_rejects_its_rows():
    schema = {
        **SCHEMA,
        "fields": [*SCHEMA["fields"], {"name": "must", "type": "string", "nullable": False}],
    }
    batch = with_origin(pa.record_batch({"id": ["1"]}), "in.csv", [2])
    out, letters, _ = ConformToSchema(schema).batch_function()(batch, "conform")
    assert out is None
    assert [(d.reason, d.message) for d in letters] == [
        ("schema_mismatch", "Column `must` (string) is missing and not nullable")
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": SCHEMA, "mode": "loose"}, "`mode` must be one of"),
        ({"schema": {"fields": []}}, "Invalid `schema`: Unsupported schema version"),
    ],
    ids=["mode", "schema"],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConformToSchema(**kwargs)


CONSTRAINED = {
    "version": 1,
    "fields": [
        {"name": "id", "type": "int64", "nullable": False},
        {"name": "price", "type": "float64", "constraints": {"min": 0, "max": 100}},
        {"name": "code", "type": "string", "constraints": {"pattern": "[A-Z]{2}"}},
        {
            "name": "size",
            "type": "string",
            "constraints": {"allowed_values": ["S", "M"], "max_length": 1},
        },
    ],
}


def test_field_constraints_are_enforced_every_failure_named(pipeline):
    batch = with_origin(
        pa.record_batch(
            {
                "id": ["1", "2", "3", "4"],
                "price": ["5", "-1", None, "x"],
                "code": ["FR", "fr", None, "FR"],
                "size": ["S", "XL", None, "M"],
            }
        ),
        "in.csv",
        [2, 3, 4, 5],
    )
    out = pipeline | beam.Create([batch]) | "conform" >> ConformToSchema(CONSTRAINED)
    # Nulls pass every constraint; a value that does not convert is a cast failure only.
    assert_that(
        out.output | beam.Map(lambda b: b.column("id").to_pylist()),
        equal_to([[1, 3]]),
        label="Valid",
    )
    assert_that(
        out.error | beam.Map(lambda d: (d.reason, d.line, d.message)),
        equal_to(
            [
                (
                    "schema_mismatch",
                    3,
                    "constraint.range.price: `price` = `-1.0` is not in [0, 100]; "
                    "constraint.pattern.code: `code` = `fr` does not match `[A-Z]{2}`; "
                    "constraint.allowed_values.size: `size` = `XL` is not one of S, M; "
                    "constraint.length.size: length of `size` = `XL` is not in [0, 1]",
                ),
                ("cast_failed", 5, "Value `x` in column `price` is not a valid float64"),
            ]
        ),
        label="Invalid",
    )
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize(
    ("kind", "constraints", "message"),
    [
        ("string", {"pattern": "(unclosed"}, "Invalid `pattern`"),
        ("int64", {"pattern": "x"}, "regex needs a string column"),
        ("int64", {"min_length": 1}, "cannot evaluate"),
        ("int64", {"allowed_values": ["a"]}, "cannot evaluate"),
        ("int64", {"min": "abc"}, "cannot evaluate"),
    ],
    ids=["bad-pattern", "pattern-on-int", "length-on-int", "text-values", "text-bound"],
)
def test_bad_constraints_are_refused_when_built(kind, constraints, message):
    schema = {"version": 1, "fields": [{"name": "c", "type": kind, "constraints": constraints}]}
    with pytest.raises(ValueError, match=f"Constraint on `c`: .*{message}"):
        ConformToSchema(schema)


def test_infer_schema_never_rounds_integers_beyond_int64(tmp_path):
    from beam_etl.schema.infer import infer_schema

    path = tmp_path / "big.csv"
    path.write_text("id,big,f\n1,9223372036854775808,1.5\n2,1,2\n")
    types = {field.name: str(field.type) for field in infer_schema(str(path)).fields}
    assert types["big"] == "decimal128(38, 0)"
    assert types["f"] == "double"
