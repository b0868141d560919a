"""Change detection without a log: compare a source's full read with the previous run's snapshot.

`DiffSnapshots` spreads this run's rows over hash buckets of the primary key (the keyed shuffle
that `DropDuplicates` uses: a few Arrow sub-batches per input batch cross it). Each bucket then
reads the previous snapshot's bucket file (key columns and a 64-bit row hash, Parquet) and
joins the two with one Arrow join: a key only in this run is a `c` event, a key in both with
another row hash is `u`, a key only in the previous snapshot is `d`; equal rows are unchanged
(dropped, or emitted as `r` with `emit_unchanged`). Memory is bounded by the largest bucket,
never the table. The new snapshot is written beside the current one and replaces it only when
the run has published (or, outside the launcher, when the last bucket is done), so a failed
run diffs against the same snapshot again.

Events are Arrow batches shaped like log-based CDC's: the row's columns (this run's values;
for `d` only the key), `op`, `deleted` (true for `d`, for the sinks' `hard_delete_column`),
`source_ts` (when the run started), `source_name` (the step) and `source_position` (the run id).
"""

import functools
import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_etl.core.batches import HIDDEN_PREFIX, visible, visible_schema
from beam_etl.core.changes import EVENT_COLUMNS, EVENT_FIELDS
from beam_etl.core.deadletter import ERROR, OUTPUT, rejects_from_mask
from beam_etl.core.metrics import ROWS_DROPPED, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.core.state import current_state, promote_folder
from beam_etl.keyed.buckets import decoded, fast_row_hash, split_by_key
from beam_etl.keyed.spill import NOTE, PART, REJECT_NOTE, ROW, SpillByKey, spill_folder, use_spill

#: The row hash the snapshot keeps (`fast_row_hash`); a snapshot of another is not compared.
HASH_VERSION: Final = 2
NULL_KEY: Final = "null_key"
DUPLICATE_KEY: Final = "duplicate_key"
_HASH: Final = "__beam_etl_hash"
_INDEX: Final = "__beam_etl_index"
_PREVIOUS: Final = "__beam_etl_previous"


_EMPTY: Final = pa.RecordBatch.from_pydict({})
#: Snapshot buckets are keys and 64-bit hashes: neither dictionaries nor statistics help.
_SNAPSHOT_FILE: Final = {"compression": "lz4", "use_dictionary": False, "write_statistics": False}


def _plain(table: pa.Table) -> pa.Table:
    """Return `table` in one chunk per column, dictionaries decoded (batches bring their own)."""
    return pa.table(
        {name: decoded(table.column(name)) for name in table.column_names}
    ).combine_chunks()


def _with_columns(keys: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """Return the `d` events' keys with every other column of this run's rows, null."""
    if schema is None:
        return keys
    columns = {}
    for field in schema:
        if field.name in keys.column_names:
            columns[field.name] = keys.column(field.name).cast(field.type)
        else:
            columns[field.name] = pa.nulls(keys.num_rows, field.type)
    return pa.table(columns)


def _schema_of(batch: pa.RecordBatch) -> pa.Schema:
    return pa.schema(
        [f.with_type(decoded(batch.column(f.name)).type) for f in visible(batch).schema]
    )


def _unify(schemas: Iterable[pa.Schema]) -> pa.Schema | None:
    found = list(schemas)
    return pa.unify_schemas(found, promote_options="permissive") if found else None


def bucket_file(folder: str, bucket: int) -> str:
    return os.path.join(folder, f"bucket-{bucket:05d}.parquet")


def diff_bucket(
    current: pa.Table | None, previous: pa.Table | None, keys: list[str]
) -> tuple[pa.Array, pa.Array, pa.Table]:
    """Return, for one bucket, the `op` of each current row (`c`, `u` or `r` for unchanged),
    as an array aligned with `current`, and the keys that are gone (`d`), as a table.

    `current` holds the key columns and `_HASH` (no null or repeated key); `previous` the same
    from the last snapshot. Pure Arrow: one hash join.
    """
    if current is None or current.num_rows == 0:
        gone = previous.select(keys) if previous is not None else pa.table({})
        return pa.array([], pa.string()), pa.array([], pa.int64()), gone
    indexed = current.select([*keys, _HASH]).append_column(
        _INDEX, pa.array(np.arange(current.num_rows, dtype=np.int64))
    )
    if previous is None or previous.num_rows == 0:
        ops = pa.array(np.full(current.num_rows, "c", dtype=object), pa.string())
        return ops, indexed.column(_INDEX).combine_chunks(), previous or pa.table({})
    previous = previous.rename_columns([*keys, _PREVIOUS])
    fields = [*(current.schema.field(k) for k in keys), previous.schema.field(_PREVIOUS)]
    previous = previous.cast(pa.schema(fields))
    joined = indexed.join(previous, keys, join_type="full outer", use_threads=False)
    present = pc.is_valid(joined.column(_INDEX))
    kept = joined.filter(present)
    was = kept.column(_PREVIOUS)
    ops = pc.if_else(pc.is_null(was), "c", pc.if_else(pc.equal(was, kept.column(_HASH)), "r", "u"))
    gone = joined.filter(pc.invert(present)).select(keys)
    return ops.combine_chunks(), kept.column(_INDEX).combine_chunks(), gone


class _DiffBucketFn(beam.DoFn):
    def __init__(self, step, keys, snapshot, next_folder, emit_unchanged, run_id, started):
        self._step, self._keys, self._snapshot = step, keys, snapshot
        self._next, self._emit_unchanged = next_folder, emit_unchanged
        self._run_id, self._started = run_id, started

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, element: tuple[int, Iterable[Any]], schema=None) -> Iterator[Any]:
        bucket, parts = element
        batches = [b for b in parts if b.num_rows]  # the empty marks make every bucket run
        table = _plain(pa.Table.from_batches(batches)) if batches else None
        if table is not None:
            table, letters = self._reject_bad_keys(table)
            yield from (beam.pvalue.TaggedOutput(ERROR, letter) for letter in letters)
        previous = self._previous(bucket)
        if table is not None:
            table = table.append_column(_HASH, pa.array(fast_row_hash(table)))
        ops, index, gone = diff_bucket(table, previous, self._keys)
        if table is not None and table.num_rows:
            self._write_next(bucket, table.select([*self._keys, _HASH]))
            changed = table.take(index).drop_columns([_HASH])
            if not self._emit_unchanged:
                keep = pc.not_equal(ops, "r")
                self._dropped.inc(changed.num_rows - (pc.sum(keep).as_py() or 0))
                changed, ops = changed.filter(keep), ops.filter(keep)
            if changed.num_rows:
                yield from self._events(changed, ops).to_batches()
        if gone.num_rows:
            gone = _with_columns(gone, schema)  # the row's other columns, null
            yield from self._events(gone, pa.repeat("d", gone.num_rows)).to_batches()

    def _reject_bad_keys(self, table: pa.Table) -> tuple[pa.Table, list]:
        """Send rows with a null key, and all but the last copy of a repeated key, to the
        dead letters; return the rest."""
        null = pc.invert(
            functools.reduce(pc.and_, [pc.is_valid(table.column(k)) for k in self._keys])
        )
        letters = []
        if pc.any(null).as_py():
            batch = table.filter(null).combine_chunks().to_batches()[0]
            letters += rejects_from_mask(
                batch,
                pa.array(np.ones(batch.num_rows, bool)),
                step=self._step,
                reason=NULL_KEY,
                messages=[f"Key ({', '.join(self._keys)}) is null"] * batch.num_rows,
            )
            table = table.filter(pc.invert(null))
        position = pa.array(np.arange(table.num_rows, dtype=np.int64))
        last = (
            table.select(self._keys)
            .append_column(_INDEX, position)
            .group_by(self._keys, use_threads=False)
            .aggregate([(_INDEX, "max"), (_INDEX, "count")])
        )
        if (pc.max(last.column(f"{_INDEX}_count")).as_py() or 0) > 1:
            keep = np.zeros(table.num_rows, bool)
            keep[last.column(f"{_INDEX}_max").to_numpy()] = True
            extra = table.filter(pa.array(~keep)).combine_chunks()
            if extra.num_rows:
                batch = extra.to_batches()[0]
                letters += rejects_from_mask(
                    batch,
                    pa.array(np.ones(batch.num_rows, bool)),
                    step=self._step,
                    reason=DUPLICATE_KEY,
                    messages=[f"Key ({', '.join(self._keys)}) repeats; its last row is compared"]
                    * batch.num_rows,
                )
            table = table.filter(pa.array(keep))
        return table, letters

    def _previous(self, bucket: int) -> pa.Table | None:
        path = bucket_file(self._snapshot, bucket)
        return pq.read_table(path) if os.path.exists(path) else None

    def _write_next(self, bucket: int, table: pa.Table) -> None:
        os.makedirs(self._next, exist_ok=True)
        temporary = f"{bucket_file(self._next, bucket)}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(table, temporary, **_SNAPSHOT_FILE)
        os.replace(temporary, bucket_file(self._next, bucket))

    def _events(self, rows: pa.Table, ops: pa.Array) -> pa.Table:
        return _events(rows, ops, self._step, self._run_id, self._started)


def with_hash(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return `batch` with its rows' hash (every visible column) as the hidden `_HASH`."""
    return batch.append_column(_HASH, pa.array(fast_row_hash(batch)))


def select_changes(
    keys: list[str],
    snapshot: str,
    next_folder: str,
    emit_unchanged: bool,
    table: pa.Table,
    bucket: int,
) -> tuple[pa.Table, list[pa.Table]]:
    """For one bucket of spilled keys (`keys`, `_HASH`, `PART`, `ROW`): write the bucket of
    the next snapshot, and return the rows to emit (`PART`, `ROW`, `NOTE` = their `op`, or
    `!reason:message` for a null or repeated key) and the keys that are gone (`d`)."""

    previous_path = bucket_file(snapshot, bucket)
    previous = pq.read_table(previous_path) if os.path.exists(previous_path) else None
    if not table.num_rows:
        gone = previous.select(keys) if previous is not None else None
        return pa.table({PART: [], ROW: [], NOTE: []}), [gone] if gone and gone.num_rows else []
    table = table.combine_chunks()
    n = table.num_rows
    # One code per row: 0 nothing to emit, else an index into `labels`.
    labels = [
        "c",
        "u",
        "r",
        f"{REJECT_NOTE}{NULL_KEY}:Key ({', '.join(keys)}) is null",
        f"{REJECT_NOTE}{DUPLICATE_KEY}:Key ({', '.join(keys)}) repeats; its last row is compared",
    ]
    codes = np.zeros(n, dtype=np.int8)
    null = functools.reduce(pc.or_, [pc.is_null(table.column(k)) for k in keys])
    null = null.to_numpy(zero_copy_only=False)
    codes[null] = 4
    grouped = (
        table.select(keys)
        .append_column(_INDEX, pa.array(np.arange(n, dtype=np.int64)))
        .filter(pa.array(~null))
        .group_by(keys, use_threads=False)
        .aggregate([(_INDEX, "max")])
    )
    last = np.zeros(n, dtype=bool)
    last[grouped.column(f"{_INDEX}_max").to_numpy()] = True
    codes[~last & ~null] = 5
    current = _plain(table.select([*keys, _HASH]).filter(pa.array(last)))
    if current.num_rows:
        os.makedirs(next_folder, exist_ok=True)
        final = bucket_file(next_folder, bucket)
        temporary = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(current, temporary, **_SNAPSHOT_FILE)
        os.replace(temporary, final)
    ops, index, gone = diff_bucket(current, previous, keys)
    op_codes = np.select(
        [
            pc.equal(ops, "c").to_numpy(zero_copy_only=False),
            pc.equal(ops, "u").to_numpy(zero_copy_only=False),
        ],
        [1, 2],
        3 if emit_unchanged else 0,
    ).astype(np.int8)
    codes[np.flatnonzero(last)[index.to_numpy()]] = op_codes
    picked = np.flatnonzero(codes)
    notes = pa.DictionaryArray.from_arrays(
        pa.array(codes[picked] - 1, pa.int8()), pa.array(labels, pa.string())
    ).cast(pa.string())
    chosen = pa.table(
        {
            PART: table.column(PART).take(pa.array(picked)),
            ROW: table.column(ROW).take(pa.array(picked)),
            NOTE: notes,
        }
    )
    return chosen, [gone] if gone.num_rows else []


def events_from_picked(
    batch: pa.RecordBatch, step: str, run_id: str, started: datetime
) -> pa.RecordBatch:
    """Return the change events of rows the spill picked (their `op` in `NOTE`)."""

    ops = batch.column(NOTE)
    rows = pa.Table.from_batches([batch.drop_columns([NOTE, _HASH])])
    rows = _plain(rows)
    return _events(rows, ops, step, run_id, started).combine_chunks().to_batches()[0]


def events_of_gone(
    gone: pa.Table, step: str, run_id: str, started: datetime, schema: pa.Schema | None
) -> Iterator[pa.RecordBatch]:
    """Yield the `d` events of keys that are gone, every other column null."""
    gone = _with_columns(gone, schema)
    ops = pa.repeat("d", gone.num_rows)
    yield from _events(gone, ops, step, run_id, started).to_batches()


def _events(rows: pa.Table, ops: pa.Array, step: str, run_id: str, started: datetime) -> pa.Table:
    n = rows.num_rows
    columns = {
        "op": ops,
        "deleted": pc.equal(ops, "d"),
        "source_ts": pa.repeat(pa.scalar(started, pa.timestamp("us", tz="UTC")), n),
        "source_name": pa.repeat(step, n),
        "source_position": pa.repeat(run_id, n),
    }
    for name, values in columns.items():
        rows = rows.append_column(name, values)
    return rows


class _PromoteFn(beam.DoFn):
    """Outside the launcher: make the new snapshot current once every bucket is done."""

    def __init__(self, new: str, current: str) -> None:
        self._new, self._current = new, current

    def process(self, _: Any) -> Iterator[int]:
        promote_folder(self._new, self._current)
        yield 1


class DiffSnapshots(beam.PTransform):
    """Emit change events (`c`, `u`, `d`) between this run's full read and the last snapshot.

    Compares by `primary_key` and a hash of every visible column. Bounded memory (keyed by hash
    buckets; one bucket of rows at a time). Rows with a null key, and all but the last copy of
    a repeated key, leave through `error` (`null_key`, `duplicate_key`). Unchanged rows are
    dropped and counted, unless `emit_unchanged` (then `op` is `r`). Rows out are not rows in
    (`d` events stand for rows that are gone), so the step's counts are not checked.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)
    CONSERVES_ROWS: ClassVar[bool] = False

    def __init__(
        self,
        primary_key: list[str] | str,
        *,
        snapshot: str | None = None,
        emit_unchanged: bool = False,
        buckets: int = 32,
        run_id: str | None = None,
        spill_dir: str | None = None,
        spill: bool | None = None,
    ) -> None:
        """Args:
        primary_key: the key column(s) that identify a row across runs.
        snapshot: folder of the snapshot to compare with (kept there for the next run);
            default: the pipeline's state store (`<output dir>/.beam_etl/state/...`).
        emit_unchanged: also emit unchanged rows, with `op` `r`.
        buckets: hash buckets of the key (more: smaller groups, more files).
        run_id: recorded as `source_position`; the run's id when run by the launcher.
        spill_dir: folder (local or any Beam file system every worker reaches) where whole
            rows wait while only keys and row hashes cross the shuffle; by default a
            temporary folder when the pipeline runs on this machine.
        spill: force (True) or forbid (False) spill files (without: whole rows are shuffled).
        """
        super().__init__()
        keys = [primary_key] if isinstance(primary_key, str) else list(primary_key)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("`primary_key` must name one or more columns")
        if any(k.startswith(HIDDEN_PREFIX) or k in EVENT_COLUMNS for k in keys):
            raise ValueError(
                f"`primary_key` cannot name {', '.join(EVENT_COLUMNS)} or hidden columns"
            )
        if not isinstance(buckets, int) or isinstance(buckets, bool) or not 1 <= buckets <= 4096:
            raise ValueError(f"`buckets` must be an integer from 1 to 4096, not `{buckets}`")
        self.primary_key = keys
        self.snapshot = snapshot
        self.emit_unchanged = emit_unchanged
        self.buckets = buckets
        self.run_id = run_id
        self.spill_dir = spill_dir
        self.spill = spill

    def infer_schema(self, schema: pa.Schema) -> pa.Schema:
        from beam_etl.transforms.cleaning import check_columns

        check_columns(schema, self.primary_key)
        clash = [name for name in EVENT_COLUMNS if name in schema.names]
        if clash:
            raise ValueError(f"Input columns {clash} clash with the change event's columns")
        return pa.schema([*visible_schema(schema), *EVENT_FIELDS])

    def expand(self, batches):
        state = current_state()
        snapshot = self.snapshot
        if snapshot is None:
            if state is None:
                raise ValueError(
                    "`DiffSnapshots` needs `snapshot:` (a folder) outside `python -m beam_etl.run`"
                )
            folder = state.store.data_folder(state.pipeline, self.label)
            snapshot = os.path.join(folder, "snapshot")
            before = state.get(self.label) or {}
            if before.get("buckets", self.buckets) != self.buckets:
                raise ValueError(
                    f"`buckets` changed from {before['buckets']} to {self.buckets}: the last "
                    "snapshot cannot be compared; run `python -m beam_etl.run state reset "
                    f"--source {self.label}` first (every row is then new)"
                )
            if before and before.get("hash") != HASH_VERSION:
                raise ValueError(
                    "The last snapshot was kept by an older beam_etl with another row hash; "
                    f"run `python -m beam_etl.run state reset --source {self.label}` first "
                    "(every row is then new)"
                )
        run_id = self.run_id or (state.run_id if state else uuid.uuid4().hex[:12])
        new = f"{snapshot}.next-{run_id}"
        started = datetime.now(UTC)
        schema = (
            batches
            | "Schemas" >> beam.Map(_schema_of)
            | "Schema" >> beam.CombineGlobally(_unify).without_defaults()
        )
        if use_spill(batches, self.spill_dir, self.spill):
            output, error = self._by_spill(batches, schema, snapshot, new, run_id, started)
        else:
            output, error = self._by_shuffle(batches, schema, snapshot, new, run_id, started)
        if state is not None:
            state.promote(new, snapshot)
            state.propose(
                self.label, {"snapshot": snapshot, "buckets": self.buckets, "hash": HASH_VERSION}
            )
        else:
            _ = (
                output
                | "Done" >> beam.combiners.Count.Globally()
                | "Promote" >> beam.ParDo(_PromoteFn(new, snapshot))
            )
        return WithErrors(output, error)

    def _by_spill(self, batches, schema, snapshot, new, run_id, started):
        """Whole rows wait in spill files; only keys and row hashes cross the shuffle."""
        # `staging`: the CLI removes it after a failed run (a successful one removes it).
        self.staging = spill_folder(self.spill_dir, self.label)
        gone: list[Any] = []
        spilled = (
            batches
            | "Hash" >> beam.Map(with_hash)
            | "BySpill"
            >> SpillByKey(
                self.label,
                self.primary_key,
                carry=[_HASH],
                buckets=self.buckets,
                folder=self.staging,
                select=functools.partial(
                    select_changes, self.primary_key, snapshot, new, self.emit_unchanged
                ),
                action="pick",
                gate=lambda _rows, summary: gone.append(summary),
                every_bucket=True,
                ties=False,  # the last copy of a repeated key wins, not a content order
                by_value=True,  # keys bucketed by value (HASH_VERSION 2)
            )
        )
        changed = spilled.output | "Events" >> beam.Map(
            events_from_picked, self.label, run_id, started
        )
        deleted = gone[0] | "Deleted" >> beam.FlatMap(
            events_of_gone,
            self.label,
            run_id,
            started,
            schema=beam.pvalue.AsSingleton(schema, default_value=None),
        )
        output = (changed, deleted) | "AllEvents" >> beam.Flatten()
        return output, spilled.error

    def _by_shuffle(self, batches, schema, snapshot, new, run_id, started):
        """Whole rows cross the shuffle (a runner whose workers share no folder)."""
        marks = batches.pipeline | "Buckets" >> beam.Create(
            [(b, _EMPTY) for b in range(self.buckets)]
        ).with_output_types(tuple[int, pa.RecordBatch])
        spread = batches | "Spread" >> beam.FlatMap(
            functools.partial(split_by_key, self.primary_key, self.buckets, by_value=True)
        ).with_output_types(tuple[int, pa.RecordBatch])
        diff = (
            (spread, marks)
            # One coder for both inputs: Arrow IPC for the batches (a pickled slice would
            # carry its whole parent batch through the shuffle).
            | "Merge" >> beam.Flatten().with_output_types(tuple[int, pa.RecordBatch])
            | "Group" >> beam.GroupByKey()
            | "Diff"
            >> beam.ParDo(
                _DiffBucketFn(
                    self.label,
                    self.primary_key,
                    snapshot,
                    new,
                    self.emit_unchanged,
                    run_id,
                    started,
                ),
                schema=beam.pvalue.AsSingleton(schema, default_value=None),
            ).with_outputs(ERROR, main=OUTPUT)
        )
        return diff[OUTPUT], diff[ERROR]
