"""The bridge between beam_etl's Arrow batches and Beam's schema'd rows, both ways.

`ToRows` makes the rest of Beam able to use beam_etl's outputs: `Count.Globally()` counts
rows, Beam YAML's `Filter`/`MapToFields` and Beam SQL see named, typed fields. `ToBatches`
brings any schema'd PCollection (Beam rows, NamedTuples, Beam YAML's outputs) into
beam_etl's steps and sinks. Types map as `beam_etl.interop.rowtypes` says, losslessly for
every type beam_etl maps; a round trip `ToRows` -> `ToBatches` gives back equal batches
(hidden origin columns aside: rows do not carry them).

Rows are the slow path. Measured (`tests/interop/bench_bridge.py`, 300,000 rows of 10
columns: ints, floats, text, decimal(10,2), date, timestamp, bool, a nullable text; 2 shared
cores): making rows costs about 5 µs a row (0.5 µs a value; timestamps and dates most),
batching them again about 2.5 µs; in a pipeline on the local runner `ToRows` +
`Count.Globally()` adds about 5 µs a row and a round trip `ToRows` -> `ToBatches` about 10 µs
a row, where the same pipeline on batches costs 2.7 µs a row in all. Bridge where Beam's own
transforms need rows, not between beam_etl steps.
"""

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

import beam_etl.core.coders  # noqa: F401  (registers the RecordBatch coder used between stages)
from beam_etl.core.batches import conform_columns, describe_schema, visible_schema
from beam_etl.core.datatypes import parse_type
from beam_etl.core.errors import DataError
from beam_etl.interop.rowtypes import arrow_schema, batch_of, row_maker, row_type

DEFAULT_BATCH_ROWS = 10_000


class _ToRowsFn(beam.DoFn):
    def __init__(self, schema: pa.Schema, step: str) -> None:
        self._schema = schema
        self._step = step

    def setup(self) -> None:
        _, self._rows_of = row_maker(self._schema)

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        yield from self._rows_of(conform(batch, self._schema, self._step))


def conform(batch: pa.RecordBatch, schema: pa.Schema, step: str) -> pa.RecordBatch:
    """Return the visible columns of `batch` as `schema` has them (missing ones null, types
    cast where a batch has another type, for example `null` for an all-null column).

    Raises:
        DataError: the batch has columns `schema` lacks, or a value does not cast.
    """
    names = [name for name in batch.schema.names if not name.startswith("__beam_etl_")]
    extra = [name for name in names if name not in schema.names]
    if extra:
        raise DataError(
            f"Batch at `{step}` has column(s) {', '.join(f'`{n}`' for n in extra)} that the row "
            f"schema lacks ({describe_schema(schema)}); give `ToRows(schema=...)` the schema "
            "of the batches"
        )
    if batch.schema.names == schema.names and batch.schema.types == schema.types:
        return batch
    return conform_columns(
        batch,
        schema,
        lambda field, found, exc: (
            f"Column `{field.name}` at `{step}` is `{found}` in a batch, which does "
            f"not cast to the row type `{field.type}`: {exc}"
        ),
    )


class ToRows(beam.PTransform):
    """Turn Arrow batches into Beam schema'd rows, one per row; hidden origin columns dropped.

    The row type is made from `schema` (or, when not given, from the schema the producing
    beam_etl source or step declares) at construction, so Beam YAML, Beam SQL and
    `beam.Select` see named, typed fields. Each row is an instance of the row type's
    generated NamedTuple. Order within a batch kept. Rows are the slow path (about 0.5 µs a
    value): bridge only where Beam's own transforms need rows.

    Raises (at construction):
        ValueError: no schema given and none can be found from the producing step.
        DataError: a column's type has no Beam row type (time of day, durations).
    """

    def __init__(self, schema: pa.Schema | None = None) -> None:
        """Args:
        schema: the schema of the batches; by default the one their beam_etl source or
            step declares (`ReadFromCsv(...).schema`, `CastColumns.infer_schema` ...).
        """
        super().__init__()
        self.schema = visible_schema(schema) if schema is not None else None

    def expand(self, batches):
        schema = self.schema if self.schema is not None else schema_of(batches)
        self.schema = schema = visible_schema(schema)
        constraint = row_type(schema)
        return batches | "ToRows" >> beam.ParDo(_ToRowsFn(schema, self.label)).with_output_types(
            constraint
        )


class _ToBatchFn(beam.DoFn):
    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema

    def process(self, rows: list) -> Iterator[pa.RecordBatch]:
        yield batch_of(rows, self._schema)


class ToBatches(beam.PTransform):
    """Gather Beam schema'd rows into Arrow batches of up to `batch_rows` rows.

    The batch schema is made at construction from the PCollection's row type (see
    `beam_etl.interop.rowtypes.arrow_schema`): rows that came from `ToRows` get back their
    exact Arrow types; other fields get a canonical type, which `types` overrides. Batches
    have no hidden origin columns (dead letters of later steps name no file or line). Order
    of rows is not kept across bundles.

    Raises (at construction):
        ValueError: the input is not schema'd and no `schema` is given.
    """

    def __init__(
        self,
        types: dict[str, str] | None = None,
        *,
        schema: pa.Schema | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        """Args:
        types: spec type names by field, overriding the derived types
            (`{amount: decimal(12,2), at: "timestamp[us, Europe/Berlin]"}`).
        schema: the whole Arrow schema, for rows Beam does not know the type of (dicts).
        batch_rows: rows per batch at most.
        """
        super().__init__()
        if batch_rows <= 0:
            raise ValueError(f"`batch_rows` must be positive, not `{batch_rows}`")
        self._types = {name: parse_type(t) for name, t in (types or {}).items()}
        self.schema = schema
        self._batch_rows = batch_rows

    def expand(self, rows):
        if self.schema is None:
            try:
                schema = arrow_schema(rows.element_type, self._types)
            except TypeError as exc:
                raise ValueError(
                    f"`{self.label}` needs rows of a known schema, not `{rows.element_type}`: "
                    "give the producing transform `.with_output_types(...)` a NamedTuple or "
                    "row type, or pass `schema=` (an Arrow schema)"
                ) from exc
            self.schema = with_zones(schema, _upstream_schemas(rows), set(self._types))
        unknown = [name for name in self._types if name not in self.schema.names]
        if unknown:
            raise ValueError(
                f"`types` names field(s) {', '.join(f'`{n}`' for n in unknown)} the rows lack "
                f"(fields: {', '.join(self.schema.names)})"
            )
        size = self._batch_rows
        return (
            rows
            | "Gather" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
            | "ToBatch" >> beam.ParDo(_ToBatchFn(self.schema)).with_output_types(pa.RecordBatch)
        )


def with_zones(schema: pa.Schema, upstream: list[pa.Schema], pinned: set[str]) -> pa.Schema:
    """Return `schema` with the time zone (or none, for naive timestamps) that a same-named
    timestamp column had where the rows were made (`ToRows` upstream).

    A Beam row type rebuilt by Beam's own transforms (`MapToFields`) no longer carries the
    Arrow types; a timestamp then reads as UTC. Only the zone is taken: it changes no value.
    """
    zones: dict[str, str | None] = {}
    for known in reversed(upstream):  # the nearest upstream schema wins
        for field in known:
            if pa.types.is_timestamp(field.type):
                zones[field.name] = field.type.tz
    fields = []
    for field in schema:
        if field.name in zones and field.name not in pinned and field.type == _UTC_MICROS:
            field = field.with_type(pa.timestamp("us", zones[field.name]))
        fields.append(field)
    return pa.schema(fields)


_UTC_MICROS = pa.timestamp("us", "UTC")


def _upstream_schemas(rows: beam.PCollection, limit: int = 200) -> list[pa.Schema]:
    """Schemas of the `ToRows` the rows descend from, nearest first (a bounded walk)."""
    found: list[pa.Schema] = []
    seen: set[int] = set()
    queue = [rows]
    while queue and len(seen) < limit:
        pcoll = queue.pop(0)
        applied = pcoll.producer
        if applied is None or id(applied) in seen:
            continue
        seen.add(id(applied))
        owner: Any = applied
        while owner is not None and not isinstance(owner.transform, ToRows):
            owner = owner.parent
        if owner is not None and owner.transform.schema is not None:
            found.append(owner.transform.schema)
            continue
        queue.extend(p for p in applied.main_inputs.values() if isinstance(p, beam.PCollection))
    return found


def schema_of(batches: beam.PCollection) -> pa.Schema:
    """Return the schema of a PCollection of batches, as the beam_etl transform that made it
    declares it (a source's `schema`, a step's `infer_schema` of its input's schema, the
    schema a `ToBatches` made).

    Raises:
        ValueError: no transform on the way up declares one.
    """
    found = _declared(batches)
    if found is None:
        producer = getattr(batches.producer, "full_label", "?")
        raise ValueError(
            f"Cannot tell the schema of the batches made by `{producer}`; pass "
            "`ToRows(schema=...)` (for example `ReadFromCsv(...).schema`)"
        )
    return found


def _declared(pcoll: beam.PCollection) -> pa.Schema | None:
    applied: Any = pcoll.producer
    while applied is not None and applied.transform is not None:
        transform = applied.transform
        if isinstance(transform, ToBatches) and transform.schema is not None:
            return transform.schema
        infer = getattr(transform, "infer_schema", None)
        inputs = [p for p in applied.main_inputs.values() if isinstance(p, beam.PCollection)]
        if callable(infer) and len(inputs) == 1:
            upstream = _declared(inputs[0])
            return _call(infer, upstream) if upstream is not None else None
        schema = getattr(transform, "schema", None)
        if isinstance(schema, pa.Schema) and not inputs:
            return schema
        applied = applied.parent
    return None


def _call(infer: Any, schema: pa.Schema) -> pa.Schema | None:
    try:
        return infer(schema)
    except (ValueError, KeyError, DataError):
        return None


__all__ = ["ToBatches", "ToRows", "conform", "schema_of"]
