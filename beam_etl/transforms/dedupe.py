"""Deduplication across the whole dataset, as a shuffle of batches, not of rows.

Each batch is split by a hash of its key columns into `buckets` sub-batches (vectorized), the
sub-batches are grouped by bucket (every copy of a key lands in the same bucket, whatever the
batch, file or worker it came from), and each bucket is deduplicated with one sort in Arrow.
Only a few thousand elements cross the shuffle, however many rows there are.
"""

import functools
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Final, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import (
    FILE_COLUMN,
    LINE_COLUMN,
    concat_batches,
    split_compact,
)
from beam_etl.core.deadletter import ERROR, OUTPUT
from beam_etl.core.metrics import ROWS_DROPPED, step_counter
from beam_etl.keyed.buckets import GroupByKeyBuckets, decoded, key_columns, tie_hash
from beam_etl.keyed.spill import CONTENT, PART, ROW, SpillByKey, spill_folder, use_spill

KEEP: Final = ("first", "last")
_INDEX: Final = "__beam_etl_index"
_SORT: Final = "__beam_etl_sort_"
_TIES: Final = "__beam_etl_ties"


def survivors(
    table: pa.Table, columns: list[str] | None, keep: str, order_by: str | None
) -> pa.Table:
    """Return one row per key of `table`: the first (or last) by `order_by`, then file, line.

    Nulls in `order_by` never win over values. Deterministic: the result does not depend on
    how the rows were batched or ordered.
    """
    return table.take(survivor_indices(table, columns, keep, order_by))


def survivor_indices(
    table: pa.Table,
    columns: list[str] | None,
    keep: str,
    order_by: str | None,
    tiebreak: list[str] | None = None,
) -> pa.Array:
    """Return the row indices of `survivors(...)`, in survivor order.

    Rows tied on `order_by`, file and line are ordered by `tiebreak` (by default a hash of
    their content where their line is unknown, `tie_hash`); rows tied on everything are
    interchangeable.
    """
    keys = key_columns(table, columns)
    direction = "ascending" if keep == "first" else "descending"
    ordering = pa.table({name: decoded(table.column(name)) for name in keys})
    sort_keys = []
    for name in [order_by] if order_by else []:
        ordering = ordering.append_column(f"{_SORT}order", decoded(table.column(name)))
        sort_keys.append((f"{_SORT}order", direction))
    for hidden in (FILE_COLUMN, LINE_COLUMN):
        if hidden in table.schema.names:
            ordering = ordering.append_column(f"{_SORT}{hidden}", _sortable(table.column(hidden)))
            sort_keys.append((f"{_SORT}{hidden}", direction))
    if tiebreak is None:  # rows with no origin line: their content decides (see `tie_hash`)
        ties = tie_hash(table)
        if ties is not None:
            table = table.append_column(_TIES, ties)
        tiebreak = [_TIES]
    for name in tiebreak:
        if name in table.schema.names:
            ordering = ordering.append_column(f"{_SORT}{name}", table.column(name))
            sort_keys.append((f"{_SORT}{name}", "ascending"))
    if not sort_keys:
        sort_keys.append((keys[0], "ascending"))
    placed = [(name, order, "at_end") for name, order in sort_keys]
    # Only the key columns are reordered; the caller takes the whole rows once, at the end.
    order = pc.sort_indices(ordering, sort_keys=placed)
    ranked = (
        ordering.select(keys).take(order).append_column(_INDEX, pa.array(np.arange(len(order))))
    )
    firsts = ranked.group_by(keys, use_threads=False).aggregate([(_INDEX, "min")])
    firsts = firsts.column(f"{_INDEX}_min")
    return pc.take(order, pc.take(firsts, pc.sort_indices(firsts)))


def losers(
    columns: list[str], keep: str, order_by: str | None, keys: pa.Table
) -> tuple[pa.Table, list]:
    """Return the spilled rows (`PART`, `ROW`) of `keys` that are not survivors."""

    winners = survivor_indices(keys, columns, keep, order_by, [CONTENT])  # when present
    lost = np.ones(keys.num_rows, dtype=bool)
    lost[winners.to_numpy()] = False
    return keys.select([PART, ROW]).filter(pa.array(lost)), []


def _sortable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Return `column` as something `sort_indices` orders: a dictionary becomes value ranks."""
    if not pa.types.is_dictionary(column.type):
        return column
    column = pa.table({"c": column}).unify_dictionaries().column("c")
    if column.num_chunks == 0:
        return pa.chunked_array([], pa.int64())
    ranks = pc.rank(column.chunk(0).dictionary, sort_keys="ascending", tiebreaker="dense")
    return pa.chunked_array(
        [pc.take(ranks, chunk.indices) for chunk in column.chunks], type=ranks.type
    )


class Deduplicated(NamedTuple):
    """What `DropDuplicates` gives: `output` (batches) and `error` (`DeadLetter`s; always empty
    today, as no row is rejected), the shape of `WithErrors`.

    Piping it on (`deduplicated | next_step`) reads `output`, as when `DropDuplicates` gave
    its batches alone.
    """

    output: Any
    error: Any

    def __or__(self, transform: Any) -> Any:
        return self.output | transform


class _DedupeBucketFn(beam.DoFn):
    def __init__(self, step: str, columns, keep: str, order_by, batch_rows: int) -> None:
        self._step = step
        self._columns = columns
        self._keep = keep
        self._order_by = order_by
        self._batch_rows = batch_rows

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, bucket: tuple[int, Iterable[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
        table = concat_batches(bucket[1])
        kept = survivors(table, self._columns, self._keep, self._order_by)
        self._dropped.inc(table.num_rows - kept.num_rows)
        yield from split_compact(kept, self._batch_rows)


class DropDuplicates(beam.PTransform):
    """Keep one row per key across the whole input (all batches, files and workers).

    Rows are equal when `columns` are equal (all visible columns when not given; nulls equal
    nulls). The survivor is deterministic, the same on one worker, several or a cluster: the
    first (or last) by `order_by` (a null never wins over a value), ties broken by origin file
    and line. Removed duplicates are counted as dropped.

    With key `columns`, only the keys cross the shuffle: whole rows wait in Arrow spill files
    (`spill_dir`, by default a temporary folder when the pipeline runs on this machine), which
    is about twice as fast and holds about a fifth of the memory on the local runners. On
    another runner give a `spill_dir` every worker reaches (`gs://...`), or whole rows are
    shuffled. Order is kept within each input batch with spill files, not kept otherwise.
    Output: `Deduplicated(output, error)`; `error` stays empty (no row is rejected), and a spec
    reads only `output`.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT,)
    HIDDEN_OUTPUTS: ClassVar[tuple[str, ...]] = (ERROR,)  # always empty: see the docstring

    def __init__(
        self,
        columns: list[str] | None = None,
        *,
        keep: str = "first",
        order_by: str | None = None,
        batch_rows: int = 65_536,
        buckets: int = 64,
        spill_dir: str | None = None,
        spill: bool | None = None,
    ) -> None:
        """Args:
        columns: key columns; all visible columns when not given.
        keep: `first` or `last` by `order_by`, then by file and line.
        order_by: column deciding which duplicate survives.
        batch_rows: rows per output batch (when whole rows are shuffled).
        buckets: hash buckets the input is spread over (the shuffle's parallelism).
        spill_dir: folder (local or any Beam file system) for the spill files of rows while
            only keys are shuffled; each run uses, then removes, a fresh subfolder.
        spill: force (True) or forbid (False) spill files; by default they are used with key
            `columns` when `spill_dir` is given or the pipeline runs on this machine.
        """
        super().__init__()
        if keep not in KEEP:
            raise ValueError(f"`keep` must be one of {', '.join(KEEP)}, not `{keep}`")
        if columns is not None and (not columns or not all(isinstance(c, str) for c in columns)):
            raise ValueError("`columns` must list at least one column name")
        if buckets < 1:
            raise ValueError(f"`buckets` must be at least 1, not `{buckets}`")
        self.columns = list(columns) if columns else None
        self.keep = keep
        self.order_by = order_by
        self.batch_rows = batch_rows
        self.buckets = buckets
        self.spill_dir = spill_dir
        self.spill = spill
        if spill and not columns:
            raise ValueError("Spill files need key `columns` (without, whole rows are the keys)")

    def infer_schema(self, schema):
        from beam_etl.transforms.cleaning import check_columns

        check_columns(schema, [*(self.columns or []), *([self.order_by] if self.order_by else [])])
        return schema

    def expand(self, batches):
        if self.columns and use_spill(batches, self.spill_dir, self.spill):
            select = functools.partial(losers, self.columns, self.keep, self.order_by)
            # `staging`: the CLI removes it after a failed run (a successful one removes it).
            self.staging = spill_folder(self.spill_dir, self.label)
            spilled = batches | "BySpill" >> SpillByKey(
                self.label,
                self.columns,
                carry=[self.order_by] if self.order_by else [],
                buckets=self.buckets,
                folder=self.staging,
                select=select,
                action="drop",
            )
            return Deduplicated(spilled.output, spilled.error)
        survivors = (
            batches
            | "Shuffle" >> GroupByKeyBuckets(self.columns, self.buckets)
            | "Survivors"
            >> beam.ParDo(
                _DedupeBucketFn(self.label, self.columns, self.keep, self.order_by, self.batch_rows)
            ).with_outputs(ERROR, main=OUTPUT)
        )
        return Deduplicated(survivors[OUTPUT], survivors[ERROR])
