"""Schema -> SQL `CREATE TABLE` for PostgreSQL, MySQL/MariaDB and SQLite, and back from catalogs.

Every type maps to one column type per dialect (`beam_etl.core.sqltypes`, the table the loaders
use too). Where a dialect cannot hold the type exactly
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

from beam_etl.core.sqltypes import DIALECTS, NoColumnTypeError, column_type
from beam_etl.schema.model import Field, Schema, UnsupportedTypeError

_PRECISION_UNITS: Final = {0: "s", 3: "ms", 6: "us"}


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"`dialect` must be one of {', '.join(DIALECTS)}, not `{dialect}`")


def sql_type(data_type: pa.DataType, dialect: str, *, key: bool = False) -> tuple[str, str | None]:
    """Return the column type of `data_type` in `dialect` and the loss (None when exact), as
    `beam_etl.core.sqltypes` declares it for DDL.

    Raises:
        UnsupportedTypeError: the dialect has no column type for it at all.
        ValueError: unknown dialect.
    """
    try:
        found = column_type(data_type, dialect, key=key, purpose="ddl")
    except NoColumnTypeError as exc:
        raise UnsupportedTypeError(str(exc)) from exc
    return found.name, found.loss


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
