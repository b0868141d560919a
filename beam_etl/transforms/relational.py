"""Relational processors: lookup join, keyed join, aggregation, union and split.

Keys compare like SQL: a null key never matches anything (not even another null), and in
`JoinInputs` keys compare by their JSON form, so both sides must hold the same type (cast
first: `1` and `1.0` do not match). Steps whose inputs come from several spec nodes set
`MULTI_INPUT = True` and receive `{input_ref: pcoll}` (also accepted: a tuple, in order).
Joins and aggregates do not keep one row out per row in; they say so with
`CONSERVES_ROWS = False`, and `LookupJoin` names its dimension input in `SIDE_INPUTS` so
that a run report can leave it out of the step's rows in.
"""

import functools
import re
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batches import HIDDEN_PREFIX, concat_batches, dumps, json_safe, visible
from beam_etl.deadletter import ERROR, OUTPUT, rejects_from_mask
from beam_etl.errors import DataError
from beam_etl.metrics import ROWS_DROPPED, step_counter
from beam_etl.transforms.cleaning import check_columns
from beam_etl.transforms.expr import evaluate, referenced_columns, result_type
from beam_etl.transforms.expressions import EXPRESSION_FAILED, _compiled
from beam_etl.transforms.outputs import WithErrors
from beam_etl.transforms.rows import RowsToBatches, SchemaOf

LOOKUP_MISS: Final = "lookup_miss"
JOIN_HOW: Final = ("inner", "left", "right", "full")
_NULL_KEY: Final = "null_key"
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def key_pairs(on: list[str] | dict[str, str]) -> list[tuple[str, str]]:
    """Return `(left, right)` key column pairs from a list (same names) or a `{left: right}`."""
    pairs = list(on.items()) if isinstance(on, dict) else [(c, c) for c in on or []]
    if not pairs or not all(isinstance(c, str) and c for pair in pairs for c in pair):
        raise ValueError("`on` must list key columns or map left key columns to right ones")
    return pairs


def _two_inputs(inputs: Any, first: str | None = None) -> tuple[Any, Any, str]:
    """Return (stream, other, other's name); `first` names the input that goes second."""
    items = list(inputs.items()) if isinstance(inputs, dict) else list(enumerate(inputs))
    if len(items) != 2:
        raise ValueError(f"Expected exactly 2 inputs, got {len(items)}")
    if first is not None:
        names = [str(name) for name, _ in items]
        if first not in names:
            raise ValueError(f"`dimension` `{first}` is not an input (inputs: {', '.join(names)})")
        items.sort(key=lambda item: str(item[0]) == first)
    return items[0][1], items[1][1], str(items[1][0])


def _require(schema: pa.Schema, columns: list[str], what: str) -> None:
    try:
        check_columns(schema, columns)
    except ValueError as exc:
        raise DataError(f"{exc} ({what})") from None


# --- LookupJoin -----------------------------------------------------------------------------


def dimension_table(
    batches: list[pa.RecordBatch], keys: list[str], columns: list[str] | None, name: str
) -> pa.Table | None:
    """Return the dimension's key and added columns, without null keys; None if it is empty.

    Raises:
        DataError: a column is missing, or a key occurs twice (a lookup finds at most one row).
    """
    if not batches:
        return None
    table = visible(concat_batches(batches))
    added = columns if columns is not None else [n for n in table.schema.names if n not in keys]
    _require(table.schema, keys + added, f"dimension `{name}`")
    table = table.select(keys + added)
    table = table.filter(functools.reduce(pc.and_, [pc.is_valid(table[k]) for k in keys]))
    counts = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        key = {k: json_safe(v) for k, v in repeated.slice(0, 1).to_pylist()[0].items()}
        key.pop("count_all")
        raise DataError(
            f"Dimension `{name}` holds {repeated.num_rows} key(s) more than once, e.g. {key}; "
            "a lookup must find at most one row: deduplicate it first"
        )
    return table


def match_rows(batch: pa.RecordBatch, dim: pa.Table, pairs: list[tuple[str, str]]) -> pa.Array:
    """Return, per row of `batch`, the index of its dimension row (null where none matches)."""
    left: dict[str, Any] = {}
    right: dict[str, Any] = {}
    for i, (left_key, right_key) in enumerate(pairs):
        values = batch.column(left_key)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        left[f"k{i}"] = values
        try:
            right[f"k{i}"] = dim[right_key].cast(values.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"Dimension key `{right_key}` does not cast to `{values.type}`: {exc}"
            ) from None
    left["__row"] = pa.array(np.arange(batch.num_rows, dtype=np.int64))
    right["__dim"] = pa.array(np.arange(dim.num_rows, dtype=np.int64))
    keys = [f"k{i}" for i in range(len(pairs))]
    joined = pa.table(left).join(pa.table(right), keys=keys, join_type="inner", use_threads=False)
    found = np.full(batch.num_rows, -1, dtype=np.int64)
    found[joined["__row"].to_numpy()] = joined["__dim"].to_numpy()
    return pa.array(found, mask=found < 0)


def _miss_message(dimension: str, row: dict[str, Any]) -> str:
    if any(value is None for value in row.values()):
        nulls = ", ".join(f"`{k}`" for k, v in row.items() if v is None)
        return f"Null key {nulls}: null keys never match `{dimension}`"
    key = ", ".join(f"`{k}`=`{json_safe(v)}`" for k, v in row.items())
    return f"No row of `{dimension}` for {key}"


class _LookupFn(beam.DoFn):
    def __init__(self, step: str, join: "LookupJoin") -> None:
        self._step = step
        self._pairs, self._name = join.pairs, join.dimension_name
        self._columns, self._how, self._reject = join.columns, join.how, join.unmatched == "reject"
        self._suffix = join.suffix

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)
        self._source: Any = None
        self._table: pa.Table | None = None

    def process(self, batch: pa.RecordBatch, dimension: list[pa.RecordBatch]) -> Iterator[Any]:
        if self._source is not dimension:  # one hash table per side-input object, not per batch
            keys = [right for _, right in self._pairs]
            self._table = dimension_table(dimension, keys, self._columns, self._name)
            self._source = dimension
        kept, letters, dropped = self._join(batch, self._table)
        for letter in letters:
            yield beam.pvalue.TaggedOutput(ERROR, letter)
        self._dropped.inc(dropped)
        if kept.num_rows:
            yield kept

    def _join(self, batch: pa.RecordBatch, dim: pa.Table | None):
        left_keys = [left for left, _ in self._pairs]
        _require(batch.schema, left_keys, f"step `{self._step}`")
        if dim is None:
            found = pa.nulls(batch.num_rows, pa.int64())
            added = pa.table({c: pa.nulls(0) for c in self._columns or []})
        else:
            found = match_rows(batch, dim, self._pairs)
            added = dim.drop_columns([right for _, right in self._pairs])
        out = batch
        for name, column in zip(added.column_names, added.columns):
            target = name + self._suffix if name in batch.schema.names else name
            out = out.append_column(target, column.take(found).combine_chunks())
        matched = pc.is_valid(found)
        if not self._reject and self._how == "left":
            return out, [], 0
        kept = out.filter(matched)
        if not self._reject:
            return kept, [], batch.num_rows - kept.num_rows
        missed = pc.invert(matched)
        rows = batch.select(left_keys).filter(missed).to_pylist()
        messages = [_miss_message(self._name, row) for row in rows]
        letters = rejects_from_mask(
            batch, missed, step=self._step, reason=LOOKUP_MISS, messages=messages
        )
        return kept, letters, 0


class LookupJoin(beam.PTransform):
    """Add columns of a small dimension table to every row of a stream, by key.

    The stream stays in batches; the dimension is a side input, turned into one hash table
    per worker (rebuilt only when the runner hands over a new side-input object), and joined
    batch by batch. Order of stream rows kept. A dimension key must occur at most once (a key
    seen twice fails the run), so a stream row gets at most one match. Null keys never match.
    Unmatched rows: with `how: left` kept with nulls in the added columns, with `how: inner`
    dropped (and counted); with `unmatched: reject` they leave through `error`
    (`lookup_miss`, naming the key) whatever `how` is. An added column whose name the stream
    already has gets `suffix`. In a spec the step has two inputs, and `dimension` names the
    one that is the dimension; from Python, pass the dimension PCollection itself.
    """

    MULTI_INPUT: ClassVar[bool] = True
    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(
        self,
        dimension: Any,
        on: list[str] | dict[str, str],
        *,
        how: str = "left",
        columns: list[str] | None = None,
        unmatched: str = "keep",
        suffix: str = "_dim",
    ) -> None:
        """Args:
        dimension: the input holding the dimension (its name in the spec's `inputs`), or
            from Python its PCollection of batches (then the transform's input is the stream).
        on: key columns (same names on both sides) or `{stream_column: dimension_column}`.
        how: `left` (keep unmatched stream rows) or `inner` (drop them).
        columns: dimension columns to add; all non-key ones when not given.
        unmatched: `keep` (as `how` says) or `reject` (dead letters `lookup_miss`).
        suffix: appended to an added column whose name the stream already has.
        """
        super().__init__()
        if how not in ("left", "inner"):
            raise ValueError(f"`how` must be `left` or `inner`, not `{how}`")
        if unmatched not in ("keep", "reject"):
            raise ValueError(f"`unmatched` must be `keep` or `reject`, not `{unmatched}`")
        if columns is not None and not all(isinstance(c, str) for c in columns):
            raise ValueError("`columns` must list dimension column names")
        if not isinstance(suffix, str) or not suffix:
            raise ValueError("`suffix` must be a non-empty string")
        self.pairs = key_pairs(on)
        self.dimension = dimension
        self.dimension_name = dimension if isinstance(dimension, str) else "dimension"
        self.SIDE_INPUTS = (dimension,) if isinstance(dimension, str) else ()
        self.how, self.unmatched, self.suffix = how, unmatched, suffix
        self.columns = list(columns) if columns is not None else None

    def expand(self, inputs):
        if isinstance(self.dimension, str):
            stream, dimension, _ = _two_inputs(inputs, self.dimension)
        else:
            stream, dimension = inputs, self.dimension
        results = stream | "Lookup" >> beam.ParDo(
            _LookupFn(self.label, self), beam.pvalue.AsList(dimension)
        ).with_outputs(ERROR, main=OUTPUT)
        return WithErrors(results[OUTPUT], results[ERROR])


# --- JoinInputs -----------------------------------------------------------------------------


def join_schema(
    left: pa.Schema | None, right: pa.Schema | None, pairs: list[tuple[str, str]], suffix: str
) -> tuple[pa.Schema, dict[str, str]]:
    """Return the joined schema and the output name of each right column.

    Left columns keep their names (keys nullable: an outer join fills them from the right);
    right key columns are merged into the left ones; other right columns whose name is taken
    get `suffix`. Origin columns come last, from the left (or the right when it has them).
    """
    left = left or pa.schema([])
    right = right or pa.schema([])
    right_keys = {right_key: left_key for left_key, right_key in pairs}
    fields = [f for f in left if not f.name.startswith(HIDDEN_PREFIX)]
    taken = {f.name for f in fields}
    renamed = dict(right_keys)
    for field in right:
        if field.name in right_keys or field.name.startswith(HIDDEN_PREFIX):
            continue
        name = field.name
        while name in taken:
            name += suffix
        renamed[field.name] = name
        fields.append(field.with_name(renamed[field.name]))
        taken.add(renamed[field.name])
    hidden = [f for f in left if f.name.startswith(HIDDEN_PREFIX)]
    hidden = hidden or [f for f in right if f.name.startswith(HIDDEN_PREFIX)]
    fields = [f.with_nullable(True) if f.name in right_keys.values() else f for f in fields]
    return pa.schema(fields + hidden), renamed


def _keyed_rows(columns: list[str], batch: pa.RecordBatch) -> Iterator[Any]:
    _require(batch.schema, columns, "join keys")
    for row in batch.to_pylist():
        values = [row[c] for c in columns]
        if any(value is None for value in values):
            yield beam.pvalue.TaggedOutput(_NULL_KEY, row)
        else:
            yield dumps([json_safe(v) for v in values]), row


def _merge(left: dict | None, right: dict | None, renamed: dict[str, str]) -> dict:
    row = dict(left) if left is not None else {}
    for name, value in (right or {}).items():
        if name.startswith(HIDDEN_PREFIX):
            row.setdefault(name, value)
        elif name in renamed and (renamed[name] not in row or row[renamed[name]] is None):
            row[renamed[name]] = value
    return row


class _JoinFn(beam.DoFn):
    def __init__(self, step: str, how: str, pairs, suffix: str) -> None:
        self._step, self._how, self._pairs, self._suffix = step, how, pairs, suffix

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, element, left_schema, right_schema) -> Iterator[dict]:
        if getattr(self, "_schemas", None) != (left_schema, right_schema):  # once, not per row
            self._schemas = (left_schema, right_schema)
            self._renamed = join_schema(left_schema, right_schema, self._pairs, self._suffix)[1]
        renamed = self._renamed
        side, payload = element
        if side != "grouped":  # a row with a null key: it matches nothing
            keep = (
                self._how in ("left", "full") if side == "left" else self._how in ("right", "full")
            )
            yield from self._alone(payload, side, keep, renamed)
        else:
            lefts, rights = list(payload["left"]), list(payload["right"])
            for left in lefts:
                for right in rights:
                    yield _merge(left, right, renamed)
            if not rights:
                yield from self._alone(lefts, "left", self._how in ("left", "full"), renamed)
            if not lefts:
                yield from self._alone(rights, "right", self._how in ("right", "full"), renamed)

    def _alone(self, rows, side: str, keep: bool, renamed) -> Iterator[dict]:
        rows = rows if isinstance(rows, list) else [rows]
        if not keep:
            self._dropped.inc(len(rows))
        for row in rows if keep else ():
            yield _merge(row, None, renamed) if side == "left" else _merge(None, row, renamed)


def _tag(side: str, payload: Any) -> tuple[str, Any]:
    return side, payload


def _joined_schema(left: pa.Schema | None, right: pa.Schema | None, pairs, suffix: str):
    return join_schema(left, right, pairs, suffix)[0]


class JoinInputs(beam.PTransform):
    """Join two large inputs on key columns through a shuffle (`CoGroupByKey` on rows).

    `how`: `inner`, `left`, `right` or `full`. The first input is the left side, the second
    the right one. Each pair of matching rows gives one output row (so a key repeated on both
    sides multiplies rows, as in SQL). Null keys never match: such rows appear only on their
    own side of an outer join. Key columns appear once, under the left names (filled from the
    right in right and full joins); other right columns whose name is taken get `suffix`.
    Rows of an outer side kept unmatched are joined to nulls; unmatched rows a join does not
    keep are dropped and counted. Output order is not kept. Results do not depend on how the
    inputs are batched. Slow path: rows are Python dicts during the shuffle.
    """

    MULTI_INPUT: ClassVar[bool] = True
    CONSERVES_ROWS: ClassVar[bool] = False
    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def __init__(
        self,
        on: list[str] | dict[str, str],
        *,
        how: str = "inner",
        suffix: str = "_right",
        batch_rows: int = 10_000,
    ) -> None:
        """Args:
        on: key columns (same names on both sides) or `{left_column: right_column}`.
        how: `inner`, `left`, `right` or `full`.
        suffix: appended to a right column whose name the left side already has.
        batch_rows: rows per output batch.
        """
        super().__init__()
        if how not in JOIN_HOW:
            raise ValueError(f"`how` must be one of {', '.join(JOIN_HOW)}, not `{how}`")
        if not isinstance(suffix, str) or not suffix:
            raise ValueError("`suffix` must be a non-empty string")
        self.pairs = key_pairs(on)
        self.how, self.suffix, self.batch_rows = how, suffix, batch_rows

    def expand(self, inputs):
        left, right, _ = _two_inputs(inputs)
        sides = {"left": left, "right": right}
        keys = {"left": [p[0] for p in self.pairs], "right": [p[1] for p in self.pairs]}
        schemas, keyed, alone = {}, {}, []
        for side, pcoll in sides.items():
            schemas[side] = pcoll | f"Schema{side.title()}" >> SchemaOf()
            rows = pcoll | f"Key{side.title()}" >> beam.FlatMap(
                functools.partial(_keyed_rows, keys[side])
            ).with_outputs(_NULL_KEY, main="keyed")
            keyed[side] = rows.keyed
            alone.append(rows[_NULL_KEY] | f"NullKeys{side.title()}" >> beam.Map(_tag_row, side))
        grouped = keyed | "Group" >> beam.CoGroupByKey() | "Grouped" >> beam.Map(_grouped)
        left_schema = beam.pvalue.AsSingleton(schemas["left"])
        right_schema = beam.pvalue.AsSingleton(schemas["right"])
        schema = schemas["left"] | "JoinedSchema" >> beam.Map(
            _joined_schema, right_schema, self.pairs, self.suffix
        )
        return (
            [grouped, *alone]
            | "All" >> beam.Flatten()
            | "Join"
            >> beam.ParDo(
                _JoinFn(self.label, self.how, self.pairs, self.suffix), left_schema, right_schema
            )
            | "Rebatch" >> RowsToBatches(schema, self.batch_rows)
        )


def _tag_row(row: dict, side: str) -> tuple[str, dict]:
    return side, row


def _grouped(keyed: tuple[str, Any]) -> tuple[str, Any]:
    return "grouped", keyed[1]


# --- Aggregate ------------------------------------------------------------------------------

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


# --- UnionInputs and SplitRows --------------------------------------------------------------


def unify(_: Any, *schemas: pa.Schema | None) -> pa.Schema | None:
    """Return the schemas unified in input order (permissive type promotion).

    Raises:
        DataError: two inputs hold a column under types that do not unify.
    """
    known = [schema for schema in schemas if schema is not None]
    try:
        return pa.unify_schemas(known, promote_options="permissive") if known else None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"Inputs of the union have incompatible columns: {exc}") from None


def conform(batch: pa.RecordBatch, schema: pa.Schema | None) -> pa.RecordBatch:
    """Return `batch` with `schema`'s columns in its order: missing ones null, others cast."""
    if schema is None:  # only when no input has a batch, so never with a batch in hand
        return batch
    names = batch.schema.names
    arrays = []
    for field in schema:
        if field.name not in names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(field.name)
        try:
            arrays.append(column if column.type == field.type else column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"Column `{field.name}` does not cast to `{field.type}`: {exc}"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class UnionInputs(beam.PTransform):
    """Merge several inputs into one, aligning their schemas.

    The output schema unifies the inputs' schemas in input order (a column missing from an
    input is null there; types are promoted, e.g. int32 and int64 to int64, int64 and float64
    to float64); incompatible types fail the run naming the column. Every row comes out once;
    order is not kept. Takes a dict `{name: pcoll}` (a spec's inputs) or a tuple of inputs.
    """

    MULTI_INPUT: ClassVar[bool] = True
    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)

    def expand(self, inputs):
        pcolls = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        if not pcolls:
            raise ValueError("UnionInputs needs at least one input")
        schemas = [p | f"Schema{i}" >> SchemaOf() for i, p in enumerate(pcolls)]
        unified = (
            pcolls[0].pipeline
            | "Start" >> beam.Create([None])
            | "Unify" >> beam.Map(unify, *[beam.pvalue.AsSingleton(s) for s in schemas])
        )
        return (
            pcolls
            | "Merge" >> beam.Flatten()
            | "Conform" >> beam.Map(conform, beam.pvalue.AsSingleton(unified))
        )


def split_masks(conditions: dict[str, str], batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Return a row mask per condition (the first true condition wins) and `None` for the rest.

    Raises:
        pyarrow.ArrowInvalid, ArithmeticError: an expression fails on this batch's data.
    """
    taken = np.zeros(batch.num_rows, dtype=bool)
    masks: dict[str, np.ndarray] = {}
    for name, text in conditions.items():
        values = evaluate(_compiled(text, batch.schema), batch)
        true = pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)
        masks[name] = true & ~taken
        taken |= true
    masks[""] = ~taken
    return masks


class _SplitFn(beam.DoFn):
    def __init__(self, step: str, conditions: dict[str, str], default: str) -> None:
        self._step, self._conditions, self._default = step, conditions, default

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        try:
            masks = split_masks(self._conditions, batch)
        except (pa.ArrowInvalid, ArithmeticError) as exc:
            masks = {}
            message = f"Expression failed: {exc}"
            everything = pa.array(np.ones(batch.num_rows, dtype=bool))
            for letter in rejects_from_mask(
                batch,
                everything,
                step=self._step,
                reason=EXPRESSION_FAILED,
                messages=[message] * batch.num_rows,
            ):
                yield beam.pvalue.TaggedOutput(ERROR, letter)
        for name, mask in masks.items():
            part = batch.filter(pa.array(mask)) if mask.any() else None
            if part is not None:  # the default output is the main one
                yield beam.pvalue.TaggedOutput(name, part) if name else part


class SplitRows(beam.PTransform):
    """Send each row to the first output whose condition is true; others to `default`.

    Conditions are boolean expressions of the spec's expression language (null counts as
    false), type-checked when the spec is loaded. Every row leaves through exactly one
    output; order is kept within an output. A batch on which an expression fails at run time
    leaves through `error` (`expression_failed`). Outputs are named by the conditions, plus
    `default` and `error` (instance attribute `OUTPUTS`); in a spec they are read as
    `step.name`, from Python as `result["name"]`.
    """

    OUTPUTS: tuple[str, ...] = ("rest", ERROR)  # set per instance, see __init__

    def __init__(self, conditions: dict[str, str], *, default: str = "rest") -> None:
        """Args:
        conditions: boolean expression by output name, tried in order.
        default: the output of rows no condition holds for.
        """
        super().__init__()
        if not isinstance(conditions, dict) or not conditions:
            raise ValueError("`conditions` must map output names to boolean expressions")
        names = [*conditions, default]
        for name in names:
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name == ERROR:
                raise ValueError(f"Output name `{name}` must be an identifier other than `error`")
        if default in conditions:
            raise ValueError(f"`default` `{default}` is also a condition name")
        for text in conditions.values():
            referenced_columns(str(text))
        self.conditions = {name: str(text) for name, text in conditions.items()}
        self.default = default
        self.OUTPUTS = (*names, ERROR)

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        """Type-check every condition; every output has the input's schema."""
        for name, text in self.conditions.items():
            found = result_type(text, schema)
            if not pa.types.is_boolean(found) and not pa.types.is_null(found):
                raise ValueError(f"Condition `{name}` must be boolean, not {found}")
        return schema

    def expand(self, batches):
        tags = [*self.conditions, ERROR]
        results = batches | "Split" >> beam.ParDo(
            _SplitFn(self.label, self.conditions, self.default)
        ).with_outputs(*tags, main=self.default)
        return {name: results[name] for name in self.OUTPUTS}
