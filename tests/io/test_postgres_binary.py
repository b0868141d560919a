"""Binary `COPY` (io/sql/postgres_binary.py) against a real PostgreSQL server: every column
kind it encodes stores exactly what the CSV path stores, and what it cannot encode is sent as
CSV (the encoder says so) rather than changed on the way."""

import datetime
import io

import pyarrow as pa
import pytest
from dbfixtures import pg_connection, unique_table

from beam_etl.io.sql import postgres_binary
from beam_etl.io.sql.postgres_copy import _copy_in

COLUMNS = {
    "i8": (pa.array([1, None, -5, 2**62, -(2**63)], pa.int64()), "bigint"),
    "i4": (pa.array([1, None, -(2**31), 2**31 - 1, 0], pa.int32()), "integer"),
    "i2": (pa.array([1, 2, None, -3, 32767], pa.int16()), "smallint"),
    "i1_into_bigint": (pa.array([1, None, -128, 127, 0], pa.int8()), "bigint"),
    "u4_into_bigint": (pa.array([0, None, 2**32 - 1, 7, 1], pa.uint32()), "bigint"),
    "f8": (pa.array([1.5, None, float("inf"), -0.0, 1e-300]), "double precision"),
    "f4": (pa.array([1.5, None, 3.25, 0.1, -1e30], pa.float32()), "real"),
    "b": (pa.array([True, False, None, True, False]), "boolean"),
    "t": (pa.array(["héllo", "", None, "x" * 3000, 'tab\tand\nnewline,"q"']), "text"),
    "lt": (pa.array(["a", None, "ü", "", "z"], pa.large_string()), "text"),
    "vc": (pa.array(["a", None, "bc", "", "ten chars!"]), "character varying(10)"),
    "j": (pa.array(['{"a": 1}', None, "[1, 2]", "null", '"s"']), "jsonb"),
    "js": (pa.array(['{"a":  1}', None, "[]", "1", "{}"]), "json"),
    "y": (pa.array([b"\x00\x01", None, b"", b"zz", b"\xff"]), "bytea"),
    "d": (
        pa.array(
            [
                datetime.date(2000, 1, 1),
                datetime.date(1969, 12, 31),
                None,
                datetime.date(9999, 12, 31),
                datetime.date(1, 1, 1),
            ]
        ),
        "date",
    ),
    "ts": (
        pa.array(
            [
                datetime.datetime(2000, 1, 1),
                None,
                datetime.datetime(1900, 5, 6, 7, 8, 9, 123456),
                datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
                datetime.datetime(1, 1, 1),
            ],
            pa.timestamp("us"),
        ),
        "timestamp without time zone",
    ),
    "ts_s": (
        pa.array([0, None, -86_400, 10**9, 1], pa.timestamp("s")),
        "timestamp(6) without time zone",
    ),
    "tz": (
        pa.array([0, None, 1_700_000_000_000, -1, 5], pa.timestamp("ms", "Europe/Paris")),
        "timestamp with time zone",
    ),
    "tz_into_naive": (
        pa.array([0, None, 1_700_000_000_000_000, -1, 5], pa.timestamp("us", "UTC")),
        "timestamp without time zone",
    ),
    "naive_into_tz": (
        pa.array([0, None, 1_700_000_000_000_000, -1, 5], pa.timestamp("us")),
        "timestamp with time zone",
    ),
    "tm": (
        pa.array(
            [
                datetime.time(0, 0),
                None,
                datetime.time(23, 59, 59, 999999),
                datetime.time(12),
                datetime.time(1, 2, 3),
            ]
        ),
        "time without time zone",
    ),
    "dc": (pa.array(["a", None, "b", "a", "c"]).dictionary_encode(), "text"),
    "n": (pa.nulls(5), "integer"),
}


def _fetch(connection, table):
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute(f"SELECT * FROM {table} ORDER BY k")
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in cursor.fetchall()
        ]


def _load(connection, table, batches, types, *, binary):
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        names = batches[0].schema.names
        _copy_in(cursor, table, names, iter(batches), types if binary else None)


def _create(connection, types):
    table = unique_table("bin")
    columns = ", ".join(f"{name} {kind}" for name, kind in types.items())
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} ({columns})")
    return table


@pytest.mark.parametrize("sliced", [False, True])
def test_every_encoded_column_kind_stores_what_the_csv_path_stores(sliced):
    arrays = {name: array for name, (array, _) in COLUMNS.items()}
    batch = pa.record_batch({"k": pa.array(range(5), pa.int64()), **arrays})
    types = {"k": "bigint", **{name: kind for name, (_, kind) in COLUMNS.items()}}
    batches = [batch.slice(0, 2), batch.slice(2)] if sliced else [batch]
    assert postgres_binary.encoder(batch.schema, list(types.values())) is not None
    with pg_connection() as connection:
        binary, text = _create(connection, types), _create(connection, types)
        try:
            _load(connection, binary, batches, list(types.values()), binary=True)
            _load(connection, text, batches, list(types.values()), binary=False)
            got, expected = _fetch(connection, binary), _fetch(connection, text)
            assert len(got) == 5
            assert got == expected
            assert got[2][COLUMNS_INDEX["t"]] is None and got[1][COLUMNS_INDEX["b"]] is False
            assert got[3][COLUMNS_INDEX["i8"]] == 2**62
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {binary}; DROP TABLE {text}")


COLUMNS_INDEX = {name: i + 1 for i, name in enumerate(COLUMNS)}


@pytest.mark.parametrize(
    ("arrow", "pg_type"),
    [
        (pa.int64(), "integer"),  # might not fit: the server refuses what does not
        (pa.uint64(), "bigint"),
        (pa.float64(), "real"),  # rounding and overflow are the server's (CSV)
        (pa.float32(), "double precision"),  # the server widens the float32's text
        (pa.decimal128(10, 2), "numeric(10,2)"),
        (pa.string(), "uuid"),
        (pa.string(), "date"),
        (pa.int64(), "text"),
        (pa.list_(pa.int64()), "bigint[]"),
    ],
)
def test_a_column_without_an_exact_binary_form_is_sent_as_csv(arrow, pg_type):
    schema = pa.schema([("k", pa.int64()), ("v", arrow)])
    assert postgres_binary.encoder(schema, ["bigint", pg_type]) is None


def test_a_value_too_long_for_its_varchar_is_refused_as_with_csv():
    import psycopg2

    types = {"k": "bigint", "v": "character varying(3)"}
    batch = pa.record_batch({"k": pa.array([1, 2], pa.int64()), "v": pa.array(["abc", "abcd"])})
    with pg_connection() as connection:
        table = _create(connection, types)
        try:
            with pytest.raises(psycopg2.errors.StringDataRightTruncation):
                _load(connection, table, [batch], list(types.values()), binary=True)
            assert _fetch(connection, table) == []
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {table}")


def test_the_stream_is_header_rows_trailer_and_an_empty_batch_adds_nothing():
    schema = pa.schema([("k", pa.int64())])
    encode = postgres_binary.encoder(schema, ["bigint"])
    empty = pa.record_batch({"k": pa.array([], pa.int64())})
    one = pa.record_batch({"k": pa.array([7], pa.int64())})
    data = b"".join(postgres_binary.stream(iter([empty, one]), encode))
    row = b"\x00\x01" + b"\x00\x00\x00\x08" + (7).to_bytes(8, "big")
    assert data == postgres_binary.HEADER + row + postgres_binary.TRAILER
    assert io.BytesIO(data).read(11) == b"PGCOPY\n\xff\r\n\x00"
