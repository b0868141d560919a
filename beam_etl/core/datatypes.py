"""Spec type names (`int64`, `decimal(12,2)`, `timestamp[us, UTC]`) and their Arrow types."""

import re
from typing import Final

import pyarrow as pa

_SIMPLE: Final[dict[str, pa.DataType]] = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "int": pa.int64(),
    "integer": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "float": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
    "str": pa.string(),
    "large_string": pa.large_string(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "date32": pa.date32(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us"),
}
_DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_TIMESTAMP = re.compile(r"timestamp\[\s*(s|ms|us|ns)\s*(?:,\s*(?:tz\s*=\s*)?([^\]]+?))?\s*\]")


def parse_type(name: str) -> pa.DataType:
    """Return the Arrow type for a spec type name.

    Accepted: the names in `type_names()`, `decimal(P,S)` and `timestamp[UNIT]` or
    `timestamp[UNIT, TZ]` (for example `timestamp[us, UTC]`).

    Raises:
        ValueError: the name is not a known type; the message lists the accepted names.
    """
    text = name.strip().lower() if isinstance(name, str) else ""
    if text in _SIMPLE:
        return _SIMPLE[text]
    if match := _DECIMAL.fullmatch(text):
        precision, scale = int(match.group(1)), int(match.group(2))
        if precision <= 38:
            return pa.decimal128(precision, scale)
        return pa.decimal256(precision, scale)
    if match := _TIMESTAMP.fullmatch(name.strip() if isinstance(name, str) else ""):
        return pa.timestamp(match.group(1), tz=match.group(2))
    raise ValueError(
        f"Unknown type `{name}`; use one of {', '.join(type_names())}, "
        "decimal(P,S) or timestamp[UNIT, TZ]"
    )


def type_names() -> list[str]:
    """Return the simple type names a spec may use."""
    return sorted(_SIMPLE)


def type_name(data_type: pa.DataType) -> str:
    """Return the spec name of an Arrow type (the inverse of `parse_type` where one exists)."""
    if pa.types.is_timestamp(data_type):
        tz = f", {data_type.tz}" if data_type.tz else ""
        return f"timestamp[{data_type.unit}{tz}]"
    if pa.types.is_decimal(data_type):
        return f"decimal({data_type.precision},{data_type.scale})"
    if data_type == pa.date32():
        return "date"
    if data_type == pa.bool_():
        return "bool"
    if pa.types.is_floating(data_type):
        return f"float{data_type.bit_width}"
    return str(data_type)


_MEMBER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_type(data_type: pa.DataType) -> str:
    """Return the type name of an Arrow type, lists and structs included (`list<int32 not
    null>`, `struct<a: string>`; the inverse of `schema.model.parse_type_name`)."""
    if pa.types.is_list(data_type):
        item = data_type.value_field
        return f"list<{format_type(item.type)}{'' if item.nullable else ' not null'}>"
    if pa.types.is_struct(data_type):
        members = ", ".join(
            f"{_member(m.name)}: {format_type(m.type)}{'' if m.nullable else ' not null'}"
            for m in data_type
        )
        return f"struct<{members}>"
    return type_name(data_type)


def _member(name: str) -> str:
    return name if _MEMBER.fullmatch(name) else "`" + name.replace("`", "``") + "`"
