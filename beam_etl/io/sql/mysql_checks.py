"""MySQL SQL and Arrow checks that keep values exact: what strict mode still stores changed
(and the condition that finds it), what overflows, which staged values stage and store as they
are (for a prediction), the text LOAD DATA reads, and the messages MySQL would give.
"""

import re
from typing import Final, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.io.sql.identifiers import quote_identifier
from beam_etl.io.sql.values import fits_decimal, in_microseconds

_TRANSIENT: Final = frozenset({1053, 1205, 1213, 1927, 2003, 2006, 2013, 2055, 4031})
# Values and constraints; 1262, 1263, 1265 also as warnings (notes) of a value changed.
_ROW_ERRORS: Final = frozenset(
    {1048, 1062, 1262, 1263, 1264, 1265, 1292, 1366, 1406, 1452, 3819, 4025}
)
_AT_ROW: Final = re.compile(r" at row (\d+)$")


def _q(name: str) -> str:
    return quote_identifier(name, "mysql")


def _load_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return `batch` as LOAD DATA text: escaped backslashes, `\\N` for null, hex for binary."""
    arrays = []
    for column in batch.columns:
        column = _insertable(column)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            column = pa.array([None if v is None else v.hex() for v in column.to_pylist()])
        text = pc.replace_substring(pc.cast(column, pa.string()), "\\", "\\\\")
        arrays.append(pc.fill_null(text, "\\N"))
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _insertable(column: pa.Array) -> pa.Array:
    """Return `column` in a type MySQL takes: zones dropped after converting to UTC, 0/1 bools."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    column = in_microseconds(column)
    if pa.types.is_timestamp(column.type) and column.type.tz:
        column = pc.cast(column, pa.timestamp(column.type.unit))  # keeps the UTC instant
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    return column


class _Column(NamedTuple):
    """A target column as `SHOW FULL COLUMNS` tells it (temporary tables included)."""

    type: str
    collation: str | None
    not_null: bool
    extra: str


_SIZED: Final = re.compile(r"(?P<name>[a-z]+)\((?P<size>\d+)(?:,(?P<scale>\d+))?\)(?P<rest>.*)")
_INTEGERS: Final = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}
_NOTED: Final = ("varchar", "char", "decimal", "date")  # LOAD DATA notes what it changes
_CHUNK: Final = 10_000  # row numbers per IN list
_SESSION: Final = (
    "SET SESSION sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_ALL_TABLES'), "
    "max_error_count = 65535"
)


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _exactness(column: str, staged: pa.DataType, target: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL on the staging row `s`, true where MySQL would
    store its value changed, without an error even in strict mode: trailing spaces cut
    from a varchar, a decimal rounded to its scale or to a whole number, fractional seconds
    rounded, a time of day dropped by a date. None where that cannot happen. Floats into
    FLOAT keep MySQL's nearest value."""
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    sized = _SIZED.fullmatch(target)
    name = sized["name"] if sized else target.split(" ")[0].split("(")[0]
    text = pa.types.is_string(staged) or pa.types.is_large_string(staged)
    number = f"CAST({raw} AS DECIMAL(65,30))" if text else raw
    where = f"of column `{column}`"
    if sized and name in ("varchar", "char"):
        message = _literal(f"Data too long for column '{column}' ({target})")
        return f"CHAR_LENGTH({raw}) > {sized['size']}", message
    if sized and name == "decimal":
        scale = int(sized["scale"] or 0)
        if fits_decimal(staged, int(sized["size"]), scale):
            return None
        message = f"CONCAT('value `', {raw}, '` {where} does not fit {target} without rounding')"
        return f"{number} <> ROUND({number}, {scale})", message
    if name in ("datetime", "timestamp", "time"):
        digits = int(sized["size"]) if sized else 0
        if digits >= 6 or not (text or pa.types.is_timestamp(staged) or pa.types.is_time(staged)):
            return None
        value = f"CAST({raw} AS {'TIME' if name == 'time' else 'DATETIME'}(6))" if text else raw
        message = f"CONCAT('value `', {raw}, '` {where} would be rounded to {target}')"
        return f"MOD(MICROSECOND({value}), {10 ** (6 - digits)}) <> 0", message
    inexact = pa.types.is_floating(staged) or (pa.types.is_decimal(staged) and staged.scale > 0)
    if name in _INTEGERS and (inexact or text):
        return f"{number} <> ROUND({number})", f"CONCAT('value `', {raw}, '` {where} is not whole')"
    if name == "date" and (text or pa.types.is_timestamp(staged)):
        value = f"CAST({raw} AS DATETIME(6))" if text else raw
        message = f"CONCAT('value `', {raw}, '` {where} has a time of day, which a date drops')"
        return f"{value} <> CAST({value} AS DATE)", message
    return None


def _overflow(column: str, staged: pa.DataType, target: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL, true where a value is out of the `target` type's
    range (strict mode refuses it: found set-based, it needs no bisection)."""
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    sized = _SIZED.fullmatch(target)
    name = sized["name"] if sized else target.split(" ")[0]
    message = _literal(f"Out of range value for column '{column}' ({target})")
    numeric = pa.types.is_integer(staged) or pa.types.is_decimal(staged)
    if sized and name == "decimal" and (numeric or pa.types.is_floating(staged)):
        precision, scale = int(sized["size"]), int(sized["scale"] or 0)
        if fits_decimal(staged, precision, scale):
            return None
        limit = "1" + "0" * (precision - scale)
        negative = f" OR {raw} < 0" if "unsigned" in target else ""
        return f"ABS(ROUND({raw}, {scale})) >= {limit}{negative}", message
    if name in _INTEGERS and (numeric or pa.types.is_floating(staged)):
        bits, unsigned = _INTEGERS[name], "unsigned" in target
        low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if pa.types.is_integer(staged):
            from_unsigned = pa.types.is_unsigned_integer(staged)
            width = staged.bit_width + (from_unsigned and not unsigned)  # and a sign bit
            if width <= bits and (from_unsigned or not unsigned):
                return None
        return f"NOT (ROUND({raw}) BETWEEN {low} AND {high})", message
    return None


_TEXT_BYTES: Final = {"tinytext": 255, "text": 65_535, "mediumtext": 16_777_215, "longtext": 0}
_BLOB_BYTES: Final = {"tinyblob": 255, "blob": 65_535, "mediumblob": 16_777_215, "longblob": 0}
_FLOAT32_TEXT: Final = 3.4e38  # a float32 nearer its limit may be read back past MySQL's FLT_MAX
_GENERATED: Final = re.compile(r"generated|virtual|stored|persistent")


def _stages_as_is(staged: pa.DataType) -> bool:
    """Whether the staging table (`sql_type` columns, fed as text) takes every value of
    this type that `unloadable` lets through unchanged (float32 values are measured too)."""
    t = staged.value_type if pa.types.is_dictionary(staged) else staged
    if pa.types.is_decimal(t):
        return t.precision <= 65 and 0 <= t.scale <= 30  # staged in numeric(p,s) as they are
    kinds = (
        pa.types.is_boolean,
        pa.types.is_integer,
        pa.types.is_float32,
        pa.types.is_float64,
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_date32,
        pa.types.is_timestamp,
    )
    return any(kind(t) for kind in kinds)


def _stores_as_is(column: str, staged: pa.DataType, target: _Column) -> tuple[str, int] | None:
    """Return how to confirm in Arrow that a `target` column stores every staged value of
    `column` unchanged and refuses none (in strict mode): `("", 0)` nothing to measure,
    `("chars", n)` no text longer than n characters, `("bytes", n)` no value longer than n
    bytes. None where it might refuse or change one (another type, charset or range): the
    checks `_exactness` and `_overflow` find nothing, and the pair is one known to be exact."""
    t = staged.value_type if pa.types.is_dictionary(staged) else staged
    kind = target.type.lower()
    sized = _SIZED.fullmatch(kind)
    name = sized["name"] if sized else kind.split(" ")[0].split("(")[0]
    checked = _exactness(column, t, kind) is None and _overflow(column, t, kind) is None
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        number = name in _INTEGERS or (name == "decimal" and "unsigned" not in kind)
        return ("", 0) if number and checked else None
    if pa.types.is_floating(t):
        return ("", 0) if kind == "double" or (kind == "float" and t.bit_width == 32) else None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not (target.collation or "").startswith("utf8mb4_"):
            return None  # another charset may refuse a character
        if sized and name in ("varchar", "char"):
            return "chars", int(sized["size"])
        return ("bytes", _TEXT_BYTES[kind]) if kind in _TEXT_BYTES else None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        if sized and name == "varbinary":
            return "bytes", int(sized["size"])
        return ("bytes", _BLOB_BYTES[kind]) if kind in _BLOB_BYTES else None
    if pa.types.is_date32(t):
        return ("", 0) if kind == "date" else None
    if pa.types.is_timestamp(t):
        return ("", 0) if kind == "datetime(6)" else None
    return None


def _within(column: pa.Array, measure: str, limit: int) -> bool:
    """Whether the staged `column` passes `measure`: `nulls` (it has none), `chars` or `bytes`
    (no value longer than `limit`; 0: no limit), `float32` (text of every value reads back
    as a float32)."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if measure == "nulls":
        return column.null_count == 0
    if measure == "float32":
        largest = pc.max(pc.abs(column)).as_py()
        return largest is None or largest < _FLOAT32_TEXT
    if not limit:
        return True
    lengths = pc.utf8_length(column) if measure == "chars" else pc.binary_length(column)
    longest = pc.max(lengths).as_py()
    return longest is None or longest <= limit


class _ChangedError(Exception):
    """MySQL changed a value instead of refusing it (a warning or note): refused all the same.

    Args are those of a PyMySQL error: the warning's code and message.
    """


def _duplicate_message(index: str, width: int, prefix: str) -> str:
    """Return SQL of MySQL's message for a repeated key, the values named `{prefix}0`..."""
    values = ", ".join(f"{prefix}{i}" for i in range(width))
    key = _literal(repr(index))
    return f"CONCAT('Duplicate entry ', QUOTE(CONCAT_WS('-', {values})), ' for key ', {key})"


def _as_column(value: str, column: _Column) -> str:
    """Return SQL of `value` in the charset and collation of `column` (text compares there)."""
    if not column.collation:
        return value
    charset = column.collation.split("_")[0]
    return f"CONVERT({value} USING {charset}) COLLATE {column.collation}"


def _is_row_error(exc: BaseException) -> bool:
    return bool(exc.args) and exc.args[0] in _ROW_ERRORS
