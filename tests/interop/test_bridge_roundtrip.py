"""ToRows / ToBatches: every type beam_etl maps survives batches -> rows -> batches."""

import datetime
import decimal
import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.typehints import schemas

from beam_etl.core.batches import FILE_COLUMN, LINE_COLUMN, with_origin
from beam_etl.core.errors import DataError
from beam_etl.interop import ToBatches, ToRows
from beam_etl.interop.rowtypes import arrow_schema, batch_of, row_maker, row_type
from beam_etl.io.csvio import ReadFromCsv
from beam_etl.runner import LocalRunner
from beam_etl.transforms import CastColumns

UTC = datetime.UTC

# One column per type beam_etl maps, each with a value that stresses it and a null.
CASES = {
    "int8": (pa.int8(), -128),
    "int16": (pa.int16(), 32_767),
    "int32": (pa.int32(), -(2**31)),
    "int64": (pa.int64(), 2**63 - 1),
    "uint8": (pa.uint8(), 255),
    "uint16": (pa.uint16(), 65_535),
    "uint32": (pa.uint32(), 2**32 - 1),
    "uint64": (pa.uint64(), 2**64 - 1),
    "float32": (pa.float32(), 1.5),
    "float64": (pa.float64(), 1e-300),
    "bool": (pa.bool_(), False),
    "string": (pa.string(), "naïve ☃ \x00 text"),
    "large_string": (pa.large_string(), "large"),
    "binary": (pa.binary(), b"\x00\xff\xfe"),
    "decimal_10_2": (pa.decimal128(10, 2), decimal.Decimal("-99999999.99")),
    "decimal_38_0": (pa.decimal128(38, 0), decimal.Decimal("9" * 28)),
    "decimal_50_10": (pa.decimal256(50, 10), decimal.Decimal("1" * 40 + ".0123456789")),
    "date": (pa.date32(), datetime.date(1, 1, 1)),
    "timestamp_naive": (pa.timestamp("us"), datetime.datetime(2024, 2, 29, 23, 59, 59, 999999)),
    "timestamp_utc": (
        pa.timestamp("us", "UTC"),
        datetime.datetime(1960, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    ),
    "timestamp_berlin": (
        pa.timestamp("us", "Europe/Berlin"),
        datetime.datetime(2024, 3, 31, 1, 30, tzinfo=UTC),
    ),
    "timestamp_ms": (pa.timestamp("ms", "UTC"), datetime.datetime(2000, 1, 1, 0, 0, 0, 5000, UTC)),
    "timestamp_s": (pa.timestamp("s"), datetime.datetime(2038, 1, 19, 3, 14, 8)),
    "timestamp_ns_whole_micros": (pa.timestamp("ns"), datetime.datetime(2024, 1, 1, 0, 0, 0, 7)),
    "struct": (
        pa.struct([("a", pa.int64()), ("b", pa.struct([("c", pa.decimal128(5, 1))]))]),
        {"a": 1, "b": {"c": decimal.Decimal("1.5")}},
    ),
    "list_int": (pa.list_(pa.int64()), [1, None, 3]),
    "list_struct": (
        pa.list_(pa.struct([("k", pa.string()), ("at", pa.timestamp("us", "UTC"))])),
        [{"k": "x", "at": datetime.datetime(2020, 1, 1, tzinfo=UTC)}, None],
    ),
    "large_list": (pa.large_list(pa.string()), ["a"]),
    "map": (pa.map_(pa.string(), pa.int64()), [("a", 1), ("b", None)]),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), "red"),
    "null": (pa.null(), None),
}


def _batch(names: list[str]) -> pa.RecordBatch:
    fields = [pa.field(name, CASES[name][0]) for name in names]
    fields.append(pa.field("required", pa.int64(), nullable=False))
    rows = [
        {**{name: CASES[name][1] for name in names}, "required": 1},
        {**dict.fromkeys(names), "required": 2},
    ]
    batch = with_origin(pa.RecordBatch.from_pylist(rows, schema=pa.schema(fields)), "f.csv", [2, 3])
    hidden = [batch.schema.field(name) for name in (FILE_COLUMN, LINE_COLUMN)]
    return pa.RecordBatch.from_arrays(batch.columns, schema=pa.schema(fields + hidden))


def _visible(batch: pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([batch]).drop_columns([FILE_COLUMN, LINE_COLUMN])


@pytest.mark.parametrize("name", list(CASES))
def test_every_mapped_type_round_trips_through_rows_and_a_shuffle(name):
    batch = _batch([name])
    expected = _visible(batch)

    def check(batches):
        table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches])
        assert table.schema.equals(expected.schema), (table.schema, expected.schema)
        got = sorted(table.to_pylist(), key=lambda row: row["required"])
        assert repr(got) == repr(expected.to_pylist())

    with test_pipeline.TestPipeline(runner=LocalRunner()) as p:
        rows = p | beam.Create([batch]) | ToRows(schema=batch.schema)
        back = rows | "Shuffle" >> beam.Reshuffle() | ToBatches()
        assert_that(back, check, label="RoundTrip")


def test_all_types_together_round_trip_and_count_globally_counts_rows():
    batch = _batch(list(CASES))
    expected = _visible(batch)
    with test_pipeline.TestPipeline(runner=LocalRunner()) as p:
        batches = p | beam.Create([batch, batch.slice(1)])
        rows = batches | ToRows(schema=batch.schema)
        assert_that(rows | beam.combiners.Count.Globally(), equal_to([3]), label="Count")
        back = rows | beam.Reshuffle() | ToBatches()
        tables = back | beam.Map(lambda b: pa.Table.from_batches([b]))

        def check(found):
            table = pa.concat_tables(found)
            assert table.schema.equals(expected.schema)
            assert table.num_rows == 3

        assert_that(tables, check, label="Types")


def test_rows_are_schema_d_with_named_typed_fields():
    batch = _batch(["int32", "decimal_10_2", "timestamp_berlin", "struct"])
    constraint = row_type(batch.schema)
    fields = dict(schemas.named_fields_from_element_type(constraint))
    assert list(fields) == ["int32", "decimal_10_2", "timestamp_berlin", "struct", "required"]
    proto = schemas.typing_to_runner_api(constraint).row_type.schema
    kinds = {f.name: f.type.WhichOneof("type_info") for f in proto.fields}
    assert kinds == {
        "int32": "atomic_type",
        "decimal_10_2": "logical_type",
        "timestamp_berlin": "logical_type",
        "struct": "row_type",
        "required": "atomic_type",
    }
    assert [f.type.logical_type.urn for f in proto.fields[1:3]] == [
        "beam:logical_type:decimal:v1",
        "beam:logical_type:micros_instant:v1",
    ]
    assert not proto.fields[4].type.nullable


def test_row_values_are_beam_values_readable_by_name():
    batch = _batch(["decimal_10_2", "timestamp_berlin", "struct", "list_int", "map"])
    _, rows_of = row_maker(batch.schema)
    first = rows_of(batch)[0]
    assert first.decimal_10_2 == decimal.Decimal("-99999999.99")
    assert first.timestamp_berlin.to_utc_datetime(has_tz=True) == CASES["timestamp_berlin"][1]
    assert first.struct.b.c == decimal.Decimal("1.5")
    assert first.list_int == [1, None, 3]
    assert first.map == {"a": 1, "b": None}
    assert first._asdict()["required"] == 1


def test_to_rows_finds_the_schema_of_a_beam_etl_source_and_step(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id,amount,day\n1,1.50,2024-01-01\n2,2.25,2024-01-02\n3,x,2024-01-03\n")
    with test_pipeline.TestPipeline(runner=LocalRunner()) as p:
        read = p | "Read" >> ReadFromCsv(str(path), columns={"day": "date"})
        cast = read.output | "Cast" >> CastColumns({"amount": "decimal(6,2)"})
        rows = cast.output | ToRows()
        assert dict(schemas.named_fields_from_element_type(rows.element_type)).keys() == {
            "id",
            "amount",
            "day",
        }
        values = rows | beam.Map(lambda r: (r.id, r.amount, r.day))
        assert_that(
            values,
            equal_to(
                [
                    (1, decimal.Decimal("1.50"), datetime.date(2024, 1, 1)),
                    (2, decimal.Decimal("2.25"), datetime.date(2024, 1, 2)),
                ]
            ),
            label="Rows",
        )
        assert_that(cast.error | beam.Map(lambda d: d.line), equal_to([4]), label="Rejected")


def test_to_rows_without_a_known_schema_says_what_to_pass():
    with pytest.raises(ValueError, match=r"pass `ToRows\(schema=\.\.\.\)`"):
        p = beam.Pipeline(runner=LocalRunner())
        _ = p | beam.Create([_batch(["int64"])]) | ToRows()


def test_to_batches_takes_any_schema_d_pcollection_and_types_overrides():
    at = beam.utils.timestamp.Timestamp(micros=1_700_000_000_123_456)
    with test_pipeline.TestPipeline(runner=LocalRunner()) as p:
        rows = p | beam.Create([beam.Row(id=1, amount=decimal.Decimal("1.25"), at=at)])
        converter = ToBatches(types={"amount": "decimal(5,2)"})
        batches = rows | converter
        assert [(f.name, f.type) for f in converter.schema] == [
            ("id", pa.int64()),
            ("amount", pa.decimal128(5, 2)),
            ("at", pa.timestamp("us", "UTC")),
        ]
        assert_that(
            batches | beam.Map(lambda b: b.to_pylist()),
            equal_to(
                [
                    [
                        {
                            "id": 1,
                            "amount": decimal.Decimal("1.25"),
                            "at": datetime.datetime(2023, 11, 14, 22, 13, 20, 123456, UTC),
                        }
                    ]
                ]
            ),
        )


def test_to_batches_refuses_rows_of_no_schema():
    p = beam.Pipeline(runner=LocalRunner())
    with pytest.raises(ValueError, match="needs rows of a known schema"):
        _ = p | beam.Create([{"a": 1}]) | ToBatches()


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (pa.time64("us"), datetime.time(1, 2), "cannot hold"),
        (pa.duration("s"), datetime.timedelta(seconds=1), "cannot hold"),
    ],
    ids=["time_of_day", "duration"],
)
def test_types_beam_rows_cannot_hold_are_refused_at_construction(kind, value, message):
    with pytest.raises(DataError, match=message):
        row_type(pa.schema([("x", kind)]))


def test_nanoseconds_beam_cannot_carry_fail_loudly():
    batch = pa.RecordBatch.from_pydict({"t": pa.array([1], pa.timestamp("ns"))})
    _, rows_of = row_maker(batch.schema)
    with pytest.raises(DataError, match="nanoseconds"):
        rows_of(batch)


def test_a_value_that_does_not_fit_the_canonical_type_names_the_field():
    schema = arrow_schema(row_type(pa.schema([("x", pa.int64())])))
    with pytest.raises(DataError, match="field `x`"):
        batch_of([{"x": "not a number"}], schema)


def test_error_rows_json_payload_matches_dead_letter_json():
    from beam_etl.core.deadletter import DeadLetter
    from beam_etl.interop.yaml_transforms import dead_letter, error_row

    letter = DeadLetter("s", "cast_failed", "m", "f.csv", 3, None, {"a": "1.5"}, "run")
    row = error_row(letter)
    assert json.loads(row.payload) == {"a": "1.5"}
    assert dead_letter(row) == letter
