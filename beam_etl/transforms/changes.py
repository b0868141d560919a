"""Applying change events: per primary key, the net change of each window, in commit order.

`ApplyChanges` spreads the events (Arrow batches in the shape of `beam_etl.io._changes`) over
hash buckets of the key (the keyed shuffle of `DropDuplicates`), and a stateful DoFn per bucket
buffers them until an event-time timer fires at the end of their window (the watermark comes
from the events' `source_ts`). Then, per key, in `source_seq` order:

- an event at or before the key's last applied `source_seq` (a re-delivered or duplicated
  event) is dropped and counted;
- an event whose `source_ts` is more than `allowed_lateness` behind the newest one already
  applied for its key, in commit order, goes to the dead letters (`late_change`);
- the rest collapse into one net event: insert + updates -> one `c`; updates -> one `u`;
  insert then delete -> nothing; delete then insert -> `u` (an upsert); ... then delete -> `d`.

The rule is applied to whatever the firing sees, sorted by `source_seq`, so the result does
not depend on how batches were split, shuffled or ordered, nor on the number of workers.
"""

import functools
import pickle
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from beam_etl.core.batches import concat_batches
from beam_etl.core.coders import RecordBatchCoder
from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.metrics import ROWS_DROPPED, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.io._changes import BEFORE, DELETE, INSERT, LATE_CHANGE, READ, UPDATE
from beam_etl.io._increment import parse_lag
from beam_etl.keyed.buckets import split_by_key

_NEEDED: Final = ("op", "source_ts", "source_seq")


def net_changes(
    table: pa.Table,
    keys: list[str],
    applied: dict[tuple, tuple[int, int]],
    lateness_us: int | None,
) -> tuple[pa.Table, list[int], int]:
    """Return the net event per key of `table`, the row indices of late events, and how many
    events were dropped (stale, duplicated, or cancelled out). `applied` (key -> last applied
    `source_seq`, newest `source_ts` in microseconds) is read and updated.

    Pure: no Beam. The result depends only on the events, not on their order in `table`.
    """
    key_values = list(zip(*(table.column(k).to_pylist() for k in keys)))
    seqs = table.column("source_seq").to_numpy(zero_copy_only=False)
    ts = pc.cast(table.column("source_ts"), pa.int64()).to_numpy(zero_copy_only=False)
    ops = table.column("op").to_pylist()
    groups: dict[tuple, list[int]] = {}
    late: list[int] = []
    dropped = 0
    for i in np.argsort(seqs, kind="stable").tolist():
        key = key_values[i]
        last = applied.get(key)
        if last is not None and seqs[i] <= last[0]:
            dropped += 1
            continue
        if last is not None and lateness_us is not None and ts[i] < last[1] - lateness_us:
            late.append(i)
            continue
        applied[key] = (int(seqs[i]), max(int(ts[i]), last[1]) if last else int(ts[i]))
        groups.setdefault(key, []).append(i)
    taken, net_ops = [], []
    for indices in groups.values():
        first, final = ops[indices[0]], ops[indices[-1]]
        if final == DELETE and first == INSERT:
            dropped += len(indices)  # inserted and deleted within the window: nothing
            continue
        if final == DELETE:
            op = DELETE
        elif first == INSERT:
            op = INSERT
        else:
            op = READ if all(ops[i] == READ for i in indices) else UPDATE
        dropped += len(indices) - 1
        taken.append(indices[-1])
        net_ops.append(op)
    net = table.take(pa.array(taken, pa.int64()))
    op_array = pa.array(net_ops, pa.string())
    net = net.set_column(net.schema.get_field_index("op"), "op", op_array)
    if "deleted" in net.column_names:
        deleted = pc.equal(op_array, DELETE)
        net = net.set_column(net.schema.get_field_index("deleted"), "deleted", deleted)
    return net, late, dropped


def split_key_changes(keys: list[str], batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return `batch` with each update that changed the primary key (its `before` names another
    key) replaced by a delete of the old key and an insert of the new row."""
    if BEFORE not in batch.schema.names:
        return batch
    before = batch.column(BEFORE)
    changed = pc.fill_null(pc.equal(batch.column("op"), UPDATE), False)
    for key in keys:
        old = pc.struct_field(before, key)
        moved = pc.fill_null(pc.not_equal(old, batch.column(key)), False)
        changed = pc.and_(changed, moved) if key == keys[0] else pc.or_(changed, moved)
    if not pc.any(changed).as_py():
        return batch
    rows = batch.to_pylist()
    out = []
    for row, moved in zip(rows, changed.to_pylist()):
        if moved:
            gone = {name: None for name in row} | {
                k: v for k, v in row.items() if k not in row[BEFORE] or k in keys
            }
            gone.update({k: row[BEFORE][k] for k in keys}, op=DELETE, deleted=True)
            out.append(gone)
            out.append(row | {"op": INSERT})
        else:
            out.append(row)
    return pa.RecordBatch.from_pylist(out, schema=batch.schema)


def _keyed(keys, buckets, window, batch: pa.RecordBatch) -> Iterator[Any]:
    """Yield (bucket, sub-batch) pairs stamped with their newest `source_ts`, by window."""
    micros = pc.cast(batch.column("source_ts"), pa.int64()).to_numpy(zero_copy_only=False)
    if window:
        slots = micros // (window * 1_000_000)
        parts = [(batch.filter(pa.array(slots == s)), s) for s in np.unique(slots)]
    else:
        parts = [(batch, None)]
    present = [k for k in keys if k in batch.schema.names]
    for part, _ in parts:
        for bucket, sub in split_by_key(present, buckets, part):
            newest = pc.max(pc.cast(sub.column("source_ts"), pa.int64())).as_py()
            stamp = Timestamp(micros=newest) if newest is not None else Timestamp(0)
            yield TimestampedValue((bucket, sub), stamp)


_BUFFER: Final = BagStateSpec("buffer", RecordBatchCoder())
# Held as pickled bytes: Beam's state cache sizes the objects it holds by walking them, which
# for a dict of every key costs more than the pickling.
_APPLIED: Final = ReadModifyWriteStateSpec("applied", BytesCoder())
_FLUSH: Final = TimerSpec("flush", TimeDomain.WATERMARK)
_BUFFER_PARAM: Final = beam.DoFn.StateParam(_BUFFER)
_APPLIED_PARAM: Final = beam.DoFn.StateParam(_APPLIED)
_FLUSH_PARAM: Final = beam.DoFn.TimerParam(_FLUSH)


class _ApplyFn(beam.DoFn):
    def __init__(self, step: str, keys: list[str], lateness_us: int | None) -> None:
        self._step, self._keys, self._lateness = step, keys, lateness_us

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(
        self,
        element: tuple[int, pa.RecordBatch],
        window=beam.DoFn.WindowParam,
        buffer=_BUFFER_PARAM,
        flush=_FLUSH_PARAM,
    ) -> None:
        buffer.add(element[1])
        flush.set(window.max_timestamp())

    @on_timer(_FLUSH)
    def _flush(
        self,
        buffer=_BUFFER_PARAM,
        applied_state=_APPLIED_PARAM,
    ) -> Iterator[Any]:
        batches = list(buffer.read())
        buffer.clear()
        if not batches:
            return
        table = concat_batches(batches)
        stored = applied_state.read()
        applied = pickle.loads(stored) if stored else {}
        keys = [k for k in self._keys if k in table.column_names]
        net, late, dropped = net_changes(table, keys, applied, self._lateness)
        applied_state.write(pickle.dumps(applied, protocol=pickle.HIGHEST_PROTOCOL))
        self._dropped.inc(dropped)
        for index in late:
            row = table.slice(index, 1).to_pylist()[0]
            yield beam.pvalue.TaggedOutput(ERROR, self._late_letter(row))
        if net.num_rows:
            yield from net.combine_chunks().to_batches()

    def _late_letter(self, row: dict[str, Any]) -> DeadLetter:
        key = ", ".join(f"{k}={row.get(k)!r}" for k in self._keys)
        return DeadLetter(
            self._step,
            LATE_CHANGE,
            f"Change `{row.get('op')}` of {key} at {row.get('source_position')} "
            f"(source_ts {row.get('source_ts')}) is later than `allowed_lateness` behind "
            "changes of the same key applied before it",
            source=row.get("source_table"),
            key=key,
            payload={k: v for k, v in row.items() if k != BEFORE},
        )


class ApplyChanges(beam.PTransform):
    """Reduce change events to the net change per primary key and window, in commit order.

    Input and output: Arrow batches of change events (`op`, `deleted`, `source_ts`,
    `source_seq`, ... see `beam_etl.io._changes`); the output suits the database sinks'
    `mode: merge` with `hard_delete_column: deleted` (drop the other change columns first), or
    an append-only change log. At most one event per key and window; order is not kept.
    Re-delivered and duplicated events (at or below the key's last applied `source_seq`) are
    dropped and counted; events later than `allowed_lateness` go to the dead letters
    (`late_change`). An update that changes the key becomes a delete plus an insert (when the
    events carry `before`). Events of several tables are kept apart by `source_table`.
    Portable: Beam state and event-time timers only. Output: `WithErrors(output, error)`.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(
        self,
        primary_key: list[str] | str,
        *,
        allowed_lateness: str | int | None = None,
        window: str | int | None = None,
        buckets: int = 16,
    ) -> None:
        """Args:
        primary_key: key column(s) of the changed table(s).
        allowed_lateness: how far (`30s`, `10m`, `1h`) an event's `source_ts` may lag behind
            the newest change of its key applied before it in commit order; none by default.
        window: fixed event-time windows (`1m`, `1h`) of `source_ts`, each closed by the
            watermark with its own net change per key; one window by default (batch runs).
        buckets: hash buckets of the key (the parallelism of the keyed state).
        """
        super().__init__()
        keys = [primary_key] if isinstance(primary_key, str) else list(primary_key)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("`primary_key` must name at least one column")
        if not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"`buckets` must be a positive integer, not `{buckets}`")
        self.primary_key = keys
        self.allowed_lateness = None if allowed_lateness is None else parse_lag(allowed_lateness)
        self.window = None if window is None else parse_lag(window)
        if self.window == 0:
            raise ValueError("`window` must be longer than zero")
        self.buckets = buckets

    def infer_schema(self, schema):
        from beam_etl.transforms.cleaning import check_columns

        check_columns(schema, [*self.primary_key, *_NEEDED])
        return schema

    def expand(self, batches):
        keys = [*self.primary_key, "source_table"]
        lateness = None if self.allowed_lateness is None else self.allowed_lateness * 1_000_000
        keyed = (
            batches
            | "SplitKeyChanges" >> beam.Map(functools.partial(split_key_changes, self.primary_key))
            | "Key"
            >> beam.FlatMap(
                functools.partial(_keyed, keys, self.buckets, self.window)
            ).with_output_types(tuple[int, pa.RecordBatch])
        )
        if self.window:
            keyed = keyed | "Window" >> beam.WindowInto(FixedWindows(self.window))
        applied = keyed | "Apply" >> beam.ParDo(_ApplyFn(self.label, keys, lateness)).with_outputs(
            ERROR, main=OUTPUT
        )
        output = applied[OUTPUT]
        if self.window:
            output = output | "Rewindow" >> beam.WindowInto(GlobalWindows())
        return WithErrors(output, applied[ERROR])
