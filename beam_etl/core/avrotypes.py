"""Arrow <-> Avro types: the one mapping behind the Avro connector and the schema conversion.

| Avro | Arrow |
|---|---|
| `["null", T]` (either order) | `T`, nullable |
| `null`, `boolean`, `int`, `long` | `null`, `bool`, `int32`, `int64` |
| `float`, `double` | `float32`, `float64` |
| `string`, `enum`, `string` + `uuid` | `string` |
| `bytes`, `fixed` | `binary`, `fixed_size_binary(size)` |
| `bytes`/`fixed` + `decimal(P, S)` | `decimal128(P, S)` (`decimal256` above 38 digits) |
| `int` + `date` | `date32` |
| `long` + `timestamp-millis` / `-micros` / `-nanos` | `timestamp[ms / us / ns, UTC]` |
| `long` + `local-timestamp-millis` / `-micros` / `-nanos` | `timestamp[ms / us / ns]` (no zone) |
| `int` + `time-millis`, `long` + `time-micros` | `time32[ms]`, `time64[us]` |
| `record`, `array`, `map` | `struct`, `list`, `map<string, T>` |

A logical type not listed reads as its underlying type, as the Avro specification asks. Other
unions and recursive types have no Arrow equivalent and are refused. Named types are resolved
by full and short name, in the order Avro defines them.

Writing uses the inverse mapping. Arrow types without an Avro type of their own are written as
the Avro type that holds their values: smaller integers as `int`, `uint32` as `long`, large
strings and binaries, dictionaries and `date64` as their values' type, `timestamp[s]` as
millis, zoned timestamps as UTC instants, `time32[s]` / `time64[ns]` as `time-millis` /
`time-micros`. Nullable fields become `["null", T]` with a null default; nested records and
fixed types get names unique within the schema (their dotted path, `.` as `_`).

Two flavours, chosen with `exact`:
- portable (`exact=False`, for data files): every Avro reader understands the schema; `uint64`
  is written as `long` (larger values fail when written) and nanosecond timestamps as
  `timestamp-micros` (the writer casts the values). The attribute `arrowType` is ignored.
- exact (`exact=True`, for schema conversion): the schema reads back as the very same Arrow
  types. Where the Avro type alone would read back as another type, an extra attribute
  `arrowType` (which other readers ignore) holds the type name (`int8`, `timestamp[s]`,
  `timestamp[us, Europe/Berlin]`), and reading honours it; nanosecond timestamps are
  `timestamp-nanos`; a type Avro cannot hold exactly (`uint64`, a dictionary, a large list)
  is refused.

Every function here is pure and raises `ValueError`, whose message names the field; callers
turn it into their own error.
"""

import re
from collections.abc import Iterable
from typing import Any, Final

import pyarrow as pa

from beam_etl.core.datatypes import parse_type, type_name

ARROW_TYPE: Final = "arrowType"
_PRIMITIVES: Final[dict[str, pa.DataType]] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
# Keyed like fastavro's own table of logical types: `<type>-<logicalType>`.
_LOGICAL: Final[dict[str, pa.DataType]] = {
    "int-date": pa.date32(),
    "long-timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "long-timestamp-micros": pa.timestamp("us", tz="UTC"),
    "long-timestamp-nanos": pa.timestamp("ns", tz="UTC"),
    "long-local-timestamp-millis": pa.timestamp("ms"),
    "long-local-timestamp-micros": pa.timestamp("us"),
    "long-local-timestamp-nanos": pa.timestamp("ns"),
    "int-time-millis": pa.time32("ms"),
    "long-time-micros": pa.time64("us"),
    "string-uuid": pa.string(),
}
_NAMED: Final = ("record", "enum", "fixed")
_UNITS: Final = {"s": "millis", "ms": "millis", "us": "micros", "ns": "nanos"}
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def avro_name(text: str) -> str:
    """Return `text` as a valid Avro name: other characters become `_`, a leading digit gets `_`."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return cleaned if re.match(r"[A-Za-z_]", cleaned) else f"_{cleaned}"


def invalid_names(fields: Iterable[pa.Field], where: str = "") -> list[str]:
    """Return the dotted paths of the field names (nested ones too) that are not Avro names.

    An Avro name is letters, digits and `_`, not starting with a digit.
    """
    found = []
    for field in fields:
        path = f"{where}{field.name}"
        if not _NAME.fullmatch(field.name):
            found.append(path)
        found.extend(_invalid_inside(field.type, path))
    return found


def _invalid_inside(data_type: pa.DataType, path: str) -> list[str]:
    if pa.types.is_dictionary(data_type):
        return _invalid_inside(data_type.value_type, path)
    if _is_list(data_type):
        return _invalid_inside(data_type.value_type, f"{path}.item")
    if pa.types.is_map(data_type):
        return _invalid_inside(data_type.item_type, f"{path}.value")
    if pa.types.is_struct(data_type):
        return invalid_names(list(data_type), f"{path}.")
    return []


def avro_schema(schema: pa.Schema, name: str = "Row", *, exact: bool = False) -> dict:
    """Return the Avro record schema named `name` for records of the Arrow `schema`.

    Raises:
        ValueError: a type has no Avro equivalent (in the flavour `exact` chooses).
    """
    return ArrowToAvro(exact=exact).record(name, list(schema))


def arrow_schema(avro: dict, *, exact: bool = False) -> pa.Schema:
    """Return the Arrow schema of records written with the Avro record schema `avro`.

    Raises:
        ValueError: the schema is not a record, or a field has no Arrow equivalent.
    """
    return AvroToArrow(exact=exact).schema(avro)


def nullable_branch(avro: Any, where: str) -> tuple[Any, bool]:
    """Return the one non-null type of `avro` (`"null"` if none) and whether null is allowed.

    Raises:
        ValueError: `avro` is a union of more than one non-null type.
    """
    if not isinstance(avro, list):
        return avro, False
    branches = [branch for branch in avro if branch != "null"]
    if len(branches) > 1:
        raise ValueError(
            f"field `{where}` is a union of {len(branches)} non-null types; only [null, T] "
            "has an Arrow equivalent"
        )
    return (branches[0] if branches else "null"), len(branches) < len(avro)


class ArrowToAvro:
    """Builds the Avro types of Arrow types, giving nested named types unique names."""

    def __init__(self, *, exact: bool = False, prefix: str = "") -> None:
        """Args:
        exact: write the exact flavour (see the module documentation).
        prefix: put before the names of nested records and fixed types (`Row_address`).
        """
        self.exact = exact
        self._prefix = prefix
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        """Return `name`, with `_` appended until no other named type has it, and reserve it."""
        while name in self._names:
            name += "_"
        self._names.add(name)
        return name

    def record(self, name: str, fields: list[pa.Field], where: str = "") -> dict:
        """Return the Avro record `name` of `fields`; `where` is their path (`a.b.`) in messages."""
        return {
            "type": "record",
            "name": self.unique(name),
            "fields": [self.field(f, where) for f in fields],
        }

    def field(self, field: pa.Field, where: str = "") -> dict:
        """Return the Avro record field of `field`: nullable as `["null", T]`, null by default."""
        avro = self.type(field.type, f"{where}{field.name}")
        if field.nullable and avro != "null":
            return {"name": field.name, "type": ["null", avro], "default": None}
        return {"name": field.name, "type": avro}

    def type(self, data_type: pa.DataType, where: str) -> Any:
        """Return the Avro type of `data_type`, the type of the column or path `where`.

        Raises:
            ValueError: Avro has no equivalent (in this flavour); the message names `where`.
        """
        if pa.types.is_dictionary(data_type):
            if self.exact:
                raise _no_equivalent(data_type, where, "exact ")
            return self.type(data_type.value_type, where)
        if _is_list(data_type):
            if self.exact and not pa.types.is_list(data_type):  # would read back as a list
                raise _no_equivalent(data_type, where, "exact ")
            return {"type": "array", "items": self._nullable(data_type.value_field, where, "item")}
        if pa.types.is_map(data_type) and pa.types.is_string(data_type.key_type):
            return {"type": "map", "values": self._nullable(data_type.item_field, where, "value")}
        if pa.types.is_struct(data_type):
            return self.record(self._name(where), list(data_type), f"{where}.")
        avro = _leaf(data_type, exact=self.exact)
        if avro is None and pa.types.is_fixed_size_binary(data_type):
            name = self.unique(f"{self._name(where)}_fixed")
            avro = {"type": "fixed", "name": name, "size": data_type.byte_width}
        if avro is None:
            raise _no_equivalent(data_type, where, "")
        return self._exactly(avro, data_type, where) if self.exact else avro

    def _nullable(self, field: pa.Field, where: str, child: str) -> Any:
        avro = self.type(field.type, f"{where}.{child}")
        return ["null", avro] if field.nullable and avro != "null" else avro

    def _name(self, where: str) -> str:
        return avro_name(f"{self._prefix}_{where}" if self._prefix else where)

    def _exactly(self, avro: Any, data_type: pa.DataType, where: str) -> Any:
        """Return `avro`, with `arrowType` if it alone would read back as another type."""
        if data_type == pa.uint64():  # no Avro type holds every value; `long` is signed
            raise _no_equivalent(data_type, where, "exact ")
        if AvroToArrow().type(avro, where) == data_type:
            return avro
        name = type_name(data_type)
        try:
            named = parse_type(name)
        except ValueError:
            named = None
        if named != data_type:
            raise _no_equivalent(data_type, where, "exact ")
        return {**(avro if isinstance(avro, dict) else {"type": avro}), ARROW_TYPE: name}


def _is_list(data_type: pa.DataType) -> bool:
    t = pa.types
    return t.is_list(data_type) or t.is_large_list(data_type) or t.is_fixed_size_list(data_type)


def _no_equivalent(data_type: pa.DataType, where: str, exact: str) -> ValueError:
    return ValueError(
        f"Column `{where}` has type `{type_name(data_type)}`, which has no {exact}Avro "
        "equivalent; cast it first"
    )


def _leaf(t: pa.DataType, *, exact: bool) -> Any:
    """The Avro type of a type that is neither nested nor named, or None."""
    if pa.types.is_null(t) or pa.types.is_boolean(t):
        return "null" if pa.types.is_null(t) else "boolean"
    if pa.types.is_integer(t):
        small = t.bit_width < 32 or (t.bit_width == 32 and pa.types.is_signed_integer(t))
        return "int" if small else "long"
    if pa.types.is_float32(t) or pa.types.is_float64(t):
        return "float" if pa.types.is_float32(t) else "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_decimal(t):
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": t.precision,
            "scale": t.scale,
        }
    if pa.types.is_date(t):
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_timestamp(t):
        unit = "micros" if t.unit == "ns" and not exact else _UNITS[t.unit]
        local = "" if t.tz else "local-"
        return {"type": "long", "logicalType": f"{local}timestamp-{unit}"}
    if pa.types.is_time32(t):
        return {"type": "int", "logicalType": "time-millis"}
    if pa.types.is_time64(t):
        return {"type": "long", "logicalType": "time-micros"}
    return None


class AvroToArrow:
    """Maps Avro types to Arrow, resolving named types in the order Avro defines them.

    One instance reads one schema: it remembers the named types met so far, and in
    `uuid_paths` the paths of the `uuid` strings (fastavro yields them as `UUID` objects).
    """

    def __init__(self, *, exact: bool = False) -> None:
        """Args:
        exact: honour the attribute `arrowType` (see the module documentation).
        """
        self.exact = exact
        self.named: dict[str, Any] = {}
        self.uuid_paths: list[str] = []
        self._open: set[str] = set()

    def schema(self, avro: dict) -> pa.Schema:
        """Return the Arrow schema of the Avro record schema `avro`.

        Raises:
            ValueError: the schema is not a record, or a field has no Arrow equivalent.
        """
        if not isinstance(avro, dict) or avro.get("type") != "record":
            raise ValueError("the top-level schema is not a record")
        return pa.schema(self.type(avro, "").fields)

    def field(self, avro: Any, where: str, name: str | None = None) -> pa.Field:
        """Return the Arrow field of the Avro type `avro` at path `where`, nullable if a union
        with null; named `name` (by default the last part of `where`).

        Raises:
            ValueError: the type has no Arrow equivalent; the message names `where`.
        """
        branch, nullable = nullable_branch(avro, where)
        field_name = where.rpartition(".")[2] if name is None else name
        # Arrow's null type is always nullable, whatever the union says.
        return pa.field(field_name, self.type(branch, where), nullable=nullable or branch == "null")

    def type(self, avro: Any, where: str) -> pa.DataType:
        """Return the Arrow type of the Avro type `avro` at path `where` (a union must be
        `[null, T]`; its nullability is the field's business).

        Raises:
            ValueError: the type has no Arrow equivalent; the message names `where`.
        """
        if isinstance(avro, str):
            return self._by_name(avro, where)
        if isinstance(avro, list):
            return self.field(avro, where).type
        kind, logical = avro["type"], avro.get("logicalType")
        if kind in _NAMED:
            for name in _names_of(avro):  # later fields may refer to it by name
                self.named[name] = avro
        if self.exact and ARROW_TYPE in avro:
            return _arrow_type(avro[ARROW_TYPE], where)
        if logical == "decimal" and kind in ("bytes", "fixed"):
            precision, scale = int(avro["precision"]), int(avro.get("scale", 0))
            if precision <= 38:
                return pa.decimal128(precision, scale)
            return pa.decimal256(precision, scale)
        if f"{kind}-{logical}" == "string-uuid":
            self.uuid_paths.append(where)
        if f"{kind}-{logical}" in _LOGICAL:
            return _LOGICAL[f"{kind}-{logical}"]
        if kind in _NAMED:
            return self._named(avro, where)
        if kind == "array":
            return pa.list_(self.field(avro["items"], _child(where, "item")))
        if kind == "map":
            return pa.map_(pa.string(), self.field(avro["values"], _child(where, "value")))
        return self.type(kind, where)  # a primitive written as {"type": ...}; unknown logical

    def _by_name(self, name: str, where: str) -> pa.DataType:
        if name in _PRIMITIVES:
            return _PRIMITIVES[name]
        if name in self._open:
            raise ValueError(f"field `{where}` has the recursive type `{name}`")
        if name not in self.named:
            raise ValueError(f"field `{where}` refers to the unknown type `{name}`")
        return self.type(self.named[name], where)

    def _named(self, avro: dict, where: str) -> pa.DataType:
        if avro["type"] == "enum":
            return pa.string()
        if avro["type"] == "fixed":
            return pa.binary(int(avro["size"]))
        names = _names_of(avro)
        self._open.update(names)
        fields = [
            self.field(f["type"], _child(where, f["name"]), f["name"]) for f in avro["fields"]
        ]
        self._open.difference_update(names)
        return pa.struct(fields)


def _arrow_type(name: Any, where: str) -> pa.DataType:
    try:
        return parse_type(name)
    except ValueError as exc:
        raise ValueError(f"field `{where}` has an unknown `{ARROW_TYPE}`: {exc}") from exc


def _child(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _names_of(avro: dict) -> list[str]:
    """Every name a named type can be referred to by: full name and short name."""
    name = avro["name"]
    namespace = avro.get("namespace")
    full = f"{namespace}.{name}" if namespace and "." not in name else name
    return list({full, full.rpartition(".")[2]})
