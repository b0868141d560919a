"""PostgreSQL SQL that keeps values exact: the conditions under which assigning a staged value
to a target column would change it silently or overflow, the messages PostgreSQL would give,
and the SELECT expression that refuses such a value instead of storing it changed.
"""

import re
from typing import Final, NamedTuple

import pyarrow as pa

from beam_etl.io.sql.identifiers import quote_identifier
from beam_etl.io.sql.values import fits_decimal


def _is_row_error(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None) or ""
    return code[:2] in ("22", "23")  # data exception, integrity constraint violation


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
    detail = getattr(diag, "message_detail", None)
    return f"{primary} ({detail})" if detail else primary


class _Column(NamedTuple):
    """A target column: its type (with modifiers), the type to cast to (without them, so
    that assigning applies them strictly: too long raises, where an explicit cast would
    truncate), and whether it is NOT NULL."""

    type: str
    base: str
    not_null: bool


_SIZED: Final = re.compile(r"(?P<name>[a-z ]+)\((?P<size>\d+)(?:,(?P<scale>-?\d+))?\)(?P<rest>.*)")
_VARCHAR: Final = re.compile(r"character varying\((\d+)\)")


def _exact_key(type_: pa.DataType) -> bool:
    """Whether a staging column of this type compares as Arrow does (bytes, integers)."""
    types = pa.types
    return types.is_integer(type_) or types.is_string(type_) or types.is_large_string(type_)


_INTEGERS: Final = {"smallint": 16, "integer": 32, "bigint": 64}
_REFUSE_DDL: Final = (
    "CREATE FUNCTION pg_temp.beam_etl_refuse(message text, kind anyelement) RETURNS anyelement "
    "LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION USING MESSAGE = message, ERRCODE = '22000'; "
    "END$$"
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _exactness(column: str, staged: pa.DataType, target: str, base: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL on the staging row `s`, true where assigning its
    value to a `target` column would change it silently; None where that cannot happen.

    Caught: text longer than a varchar (trailing spaces are cut silently), numbers rounded
    to a numeric's scale or to a whole number, times rounded to fewer fractional digits, a
    time of day dropped by a date column. Floats into `real` keep PostgreSQL's nearest value.
    """
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    value = f"CAST({raw} AS {base})"
    sized = _SIZED.fullmatch(target)
    text = pa.types.is_string(staged) or pa.types.is_large_string(staged)
    where = f"of column `{column}`"
    if sized and sized["name"] == "character varying":
        size = sized["size"]
        message = _literal(f"value too long for type {target} (column `{column}`)")
        return f"char_length({value}) > {size}", message
    if sized and sized["name"] == "numeric" and sized["scale"] is not None:
        scale = int(sized["scale"])
        if fits_decimal(staged, int(sized["size"]), scale):
            return None
        message = f"'value `' || {value} || '` {where} does not fit {target} without rounding'"
        return f"{value} <> round({value}, {scale})", message
    if sized and sized["name"].startswith(("time", "interval")) and int(sized["size"]) < 6:
        message = f"'value `' || {value} || '` {where} would be rounded to {target}'"
        return f"{value} <> CAST({value} AS {target})", message
    inexact = pa.types.is_floating(staged) or (pa.types.is_decimal(staged) and staged.scale > 0)
    if target in _INTEGERS and inexact:
        return f"{raw} <> round({raw})", f"'value `' || {raw} || '` {where} is not whole'"
    if target == "date" and (pa.types.is_timestamp(staged) or text):
        stamp = "timestamptz" if getattr(staged, "tz", None) else "timestamp"
        message = f"'value `' || {raw} || '` {where} has a time of day, which a date drops'"
        return f"CAST({raw} AS {stamp}) <> CAST({value} AS {stamp})", message
    return None


def _overflow(column: str, staged: pa.DataType, target: str, base: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL, true where a value is out of the `target` type's
    range (the database would refuse it: found set-based, it needs no bisection)."""
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    value = f"CAST({raw} AS {base})"
    sized = _SIZED.fullmatch(target)
    where = f"of column `{column}`"
    if sized and sized["name"] == "numeric" and sized["scale"] is not None:
        precision, scale = int(sized["size"]), int(sized["scale"])
        if fits_decimal(staged, precision, scale) or pa.types.is_string(staged):
            return None
        limit = f"1e{precision - scale}"
        message = f"'numeric field overflow: `' || {raw} || '` {where} does not fit {target}'"
        return f"{raw} <> 'NaN' AND abs(round({value}, {scale})) >= {limit}", message
    numeric = pa.types.is_integer(staged) or pa.types.is_decimal(staged)
    if target in _INTEGERS and (numeric or pa.types.is_floating(staged)):
        bits = _INTEGERS[target]
        if (
            pa.types.is_integer(staged)
            and staged.bit_width + pa.types.is_unsigned_integer(staged) <= bits
        ):
            return None
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        message = f"'{target} out of range: `' || {raw} || '` {where}'"
        return f"NOT ({raw} BETWEEN {low} AND {high})", message
    return None


def _duplicate_message(index: str, columns: list[str], prefix: str) -> str:
    """Return SQL of PostgreSQL's message for a repeated key, the values named `{prefix}0`..."""
    values = ", ".join(f"{prefix}{i}" for i in range(len(columns)))
    return (
        f'\'duplicate key value violates unique constraint "{index}" (Key ({", ".join(columns)})'
        f"=(' || concat_ws(', ', {values}) || ') already exists.)'"
    )


def _value_sql(column: str, target: _Column, check: tuple[str, str] | None) -> str:
    """Return the SQL of a staged value as assigned to the target column: cast to the type
    without modifiers, and refused (`beam_etl_refuse`) where assigning would change it."""
    value = f"CAST(s.{_q(column)} AS {target.base})"
    if check is None:
        return value
    condition, message = check
    return (
        f"CASE WHEN {condition} THEN pg_temp.beam_etl_refuse({message}, NULL::{target.base}) "
        f"ELSE {value} END"
    )


def _q(name: str) -> str:
    return quote_identifier(name, "postgres")
