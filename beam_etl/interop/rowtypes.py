"""Arrow schemas <-> Beam row schemas, and Arrow columns <-> the values of Beam rows.

No pipeline here: the bridge's DoFns (`beam_etl.interop.bridge`) only apply these functions.

Arrow -> Beam, per type:

| Arrow | Beam field type (Python value) |
|---|---|
| int8, int16, int32, int64 | INT16 (Beam's BYTE coder is unsigned), INT16, INT32, INT64 (`int`) |
| uint8, uint16, uint32 | the next wider signed int (`int`) |
| uint64 | decimal logical type (`Decimal`): INT64 cannot hold it |
| float16/32, float64 | FLOAT, DOUBLE (`float`) |
| bool, string, binary (large and fixed-size too) | BOOLEAN, STRING, BYTES |
| decimal128/256(p, s) | decimal logical type (`Decimal`); STRING (its text) when p > 28 |
| date32, date64 | date logical type (`datetime.date`) |
| timestamp (any unit, zoned or naive) | micros_instant (`apache_beam.utils.timestamp.Timestamp`) |
| struct, list, map | nested row (a generated NamedTuple), array (`list`), map (`dict`) |
| dictionary | its value type; null (all nulls) | STRING, always null |

Every field also carries the exact Arrow field as a Beam field option (`ARROW_FIELD_OPTION`),
so that `ToBatches` restores precision and scale, time zone, unit, widths and encodings. A
naive timestamp travels as the instant its wall-clock time has in UTC; its option makes it
naive again. Fields without the option (made by Beam's own transforms) get a canonical Arrow
type: `timestamp[us, UTC]`, `decimal128(38, 18)`, `int64`, `float64` ...; fields Beam only
knows as `Any` are typed from their values, batch by batch.
"""

import base64
import datetime
import decimal
import typing
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.portability.api import schema_pb2
from apache_beam.typehints import schemas
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.utils.timestamp import Timestamp

from beam_etl.core.batches import visible_schema
from beam_etl.core.errors import DataError

#: Beam field option holding the Arrow field a row field was made from (base64 IPC schema).
ARROW_FIELD_OPTION: Final = "beam_etl:arrow_field"
#: Beam's decimal coder rounds to Python's default context (28 significant digits): wider
#: decimals travel as their text.
MAX_DECIMAL_DIGITS: Final = 28
#: The Arrow type of decimals Beam knows without precision and scale.
DEFAULT_DECIMAL: Final = pa.decimal128(38, 18)

_INTS: Final = {
    pa.int8(): np.int16,  # Beam's BYTE coder writes an unsigned byte: -1 does not encode
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): int,
    pa.uint8(): np.int16,
    pa.uint16(): np.int32,
    pa.uint32(): int,
}
_ATOMIC: Final = {
    schema_pb2.BYTE: pa.int8(),
    schema_pb2.INT16: pa.int16(),
    schema_pb2.INT32: pa.int32(),
    schema_pb2.INT64: pa.int64(),
    schema_pb2.FLOAT: pa.float32(),
    schema_pb2.DOUBLE: pa.float64(),
    schema_pb2.BOOLEAN: pa.bool_(),
    schema_pb2.STRING: pa.string(),
    schema_pb2.BYTES: pa.binary(),
}
_TIMESTAMP_URNS: Final = (
    "beam:logical_type:micros_instant:v1",
    "beam:logical_type:millis_instant:v1",
    "beam:logical_type:timestamp:v1",
)
_DECIMAL_URNS: Final = ("beam:logical_type:decimal:v1", "beam:logical_type:fixed_decimal:v1")
_ANY_URN: Final = "beam:logical:pythonsdk_any:v1"


# ------------------------------------------------------------------------ Arrow -> Beam types
def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_view(kind, "string")


def _is_bytes(kind: pa.DataType) -> bool:
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or _is_view(kind, "binary")
    )


def _is_view(kind: pa.DataType, name: str) -> bool:
    return str(kind) == f"{name}_view"


def _is_list(kind: pa.DataType) -> bool:
    return (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )


def beam_type(kind: pa.DataType, column: str) -> Any:
    """Return the Python type hint Beam maps to the row field type of Arrow type `kind`.

    Raises:
        DataError: Beam rows have no type for `kind` (time of day, durations, unions ...).
    """
    if pa.types.is_dictionary(kind):
        return beam_type(kind.value_type, column)
    if kind in _INTS:
        return _INTS[kind]
    if pa.types.is_decimal(kind) and kind.precision > MAX_DECIMAL_DIGITS:
        return str
    if kind == pa.uint64() or pa.types.is_decimal(kind):
        return decimal.Decimal
    if pa.types.is_floating(kind):
        return float if kind == pa.float64() else np.float32
    if pa.types.is_boolean(kind):
        return bool
    if _is_text(kind) or pa.types.is_null(kind):
        return str
    if _is_bytes(kind):
        return bytes
    if pa.types.is_date(kind):
        return datetime.date
    if pa.types.is_timestamp(kind):
        return Timestamp
    if pa.types.is_struct(kind):
        return _struct_type(kind, column)
    if _is_list(kind):
        item = _hint(kind.value_field, f"{column}[]")
        return typing.Sequence[item]  # type: ignore[valid-type,misc]
    if pa.types.is_map(kind):
        key = beam_type(kind.key_type, f"{column}.key")
        value = _hint(kind.item_field, f"{column}.value")
        return typing.Mapping[key, value]  # type: ignore[valid-type,misc]
    raise DataError(
        f"Column `{column}` has type `{kind}`, which Beam rows cannot hold; cast it first "
        "(for example with `CastColumns`)"
    )


def _hint(field: pa.Field, column: str) -> Any:
    hint = beam_type(field.type, column)
    return typing.Optional[hint] if field.nullable else hint  # noqa: UP045 (hint: no `|`)


def _struct_type(kind: pa.StructType, column: str) -> RowTypeConstraint:
    return RowTypeConstraint.from_fields(
        [(field.name, _hint(field, f"{column}.{field.name}")) for field in kind]
    )


def encode_field(field: pa.Field) -> str:
    """Return `field` as text for a Beam field option (its IPC schema, base64)."""
    return base64.b64encode(pa.schema([field]).serialize().to_pybytes()).decode("ascii")


def decode_field(text: str) -> pa.Field:
    """Return the Arrow field `encode_field` encoded."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text))).field(0)


def row_type(schema: pa.Schema) -> RowTypeConstraint:
    """Return the Beam row type of the visible columns of `schema`, each with its Arrow field
    as an option.

    Raises:
        DataError: a column's type has no Beam row type.
    """
    fields = []
    options: dict[str, Sequence[tuple[str, Any]]] = {}
    for field in visible_schema(schema):
        fields.append((field.name, _hint(field, field.name)))
        options[field.name] = [(ARROW_FIELD_OPTION, encode_field(field))]
    return RowTypeConstraint.from_fields(fields, field_options=options)


# ------------------------------------------------------------------------ Beam -> Arrow types
def arrow_schema(element_type: Any, types: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """Return the Arrow schema of batches made from rows of `element_type`.

    A field's Arrow type is, in order: `types[name]`, the Arrow field it carries as an option
    (when Beam's type of the field is still the one made from it), or the canonical type of
    its Beam type. Fields Beam types as `Any` get type `null` here: `RowBatcher` types them
    from their values.

    Raises:
        TypeError: `element_type` is not a schema'd type (a NamedTuple or a row type).
    """
    fields = []
    for field in _row_schema(element_type).fields:
        arrow = _arrow_field(field.name, field.type)
        stored = _stored_field(field)
        if stored is not None and _same_shape(stored, arrow):
            arrow = stored
        if types and field.name in types:
            arrow = pa.field(field.name, types[field.name], nullable=arrow.nullable)
        fields.append(arrow)
    return pa.schema(fields)


def _row_schema(element_type: Any) -> schema_pb2.Schema:
    """The Beam schema of `element_type`, with field options (which
    `schemas.schema_from_element_type` drops)."""
    if isinstance(element_type, RowTypeConstraint):
        return schemas.typing_to_runner_api(element_type).row_type.schema  # type: ignore[arg-type]
    return schemas.schema_from_element_type(element_type)


def _stored_field(field: schema_pb2.Field) -> pa.Field | None:
    for option in field.options:
        if option.name == ARROW_FIELD_OPTION and option.value.atomic_value.string:
            return decode_field(option.value.atomic_value.string)
    return None


def _same_shape(stored: pa.Field, canonical: pa.Field) -> bool:
    """Whether `stored` maps to the same Beam field type as `canonical` came from."""
    try:
        hint = _hint(stored, stored.name)
    except DataError:
        return False
    proto = schemas.typing_to_runner_api(hint)
    return _arrow_field(stored.name, proto).equals(canonical)


def _arrow_field(name: str, kind: schema_pb2.FieldType) -> pa.Field:
    return pa.field(name, _arrow_type(kind), nullable=kind.nullable)


def _arrow_type(kind: schema_pb2.FieldType) -> pa.DataType:
    which = kind.WhichOneof("type_info")
    if which == "atomic_type":
        return _ATOMIC[kind.atomic_type]
    if which in ("array_type", "iterable_type"):
        element = getattr(kind, which).element_type
        return pa.list_(_arrow_field("item", element))
    if which == "map_type":
        key = _arrow_field("key", kind.map_type.key_type).with_nullable(False)
        return pa.map_(key, _arrow_field("value", kind.map_type.value_type))
    if which == "row_type":
        return pa.struct([_arrow_field(f.name, f.type) for f in kind.row_type.schema.fields])
    if which == "logical_type":
        return _logical_arrow_type(kind.logical_type)
    raise TypeError(f"Unknown Beam field type `{which}`")


def _logical_arrow_type(logical: schema_pb2.LogicalType) -> pa.DataType:
    urn = logical.urn
    if urn in _TIMESTAMP_URNS:
        return pa.timestamp("us", tz="UTC")
    if urn == "beam:logical_type:date:v1":
        return pa.date32()
    if urn in _DECIMAL_URNS:
        return _decimal_type(logical)
    if urn == _ANY_URN:
        return pa.null()
    # Other logical types (fixed or variable chars and bytes, Java's ...) as their representation.
    return _arrow_type(logical.representation)


def _decimal_type(logical: schema_pb2.LogicalType) -> pa.DataType:
    fields = logical.argument.row_value.values if logical.HasField("argument") else ()
    if len(fields) == 2:
        precision, scale = (int(value.atomic_value.int32) for value in fields)
        if 0 < precision <= 76:
            kind = pa.decimal128 if precision <= 38 else pa.decimal256
            return kind(precision, scale)
    return DEFAULT_DECIMAL


# ----------------------------------------------------------------------- Arrow values -> rows
Converter = Callable[[pa.Array], list]


def row_maker(schema: pa.Schema) -> tuple[RowTypeConstraint, Callable[[pa.RecordBatch], list]]:
    """Return the row type of `schema` and a function from a batch to its rows.

    The rows are instances of the row type's generated NamedTuple (nested structs too), so
    they are built positionally (fast) and read by name like any Beam row.
    """
    constraint = row_type(schema)
    shown = visible_schema(schema)
    converters = [
        _converter(field.type, constraint.get_type_for(field.name), field.name) for field in shown
    ]
    names = shown.names
    make = constraint.user_type

    def rows_of(batch: pa.RecordBatch) -> list:
        columns = [convert(batch.column(name)) for convert, name in zip(converters, names)]
        return list(map(make, *columns)) if columns else [make() for _ in range(batch.num_rows)]

    return constraint, rows_of


def _plain(array: pa.Array) -> list:
    return array.to_pylist()


def _converter(kind: pa.DataType, hint: Any, column: str) -> Converter:
    inner = _unwrap_optional(hint)
    if pa.types.is_dictionary(kind):
        decode = _converter(kind.value_type, hint, column)
        return lambda array: decode(array.dictionary_decode())
    if pa.types.is_timestamp(kind):
        return lambda array: _timestamps(array, column)
    if kind == pa.uint64():
        return lambda array: [None if v is None else decimal.Decimal(v) for v in array.to_pylist()]
    if pa.types.is_decimal(kind) and kind.precision > MAX_DECIMAL_DIGITS:
        return lambda array: pc.cast(array, pa.string()).to_pylist()
    if kind == pa.float16():
        return lambda array: pc.cast(array, pa.float32()).to_pylist()
    if pa.types.is_struct(kind):
        return _struct_converter(kind, inner, column)
    if _is_list(kind):
        element = _converter(kind.value_type, _sequence_item(inner), f"{column}[]")
        return lambda array: _lists(array, element)
    if pa.types.is_map(kind):
        return lambda array: [None if v is None else dict(v) for v in array.to_pylist()]
    return _plain


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _sequence_item(hint: Any) -> Any:
    args = typing.get_args(hint)
    return args[0] if args else Any


def _timestamps(array: pa.Array, column: str) -> list:
    kind = array.type
    if kind.unit == "ns":
        nanos = pc.cast(array, pa.int64())
        lost = pc.not_equal(pc.multiply(pc.divide(nanos, 1000), 1000), nanos)
        if pc.any(pc.fill_null(lost, False)).as_py():
            raise DataError(
                f"Column `{column}` holds timestamps with nanoseconds, which Beam rows carry "
                "to the microsecond only; cast it to `timestamp[us]` first"
            )
    micros = pc.cast(pc.cast(array, pa.timestamp("us", kind.tz)), pa.int64()).to_pylist()
    return [None if v is None else Timestamp(micros=v) for v in micros]


def _struct_converter(kind: pa.StructType, hint: Any, column: str) -> Converter:
    children = [
        _converter(field.type, hint.get_type_for(field.name), f"{column}.{field.name}")
        for field in kind
    ]
    make = hint.user_type

    def convert(array: pa.Array) -> list:
        columns = [child(part) for child, part in zip(children, array.flatten())]
        rows = list(map(make, *columns)) if columns else [make() for _ in range(len(array))]
        if array.null_count:
            valid = array.is_valid().to_pylist()
            rows = [row if ok else None for row, ok in zip(rows, valid)]
        return rows

    return convert


def _lists(array: pa.Array, element: Converter) -> list:
    values = element(array.flatten())
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy()
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    valid = array.is_valid().to_pylist() if array.null_count else None
    lists: list[list | None] = [values[start:end] for start, end in zip(starts, ends)]
    if valid is not None:
        lists = [items if ok else None for items, ok in zip(lists, valid)]
    return lists


# ----------------------------------------------------------------------- rows -> Arrow values
def batch_of(rows: Sequence[Any], schema: pa.Schema) -> pa.RecordBatch:
    """Return `rows` (Beam rows, NamedTuples or dicts) as one batch of `schema`.

    Fields typed `null` in `schema` (Beam's `Any`) are typed from their values.

    Raises:
        DataError: a value does not fit its column's type (naming the column and value).
    """
    arrays = [_array([_get(row, field.name) for row in rows], field) for field in schema]
    return pa.RecordBatch.from_arrays(
        arrays, schema=pa.schema([f.with_type(a.type) for f, a in zip(schema, arrays)])
    )


def _get(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


def _array(values: list, field: pa.Field) -> pa.Array:
    kind = field.type
    try:
        if pa.types.is_null(kind):
            return pa.array([_python(v) for v in values])
        if pa.types.is_dictionary(kind):
            return pa.array(values, kind.value_type).dictionary_encode().cast(kind)
        if pa.types.is_timestamp(kind):
            return _timestamp_array(values, kind)
        if pa.types.is_struct(kind):
            return _struct_array(values, kind)
        if _is_list(kind):
            return _list_array(values, kind)
        if kind == pa.uint64():
            return pa.array([None if v is None else int(v) for v in values], kind)
        if pa.types.is_decimal(kind) and kind.precision > MAX_DECIMAL_DIGITS:
            return pa.array([None if v is None else str(v) for v in values]).cast(kind)
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise DataError(
            f"A value of field `{field.name}` does not fit Arrow type `{kind}`: {exc}; pass "
            f"`types={{'{field.name}': ...}}` to `ToBatches` to choose the type"
        ) from exc


def _python(value: Any) -> Any:
    """A value Arrow can infer a type from (Beam timestamps and rows are not)."""
    if isinstance(value, Timestamp):
        return value.to_utc_datetime(allow_lossy_conversion=True)
    if hasattr(value, "_asdict"):
        return {k: _python(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_python(v) for v in value]
    return value


def _timestamp_array(values: list, kind: pa.TimestampType) -> pa.Array:
    micros = [
        None if v is None else (v.micros if isinstance(v, Timestamp) else _datetime_micros(v))
        for v in values
    ]
    array = pa.array(micros, pa.int64()).cast(pa.timestamp("us", kind.tz))
    return array if kind.unit == "us" else array.cast(kind)


def _datetime_micros(value: Any) -> int:
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise TypeError(f"`{value!r}` is not a timestamp")


def _struct_array(values: list, kind: pa.StructType) -> pa.Array:
    present = [v if v is not None else {} for v in values]
    children = [_array([_get(v, f.name) for v in present], f) for f in kind]
    mask = pa.array([v is None for v in values], pa.bool_())
    fields = [f.with_type(child.type) for f, child in zip(kind, children)]
    return pa.StructArray.from_arrays(children, fields=fields, mask=mask)


def _list_array(values: list, kind: pa.DataType) -> pa.Array:
    offsets = [0]
    flat: list = []
    for items in values:
        if items is not None:
            flat.extend(items)
        offsets.append(len(flat))
    items_array = _array(flat, kind.value_field)
    mask = pa.array([v is None for v in values], pa.bool_())
    offsets_array = pa.array(offsets, pa.int64() if pa.types.is_large_list(kind) else pa.int32())
    maker = pa.LargeListArray if pa.types.is_large_list(kind) else pa.ListArray
    result = maker.from_arrays(offsets_array, items_array, mask=mask)
    field_type = (
        pa.large_list(kind.value_field.with_type(items_array.type))
        if pa.types.is_large_list(kind)
        else pa.list_(kind.value_field.with_type(items_array.type))
    )
    result = result.cast(field_type)
    return result.cast(kind) if pa.types.is_fixed_size_list(kind) else result
