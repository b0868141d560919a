"""Relational processors: lookup join and keyed join (aggregation in `aggregate`, union and
split in `routing`).

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

from beam_etl.core.batches import HIDDEN_PREFIX, concat_batches, dumps, json_safe, visible
from beam_etl.core.deadletter import ERROR, OUTPUT, rejects_from_mask
from beam_etl.core.errors import DataError
from beam_etl.core.metrics import ROWS_DROPPED, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.transforms.cleaning import check_columns
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

    def infer_schemas(self, schemas: dict[str, pa.Schema]) -> None:
        """Check, when a spec is loaded, that both inputs have the key (and added) columns."""
        stream, dimension, name = _two_inputs(schemas, self.dimension_name)
        check_columns(stream, [left for left, _ in self.pairs])
        added = self.columns if self.columns is not None else []
        try:
            check_columns(dimension, [right for _, right in self.pairs] + added)
        except ValueError as exc:
            raise ValueError(f"{exc} (dimension `{name}`)") from None

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

    def infer_schemas(self, schemas: dict[str, pa.Schema]) -> pa.Schema:
        """Check the key columns of both inputs; return the joined schema."""
        left, right, name = _two_inputs(schemas)
        check_columns(left, [p[0] for p in self.pairs])
        try:
            check_columns(right, [p[1] for p in self.pairs])
        except ValueError as exc:
            raise ValueError(f"{exc} (right input `{name}`)") from None
        return join_schema(left, right, self.pairs, self.suffix)[0]

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
