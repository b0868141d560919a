"""Dead letters back into batches: JSON payloads restored to Arrow types, origin kept.

No Beam here. A dead letter's payload is the rejected row made JSON-safe
(`beam_etl.core.batches.json_safe`): decimals, dates and timestamps as text, NaN as `"nan"`, bytes
as UTF-8 text. `restore_batches` types each value back to the column's Arrow type: values
JSON holds as they are convert directly, the others are cast from their text with the
casting rules of `CastColumns` (`beam_etl.core.casting`), and a value that does not
convert is reported with its row. Bytes that were not UTF-8 come back with `\\x..` escapes,
as the payload holds them.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import pyarrow as pa

from beam_etl.core.batches import dumps, with_origin
from beam_etl.core.casting import cast_array


class Restored(NamedTuple):
    """Batches of the restored rows (one per source file or table) and the rows that failed."""

    batches: list[pa.RecordBatch]
    failed: list[tuple[int, str]]  # (index in the input, message)


def restore_batches(
    payloads: Sequence[Any],
    origins: Sequence[tuple[str | None, int | None]],
    schema: pa.Schema | None,
) -> Restored:
    """Return the payloads as batches of `schema` with hidden origin columns from `origins`.

    Rows come out grouped by their source, in input order within it. A payload that is not a
    mapping (the raw text of an unparseable record), names a column `schema` lacks, or holds a
    value that does not convert to its column's type is left out and reported in `failed`.
    With `schema` None, types are inferred from the values (text stays text).
    """
    failed: list[tuple[int, str]] = []
    rows: list[int] = []
    for index, payload in enumerate(payloads):
        if not isinstance(payload, dict):
            failed.append((index, "The payload is raw text, not a row: fix the source record"))
            continue
        extra = [k for k in payload if schema is not None and k not in schema.names]
        if extra:
            names = ", ".join(f"`{k}`" for k in extra)
            failed.append((index, f"Column(s) {names} of the payload are not in the input"))
            continue
        rows.append(index)
    if schema is None:
        schema = _inferred([payloads[i] for i in rows])
    table, bad = _table([payloads[i] for i in rows], schema)
    failed += [(rows[position], message) for position, message in bad]
    failed.sort()
    dropped = {rows[position] for position, _ in bad}
    kept = [i for i in rows if i not in dropped]
    keep_positions = [position for position, i in enumerate(rows) if i not in dropped]
    table = table.take(pa.array(keep_positions, pa.int64()))
    return Restored(_by_source(table, [origins[i] for i in kept]), failed)


def _inferred(payloads: list[dict]) -> pa.Schema:
    names = list(dict.fromkeys(key for payload in payloads for key in payload))
    fields = []
    for name in names:
        values = [payload.get(name) for payload in payloads]
        try:
            kind = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kind = pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _table(payloads: list[dict], schema: pa.Schema) -> tuple[pa.Table, list[tuple[int, str]]]:
    bad: dict[int, str] = {}
    arrays = []
    for field in schema:
        values = [payload.get(field.name) for payload in payloads]
        array, failures = _restore(values, field.type, field.name)
        for row, message in failures.items():
            bad.setdefault(row, message)
        arrays.append(array)
    if not arrays:
        raise ValueError("The payloads have no columns to restore")
    return pa.Table.from_arrays(arrays, schema=schema), sorted(bad.items())


def _restore(values: list, kind: pa.DataType, column: str) -> tuple[pa.Array, dict[int, str]]:
    """Return `values` as an array of `kind` and the message of each row that failed (null in
    the array)."""
    if pa.types.is_struct(kind):
        return _restore_struct(values, kind, column)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _restore_list(values, kind, column)
    try:
        return pa.array(values, kind), {}
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    texts = [None if v is None else (v if isinstance(v, str) else dumps(v)) for v in values]
    try:
        array, failures = cast_array(pa.array(texts, pa.string()), kind, column)
    except ValueError:  # no cast from text at all (maps, unions)
        failures_all = {
            row: f"Value in column `{column}` does not restore to `{kind}`"
            for row, value in enumerate(values)
            if value is not None
        }
        return pa.nulls(len(values), kind), failures_all
    return array, {failure.row: failure.message for failure in failures}


def _restore_struct(
    values: list, kind: pa.StructType, column: str
) -> tuple[pa.Array, dict[int, str]]:
    bad: dict[int, str] = {
        row: f"Value in column `{column}` is not a mapping"
        for row, value in enumerate(values)
        if value is not None and not isinstance(value, dict)
    }
    present = [value if isinstance(value, dict) else {} for value in values]
    children = []
    for field in kind:
        child, failures = _restore(
            [v.get(field.name) for v in present], field.type, f"{column}.{field.name}"
        )
        for row, message in failures.items():
            bad.setdefault(row, message)
        children.append(child)
    mask = pa.array([value is None or row in bad for row, value in enumerate(values)])
    return pa.StructArray.from_arrays(children, fields=list(kind), mask=mask), bad


def _restore_list(values: list, kind: pa.DataType, column: str) -> tuple[pa.Array, dict[int, str]]:
    bad: dict[int, str] = {}
    offsets, flat, owners = [0], [], []
    for row, value in enumerate(values):
        if isinstance(value, list):
            flat.extend(value)
            owners.extend([row] * len(value))
        elif value is not None:
            bad[row] = f"Value in column `{column}` is not a list"
        offsets.append(len(flat))
    items, failures = _restore(flat, kind.value_type, f"{column}[]")
    for position, message in failures.items():
        bad.setdefault(owners[position], message)
    mask = pa.array([value is None or row in bad for row, value in enumerate(values)])
    large = pa.types.is_large_list(kind)
    maker = pa.LargeListArray if large else pa.ListArray
    offset_array = pa.array(offsets, pa.int64() if large else pa.int32())
    return maker.from_arrays(offset_array, items, mask=mask).cast(kind), bad


def _by_source(
    table: pa.Table, origins: list[tuple[str | None, int | None]]
) -> list[pa.RecordBatch]:
    """One batch per source, with the hidden origin columns (none where the source is unknown)."""
    groups: dict[str | None, list[int]] = {}
    for position, (source, _) in enumerate(origins):
        groups.setdefault(source, []).append(position)
    batches = []
    for source, positions in groups.items():
        part = table.take(pa.array(positions, pa.int64())).combine_chunks()
        batch = part.to_batches()[0] if part.num_rows else None
        if batch is None:
            continue
        if source is not None:
            lines: list[Any] = [origins[p][1] for p in positions]
            batch = with_origin(batch, source, lines)
        batches.append(batch)
    return batches
