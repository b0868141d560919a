"""Schema <-> Avro schema (JSON), lossless both ways for every type the model supports but one.

Types map as `beam_etl.core.avrotypes` lists, in its exact flavour: where the Avro type alone
would read back as a different Arrow type (`int8` and `int16` are Avro `int`; `timestamp[s]`
is `timestamp-millis`; a zone other than UTC), the Avro schema carries the exact type in an
extra attribute `arrowType` (Avro permits extra attributes; other readers ignore it).
Descriptions are `doc`, constraints an extra attribute `constraints`, the primary key an
attribute `primaryKey` of the record. Defaults that Avro can state are Avro `default`s; others
go to `arrowDefault`.

Cannot be expressed (raise `UnsupportedTypeError`): `uint64` (beyond Avro `long`).
Read from Avro with a loss: `enum` becomes `string` with its symbols as `allowed_values`,
`fixed` becomes `binary`; types the model lacks (`map`, `time-*`, `null`) and unions other
than `[null, T]` are not supported.
"""

import json
from typing import Any

import pyarrow as pa

from beam_etl.core.avrotypes import ArrowToAvro, AvroToArrow, avro_name, nullable_branch
from beam_etl.schema.model import Field, Schema, SchemaError, UnsupportedTypeError

_AVRO_DEFAULTABLE = {"int", "long", "float", "double", "boolean", "string"}


def to_avro(schema: Schema, name: str = "Record", namespace: str | None = None) -> dict:
    """Return the Avro record schema (a JSON-ready dict) of `schema`.

    Raises:
        UnsupportedTypeError: a field has a type Avro cannot hold (`uint64`).
    """
    record: dict[str, Any] = {"type": "record", "name": avro_name(name)}
    if namespace:
        record["namespace"] = namespace
    types = ArrowToAvro(exact=True, prefix=record["name"])
    types.unique(record["name"])
    record["fields"] = [_avro_field(f, types) for f in schema.fields]
    if schema.primary_key:
        record["primaryKey"] = list(schema.primary_key)
    return record


def _avro_field(item: Field, types: ArrowToAvro) -> dict:
    try:
        base = types.type(item.type, item.name)
    except ValueError as exc:
        raise UnsupportedTypeError(str(exc)) from exc
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


def from_avro(avro: dict | str) -> Schema:
    """Return the schema of an Avro record schema (a dict or its JSON text).

    Raises:
        UnsupportedTypeError: a type has no counterpart in the model (`map`, `time-*`, ...).
        SchemaError: the Avro schema is not a record.
    """
    data = json.loads(avro) if isinstance(avro, str) else avro
    if not isinstance(data, dict) or data.get("type") != "record":
        raise SchemaError("An Avro schema to convert must be a record")
    types = AvroToArrow(exact=True)
    fields = tuple(_field_from_avro(f, types) for f in data["fields"])
    return Schema(fields, tuple(data.get("primaryKey") or ()))


def _field_from_avro(data: dict, types: AvroToArrow) -> Field:
    try:
        arrow = types.field(data["type"], data["name"], data["name"])
    except ValueError as exc:
        raise UnsupportedTypeError(f"Cannot convert the Avro schema: {exc}") from exc
    branch, _ = nullable_branch(data["type"], data["name"])
    constraints = {}
    if isinstance(branch, dict) and branch.get("type") == "enum":
        constraints["allowed_values"] = list(branch["symbols"])
    default = data.get("arrowDefault", data.get("default"))
    return Field(
        data["name"],
        _model_type(arrow.type),
        arrow.nullable,
        default,
        data.get("doc"),
        {**constraints, **(data.get("constraints") or {})},
    )


def _model_type(data_type: pa.DataType) -> pa.DataType:
    """`data_type` with every fixed-size binary as `binary`: the model has no fixed size."""
    if pa.types.is_fixed_size_binary(data_type):
        return pa.binary()
    if pa.types.is_list(data_type):
        item = data_type.value_field
        return pa.list_(item.with_type(_model_type(item.type)))
    if pa.types.is_struct(data_type):
        return pa.struct([member.with_type(_model_type(member.type)) for member in data_type])
    return data_type
