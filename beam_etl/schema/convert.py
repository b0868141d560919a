"""Schema <-> Avro schema (JSON), lossless both ways for every type the model supports but one.

Avro has fewer types than Arrow. Where the Avro type alone would read back as a different
Arrow type (`int8` and `int16` are Avro `int`; `timestamp[s]` is `timestamp-millis`; a zone
other than UTC), the Avro schema carries the exact type in an extra attribute `arrowType`
(Avro permits extra attributes; other readers ignore it). Descriptions are `doc`, constraints
an extra attribute `constraints`, the primary key an attribute `primaryKey` of the record.
Defaults that Avro can state are Avro `default`s; others go to `arrowDefault`.

Cannot be expressed (raise `UnsupportedTypeError`): `uint64` (beyond Avro `long`).
Read from Avro with a loss: `enum` becomes `string` with its symbols as `allowed_values`,
`fixed` becomes `binary`; `map`, `time-*` and unions other than `[null, T]` are not supported.
"""

import json
import re
from typing import Any

import pyarrow as pa

from beam_etl.schema.model import (
    Field,
    Schema,
    SchemaError,
    UnsupportedTypeError,
    format_type,
    parse_type_name,
)

_PRIMITIVE = {
    pa.int32(): "int",
    pa.int64(): "long",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.string(): "string",
    pa.binary(): "bytes",
}
_FROM_PRIMITIVE = {v: k for k, v in _PRIMITIVE.items()}
# Arrow types Avro holds in a wider type: written with an `arrowType` attribute.
_WIDENED = {
    pa.int8(): "int",
    pa.int16(): "int",
    pa.uint8(): "int",
    pa.uint16(): "int",
    pa.uint32(): "long",
    pa.large_string(): "string",
}
_TS_LOGICAL = {"s": "millis", "ms": "millis", "us": "micros", "ns": "nanos"}
_AVRO_DEFAULTABLE = {"int", "long", "float", "double", "boolean", "string"}


def to_avro(schema: Schema, name: str = "Record", namespace: str | None = None) -> dict:
    """Return the Avro record schema (a JSON-ready dict) of `schema`.

    Raises:
        UnsupportedTypeError: a field has a type Avro cannot hold (`uint64`).
    """
    record: dict[str, Any] = {"type": "record", "name": _avro_name(name)}
    if namespace:
        record["namespace"] = namespace
    record["fields"] = [_avro_field(f, record["name"]) for f in schema.fields]
    if schema.primary_key:
        record["primaryKey"] = list(schema.primary_key)
    return record


def _avro_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if re.match(r"[A-Za-z_]", cleaned) else f"_{cleaned}"


def _avro_field(item: Field, parent: str) -> dict:
    base = _avro_type(item.type, f"{parent}_{_avro_name(item.name)}", item.name)
    out: dict[str, Any] = {"name": item.name}
    simple = isinstance(base, str) and base in _AVRO_DEFAULTABLE
    if item.default is not None and not simple:
        out["arrowDefault"] = item.default
    if item.nullable:
        # Avro requires a union's default to match its first branch.
        if item.default is not None and simple:
            out["type"], out["default"] = [base, "null"], item.default
        else:
            out["type"], out["default"] = ["null", base], None
    else:
        out["type"] = base
        if item.default is not None and simple:
            out["default"] = item.default
    if item.description is not None:
        out["doc"] = item.description
    if item.constraints:
        out["constraints"] = dict(item.constraints)
    return out


def _avro_type(data_type: pa.DataType, record_name: str, where: str) -> Any:
    if data_type in _PRIMITIVE:
        return _PRIMITIVE[data_type]
    if data_type in _WIDENED:
        return {"type": _WIDENED[data_type], "arrowType": format_type(data_type)}
    if pa.types.is_decimal(data_type):
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": data_type.precision,
            "scale": data_type.scale,
        }
    if data_type == pa.date32():
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_timestamp(data_type):
        return _avro_timestamp(data_type)
    if pa.types.is_list(data_type):
        item = data_type.value_field
        items = _avro_type(item.type, f"{record_name}_item", where)
        return {"type": "array", "items": ["null", items] if item.nullable else items}
    if pa.types.is_struct(data_type):
        members = [Field(m.name, m.type, m.nullable) for m in data_type]
        return {
            "type": "record",
            "name": record_name,
            "fields": [_avro_field(m, record_name) for m in members],
        }
    raise UnsupportedTypeError(f"Avro cannot hold type `{format_type(data_type)}` of `{where}`")


def _avro_timestamp(data_type: pa.TimestampType) -> dict:
    local = "" if data_type.tz else "local-"
    out: dict[str, Any] = {
        "type": "long",
        "logicalType": f"{local}timestamp-{_TS_LOGICAL[data_type.unit]}",
    }
    if data_type.unit == "s" or data_type.tz not in (None, "UTC"):
        out["arrowType"] = format_type(data_type)
    return out


def from_avro(avro: dict | str) -> Schema:
    """Return the schema of an Avro record schema (a dict or its JSON text).

    Raises:
        UnsupportedTypeError: a type has no counterpart in the model (`map`, `time-*`, ...).
        SchemaError: the Avro schema is not a record.
    """
    data = json.loads(avro) if isinstance(avro, str) else avro
    if not isinstance(data, dict) or data.get("type") != "record":
        raise SchemaError("An Avro schema to convert must be a record")
    named: dict[str, pa.DataType] = {}
    fields = tuple(_field_from_avro(f, named) for f in data["fields"])
    return Schema(fields, tuple(data.get("primaryKey") or ()))


def _field_from_avro(data: dict, named: dict[str, pa.DataType]) -> Field:
    raw = data["type"]
    nullable = False
    if isinstance(raw, list):
        branches = [b for b in raw if b != "null"]
        if len(branches) != 1 or len(raw) != 2:
            raise UnsupportedTypeError(
                f"Avro union `{json.dumps(raw)}` of `{data['name']}` is not supported; "
                "only [null, T] is"
            )
        raw, nullable = branches[0], True
    data_type, constraints = _type_from_avro(raw, named, data["name"])
    default = data.get("arrowDefault", data.get("default"))
    return Field(
        data["name"],
        data_type,
        nullable,
        default,
        data.get("doc"),
        {**constraints, **(data.get("constraints") or {})},
    )


def _type_from_avro(
    raw: Any, named: dict[str, pa.DataType], where: str
) -> tuple[pa.DataType, dict]:
    if isinstance(raw, str):
        if raw in _FROM_PRIMITIVE:
            return _FROM_PRIMITIVE[raw], {}
        if raw in named:
            return named[raw], {}
        raise UnsupportedTypeError(f"Avro type `{raw}` of `{where}` is not supported")
    if "arrowType" in raw:
        return parse_type_name(raw["arrowType"]), {}
    logical = raw.get("logicalType")
    if logical == "decimal":
        return pa.decimal128(raw["precision"], raw.get("scale", 0)) if raw[
            "precision"
        ] <= 38 else pa.decimal256(raw["precision"], raw.get("scale", 0)), {}
    if logical == "date":
        return pa.date32(), {}
    if logical and (match := re.fullmatch(r"(local-)?timestamp-(millis|micros|nanos)", logical)):
        unit = {"millis": "ms", "micros": "us", "nanos": "ns"}[match.group(2)]
        return pa.timestamp(unit, None if match.group(1) else "UTC"), {}
    if logical == "uuid":
        return pa.string(), {}
    kind = raw.get("type")
    if kind == "array":
        items = raw["items"]
        nullable = isinstance(items, list) and "null" in items
        if nullable:
            items = next(b for b in items if b != "null")
        item_type, _ = _type_from_avro(items, named, f"{where}[]")
        return pa.list_(pa.field("item", item_type, nullable)), {}
    if kind == "record":
        members = [_field_from_avro(m, named) for m in raw["fields"]]
        struct = pa.struct([pa.field(m.name, m.type, m.nullable) for m in members])
        named[raw["name"]] = struct
        return struct, {}
    if kind == "enum":
        return pa.string(), {"allowed_values": list(raw["symbols"])}
    if kind == "fixed":
        return pa.binary(), {}
    if isinstance(kind, str) and kind in _FROM_PRIMITIVE and not logical:
        return _FROM_PRIMITIVE[kind], {}
    raise UnsupportedTypeError(f"Avro type `{json.dumps(raw)}` of `{where}` is not supported")
