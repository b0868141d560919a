"""Arrow types as SQL column types in PostgreSQL, MySQL/MariaDB and SQLite: the one table the
loaders (`io.sql`, `purpose="load"`) and the DDL export (`schema.ddl`, `purpose="ddl"`) share.

Both purposes give every type the same column type, except where they need different ones:

- timestamps: a load's column always keeps microseconds (`timestamp with time zone`,
  `datetime(6)`, the loader's unit); DDL declares the unit's digits (`TIMESTAMP(3)`).
- decimals: a load narrows a MySQL precision above 65 (a value that does not fit is refused
  row by row); DDL refuses such a decimal.
- MySQL int8: a load makes `smallint` (as loaded tables always had), DDL `TINYINT`.
- lists, structs and the rest: a load refuses them; DDL makes a PostgreSQL list an array and
  the rest JSON (a loss).
- SQLite: a load declares storage classes (`INTEGER`, `REAL`, `BLOB`, `TEXT`: dates,
  timestamps and decimals are stored as exact text); DDL declares the exact type
  (`DECIMAL(12,2)`), which SQLite keeps verbatim, so that a schema reads back.

Loads spell types in lower case, DDL in upper case. A *loss* says what the column cannot hold
exactly (`int8 is stored as SMALLINT ...`); DDL lists them, loads screen values instead.
"""

from typing import Final, Literal, NamedTuple

import pyarrow as pa

from beam_etl.core.datatypes import format_type
from beam_etl.core.errors import BeamEtlError

DIALECTS: Final = ("postgres", "mysql", "sqlite")
Purpose = Literal["load", "ddl"]

_DIGITS: Final = {"s": 0, "ms": 3, "us": 6, "ns": 9}
_INTS: Final = {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}
_MYSQL_INTS: Final = {8: "TINYINT", 16: "SMALLINT", 32: "INT", 64: "BIGINT"}
_PG_WIDER: Final = {8: "SMALLINT", 16: "INTEGER", 32: "BIGINT", 64: "NUMERIC(20,0)"}
_FLOATS: Final = {
    "postgres": ("REAL", "DOUBLE PRECISION"),
    "mysql": ("FLOAT", "DOUBLE"),
    "sqlite": ("FLOAT", "DOUBLE"),
}
_TEXT: Final = {"postgres": "TEXT", "mysql": "LONGTEXT", "sqlite": "TEXT"}
_BYTES: Final = {"postgres": "BYTEA", "mysql": "LONGBLOB", "sqlite": "BLOB"}
_TIME: Final = {"postgres": "TIME", "mysql": "TIME(6)", "sqlite": "TIME"}
_MYSQL_DECIMAL: Final = (65, 30)  # most digits, largest scale


class ColumnType(NamedTuple):
    """A column type and what it cannot hold exactly (None: it holds the type exactly)."""

    name: str
    loss: str | None = None


class NoColumnTypeError(BeamEtlError):
    """No column type of the dialect holds the Arrow type."""


def column_type(
    data_type: pa.DataType, dialect: str, *, key: bool = False, purpose: Purpose = "load"
) -> ColumnType:
    """Return the column type of `data_type` in `dialect` for a load or for DDL.

    `key`: the column is part of a primary key (MySQL needs a bounded type there).

    Raises:
        NoColumnTypeError: no column type holds it (in a load: lists, structs, ...).
        ValueError: unknown dialect.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"`dialect` must be one of {', '.join(DIALECTS)}, not `{dialect}`")
    if dialect == "sqlite" and purpose == "load":
        return ColumnType(_storage_class(data_type))  # a dictionary's values are sent as text
    t = data_type.value_type if pa.types.is_dictionary(data_type) else data_type
    found = _exact(t, dialect, key, purpose)
    if found is None:
        if purpose == "load":
            raise NoColumnTypeError(f"No {dialect} column type for Arrow type `{data_type}`")
        found = _as_json(t, dialect)
    return found._replace(name=found.name.lower()) if purpose == "load" else found


def _storage_class(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "REAL"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    return "TEXT"  # strings, and dates, timestamps and decimals as exact ISO / decimal text


def _exact(t: pa.DataType, dialect: str, key: bool, purpose: Purpose) -> ColumnType | None:
    """Return the column type of a type with a column of its own, None for the others."""
    types = pa.types
    if types.is_boolean(t):
        return ColumnType("BOOLEAN")
    if types.is_integer(t):
        return _int_type(t, dialect, purpose)
    if types.is_floating(t):
        return ColumnType(_FLOATS[dialect][0 if t.bit_width <= 32 else 1])
    if types.is_decimal(t):
        return _decimal_type(t, dialect, purpose)
    if types.is_string(t) or types.is_large_string(t) or types.is_null(t):
        if dialect == "mysql" and key:
            loss = "a string key column holds at most 255 characters in MySQL"
            return ColumnType("VARCHAR(255)", loss)
        return ColumnType(_TEXT[dialect], _read_back(t, pa.string()))
    if types.is_binary(t) or types.is_large_binary(t) or types.is_fixed_size_binary(t):
        if dialect == "mysql" and key:
            return ColumnType("VARBINARY(255)", "a binary key holds at most 255 bytes")
        return ColumnType(_BYTES[dialect], _read_back(t, pa.binary()))
    if types.is_date(t):
        return ColumnType("DATE", _read_back(t, pa.date32()))
    if types.is_timestamp(t):
        return _timestamp_type(t, dialect, purpose)
    if types.is_time(t):
        return ColumnType(_TIME[dialect], _cut(t))
    return None


def _read_back(t: pa.DataType, read: pa.DataType) -> str | None:
    return None if t == read else f"{format_type(t)} reads back as {format_type(read)}"


def _cut(t: pa.DataType) -> str | None:
    return "nanoseconds are cut to microseconds" if getattr(t, "unit", "") == "ns" else None


def _int_type(t: pa.DataType, dialect: str, purpose: Purpose) -> ColumnType:
    bits, signed = t.bit_width, pa.types.is_signed_integer(t)
    if dialect == "mysql":
        if signed and bits == 8 and purpose == "load":
            return ColumnType("SMALLINT")
        return ColumnType(_MYSQL_INTS[bits] + ("" if signed else " UNSIGNED"))
    if dialect == "sqlite":
        if signed:
            return ColumnType(_INTS[bits])
        loss = "values above 2^63-1 do not fit SQLite integers" if bits == 64 else None
        return ColumnType(f"{_INTS[bits]} UNSIGNED", loss)
    if signed:
        loss = "int8 is stored as SMALLINT and reads back as int16" if bits == 8 else None
        return ColumnType(_INTS[max(bits, 16)], loss)
    wider = _PG_WIDER[bits]
    return ColumnType(wider, f"{format_type(t)} is stored as {wider} (PostgreSQL has no unsigned)")


def _decimal_type(t: pa.DataType, dialect: str, purpose: Purpose) -> ColumnType:
    precision, scale = t.precision, t.scale
    if dialect == "mysql":
        most, largest_scale = _MYSQL_DECIMAL
        if purpose == "load":
            precision = min(precision, most)
        elif precision > most or scale > largest_scale:
            raise NoColumnTypeError(
                f"MySQL cannot hold `{format_type(t)}` (DECIMAL allows 65 digits, scale 30)"
            )
    loss = None
    if dialect == "sqlite" and precision > 15:
        loss = f"SQLite keeps 15 significant digits of `{format_type(t)}` values"
    name = "NUMERIC" if dialect == "postgres" else "DECIMAL"
    return ColumnType(f"{name}({precision},{scale})", loss)


def _timestamp_type(t: pa.TimestampType, dialect: str, purpose: Purpose) -> ColumnType:
    losses = [_cut(t)] if t.unit == "ns" else []
    if t.tz is not None and dialect == "mysql":
        losses.append(f"the zone `{t.tz}` is not kept (store UTC; reads back naive)")
    elif t.tz is not None and t.tz != "UTC":
        losses.append(f"the zone `{t.tz}` is not kept (instants read back in UTC)")
    loss = "; ".join(filter(None, losses)) or None
    digits = 6 if purpose == "load" else min(_DIGITS[t.unit], 6)
    if dialect == "mysql":  # MySQL keeps no zone: zoned values are stored in UTC
        return ColumnType(f"DATETIME({digits})", loss)
    if dialect == "sqlite":
        return ColumnType(f"{'TIMESTAMPTZ' if t.tz else 'TIMESTAMP'}({digits})", loss)
    if purpose == "load":  # the precision left to the default: microseconds
        return ColumnType(f"TIMESTAMP {'WITH' if t.tz else 'WITHOUT'} TIME ZONE", loss)
    return ColumnType(f"TIMESTAMP({digits})" + (" WITH TIME ZONE" if t.tz else ""), loss)


def _as_json(t: pa.DataType, dialect: str) -> ColumnType:
    """Return the DDL column type of a list, struct or other type without a column of its own:
    a PostgreSQL array of a list of scalars, JSON (PostgreSQL: JSONB) for the others."""
    json = "JSONB" if dialect == "postgres" else "JSON"
    item = t.value_field if pa.types.is_list(t) else None
    if dialect == "postgres" and item and not pa.types.is_nested(item.type):
        inner = _exact(item.type, dialect, False, "ddl")
        if inner is not None:
            loss = None if item.nullable else "array items cannot be declared NOT NULL"
            loss = "; ".join(filter(None, [inner.loss, loss])) or None
            return ColumnType(f"{inner.name}[]", loss)
    return ColumnType(json, f"{format_type(t)} is stored as {json} and reads back as string")
