"""Deduplication by key that shuffles only the keys: whole rows wait in spill files.

The plain way (`GroupByKeyBuckets`) sends every row through the runner's shuffle. When the
key is a few columns, most of those bytes are wasted, and a local runner keeps all of them in
memory. Here each worker writes its batches, whole, to Arrow IPC spill files (one per bundle)
and sends through the shuffle only what decides the survivor: the key columns, `order_by`,
origin file and line (a content hash where lines are unknown), and where the row waits
(file, row number). Each hash bucket of keys yields its losers; a last step reads every spill
file back, memory-mapped, and leaves the losers out. Then the spill folder is removed.

The spill folder must be reachable by every worker: a local folder for the local runners
(one process or several on this machine), a shared one (any Beam file system path,
`gs://...`, `s3://...`, ...) on a cluster.
"""

import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_etl.batches import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN
from beam_etl.metrics import ROWS_DROPPED, step_counter
from beam_etl.transforms._buckets import split_by_key, text_hash

PART: Final = "__beam_etl_part"
ROW: Final = "__beam_etl_row"
CONTENT: Final = "__beam_etl_content"
_PARTS: Final = "parts"
_DONE: Final = "done"


def _is_local(path: str) -> bool:
    return "://" not in path


def content_hash(batch: pa.RecordBatch) -> pa.Array:
    """Return a stable 64-bit hash of every row's visible, non-nested values."""
    combined = np.zeros(batch.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for field in batch.schema:
            if field.name.startswith(HIDDEN_PREFIX) or pa.types.is_nested(field.type):
                continue
            combined = combined * np.uint64(1000003) ^ text_hash(batch.column(field.name))
    return pa.array(combined)


def key_batch(
    batch: pa.RecordBatch, columns: list[str], order_by: str | None, part: str, first_row: int
) -> pa.RecordBatch:
    """Return what decides the survivor for each row of `batch`, and where the row waits."""
    names = batch.schema.names
    wanted = [*columns, *([order_by] if order_by and order_by not in columns else [])]
    wanted += [name for name in (FILE_COLUMN, LINE_COLUMN) if name in names]
    arrays = [batch.column(name) for name in wanted]
    if LINE_COLUMN not in names or batch.column(LINE_COLUMN).null_count:
        wanted.append(CONTENT)
        arrays.append(content_hash(batch))
    n = batch.num_rows
    wanted += [PART, ROW]
    arrays.append(pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [part]))
    arrays.append(pa.array(np.arange(first_row, first_row + n, dtype=np.int64)))
    return pa.RecordBatch.from_arrays(arrays, names=wanted)


class _SpillFn(beam.DoFn):
    """Writes each bundle's batches to spill files; emits keys by bucket, and the files."""

    def __init__(self, folder: str, columns: list[str], order_by: str | None, buckets: int):
        self._folder = folder
        self._columns = columns
        self._order_by = order_by
        self._buckets = buckets

    def start_bundle(self) -> None:
        self._file: Any = None
        self._written: list[str] = []

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        if not batch.num_rows:
            return
        if self._file is None or batch.schema != self._schema:
            self._close()
            self._open(batch.schema)
        first = self._rows
        self._writer.write_batch(batch)
        self._rows += batch.num_rows
        keys = key_batch(batch, self._columns, self._order_by, self._path, first)
        yield from split_by_key(self._columns, self._buckets, keys)

    def finish_bundle(self) -> Iterator[Any]:
        self._close()
        for path in self._written:
            yield beam.pvalue.TaggedOutput(
                _PARTS, WindowedValue(path, MIN_TIMESTAMP, (GlobalWindow(),))
            )

    def _open(self, schema: pa.Schema) -> None:
        self._path = f"{self._folder.rstrip('/')}/spill-{uuid.uuid4().hex}.arrow"
        if _is_local(self._path):
            os.makedirs(self._folder, exist_ok=True)
            self._file = pa.OSFile(self._path, "wb")
        else:
            self._file = FileSystems.create(self._path)
        self._writer = pa.ipc.new_stream(self._file, schema)  # dictionaries may change
        self._schema = schema
        self._rows = 0

    def _close(self) -> None:
        if self._file is not None:
            self._writer.close()
            self._file.close()
            self._written.append(self._path)
            self._file = None


class _LosersFn(beam.DoFn):
    """For one bucket of keys, yields `(spill file, row numbers)` of the rows that lose."""

    def __init__(self, step: str, columns: list[str], keep: str, order_by: str | None):
        self._step = step
        self._columns = columns
        self._keep = keep
        self._order_by = order_by

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, bucket: tuple[int, Iterable[pa.RecordBatch]]) -> Iterator[Any]:
        from beam_etl.transforms.dedupe import survivor_indices

        tables = [pa.Table.from_batches([part]) for part in bucket[1]]
        keys = pa.concat_tables(tables, promote_options="permissive")
        tiebreak = [CONTENT] if CONTENT in keys.schema.names else []
        winners = survivor_indices(keys, self._columns, self._keep, self._order_by, tiebreak)
        if len(winners) == keys.num_rows:
            return
        lost = np.ones(keys.num_rows, dtype=bool)
        lost[winners.to_numpy()] = False
        self._dropped.inc(int(lost.sum()))
        losers = pa.table(
            {
                PART: pc.cast(keys.column(PART), pa.string()).filter(pa.array(lost)),
                ROW: keys.column(ROW).filter(pa.array(lost)),
            }
        )
        grouped = losers.group_by(PART, use_threads=False).aggregate([(ROW, "list")])
        for path, rows in zip(grouped.column(PART).to_pylist(), grouped.column(f"{ROW}_list")):
            yield path, np.asarray(rows.values.to_numpy(), dtype=np.int64)


class _ReadBackFn(beam.DoFn):
    """Reads a spill file back, without its losers; then says it is done with it."""

    def process(self, path: str, losers: Any) -> Iterator[Any]:
        dropped = [np.asarray(rows) for rows in losers[path]]
        lost = np.concatenate(dropped) if dropped else np.zeros(0, np.int64)
        if _is_local(path):
            source = pa.memory_map(path)
        else:
            with FileSystems.open(path) as stream:
                source = pa.BufferReader(stream.read())
        first = 0
        for batch in pa.ipc.open_stream(source):
            rows = np.arange(first, first + batch.num_rows)
            first += batch.num_rows
            if len(lost):
                batch = batch.filter(pa.array(~np.isin(rows, lost)))
            if batch.num_rows:
                yield batch
        yield beam.pvalue.TaggedOutput(_DONE, path)


def _remove_folder(_done: list[str], folder: str) -> None:
    """Remove the spill folder once every file was read back (a failed run leaves it)."""
    if FileSystems.exists(folder):
        FileSystems.delete([folder])


class DedupeBySpill(beam.PTransform):
    """`DropDuplicates` by key columns, shuffling only keys (see this module)."""

    def __init__(
        self,
        step: str,
        columns: list[str],
        keep: str,
        order_by: str | None,
        buckets: int,
        folder: str,
    ) -> None:
        super().__init__()
        self._step = step
        self._columns = columns
        self._keep = keep
        self._order_by = order_by
        self._buckets = buckets
        self._folder = folder

    def expand(self, batches):
        spill = _SpillFn(self._folder, self._columns, self._order_by, self._buckets)
        spilled = batches | "Spill" >> beam.ParDo(spill).with_output_types(
            tuple[int, pa.RecordBatch]
        ).with_outputs(_PARTS, main="keys")
        losers = (
            spilled.keys
            | "GroupKeys" >> beam.GroupByKey()
            | "Losers"
            >> beam.ParDo(_LosersFn(self._step, self._columns, self._keep, self._order_by))
        )
        read = (
            spilled[_PARTS]
            | "Distribute" >> beam.Reshuffle()
            | "ReadBack"
            >> beam.ParDo(_ReadBackFn(), beam.pvalue.AsMultiMap(losers)).with_outputs(
                _DONE, main="rows"
            )
        )
        _ = (
            read[_DONE]
            | "AllRead" >> beam.combiners.ToList()
            | "RemoveSpill" >> beam.Map(_remove_folder, self._folder)
        )
        return read.rows
