"""Group-by aggregation through combiners: Arrow pre-aggregates each batch, partial results
are merged per key across batches and workers."""

import functools
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import dumps, json_safe, visible
from beam_etl.core.deadletter import OUTPUT
from beam_etl.transforms.cleaning import check_columns
from beam_etl.transforms.relational import _require
from beam_etl.transforms.rows import RowsToBatches, SchemaOf

AGGREGATES: Final = ("count", "count_distinct", "sum", "min", "max", "mean")
_AGGREGATE: Final = re.compile(r"\s*([a-z_]+)\s*\(\s*(\*|`[^`]+`|[^()`]+?)\s*\)\s*", re.IGNORECASE)


def parse_aggregations(aggregations: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """Return `(output name, function, column or None for count(*))` per aggregation."""
    if not isinstance(aggregations, dict) or not aggregations:
        raise ValueError("`aggregations` must map output names to e.g. `sum(amount)`")
    parsed = []
    for name, text in aggregations.items():
        match = _AGGREGATE.fullmatch(str(text))
        function = match.group(1).lower() if match else None
        if match is None or function not in AGGREGATES:
            raise ValueError(
                f"Aggregation `{name}`: `{text}` is not one of "
                f"{', '.join(f'{a}(column)' for a in AGGREGATES)} or count(*)"
            )
        column = match.group(2).strip("`")
        if column == "*" and function != "count":
            raise ValueError(f"Aggregation `{name}`: only count takes `*`, not `{text}`")
        parsed.append((str(name), function, None if column == "*" else column))
    return parsed


def _arrow_specs(parsed) -> list[tuple]:
    """The `Table.group_by().aggregate()` specs computing every partial (each once)."""
    specs: dict[str, tuple] = {}
    for _, function, column in parsed:
        if column is None:
            specs["count_all"] = ([], "count_all")
        elif function == "count_distinct":
            specs[f"{column}_distinct"] = (column, "distinct", pc.CountOptions("only_valid"))
        else:
            for kernel in ("sum", "count") if function == "mean" else (function,):
                specs[f"{column}_{kernel}"] = (column, kernel)
    return list(specs.values())


def aggregate_schema(schema: pa.Schema, group_by: list[str], parsed) -> pa.Schema:
    """Return the output schema of an aggregation, checking columns and types.

    Raises:
        ValueError: a column is missing, or a function does not apply to its column's type.
    """
    check_columns(schema, group_by + [c for _, _, c in parsed if c is not None])
    try:
        empty = schema.empty_table().group_by(group_by).aggregate(_arrow_specs(parsed))
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ValueError(f"`aggregations` do not apply to these column types: {exc}") from None
    fields = [schema.field(c) for c in group_by]
    for name, function, column in parsed:
        if function in ("count", "count_distinct"):
            fields.append(pa.field(name, pa.int64()))
        elif function == "mean":
            fields.append(pa.field(name, pa.float64()))
        else:
            fields.append(pa.field(name, empty.schema.field(f"{column}_{function}").type))
    return pa.schema(fields)


def partials(group_by: list[str], parsed, batch: pa.RecordBatch) -> Iterator[tuple[str, Any]]:
    """Yield `(key, (group values, partial states))` per group of one batch, computed by Arrow."""
    _require(batch.schema, group_by + [c for _, _, c in parsed if c is not None], "aggregate")
    table = pa.Table.from_batches([visible(batch)])
    result = table.group_by(group_by, use_threads=False).aggregate(_arrow_specs(parsed))
    columns = {name: result[name].to_pylist() for name in result.column_names}
    for i in range(result.num_rows):
        values = tuple(columns[c][i] for c in group_by)
        states: list[Any] = []
        for _, function, column in parsed:
            if column is None:
                states.append(columns["count_all"][i])
            elif function == "count_distinct":
                states.append(set(columns[f"{column}_distinct"][i]))
            elif function == "mean":
                states.append((columns[f"{column}_sum"][i], columns[f"{column}_count"][i]))
            else:
                states.append(columns[f"{column}_{function}"][i])
        yield dumps([json_safe(v) for v in values]), (values, states)


def _either(a: Any, b: Any, pick) -> Any:
    return b if a is None else a if b is None else pick(a, b)


def _combine_state(function: str, a: Any, b: Any) -> Any:
    if function == "count":
        return a + b
    if function == "count_distinct":
        return a | b
    if function == "mean":
        return _either(a[0], b[0], lambda x, y: x + y), a[1] + b[1]
    pick = {"sum": lambda x, y: x + y, "min": min, "max": max}[function]
    return _either(a, b, pick)


def _final(function: str, state: Any) -> Any:
    if function == "count_distinct":
        return len(state)
    if function == "mean":
        total, count = state
        return None if not count else float(total) / count
    return state


class _AggregateFn(beam.CombineFn):
    """Merges partial states per key; count_distinct holds the set of a key's distinct values."""

    def __init__(self, functions: list[str]) -> None:
        self._functions = functions

    def create_accumulator(self) -> Any:
        return None

    def add_input(self, accumulator: Any, partial: Any) -> Any:
        if accumulator is None:
            return partial
        values, states = accumulator
        merged = [_combine_state(f, a, b) for f, a, b in zip(self._functions, states, partial[1])]
        return values, merged

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is not None:
                merged = self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator: Any) -> Any:
        values, states = accumulator
        return values, [_final(f, s) for f, s in zip(self._functions, states)]


def _output_row(group_by: list[str], names: list[str], keyed: tuple[str, Any]) -> dict:
    values, finals = keyed[1]
    return dict(zip(group_by, values)) | dict(zip(names, finals))


def _schema_of_output(schema: pa.Schema | None, group_by: list[str], parsed) -> pa.Schema | None:
    return None if schema is None else aggregate_schema(schema, group_by, parsed)


class Aggregate(beam.PTransform):
    """Group rows by `group_by` across the whole input and compute aggregates per group.

    Each batch is pre-aggregated by Arrow (`Table.group_by().aggregate()`), then the partial
    results are merged per group by a combiner, so only one small record per group and batch
    is shuffled. Functions: `count(*)`, `count(col)` (non-null values), `count_distinct(col)`
    (non-null distinct values: the combiner holds a group's distinct values in memory),
    `sum`, `min`, `max` (nulls skipped; null when a group has no value) and `mean` (float64,
    from an exact sum and count). Null group keys form one group, as in SQL. Results do not
    depend on batching, except for the last bits of float sums (the order of additions
    differs). Origin columns are dropped. An empty input gives no row, even without
    `group_by`. Output order is not kept.
    """

    CONSERVES_ROWS: ClassVar[bool] = False
    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(
        self, group_by: list[str], aggregations: dict[str, str], *, batch_rows: int = 10_000
    ) -> None:
        """Args:
        group_by: the grouping columns (an empty list gives one row for the whole input).
        aggregations: expression by output column, e.g. `{total: sum(amount), n: count(*)}`.
        batch_rows: rows per output batch.
        """
        super().__init__()
        if not isinstance(group_by, list) or not all(isinstance(c, str) for c in group_by):
            raise ValueError("`group_by` must list column names")
        self.group_by = list(group_by)
        self.parsed = parse_aggregations(aggregations)
        clash = [name for name, _, _ in self.parsed if name in self.group_by]
        if clash:
            raise ValueError(f"`aggregations` output `{clash[0]}` is also a `group_by` column")
        self.batch_rows = batch_rows

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Return the output schema; columns and function types are checked."""
        return aggregate_schema(schema, self.group_by, self.parsed)

    def expand(self, batches):
        functions = [function for _, function, _ in self.parsed]
        names = [name for name, _, _ in self.parsed]
        schema = (
            batches
            | "Schema" >> SchemaOf()
            | "OutputSchema" >> beam.Map(_schema_of_output, self.group_by, self.parsed)
        )
        return (
            batches
            | "PreAggregate"
            >> beam.FlatMap(functools.partial(partials, self.group_by, self.parsed))
            | "Combine" >> beam.CombinePerKey(_AggregateFn(functions))
            | "ToRows" >> beam.Map(functools.partial(_output_row, self.group_by, names))
            | "Rebatch" >> RowsToBatches(schema, self.batch_rows)
        )
