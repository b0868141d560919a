"""The one Arrow -> SQL type table: per dialect, for loads and for DDL, and the tables it makes
on the real servers."""

import sqlite3

import pyarrow as pa
import pytest
from dbfixtures import my, pg, unique_table

from beam_etl.core.sqltypes import NoColumnTypeError, column_type

# Arrow type: PostgreSQL, MySQL, SQLite load; PostgreSQL, MySQL, SQLite DDL.
TABLE = [
    (pa.bool_(), "boolean", "boolean", "INTEGER", "BOOLEAN", "BOOLEAN", "BOOLEAN"),
    (pa.int8(), "smallint", "smallint", "INTEGER", "SMALLINT", "TINYINT", "TINYINT"),
    (pa.int16(), "smallint", "smallint", "INTEGER", "SMALLINT", "SMALLINT", "SMALLINT"),
    (pa.int32(), "integer", "int", "INTEGER", "INTEGER", "INT", "INTEGER"),
    (pa.int64(), "bigint", "bigint", "INTEGER", "BIGINT", "BIGINT", "BIGINT"),
    (pa.uint8(), "smallint", "tinyint unsigned", "INTEGER", "SMALLINT", "TINYINT UNSIGNED",
     "TINYINT UNSIGNED"),
    (pa.uint16(), "integer", "smallint unsigned", "INTEGER", "INTEGER", "SMALLINT UNSIGNED",
     "SMALLINT UNSIGNED"),
    (pa.uint32(), "bigint", "int unsigned", "INTEGER", "BIGINT", "INT UNSIGNED",
     "INTEGER UNSIGNED"),
    (pa.uint64(), "numeric(20,0)", "bigint unsigned", "INTEGER", "NUMERIC(20,0)",
     "BIGINT UNSIGNED", "BIGINT UNSIGNED"),
    (pa.float32(), "real", "float", "REAL", "REAL", "FLOAT", "FLOAT"),
    (pa.float64(), "double precision", "double", "REAL", "DOUBLE PRECISION", "DOUBLE", "DOUBLE"),
    (pa.decimal128(12, 2), "numeric(12,2)", "decimal(12,2)", "TEXT", "NUMERIC(12,2)",
     "DECIMAL(12,2)", "DECIMAL(12,2)"),
    (pa.string(), "text", "longtext", "TEXT", "TEXT", "LONGTEXT", "TEXT"),
    (pa.large_string(), "text", "longtext", "TEXT", "TEXT", "LONGTEXT", "TEXT"),
    (pa.binary(), "bytea", "longblob", "BLOB", "BYTEA", "LONGBLOB", "BLOB"),
    (pa.date32(), "date", "date", "TEXT", "DATE", "DATE", "DATE"),
    (pa.timestamp("s"), "timestamp without time zone", "datetime(6)", "TEXT", "TIMESTAMP(0)",
     "DATETIME(0)", "TIMESTAMP(0)"),
    (pa.timestamp("ms", "UTC"), "timestamp with time zone", "datetime(6)", "TEXT",
     "TIMESTAMP(3) WITH TIME ZONE", "DATETIME(3)", "TIMESTAMPTZ(3)"),
    (pa.timestamp("ns"), "timestamp without time zone", "datetime(6)", "TEXT", "TIMESTAMP(6)",
     "DATETIME(6)", "TIMESTAMP(6)"),
    (pa.time64("us"), "time", "time(6)", "TEXT", "TIME", "TIME(6)", "TIME"),
    (pa.dictionary(pa.int32(), pa.string()), "text", "longtext", "TEXT", "TEXT", "LONGTEXT",
     "TEXT"),
]  # fmt: skip
DIALECTS = ("postgres", "mysql", "sqlite")


@pytest.mark.parametrize("row", TABLE, ids=[str(row[0]) for row in TABLE])
def test_every_supported_type_has_one_column_type_per_dialect_and_purpose(row):
    data_type, *names = row
    loads = [column_type(data_type, d).name for d in DIALECTS]
    ddl = [column_type(data_type, d, purpose="ddl").name for d in DIALECTS]
    assert [*loads, *ddl] == names


def test_key_columns_are_bounded_in_mysql_with_the_loss_said():
    assert column_type(pa.string(), "mysql", key=True) == (
        "varchar(255)",
        "a string key column holds at most 255 characters in MySQL",
    )
    assert column_type(pa.binary(), "mysql", key=True, purpose="ddl").name == "VARBINARY(255)"
    assert column_type(pa.string(), "postgres", key=True).name == "text"


@pytest.mark.parametrize(
    ("data_type", "dialect", "loss"),
    [
        (pa.int8(), "postgres", "int8 is stored as SMALLINT and reads back as int16"),
        (pa.uint32(), "postgres", "uint32 is stored as BIGINT (PostgreSQL has no unsigned)"),
        (pa.uint64(), "sqlite", "values above 2^63-1 do not fit SQLite integers"),
        (pa.decimal128(20, 2), "sqlite", "SQLite keeps 15 significant digits of `decimal(20,2)`"),
        (pa.timestamp("ns"), "mysql", "nanoseconds are cut to microseconds"),
        (pa.timestamp("us", "UTC"), "mysql", "the zone `UTC` is not kept (store UTC; reads back"),
        (pa.timestamp("us", "Europe/Berlin"), "postgres", "the zone `Europe/Berlin` is not kept"),
        (pa.large_string(), "postgres", "large_string reads back as string"),
        (pa.struct([("a", pa.string())]), "mysql", "struct<a: string> is stored as JSON"),
        (pa.list_(pa.list_(pa.int8())), "postgres", "list<list<int8>> is stored as JSONB"),
    ],
    ids=lambda v: str(v),
)
def test_ddl_says_what_a_column_cannot_hold_exactly(data_type, dialect, loss):
    assert loss in column_type(data_type, dialect, purpose="ddl").loss


def test_ddl_makes_postgres_arrays_and_json_where_loads_refuse():
    ints = pa.list_(pa.field("item", pa.int32(), nullable=False))
    assert column_type(ints, "postgres", purpose="ddl") == (
        "INTEGER[]",
        "array items cannot be declared NOT NULL",
    )
    assert column_type(pa.list_(pa.string()), "mysql", purpose="ddl").name == "JSON"
    for dialect in ("postgres", "mysql"):
        with pytest.raises(NoColumnTypeError, match=f"No {dialect} column type for Arrow type"):
            column_type(ints, dialect)
    assert column_type(ints, "sqlite").name == "TEXT"  # SQLite loads declare no type they refuse


def test_mysql_decimals_beyond_65_digits_are_narrowed_in_loads_and_refused_in_ddl():
    wide = pa.decimal256(70, 2)
    assert column_type(wide, "mysql").name == "decimal(65,2)"
    with pytest.raises(NoColumnTypeError, match="DECIMAL allows 65 digits, scale 30"):
        column_type(wide, "mysql", purpose="ddl")
    with pytest.raises(ValueError, match="`dialect` must be one of"):
        column_type(pa.int8(), "oracle")


def _create(create, columns: dict[str, str]) -> None:
    create(", ".join(f"c{i} {kind}" for i, kind in enumerate(columns.values())))


def test_postgres_load_columns_are_the_types_of_the_table():
    table = unique_table("sqltypes")
    types = {str(row[0]): row[1] for row in TABLE}
    _create(lambda cols: pg(f"CREATE TABLE {table} ({cols})"), types)
    try:
        found = pg(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "%s::regclass AND attnum > 0 ORDER BY attnum",
            (table,),
        )
    finally:
        pg(f"DROP TABLE {table}")
    catalog = {"time": "time without time zone"}  # the catalog spells the default zone out
    assert [row[0] for row in found] == [catalog.get(t, t) for t in types.values()]


def test_mysql_load_columns_are_the_types_the_loader_always_made():
    """MySQL normalises synonyms: `int` is `integer`, `double` is `double precision`, `decimal`
    is `numeric` (the spellings of loads before the one table)."""
    table = unique_table("sqltypes")
    types = {str(row[0]): row[2] for row in TABLE}
    before = {**types, "int32": "integer", "double": "double precision"}
    before["decimal128(12, 2)"] = "numeric(12,2)"
    found = []
    for number, columns in enumerate((types, before)):
        name = f"{table}_{number}"
        _create(lambda cols, name=name: my(f"CREATE TABLE {name} ({cols})"), columns)
        try:
            found.append(
                my(
                    "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                    "DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                    (name,),
                )
            )
        finally:
            my(f"DROP TABLE {name}")
    assert found[0] == found[1]
    assert [row[0] for row in found[0]][:5] == ["tinyint(1)", "smallint(6)", "smallint(6)",
                                                 "int(11)", "bigint(20)"]  # fmt: skip


def test_sqlite_keeps_declared_types_verbatim(tmp_path):
    connection = sqlite3.connect(tmp_path / "types.sqlite")
    for column in (3, 6):  # load, DDL
        types = {str(row[0]): row[column] for row in TABLE}
        connection.execute("DROP TABLE IF EXISTS t")
        _create(lambda cols: connection.execute(f"CREATE TABLE t ({cols})"), types)
        found = [row[2] for row in connection.execute("PRAGMA table_info(t)")]
        assert found == list(types.values())
