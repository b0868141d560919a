"""Arrow <-> Avro types: round trips through real Avro files, both flavours, and refusals."""

import datetime
import decimal
import io

import fastavro
import pyarrow as pa
import pytest

from beam_etl.core.avrotypes import (
    ARROW_TYPE,
    ArrowToAvro,
    arrow_schema,
    avro_schema,
    invalid_names,
)

UTC = datetime.UTC
MOMENT = datetime.datetime(2024, 1, 31, 12, 30, 5, 123000)
# Each type with values (a null among them) that Avro holds exactly in the portable flavour.
SAME_TYPE = {
    "null": pa.array([None, None], pa.null()),
    "bool": pa.array([True, None]),
    "int32": pa.array([-(2**31), None], pa.int32()),
    "int64": pa.array([2**62, None], pa.int64()),
    "float32": pa.array([1.5, None], pa.float32()),
    "float64": pa.array([float("inf"), None]),
    "string": pa.array(["Zoë ✓", None]),
    "binary": pa.array([b"\x00\xff", None]),
    "fixed_size_binary": pa.array([b"abc", None], pa.binary(3)),
    "decimal128": pa.array([decimal.Decimal("-12.25"), None], pa.decimal128(10, 2)),
    "decimal256": pa.array([decimal.Decimal("1" * 45 + ".125"), None], pa.decimal256(50, 3)),
    "date32": pa.array([datetime.date(1969, 12, 31), None]),
    "timestamp_ms_utc": pa.array([MOMENT.replace(tzinfo=UTC), None], pa.timestamp("ms", "UTC")),
    "timestamp_us_utc": pa.array([MOMENT.replace(tzinfo=UTC), None], pa.timestamp("us", "UTC")),
    "timestamp_ms": pa.array([MOMENT, None], pa.timestamp("ms")),
    "timestamp_us": pa.array([MOMENT, None], pa.timestamp("us")),
    "time32_ms": pa.array([datetime.time(23, 59, 1, 5000), None], pa.time32("ms")),
    "time64_us": pa.array([datetime.time(0, 0, 0, 7), None], pa.time64("us")),
    "list": pa.array([["a", None], None], pa.list_(pa.string())),
    "list_not_null": pa.array([[1], None], pa.list_(pa.field("item", pa.int32(), False))),
    "map": pa.array([{"k": 1}, None], pa.map_(pa.string(), pa.int64())),
    "struct": pa.array(
        [{"x": 1.0, "inner": {"y": b"ab"}}, None],
        pa.struct([("x", pa.float64()), ("inner", pa.struct([("y", pa.binary(2))]))]),
    ),
}
# Arrow types without an Avro type of their own, and what the portable flavour reads back.
WIDENED = {
    "int8": (pa.array([-128, None], pa.int8()), pa.int32()),
    "int16": (pa.array([300, None], pa.int16()), pa.int32()),
    "uint8": (pa.array([255, None], pa.uint8()), pa.int32()),
    "uint16": (pa.array([65535, None], pa.uint16()), pa.int32()),
    "uint32": (pa.array([2**32 - 1, None], pa.uint32()), pa.int64()),
    "large_string": (pa.array(["x", None], pa.large_string()), pa.string()),
    "large_binary": (pa.array([b"x", None], pa.large_binary()), pa.binary()),
    "dictionary": (pa.array(["a", None]).dictionary_encode(), pa.string()),
    "date64": (pa.array([datetime.date(2024, 1, 31), None], pa.date64()), pa.date32()),
    "timestamp_s": (
        pa.array([MOMENT.replace(microsecond=0), None], pa.timestamp("s")),
        pa.timestamp("ms"),
    ),
    "timestamp_zone": (
        pa.array([MOMENT.replace(tzinfo=UTC), None], pa.timestamp("us", "Europe/Berlin")),
        pa.timestamp("us", "UTC"),
    ),
    "large_list": (pa.array([[1], None], pa.large_list(pa.int64())), pa.list_(pa.int64())),
}


def _through_fastavro(avro: dict, batch: pa.RecordBatch) -> tuple[dict, list[dict]]:
    """Write `batch` with the Avro schema `avro`; return the file's schema and its records."""
    buffer = io.BytesIO()
    records = batch.to_pylist(maps_as_pydicts="strict")
    fastavro.writer(buffer, fastavro.parse_schema(avro), records)
    buffer.seek(0)
    reader = fastavro.reader(buffer)
    return reader.writer_schema, list(reader)


def _round_trip(batch: pa.RecordBatch, *, exact: bool) -> pa.RecordBatch:
    """Arrow -> Avro schema -> real Avro records -> Arrow, as the connector reads them."""
    written, records = _through_fastavro(avro_schema(batch.schema, exact=exact), batch)
    return pa.RecordBatch.from_pylist(records, schema=arrow_schema(written, exact=exact))


@pytest.mark.parametrize("exact", [False, True], ids=["portable", "exact"])
@pytest.mark.parametrize("name", list(SAME_TYPE))
def test_types_avro_holds_round_trip_with_their_values(name, exact):
    batch = pa.record_batch({"c": SAME_TYPE[name]})
    assert _round_trip(batch, exact=exact).equals(batch)
    if name != "null":  # a null column is always nullable
        required = pa.schema([pa.field("c", SAME_TYPE[name].type, nullable=False)])
        assert arrow_schema(avro_schema(required, exact=exact), exact=exact) == required


@pytest.mark.parametrize("name", list(WIDENED))
def test_portable_flavour_reads_widened_types_back_as_the_avro_type(name):
    values, read_as = WIDENED[name]
    back = _round_trip(pa.record_batch({"c": values}), exact=False)
    assert back.schema == pa.schema([("c", read_as)])
    assert back.column(0).equals(values.cast(read_as))
    assert ARROW_TYPE not in str(avro_schema(pa.schema([("c", values.type)])))


NOT_EXACT = ("dictionary", "large_binary", "date64", "large_list")


@pytest.mark.parametrize("name", [name for name in WIDENED if name not in NOT_EXACT])
def test_exact_flavour_reads_widened_types_back_exactly(name):
    batch = pa.record_batch({"c": WIDENED[name][0]})
    assert _round_trip(batch, exact=True).equals(batch)


@pytest.mark.parametrize("name", NOT_EXACT)
def test_exact_flavour_refuses_what_would_read_back_as_another_type(name):
    data_type = WIDENED[name][0].type
    with pytest.raises(ValueError, match="which has no exact Avro equivalent; cast it first"):
        avro_schema(pa.schema([("c", data_type)]), exact=True)


def test_exact_flavour_marks_only_what_would_read_back_differently():
    schema = pa.schema(
        [
            ("i32", pa.int32()),
            ("i8", pa.int8()),
            ("utc", pa.timestamp("ms", "UTC")),
            ("zone", pa.timestamp("us", "+02:00")),
            ("nanos", pa.timestamp("ns")),
        ]
    )
    types = [field["type"][1] for field in avro_schema(schema, exact=True)["fields"]]
    assert types == [
        "int",
        {"type": "int", ARROW_TYPE: "int8"},
        {"type": "long", "logicalType": "timestamp-millis"},
        {"type": "long", "logicalType": "timestamp-micros", ARROW_TYPE: "timestamp[us, +02:00]"},
        {"type": "long", "logicalType": "local-timestamp-nanos"},
    ]
    portable = avro_schema(schema)["fields"]
    assert portable[4]["type"][1] == {"type": "long", "logicalType": "local-timestamp-micros"}
    assert arrow_schema(avro_schema(schema, exact=True)) != schema  # portable reading ignores it


def test_schemas_written_by_others_read_by_name_and_by_the_specification():
    money = {
        "type": "fixed",
        "name": "Money",
        "size": 8,
        "logicalType": "decimal",
        "precision": 18,
        "scale": 4,
    }
    avro = {
        "type": "record",
        "name": "r",
        "namespace": "ns",
        "fields": [
            {"name": "price", "type": money},
            {"name": "full", "type": ["ns.Money", "null"]},
            {"name": "short", "type": "Money"},
            {"name": "colour", "type": {"type": "enum", "name": "C", "symbols": ["RED"]}},
            {"name": "odd", "type": {"type": "long", "logicalType": "unknown-to-us"}},
            {"name": "bad_date", "type": {"type": "long", "logicalType": "date"}},
            {"name": "ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
            {"name": "only_null", "type": ["null"]},
            {"name": "one", "type": ["string"]},
        ],
    }
    row = {
        "price": decimal.Decimal("1.5"),
        "full": None,
        "short": decimal.Decimal("2"),
        "colour": "RED",
        "odd": 7,
        "bad_date": 8,
        "ns": 1_700_000_000_123_456_789,
        "only_null": None,
        "one": "x",
    }
    written, records = _through_fastavro(avro, pa.RecordBatch.from_pylist([row]))
    schema = arrow_schema(written)
    assert schema == pa.schema(
        [
            pa.field("price", pa.decimal128(18, 4), nullable=False),
            pa.field("full", pa.decimal128(18, 4)),
            pa.field("short", pa.decimal128(18, 4), nullable=False),
            pa.field("colour", pa.string(), nullable=False),
            pa.field("odd", pa.int64(), nullable=False),
            pa.field("bad_date", pa.int64(), nullable=False),
            pa.field("ns", pa.timestamp("ns", "UTC"), nullable=False),
            pa.field("only_null", pa.null()),
            pa.field("one", pa.string(), nullable=False),
        ]
    )
    nanos = pa.RecordBatch.from_pylist(records, schema=schema).column("ns")
    assert nanos.cast(pa.int64()).to_pylist() == [1_700_000_000_123_456_789]


def test_nested_records_and_fixed_types_get_unique_names():
    inner = pa.struct([("inner", pa.struct([("v", pa.binary(2))]))])
    schema = pa.schema([("Row", inner), ("Row_inner", pa.struct([("w", pa.int32())]))])
    avro = avro_schema(schema)
    assert fastavro.parse_schema(avro)  # fastavro refuses a name defined twice
    names = [
        avro["fields"][0]["type"][1]["name"],
        avro["fields"][0]["type"][1]["fields"][0]["type"][1]["name"],
        avro["fields"][0]["type"][1]["fields"][0]["type"][1]["fields"][0]["type"][1]["name"],
        avro["fields"][1]["type"][1]["name"],
    ]
    assert names == ["Row_", "Row_inner", "Row_inner_v_fixed", "Row_inner_"]
    prefixed = ArrowToAvro(prefix="orders").type(pa.struct([("h x", pa.int32())]), "dims")
    assert prefixed["name"] == "orders_dims"


def test_invalid_names_lists_nested_paths():
    schema = pa.schema(
        [
            ("ok", pa.int32()),
            ("order id", pa.int32()),
            ("tags", pa.list_(pa.struct([("1st", pa.string())]))),
            ("attrs", pa.map_(pa.string(), pa.struct([("a-b", pa.string())]))),
        ]
    )
    assert invalid_names(schema) == ["order id", "tags.item.1st", "attrs.value.a-b"]


@pytest.mark.parametrize(
    ("data_type", "exact", "message"),
    [
        (pa.float16(), False, "Column `c` has type `float16`, which has no Avro equivalent"),
        (pa.duration("s"), False, "has type `duration\\[s\\]`, which has no Avro equivalent"),
        (pa.map_(pa.int32(), pa.int32()), False, "which has no Avro equivalent"),
        (pa.uint64(), True, "Column `c` has type `uint64`, which has no exact Avro equivalent"),
        (pa.dictionary(pa.int8(), pa.string()), True, "which has no exact Avro equivalent"),
        (pa.time64("ns"), True, "`time64\\[ns\\]`, which has no exact Avro equivalent"),
        (pa.list_(pa.uint64()), True, "Column `c.item` has type `uint64`"),
    ],
    ids=[
        "float16",
        "duration",
        "map-int-keys",
        "exact-uint64",
        "exact-dictionary",
        "exact-time-nanos",
        "exact-nested",
    ],
)
def test_arrow_types_without_an_avro_equivalent_are_refused(data_type, exact, message):
    with pytest.raises(ValueError, match=message):
        avro_schema(pa.schema([("c", data_type)]), exact=exact)


@pytest.mark.parametrize(
    ("avro_type", "message"),
    [
        (["null", "int", "string"], "field `c` is a union of 2 non-null types; only \\[null, T\\]"),
        (
            {"type": "record", "name": "R", "fields": [{"name": "r", "type": ["null", "R"]}]},
            "field `c.r` has the recursive type `R`",
        ),
        ("Missing", "field `c` refers to the unknown type `Missing`"),
        ({"type": "int", ARROW_TYPE: "int9"}, "field `c` has an unknown `arrowType`"),
    ],
    ids=["wide-union", "recursive", "unknown-name", "bad-arrow-type"],
)
def test_avro_types_without_an_arrow_equivalent_are_refused(avro_type, message):
    record = {"type": "record", "name": "top", "fields": [{"name": "c", "type": avro_type}]}
    with pytest.raises(ValueError, match=message):
        arrow_schema(record, exact=True)


def test_a_schema_that_is_not_a_record_is_refused():
    with pytest.raises(ValueError, match="the top-level schema is not a record"):
        arrow_schema({"type": "array", "items": "int"})
