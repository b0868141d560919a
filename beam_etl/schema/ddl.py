"""Schema -> SQL `CREATE TABLE` for PostgreSQL, MySQL/MariaDB and SQLite, and back from catalogs.

Every type maps to one column type per dialect. Where a dialect cannot hold the type exactly
(PostgreSQL has no 1-byte or unsigned integers; no dialect keeps a time zone name; structs become
JSON), the mapping is a *loss*: `ddl_losses()` lists them, and `to_ddl()` refuses to write such a
table unless `allow_lossy=True`. Reading a table back (`from_sqlite`, `from_postgres`,
`from_mysql`) gives the same schema for lossless columns, keys and defaults included.

SQLite keeps declared type names verbatim, so its declarations carry the exact type
(`TINYINT`, `DECIMAL(12,2)`, `TIMESTAMP(3)`); its storage follows type affinity (a DECIMAL of
more than 15 digits is a loss).
"""

import re
from typing import Any, Final

import pyarrow as pa

from beam_etl.schema.model import Field, Schema, UnsupportedTypeError, format_type

DIALECTS: Final = ("postgres", "mysql", "sqlite")
_UNITS: Final = {"s": 0, "ms": 3, "us": 6, "ns": 9}
_PRECISION_UNITS: Final = {0: "s", 3: "ms", 6: "us"}
_INTS: Final = {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}
_PG_INTS: Final = {8: "SMALLINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"`dialect` must be one of {', '.join(DIALECTS)}, not `{dialect}`")


def sql_type(data_type: pa.DataType, dialect: str, *, key: bool = False) -> tuple[str, str | None]:
    """Return the column type of `data_type` in `dialect` and the loss (None when exact).

    Raises:
        UnsupportedTypeError: the dialect has no column type for it at all.
        ValueError: unknown dialect.
    """
    _check_dialect(dialect)
    if pa.types.is_integer(data_type):
        return _int_type(data_type, dialect)
    if pa.types.is_floating(data_type):
        single = data_type == pa.float32()
        names = {"postgres": ("REAL", "DOUBLE PRECISION"), "mysql": ("FLOAT", "DOUBLE")}
        return names.get(dialect, ("FLOAT", "DOUBLE"))[0 if single else 1], None
    if pa.types.is_decimal(data_type):
        return _decimal_type(data_type, dialect)
    if pa.types.is_timestamp(data_type):
        return _timestamp_type(data_type, dialect)
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        if dialect == "mysql" and key:
            return "VARCHAR(255)", "a string key column holds at most 255 characters in MySQL"
        return ("LONGTEXT" if dialect == "mysql" else "TEXT"), (
            "large_string reads back as string" if pa.types.is_large_string(data_type) else None
        )
    if data_type == pa.binary():
        if dialect == "mysql":
            return (
                ("VARBINARY(255)", "a binary key holds at most 255 bytes")
                if key
                else (
                    "LONGBLOB",
                    None,
                )
            )
        return ("BYTEA" if dialect == "postgres" else "BLOB"), None
    simple = {pa.bool_(): "BOOLEAN", pa.date32(): "DATE"}
    if data_type in simple:
        return simple[data_type], None
    if dialect == "postgres" and pa.types.is_list(data_type):
        return _pg_array(data_type)
    name = "JSONB" if dialect == "postgres" else "JSON"
    return name, f"{format_type(data_type)} is stored as {name} and reads back as string"


def _int_type(data_type: pa.DataType, dialect: str) -> tuple[str, str | None]:
    bits, signed = data_type.bit_width, pa.types.is_signed_integer(data_type)
    if dialect == "mysql":
        name = {8: "TINYINT", 16: "SMALLINT", 32: "INT", 64: "BIGINT"}[bits]
        return (name if signed else f"{name} UNSIGNED"), None
    if dialect == "sqlite":
        if signed:
            return _INTS[bits], None
        loss = "values above 2^63-1 do not fit SQLite integers" if bits == 64 else None
        return f"{_INTS[bits]} UNSIGNED", loss
    if signed:
        loss = "int8 is stored as SMALLINT and reads back as int16" if bits == 8 else None
        return _PG_INTS[bits], loss
    wider = {8: "SMALLINT", 16: "INTEGER", 32: "BIGINT", 64: "NUMERIC(20,0)"}[bits]
    return wider, f"{format_type(data_type)} is stored as {wider} (PostgreSQL has no unsigned)"


def _decimal_type(data_type: pa.DataType, dialect: str) -> tuple[str, str | None]:
    precision, scale = data_type.precision, data_type.scale
    if dialect == "mysql" and (precision > 65 or scale > 30):
        raise UnsupportedTypeError(
            f"MySQL cannot hold `{format_type(data_type)}` (DECIMAL allows 65 digits, scale 30)"
        )
    name = "NUMERIC" if dialect == "postgres" else "DECIMAL"
    loss = None
    if dialect == "sqlite" and precision > 15:
        loss = f"SQLite keeps 15 significant digits of `{format_type(data_type)}` values"
    return f"{name}({precision},{scale})", loss


def _timestamp_type(data_type: pa.TimestampType, dialect: str) -> tuple[str, str | None]:
    digits = min(_UNITS[data_type.unit], 6)
    losses = []
    if data_type.unit == "ns":
        losses.append("nanoseconds are cut to microseconds")
    if data_type.tz is not None and (dialect == "mysql" or data_type.tz != "UTC"):
        losses.append(f"the zone `{data_type.tz}` is not kept (instants read back in UTC)")
    if dialect == "mysql":
        if data_type.tz is not None:
            losses[-1] = f"the zone `{data_type.tz}` is not kept (store UTC; reads back naive)"
        name = f"DATETIME({digits})"
    elif dialect == "postgres":
        name = f"TIMESTAMP({digits})" + (" WITH TIME ZONE" if data_type.tz else "")
    else:
        name = f"{'TIMESTAMPTZ' if data_type.tz else 'TIMESTAMP'}({digits})"
    return name, "; ".join(losses) or None


def _pg_array(data_type: pa.DataType) -> tuple[str, str | None]:
    item = data_type.value_field
    if pa.types.is_list(item.type) or pa.types.is_struct(item.type):
        return "JSONB", f"{format_type(data_type)} is stored as JSONB and reads back as string"
    inner, loss = sql_type(item.type, "postgres")
    if not item.nullable:
        loss = "; ".join(filter(None, [loss, "array items cannot be declared NOT NULL"]))
    return f"{inner}[]", loss


def _quote(name: str, dialect: str) -> str:
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def _literal(item: Field, dialect: str) -> str:
    value = item.default
    if isinstance(value, bool):
        return ("1" if value else "0") if dialect == "sqlite" else ("TRUE" if value else "FALSE")
    if isinstance(value, (int, float)) and not pa.types.is_decimal(item.type):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def ddl_losses(schema: Schema, dialect: str) -> list[str]:
    """Return what a `dialect` table of `schema` cannot hold exactly, one line per column."""
    losses = []
    for item in schema.fields:
        _, loss = sql_type(item.type, dialect, key=item.name in schema.primary_key)
        if loss:
            losses.append(f"`{item.name}`: {loss}")
    return losses


def to_ddl(schema: Schema, table: str, dialect: str, *, allow_lossy: bool = False) -> str:
    """Return `CREATE TABLE` for `schema` in `dialect` (types, NOT NULL, defaults, primary key).

    Raises:
        UnsupportedTypeError: a column cannot be held, or (unless `allow_lossy`) not exactly;
            the message lists every such column.
        ValueError: unknown dialect.
    """
    _check_dialect(dialect)
    losses = ddl_losses(schema, dialect)
    if losses and not allow_lossy:
        raise UnsupportedTypeError(
            f"A {dialect} table cannot hold this schema exactly: {'; '.join(losses)} "
            "(pass allow_lossy=True to accept)"
        )
    lines = []
    for item in schema.fields:
        column, _ = sql_type(item.type, dialect, key=item.name in schema.primary_key)
        parts = [_quote(item.name, dialect), column]
        if not item.nullable:
            parts.append("NOT NULL")
        if item.default is not None:
            parts.append(f"DEFAULT {_literal(item, dialect)}")
        lines.append(" ".join(parts))
    if schema.primary_key:
        key = ", ".join(_quote(c, dialect) for c in schema.primary_key)
        lines.append(f"PRIMARY KEY ({key})")
    body = ",\n  ".join(lines)
    return f"CREATE TABLE {_quote(table, dialect)} (\n  {body}\n)"


# ---------------------------------------------------------------- back from catalogs
_BACK: Final[dict[str, pa.DataType]] = {
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "int2": pa.int16(),
    "int": pa.int32(),
    "integer": pa.int32(),
    "int4": pa.int32(),
    "bigint": pa.int64(),
    "int8": pa.int64(),
    "tinyint unsigned": pa.uint8(),
    "smallint unsigned": pa.uint16(),
    "int unsigned": pa.uint32(),
    "integer unsigned": pa.uint32(),
    "bigint unsigned": pa.uint64(),
    "real": pa.float32(),
    "float": pa.float32(),
    "float4": pa.float32(),
    "double": pa.float64(),
    "double precision": pa.float64(),
    "float8": pa.float64(),
    "text": pa.string(),
    "longtext": pa.string(),
    "mediumtext": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "boolean": pa.bool_(),
    "bool": pa.bool_(),
    "tinyint(1)": pa.bool_(),
    "date": pa.date32(),
    "bytea": pa.binary(),
    "blob": pa.binary(),
    "longblob": pa.binary(),
}


def type_from_sql(text: str) -> pa.DataType:
    """Return the Arrow type of a catalog column type (any of the three dialects).

    Raises:
        UnsupportedTypeError: a column type with no counterpart here.
    """
    name = re.sub(r"\s+", " ", text.strip().lower())
    if name.endswith("[]"):
        return pa.list_(type_from_sql(name[:-2]))
    if name in _BACK:
        return _BACK[name]
    # MySQL reports display widths (`int(11)`, `bigint(20) unsigned`) that mean nothing.
    bare = re.sub(r"^(tinyint|smallint|int|integer|bigint)\(\d+\)", r"\1", name)
    if bare in _BACK:
        return _BACK[bare]
    if match := re.fullmatch(r"(?:numeric|decimal)\((\d+),\s*(\d+)\)", name):
        precision, scale = int(match.group(1)), int(match.group(2))
        return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)
    if match := re.fullmatch(r"(varchar|char|character varying|character)(\(\d+\))?", name):
        return pa.string()
    if match := re.fullmatch(r"varbinary\(\d+\)", name):
        return pa.binary()
    stamp = r"(timestamptz|timestamp|datetime)(?:\((\d)\))?( with time zone| without time zone)?"
    if match := re.fullmatch(stamp, name):
        # Without a precision, PostgreSQL means microseconds and MySQL means seconds.
        default_digits = 0 if match.group(1) == "datetime" else 6
        digits = int(match.group(2)) if match.group(2) is not None else default_digits
        zoned = match.group(1) == "timestamptz" or match.group(3) == " with time zone"
        return pa.timestamp(_PRECISION_UNITS.get(digits, "us"), "UTC" if zoned else None)
    raise UnsupportedTypeError(f"Column type `{text}` has no schema type")


def _default_from_sql(text: str | None, data_type: pa.DataType) -> Any:
    if text is None or text.upper() == "NULL":
        return None
    literal = re.sub(r"::[a-z ]+(\([\d,]+\))?[a-z ]*$", "", text.strip(), flags=re.IGNORECASE)
    literal = literal.strip("()") if literal.startswith("(") else literal
    if literal.startswith("'") and literal.endswith("'"):
        # PostgreSQL and SQLite double quotes; MariaDB reports them backslash-escaped.
        literal = literal[1:-1].replace("''", "'").replace("\\'", "'")
    if pa.types.is_integer(data_type):
        return int(literal)
    if pa.types.is_floating(data_type):
        return float(literal)
    if data_type == pa.bool_():
        return literal.lower() in ("1", "true", "t")
    return literal


def _schema(rows: list[tuple], key: list[str]) -> Schema:
    """Rows of (name, type text, not null, default text) in column order -> Schema."""
    fields = []
    for name, text, not_null, default in rows:
        data_type = type_from_sql(text)
        fields.append(Field(name, data_type, not not_null, _default_from_sql(default, data_type)))
    return Schema(tuple(fields), tuple(key))


def from_sqlite(connection: Any, table: str) -> Schema:
    """Return the schema of a SQLite table, read from `PRAGMA table_info` (a connection)."""
    info = connection.execute(f"PRAGMA table_info({_quote(table, 'sqlite')})").fetchall()
    if not info:
        raise UnsupportedTypeError(f"SQLite table `{table}` does not exist")
    key = [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    return _schema([(r[1], r[2], bool(r[3]) or r[1] in key, r[4]) for r in info], key)


def from_postgres(connection: Any, table: str, namespace: str = "public") -> Schema:
    """Return the schema of a PostgreSQL table, read from `pg_catalog` (a DB-API connection)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            (f'"{namespace}"."{table}"',),
        )
        rows = cursor.fetchall()
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY "
            "AS k(attnum, n) ON true JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = k.attnum WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY k.n",
            (f'"{namespace}"."{table}"',),
        )
        key = [row[0] for row in cursor.fetchall()]
    return _schema(rows, key)


def from_mysql(connection: Any, table: str) -> Schema:
    """Return the schema of a MySQL/MariaDB table of the current database (`information_schema`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'NO', COLUMN_DEFAULT "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (table,),
        )
        rows = [tuple(r) for r in cursor.fetchall()]
        cursor.execute(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (table,),
        )
        key = [row[0] for row in cursor.fetchall()]
    if not rows:
        raise UnsupportedTypeError(f"MySQL table `{table}` does not exist")
    return _schema(rows, key)
