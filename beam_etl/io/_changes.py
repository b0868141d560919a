"""The change-event model shared by the log-based CDC sources, and their position protocol.

**Events** are Arrow batches, one schema per source table: the table's columns (for `c`, `u`
and `r` the row after the change; for `d` the old row as far as the log knows it: the key only,
other columns null, unless the table logs full old rows), then the columns of `CHANGE_COLUMNS`:

| column | type | meaning |
|---|---|---|
| `op` | string | `c` insert, `u` update, `d` delete, `r` read by the initial snapshot |
| `deleted` | bool | true for `d` (what the database sinks' `hard_delete_column` expects) |
| `source_ts` | timestamp[us, UTC] | commit time (snapshot time for `r`) |
| `source_name` | string | the source step |
| `source_position` | string | the log position (`0/16B3748`, `binlog.000003:4711`, a GTID) |
| `source_table` | string | `schema.table` |
| `source_txid` | int64 | the transaction id (null for `r`) |
| `source_seq` | int64 | strictly increasing in commit order over the slot's whole stream |

and, when `before` is asked for, a struct of the old row where the log has it. The first five
are those of `DiffSnapshots` too (`beam_etl.core.changes.EVENT_FIELDS`).

**Positions** never run ahead of the targets. While the graph is built, a source calls
`plan_window`: it reads the last confirmed position from the state store, decides where this
run stops (`end`) and proposes it; the launcher commits the proposal only after every sink has
published, then calls the source's `confirm` (which tells the server, e.g. advances a
replication slot). A failed or killed run proposes nothing: the next run reads again from the
last confirmed position, and the sinks' ledgers and merge make the re-delivery harmless. The
next run's first `source_seq` travels in a small file the reader writes when it has read
everything (promoted with the state), so sequence numbers continue over runs.
"""

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.changes import EVENT_FIELDS
from beam_etl.core.state import current_state

INSERT: Final = "c"
UPDATE: Final = "u"
DELETE: Final = "d"
READ: Final = "r"
OPS: Final = (INSERT, UPDATE, DELETE, READ)

#: Dead-letter reason codes of change events (stable: add, never rename).
TRUNCATE: Final = "truncate"
LATE_CHANGE: Final = "late_change"

CHANGE_FIELDS: Final = (
    *EVENT_FIELDS,
    pa.field("source_table", pa.string()),
    pa.field("source_txid", pa.int64()),
    pa.field("source_seq", pa.int64()),
)
CHANGE_COLUMNS: Final = tuple(f.name for f in CHANGE_FIELDS)
BEFORE: Final = "before"
_SEQ_FILE: Final = "next.json"


def event_schema(columns: pa.Schema, *, before: bool = False) -> pa.Schema:
    """Return the event schema of a table whose columns are `columns`.

    Raises:
        ValueError: a table column is named like a change column.
    """
    clash = [name for name in (*CHANGE_COLUMNS, BEFORE) if name in columns.names]
    if clash:
        raise ValueError(f"Table columns {clash} clash with the change event's columns")
    fields = [*columns, *CHANGE_FIELDS]
    if before:
        fields.append(pa.field(BEFORE, pa.struct(list(columns))))
    return pa.schema(fields)


def table_columns(schema: pa.Schema) -> pa.Schema:
    """Return the table's own columns of an event schema."""
    return pa.schema([f for f in schema if f.name not in CHANGE_COLUMNS and f.name != BEFORE])


def from_text(values: pa.Array, type_: pa.DataType) -> pa.Array:
    """Return the text form of database values (PostgreSQL's output functions) as `type_`.

    Booleans are `t`/`f`, bytea is `\\x` hex; everything else casts with Arrow's parsers.
    """
    if pa.types.is_string(type_):
        return values
    if pa.types.is_boolean(type_):
        return pc.equal(values, "t")
    if pa.types.is_binary(type_):
        return pa.array(
            [None if v is None else bytes.fromhex(v[2:]) for v in values.to_pylist()], type_
        )
    return pc.cast(values, type_)


#: Decoders of rows added undecoded (`EventBuilder.add_raw`): many messages into a text array
#: per column (None: decode them one by one), and one message into its values.
RawBulk = Callable[[list[bytes], int], list[pa.Array] | None]
RawOne = Callable[[bytes], list[Any]]


class EventBuilder:
    """Collect the events of one table and turn them into Arrow batches in the event shape.

    Values come as Python objects (`text=False`) or as the database's text form, parsed per
    column in one vectorized step when the batch is built (`text=True`, see `from_text`).
    """

    def __init__(
        self,
        columns: pa.Schema,
        *,
        step: str,
        table: str,
        text: bool = False,
        before=False,
        raw: tuple[RawBulk, RawOne] | None = None,
    ) -> None:
        """`raw`: how to decode rows added undecoded (`add_raw`): all of a batch at once into
        a text array per column (or None: one by one), and one into its text values."""
        self.columns, self.step, self.table, self.text = columns, step, table, text
        self.before, self._decoders = before, raw
        self.schema = event_schema(columns, before=before)
        self._reset()

    def _reset(self) -> None:
        self._rows: list[Any] = []  # a value per column, or the undecoded message (`add_raw`)
        self._old: list[Any] = []
        self._meta: list[tuple[str, datetime | None, str, int | None, int]] = []
        self._raw: list[int] = []  # where the rows added undecoded are

    def __len__(self) -> int:
        return len(self._meta)

    def add(
        self,
        op: str,
        row: Sequence[Any],
        *,
        ts: datetime | None,
        position: str,
        txid: int | None,
        seq: int,
        old: Sequence[Any] | None = None,
    ) -> None:
        """Add one event; `row` holds a value per table column (null where unknown)."""
        self._rows.append(row)
        self._old.append(old)
        self._meta.append((op, ts, position, txid, seq))

    def add_raw(
        self, op: str, message: bytes, ts: datetime | None, position: str, txid, seq: int
    ) -> None:
        """Add one event whose row is still in its message, decoded when the batch is built
        (see `raw`): per-value work moves out of the capture loop into vectorized code."""
        self._raw.append(len(self._rows))
        self._rows.append(message)
        self._old.append(None)
        self._meta.append((op, ts, position, txid, seq))

    def decode_raw(self) -> None:
        """Decode the rows still held as messages one by one (before what decodes them
        changes, such as the table's columns)."""
        if self._raw:
            assert self._decoders is not None
            one = self._decoders[1]
            for at in self._raw:
                self._rows[at] = one(self._rows[at])
            self._raw = []

    def widen(self, columns: pa.Schema) -> None:
        """Take a schema with new columns (a table that gained columns): earlier events get
        nulls there. Built batches keep their schema; the next ones have the wider one."""
        self.decode_raw()
        rows: list[Sequence[Any]] = [_reorder(row, self.columns, columns) for row in self._rows]
        old = [None if o is None else _reorder(o, self.columns, columns) for o in self._old]
        self.columns, self.schema = columns, event_schema(columns, before=self.before)
        self._rows, self._old = rows, old

    def build(self) -> pa.RecordBatch | None:
        """Return the events added since the last build as one batch (None when there are none)."""
        if not self._meta:
            return None
        texts = self._bulk_texts() if self._raw else None
        if texts is not None:
            arrays = [from_text(t, f.type) for t, f in zip(texts, self.columns)]
        else:
            self.decode_raw()
            # One transposition in C: a list per column.
            values = zip(*self._rows) if len(self.columns) else iter(())
            arrays = [self._array(list(v), field.type) for v, field in zip(values, self.columns)]
        ops, ts, positions, txids, seqs = zip(*self._meta)
        ops_array = pa.array(ops, pa.string())
        arrays += [
            ops_array,
            pc.equal(ops_array, DELETE),
            _repeated(ts, pa.timestamp("us", tz="UTC")),
            pa.repeat(self.step, len(ops)),
            pa.array(positions, pa.string()),
            pa.repeat(self.table, len(ops)),
            pa.array(txids, pa.int64()),
            pa.array(seqs, pa.int64()),
        ]
        if self.before:
            arrays.append(self._before_array())
        self._reset()
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _bulk_texts(self) -> list[pa.Array] | None:
        """Return the text of every row per column, the rows added undecoded decoded in bulk
        and the others (deletes, key changes) put back in their places; None when the bulk
        decoder declines (then every row is decoded one by one)."""
        assert self._decoders is not None
        raw = self._decoders[0]([self._rows[at] for at in self._raw], len(self.columns))
        if raw is None or len(self._raw) == len(self._rows):
            return raw
        rows = len(self._rows)
        decoded = np.zeros(rows, dtype=bool)
        decoded[self._raw] = True
        elsewhere = np.flatnonzero(~decoded)  # deletes, key changes: decoded one by one
        order = np.empty(rows, np.int64)  # each row's place in `raw` followed by the others
        order[self._raw] = np.arange(len(self._raw))
        order[elsewhere] = np.arange(len(self._raw), rows)
        others = zip(*(self._rows[at] for at in elsewhere)) if len(self.columns) else iter(())
        take = pa.array(order)
        return [
            pa.concat_arrays([bulk, pa.array(list(values), pa.string())]).take(take)
            for bulk, values in zip(raw, others)
        ]

    def _array(self, values: list[Any], type_: pa.DataType) -> pa.Array:
        if self.text:
            return from_text(pa.array(values, pa.string()), type_)
        return pa.array(values, type_)

    def _before_array(self) -> pa.Array:
        mask = pa.array([o is None for o in self._old])
        children = [
            self._array([None if o is None else o[i] for o in self._old], field.type)
            for i, field in enumerate(self.columns)
        ]
        return pa.StructArray.from_arrays(children, fields=list(self.columns), mask=mask)


def snapshot_events(
    batch: pa.RecordBatch, *, step: str, table: str, ts: datetime, position: str, first_seq: int
) -> pa.RecordBatch:
    """Return the rows of an initial snapshot read as `r` events (sequence from `first_seq`)."""
    rows = batch.num_rows
    columns = table_columns(batch.schema)
    arrays = [batch.column(f.name) for f in columns]
    arrays += [
        pa.array([READ] * rows, pa.string()),
        pa.array([False] * rows, pa.bool_()),
        pa.array([ts] * rows, pa.timestamp("us", tz="UTC")),
        pa.array([step] * rows, pa.string()),
        pa.array([position] * rows, pa.string()),
        pa.array([table] * rows, pa.string()),
        pa.nulls(rows, pa.int64()),
        pa.array(range(first_seq, first_seq + rows), pa.int64()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=event_schema(columns))


def _repeated(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """Return `values` (few distinct ones, such as a commit time per transaction) as an array,
    converting each distinct value once."""
    distinct: dict[Any, int] = {}
    indices = [distinct.setdefault(v, len(distinct)) for v in values]
    return pa.array(list(distinct), type_).take(pa.array(indices, pa.int32()))


def _reorder(row: Sequence[Any], was: pa.Schema, now: pa.Schema) -> list[Any]:
    index = {f.name: i for i, f in enumerate(was)}
    return [row[index[f.name]] if f.name in index else None for f in now]


@dataclass(frozen=True)
class ChangeWindow:
    """What one run of a CDC source reads: from the last confirmed position `start` (None on
    the first run) up to `end`, numbering events from `first_seq`. Picklable."""

    step: str
    start: Any
    end: Any
    first_seq: int
    seq_folder: str | None  # where the reader leaves the next run's first sequence number

    def finish(self, next_seq: int) -> None:
        """Record where the next run's sequence numbers start (call once everything is read)."""
        if self.seq_folder is None:
            return
        os.makedirs(self.seq_folder, exist_ok=True)
        path = os.path.join(self.seq_folder, _SEQ_FILE)
        with open(f"{path}.tmp", "w", encoding="utf-8") as out:
            json.dump({"seq": next_seq}, out)
        os.replace(f"{path}.tmp", path)


def last_position(step: str) -> Any:
    """Return the position the last successful run of `step` confirmed (None: never ran).

    Raises:
        ValueError: outside `python -m beam_etl.run` (no state store to keep positions in).
    """
    state = current_state()
    if state is None:
        raise ValueError(
            f"`{step}` reads a change log and needs the state store of `python -m beam_etl.run` "
            "to remember its position (run it through the CLI, or inside "
            "`beam_etl.core.state.incremental_state`)"
        )
    found = state.get(step)
    return None if found is None else found.get("position")


def plan_window(step: str, end: Any, confirm: Callable[[Any], None] | None = None) -> ChangeWindow:
    """Propose `end` as `step`'s next position and return this run's window.

    `end` (JSON) becomes the confirmed position only once every sink has published; then
    `confirm(end)` runs in the launcher (tell the server; an error there is reported as a
    warning and the next run confirms again, since it starts from the state's position).
    """
    start = last_position(step)
    state = current_state()
    assert state is not None
    folder = state.store.data_folder(state.pipeline, step)
    current = os.path.join(folder, "seq")
    scratch = os.path.join(folder, f"seq.next-{state.run_id}")
    first_seq = 0
    if start is not None and os.path.exists(os.path.join(current, _SEQ_FILE)):
        with open(os.path.join(current, _SEQ_FILE), encoding="utf-8") as source:
            first_seq = int(json.load(source)["seq"])
    state.propose(step, {"position": end})
    state.promote(scratch, current)
    if confirm is not None:
        state.after_commit(lambda: confirm(end))
    return ChangeWindow(step, start, end, first_seq, scratch)
