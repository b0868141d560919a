"""Schema round trips: Arrow <-> JSON, Arrow <-> Avro, Arrow -> DDL -> catalog for each dialect."""

import io
import json
import sqlite3
from datetime import UTC, date, datetime
from decimal import Decimal

import fastavro
import pyarrow as pa
import pytest
from dbfixtures import my_connect, pg_connect

from beam_etl.schema.convert import from_avro, to_avro
from beam_etl.schema.ddl import (
    ddl_losses,
    from_mysql,
    from_postgres,
    from_sqlite,
    to_ddl,
)
from beam_etl.schema.model import (
    Schema,
    SchemaError,
    UnsupportedTypeError,
    load_schema,
    parse_type_name,
)

RICH = Schema.from_dict(
    {
        "version": 1,
        "primary_key": ["id"],
        "fields": [
            {"name": "id", "type": "int64", "nullable": False, "description": "the key"},
            {"name": "i8", "type": "int8", "default": 3},
            {"name": "u32", "type": "uint32"},
            {"name": "f32", "type": "float32", "default": 1.5},
            {
                "name": "price",
                "type": "decimal(12,2)",
                "default": "0.00",
                "constraints": {"min": 0},
            },
            {"name": "name", "type": "string", "constraints": {"max_length": 20}},
            {"name": "ok", "type": "bool", "nullable": False, "default": True},
            {"name": "day", "type": "date"},
            {"name": "t_s", "type": "timestamp[s]"},
            {"name": "t_utc", "type": "timestamp[ms, UTC]"},
            {"name": "t_zone", "type": "timestamp[us, Europe/Berlin]"},
            {"name": "t_ns", "type": "timestamp[ns]"},
            {"name": "raw", "type": "binary"},
            {"name": "tags", "type": "list<string>"},
            {"name": "ints", "type": "list<int32 not null>"},
            {
                "name": "dims",
                "type": "struct<w: float64, `h x`: struct<v: string not null>>",
                "nullable": False,
            },
        ],
    }
)
# What every SQL dialect can hold exactly (and what the catalogs give back).
PLAIN = Schema.from_dict(
    {
        "version": 1,
        "primary_key": ["id", "code"],
        "fields": [
            {"name": "id", "type": "int64", "nullable": False},
            {"name": "code", "type": "string", "nullable": False, "constraints": {}},
            {"name": "i16", "type": "int16", "default": -3},
            {"name": "i32", "type": "int32"},
            {"name": "f32", "type": "float32"},
            {"name": "f64", "type": "float64", "default": 1.5},
            {"name": "price", "type": "decimal(12,2)", "default": "0.25"},
            {"name": "note", "type": "string", "default": "it's"},
            {"name": "ok", "type": "bool", "nullable": False, "default": True},
            {"name": "day", "type": "date", "default": "2024-01-31"},
            {"name": "t_s", "type": "timestamp[s]"},
            {"name": "t_ms", "type": "timestamp[ms]"},
            {"name": "t_us", "type": "timestamp[us]"},
            {"name": "raw", "type": "binary"},
        ],
    }
)


def test_arrow_json_arrow_round_trip_is_lossless():
    arrow = RICH.to_arrow()
    back = Schema.from_json(Schema.from_arrow(arrow).to_json()).to_arrow()
    assert back.equals(arrow, check_metadata=True)
    assert Schema.from_arrow(back) == RICH


def test_type_names_round_trip():
    for name in [
        "decimal(40,3)",
        "timestamp[ns, +02:00]",
        "list<list<date> not null>",
        "struct<a: bool, b: list<binary>>",
        "uint64",
        "large_string",
    ]:
        data_type = parse_type_name(name)
        assert (
            parse_type_name(
                Schema.from_arrow(pa.schema([("c", data_type)])).to_dict()["fields"][0]["type"]
            )
            == data_type
        )


def test_arrow_avro_arrow_round_trip_is_lossless_and_fastavro_writes_it():
    avro = to_avro(RICH, name="orders")
    assert from_avro(json.dumps(avro)).to_arrow().equals(RICH.to_arrow(), check_metadata=True)
    row = {
        "id": 1,
        "i8": 2,
        "u32": 7,
        "f32": 1.5,
        "price": Decimal("9.99"),
        "name": "é",
        "ok": True,
        "day": date(2024, 1, 31),
        "t_s": datetime(2024, 1, 31, 12),
        "t_utc": datetime(2024, 1, 31, 12, tzinfo=UTC),
        "t_zone": datetime(2024, 1, 31, 12, tzinfo=UTC),
        "t_ns": None,
        "raw": b"\x00",
        "tags": ["a", None],
        "ints": [1],
        "dims": {"w": None, "h x": {"v": "z"}},
    }
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(avro), [row])
    buffer.seek(0)
    assert next(iter(fastavro.reader(buffer)))["price"] == Decimal("9.99")


@pytest.mark.parametrize(
    ("avro_type", "message"),
    [
        ({"type": "map", "values": "string"}, "not supported"),
        (["null", "int", "string"], "only \\[null, T\\]"),
        ({"type": "int", "logicalType": "time-millis"}, "not supported"),
    ],
    ids=["map", "wide-union", "time"],
)
def test_avro_types_without_a_counterpart_are_refused(avro_type, message):
    record = {"type": "record", "name": "r", "fields": [{"name": "x", "type": avro_type}]}
    with pytest.raises(UnsupportedTypeError, match=message):
        from_avro(record)


def test_avro_enum_reads_as_string_with_allowed_values_and_uint64_is_refused():
    record = {
        "type": "record",
        "name": "r",
        "fields": [{"name": "c", "type": {"type": "enum", "name": "C", "symbols": ["A", "B"]}}],
    }
    field = from_avro(record).field("c")
    assert (field.type, field.constraints) == (pa.string(), {"allowed_values": ["A", "B"]})
    with pytest.raises(UnsupportedTypeError, match="uint64"):
        to_avro(Schema.from_dict({"version": 1, "fields": [{"name": "u", "type": "uint64"}]}))


def test_ddl_refuses_lossy_columns_and_lists_every_loss():
    assert ddl_losses(PLAIN, "postgres") == []
    assert ddl_losses(PLAIN, "sqlite") == []
    assert ddl_losses(PLAIN, "mysql") == [
        "`code`: a string key column holds at most 255 characters in MySQL"
    ]
    losses = ddl_losses(RICH, "postgres")
    assert [loss.split(":")[0] for loss in losses] == [
        "`i8`",
        "`u32`",
        "`t_zone`",
        "`t_ns`",
        "`ints`",
        "`dims`",
    ]
    with pytest.raises(UnsupportedTypeError, match="`i8`: int8 is stored as SMALLINT"):
        to_ddl(RICH, "t", "postgres")
    with pytest.raises(ValueError, match="`dialect` must be one of"):
        to_ddl(PLAIN, "t", "oracle")


def test_sqlite_ddl_round_trips_through_the_catalog(tmp_path):
    connection = sqlite3.connect(tmp_path / "db.sqlite")
    connection.execute(to_ddl(PLAIN, "my table", "sqlite"))
    assert from_sqlite(connection, "my table") == PLAIN
    connection.execute("INSERT INTO \"my table\" (id, code) VALUES (1, 'a')")
    assert connection.execute('SELECT i16, note, ok, day FROM "my table"').fetchone() == (
        -3,
        "it's",
        1,
        "2024-01-31",
    )


def test_postgres_ddl_round_trips_through_the_catalog():
    connection = pg_connect()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute('DROP TABLE IF EXISTS "schema_round trip"')
        cursor.execute(to_ddl(PLAIN, "schema_round trip", "postgres"))
    try:
        assert from_postgres(connection, "schema_round trip") == PLAIN
    finally:
        with connection.cursor() as cursor:
            cursor.execute('DROP TABLE "schema_round trip"')
        connection.close()


def test_mysql_ddl_round_trips_through_the_catalog():
    connection = my_connect(autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS schema_round_trip")
        cursor.execute(to_ddl(PLAIN, "schema_round_trip", "mysql", allow_lossy=True))
    try:
        assert from_mysql(connection, "schema_round_trip") == PLAIN
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE schema_round_trip")
        connection.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": 2, "fields": []}, "Unsupported schema version `2`"),
        ({"version": 1, "fields": [{"name": "a", "type": "int65"}]}, "Unknown type `int65`"),
        ({"version": 1, "fields": [{"name": "a", "type": "int8", "null": 1}]}, "Unknown key"),
        (
            {"version": 1, "fields": [{"name": "a", "type": "date", "default": "x"}]},
            "Default `x` of `a` is not a valid date",
        ),
        (
            {"version": 1, "primary_key": ["a"], "fields": [{"name": "a", "type": "int8"}]},
            "must not be nullable",
        ),
        (
            {"version": 1, "fields": [{"name": "a", "type": "int8", "constraints": {"mn": 1}}]},
            "Unknown constraint",
        ),
        ({"version": 1, "fields": [{"name": "a", "type": "list<int8"}]}, "expected `>`"),
    ],
    ids=["version", "type", "key", "default", "nullable-key", "constraint", "unclosed"],
)
def test_invalid_schemas_are_refused_with_a_clear_message(data, message):
    with pytest.raises(SchemaError, match=message):
        load_schema(data)


def test_load_schema_reads_a_json_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(PLAIN.to_json())
    assert load_schema(str(path)) == PLAIN
    with pytest.raises(SchemaError, match="Cannot read schema file"):
        load_schema(str(tmp_path / "missing.json"))
