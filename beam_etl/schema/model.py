"""The schema model: typed fields with nullability, defaults, descriptions and constraints.

A `Schema` converts losslessly to and from an Arrow schema (descriptions, defaults and
constraints travel in field metadata, keys in schema metadata) and to and from the versioned
JSON format below. Conversions to formats that cannot express everything live in `convert`.

JSON format, version 1 (`Schema.to_dict()` / `Schema.from_dict()`)::

    {"version": 1,
     "primary_key": ["id"],                  # optional: columns of the primary key
     "candidate_keys": [["id"], ["email"]],  # optional: unique, non-null column sets (inference)
     "fields": [
       {"name": "id", "type": "int64", "nullable": false},
       {"name": "price", "type": "decimal(12,2)", "default": "0.00",
        "description": "Unit price", "constraints": {"min": 0}},
       {"name": "tags", "type": "list<string>"},
       {"name": "at", "type": "timestamp[us, UTC]"},
       {"name": "dims", "type": "struct<w: float64, h: float64 not null>"}]}

`type` is a spec type name (`int8` ... `int64`, `uint8` ... `uint64`, `float32`, `float64`,
`decimal(P,S)`, `string`, `bool`, `date`, `timestamp[UNIT]`, `timestamp[UNIT, TZ]`, `binary`,
`list<T>`, `struct<name: T, ...>`; ` not null` after an item or member type makes it required).
`nullable` defaults to true. `default` is a JSON value convertible to the type (dates and
timestamps as ISO text, decimals as text). Constraint keys are listed in `CONSTRAINT_KEYS`.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa

from beam_etl.core.batches import visible_schema
from beam_etl.core.datatypes import format_type, parse_type
from beam_etl.core.errors import BeamEtlError

VERSION: Final = 1
CONSTRAINT_KEYS: Final = frozenset(
    {"min", "max", "pattern", "allowed_values", "min_length", "max_length", "unique"}
)
_FIELD_KEYS: Final = frozenset(
    {"name", "type", "nullable", "default", "description", "constraints"}
)
_SCHEMA_KEYS: Final = frozenset({"version", "fields", "primary_key", "candidate_keys"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SchemaError(BeamEtlError):
    """A schema is invalid, or data does not fit it."""


class UnsupportedTypeError(SchemaError):
    """A type cannot be expressed in a target format (Avro, a SQL dialect, the model)."""


# ---------------------------------------------------------------- type names
def _check_type(data_type: pa.DataType, where: str) -> pa.DataType:
    """Return `data_type` if the model supports it (recursively), else raise."""
    t = pa.types
    if t.is_list(data_type):
        _check_type(data_type.value_type, where)
    elif t.is_struct(data_type):
        for member in data_type:
            _check_type(member.type, f"{where}.{member.name}")
    elif not (
        t.is_integer(data_type)
        or data_type in (pa.float32(), pa.float64(), pa.bool_(), pa.date32())
        or t.is_decimal(data_type)
        or t.is_string(data_type)
        or t.is_large_string(data_type)
        or data_type == pa.binary()
        or t.is_timestamp(data_type)
    ):
        raise UnsupportedTypeError(f"Type `{data_type}` of `{where}` is not supported by schemas")
    return data_type


def parse_type_name(text: str) -> pa.DataType:
    """Return the Arrow type of a type name, including `list<T>` and `struct<a: T, ...>`.

    Raises:
        SchemaError: the name is not a valid type name.
    """
    parser = _TypeParser(text)
    data_type, nullable = parser.parse_item()
    if not nullable or parser.pos != len(text.rstrip()):
        raise SchemaError(f"Invalid type name `{text}`")
    return _check_type(data_type, text)


class _TypeParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _expect(self, token: str) -> None:
        self._skip()
        if not self.text.startswith(token, self.pos):
            raise SchemaError(f"Invalid type name `{self.text}`: expected `{token}` at {self.pos}")
        self.pos += len(token)

    def parse_item(self) -> tuple[pa.DataType, bool]:
        data_type = self.parse_type()
        self._skip()
        match = re.compile(r"not\s+null\b", re.IGNORECASE).match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return data_type, False
        return data_type, True

    def parse_type(self) -> pa.DataType:
        self._skip()
        rest = self.text[self.pos :].lower()
        if rest.startswith("list<"):
            self.pos += len("list<")
            item, nullable = self.parse_item()
            self._expect(">")
            return pa.list_(pa.field("item", item, nullable))
        if rest.startswith("struct<"):
            self.pos += len("struct<")
            return self._struct()
        return self._simple()

    def _struct(self) -> pa.DataType:
        members = []
        while True:
            name = self._name()
            self._expect(":")
            member, nullable = self.parse_item()
            members.append(pa.field(name, member, nullable))
            self._skip()
            if self.text.startswith(">", self.pos):
                self.pos += 1
                return pa.struct(members)
            self._expect(",")

    def _name(self) -> str:
        self._skip()
        if self.text.startswith("`", self.pos):
            match = re.compile(r"`((?:[^`]|``)*)`").match(self.text, self.pos)
            if match:
                self.pos = match.end()
                return match.group(1).replace("``", "`")
        match = _IDENTIFIER.match(self.text, self.pos)
        if not match:
            raise SchemaError(f"Invalid type name `{self.text}`: expected a name at {self.pos}")
        self.pos = match.end()
        return match.group(0)

    def _simple(self) -> pa.DataType:
        # A simple name ends at a top-level `,` `>` or ` not null`; brackets may hold commas.
        match = re.compile(r"[a-z0-9_]+(\([^)]*\)|\[[^\]]*\])?", re.IGNORECASE).match(
            self.text, self.pos
        )
        if not match:
            raise SchemaError(f"Invalid type name `{self.text}`: expected a type at {self.pos}")
        self.pos = match.end()
        try:
            return parse_type(match.group(0))
        except ValueError as exc:
            raise SchemaError(str(exc)) from None


# ---------------------------------------------------------------- model
@dataclass(frozen=True)
class Field:
    """One column: name, Arrow type, nullability, default, description and constraints."""

    name: str
    type: pa.DataType
    nullable: bool = True
    default: Any = None
    description: str | None = None
    constraints: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"Field name `{self.name}` must be a non-empty string")
        _check_type(self.type, self.name)
        unknown = sorted(set(self.constraints) - CONSTRAINT_KEYS)
        if unknown:
            raise SchemaError(
                f"Unknown constraint(s) {', '.join(f'`{k}`' for k in unknown)} on `{self.name}`; "
                f"use {', '.join(sorted(CONSTRAINT_KEYS))}"
            )
        if self.default is not None:
            self.default_scalar()  # validates the default against the type

    def default_scalar(self) -> pa.Scalar:
        """Return the default as an Arrow scalar of the field's type (null when no default).

        Raises:
            SchemaError: the default does not convert to the type.
        """
        try:
            return pa.scalar(self.default).cast(self.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SchemaError(
                f"Default `{self.default}` of `{self.name}` is not a valid {format_type(self.type)}"
            ) from exc

    def to_arrow(self) -> pa.Field:
        """Return the Arrow field; description, default and constraints go to its metadata."""
        metadata = {}
        if self.description is not None:
            metadata[b"description"] = self.description.encode()
        if self.default is not None:
            metadata[b"default"] = json.dumps(self.default).encode()
        if self.constraints:
            metadata[b"constraints"] = json.dumps(self.constraints, sort_keys=True).encode()
        return pa.field(self.name, self.type, self.nullable, metadata or None)

    @classmethod
    def from_arrow(cls, arrow_field: pa.Field) -> "Field":
        """Return the field of an Arrow field (dictionary columns become their value type)."""
        data_type = arrow_field.type
        if pa.types.is_dictionary(data_type):
            data_type = data_type.value_type
        metadata = arrow_field.metadata or {}
        return cls(
            arrow_field.name,
            data_type,
            arrow_field.nullable,
            json.loads(metadata[b"default"]) if b"default" in metadata else None,
            metadata[b"description"].decode() if b"description" in metadata else None,
            json.loads(metadata[b"constraints"]) if b"constraints" in metadata else {},
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the field in the JSON format (optional keys only when set)."""
        out: dict[str, Any] = {"name": self.name, "type": format_type(self.type)}
        if not self.nullable:
            out["nullable"] = False
        if self.default is not None:
            out["default"] = self.default
        if self.description is not None:
            out["description"] = self.description
        if self.constraints:
            out["constraints"] = dict(self.constraints)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Field":
        """Return the field described by a JSON-format dict.

        Raises:
            SchemaError: a key is unknown or missing, or a value is invalid.
        """
        if not isinstance(data, dict) or "name" not in data or "type" not in data:
            raise SchemaError(f"A field must be an object with `name` and `type`, not `{data}`")
        unknown = sorted(set(data) - _FIELD_KEYS)
        if unknown:
            raise SchemaError(
                f"Unknown key(s) {', '.join(f'`{k}`' for k in unknown)} in field "
                f"`{data['name']}`; use {', '.join(sorted(_FIELD_KEYS))}"
            )
        nullable = data.get("nullable", True)
        if not isinstance(nullable, bool):
            raise SchemaError(f"`nullable` of `{data['name']}` must be true or false")
        return cls(
            data["name"],
            parse_type_name(data["type"]),
            nullable,
            data.get("default"),
            data.get("description"),
            dict(data.get("constraints") or {}),
        )


@dataclass(frozen=True)
class Schema:
    """An ordered set of fields, with an optional primary key and candidate keys."""

    fields: tuple[Field, ...]
    primary_key: tuple[str, ...] = ()
    candidate_keys: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "primary_key", tuple(self.primary_key))
        object.__setattr__(self, "candidate_keys", tuple(tuple(k) for k in self.candidate_keys))
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"Duplicate field name(s): {', '.join(duplicates)}")
        for key in (self.primary_key, *self.candidate_keys):
            absent = [c for c in key if c not in names]
            if absent:
                raise SchemaError(f"Key column(s) {', '.join(absent)} are not fields")
        nullable = [c for c in self.primary_key if self.field(c).nullable]
        if nullable:
            raise SchemaError(f"Primary key column(s) {', '.join(nullable)} must not be nullable")

    @property
    def names(self) -> list[str]:
        """Return the field names in order."""
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        """Return the field called `name` (KeyError if there is none)."""
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_arrow(self) -> pa.Schema:
        """Return the Arrow schema (keys in its metadata)."""
        metadata = {}
        if self.primary_key:
            metadata[b"primary_key"] = json.dumps(list(self.primary_key)).encode()
        if self.candidate_keys:
            metadata[b"candidate_keys"] = json.dumps(
                [list(k) for k in self.candidate_keys]
            ).encode()
        return pa.schema([f.to_arrow() for f in self.fields], metadata or None)

    @classmethod
    def from_arrow(cls, schema: pa.Schema, primary_key: list[str] | None = None) -> "Schema":
        """Return the schema of an Arrow schema (hidden origin columns left out).

        Raises:
            UnsupportedTypeError: a column has a type the model does not support.
        """
        metadata = schema.metadata or {}
        if primary_key is None and b"primary_key" in metadata:
            primary_key = json.loads(metadata[b"primary_key"])
        candidates = json.loads(metadata.get(b"candidate_keys", b"[]"))
        fields = [Field.from_arrow(f) for f in visible_schema(schema)]
        return cls(tuple(fields), tuple(primary_key or ()), tuple(map(tuple, candidates)))

    def to_dict(self) -> dict[str, Any]:
        """Return the schema in the versioned JSON format."""
        out: dict[str, Any] = {"version": VERSION}
        if self.primary_key:
            out["primary_key"] = list(self.primary_key)
        if self.candidate_keys:
            out["candidate_keys"] = [list(k) for k in self.candidate_keys]
        out["fields"] = [f.to_dict() for f in self.fields]
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """Return the schema as JSON text in the versioned format."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Schema":
        """Return the schema of a JSON-format dict.

        Raises:
            SchemaError: wrong version, unknown keys, or an invalid field.
        """
        if not isinstance(data, dict) or not isinstance(data.get("fields"), list):
            raise SchemaError("A schema must be an object with a `fields` list")
        if data.get("version") != VERSION:
            raise SchemaError(
                f"Unsupported schema version `{data.get('version')}`; this is version {VERSION}"
            )
        unknown = sorted(set(data) - _SCHEMA_KEYS)
        if unknown:
            raise SchemaError(f"Unknown schema key(s): {', '.join(unknown)}")
        return cls(
            tuple(Field.from_dict(f) for f in data["fields"]),
            tuple(data.get("primary_key") or ()),
            tuple(tuple(k) for k in data.get("candidate_keys") or ()),
        )

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        """Return the schema of JSON text in the versioned format."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"Schema is not valid JSON: {exc}") from None


def load_schema(schema: "Schema | dict | str") -> Schema:
    """Return a `Schema` from a Schema, a JSON-format dict, or the path of a JSON file.

    Raises:
        SchemaError: the file cannot be read or the schema is invalid.
    """
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, dict):
        return Schema.from_dict(schema)
    try:
        with open(schema, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SchemaError(f"Cannot read schema file `{schema}`: {exc.strerror}") from None
    return Schema.from_json(text)
