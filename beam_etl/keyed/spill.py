"""Keyed work that shuffles only the keys: whole rows wait in spill files meanwhile.

Sending every row through the runner's shuffle wastes most of its bytes when the key is a
few columns, and a local runner keeps all of them in memory. Here each worker writes its
batches, whole, to Arrow IPC spill files (one per bundle), and sends through the shuffle, in
hash buckets of the key, only what the decision needs: the key columns, the `carry` columns
(an `order_by`), origin file and line (and a content hash where lines are unknown), and where
each row waits (spill file, row number). A `select` function sees a whole bucket of keys and
names the rows to act on; a last step reads every spill file back, memory-mapped, and drops,
rejects or only counts those rows. Then the spill folder is removed.

Used by `DropDuplicates` (the rows that lose) and `CheckUnique` (every row of a repeated key).
The spill folder must be reachable by every worker: a local folder for the local runners
(one process or several on this machine), a shared one (a mount, `gs://...`) on a cluster.
"""

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_etl.core.batches import FILE_COLUMN, LINE_COLUMN, concat_batches
from beam_etl.core.deadletter import ERROR, OUTPUT, rejects_from_mask
from beam_etl.core.local import runs_locally
from beam_etl.core.metrics import ROWS_DROPPED, step_counter
from beam_etl.core.publish import remove_tree, staged
from beam_etl.keyed.buckets import split_by_key, tie_hash

PART: Final = "__beam_etl_part"
ROW: Final = "__beam_etl_row"
CONTENT: Final = "__beam_etl_content"
NOTE: Final = "__beam_etl_note"
ACTIONS: Final = ("drop", "reject", "keep", "pick")
#: With `pick`, a note starting with this marks a row to reject: `!reason:message`.
REJECT_NOTE: Final = "!"
_PARTS: Final = "parts"
_DONE: Final = "done"
_ROWS: Final = "row_counts"
_SUMMARY: Final = "summary"
_DEFAULT_BASE: Final = "beam_etl_spill"
_EMPTY: Final = pa.RecordBatch.from_pydict({})

#: `select(keys)` (or `select(keys, bucket)` with `every_bucket`) returns the rows to act on,
#: as a table of `PART` (text) and `ROW` (and, for `reject`, `NOTE`: the dead letter's message;
#: for `pick`, `NOTE`: the value of the picked row's `NOTE` column, or `!reason:message` to
#: reject it), plus summary items for the caller.
Select = Callable[..., tuple[pa.Table, list[Any]]]


def spill_folder(spill_dir: str | None, label: str) -> str:
    """Return a fresh folder for one transform's spill files, under `spill_dir` (or temp)."""
    base = spill_dir or os.path.join(tempfile.gettempdir(), _DEFAULT_BASE)
    return staged(f"{base.rstrip('/')}/{label.replace('/', '_')}-{uuid.uuid4().hex[:12]}")


def use_spill(pcoll: Any, spill_dir: str | None, spill: bool | None) -> bool:
    """Whether to spill `pcoll`: when `spill` says so, else by default in the global window
    (batch data) when a `spill_dir` is given or the pipeline runs on this machine."""
    from apache_beam.transforms.window import GlobalWindows

    if spill is not None:
        return spill
    if not isinstance(pcoll.windowing.windowfn, GlobalWindows):
        return False
    return spill_dir is not None or runs_locally(pcoll.pipeline)


def _is_local(path: str) -> bool:
    return "://" not in path


def key_batch(
    batch: pa.RecordBatch,
    columns: list[str],
    carry: list[str],
    part: str,
    first_row: int,
    ties: bool = True,
) -> pa.RecordBatch:
    """Return what decides about each row of `batch`, and where the row waits (with `ties`,
    the content hash that orders duplicates without an origin line)."""
    names = batch.schema.names
    wanted = [*columns, *(c for c in carry if c not in columns)]
    wanted += [name for name in (FILE_COLUMN, LINE_COLUMN) if name in names]
    arrays = [batch.column(name) for name in wanted]
    content = tie_hash(batch) if ties else None
    if content is not None:
        wanted.append(CONTENT)
        arrays.append(content)
    n = batch.num_rows
    wanted += [PART, ROW]
    arrays.append(pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [part]))
    arrays.append(pa.array(np.arange(first_row, first_row + n, dtype=np.int64)))
    return pa.RecordBatch.from_arrays(arrays, names=wanted)


class _SpillFn(beam.DoFn):
    """Writes each bundle's batches to spill files; emits keys by bucket, and the files."""

    def __init__(
        self,
        folder: str,
        columns: list[str],
        carry: list[str],
        buckets: int,
        ties: bool = True,
        every_bucket: bool = False,
        by_value: bool = False,
    ):
        self._folder = folder
        self._columns = columns
        self._carry = carry
        self._buckets = buckets
        self._ties = ties
        self._every_bucket = every_bucket
        self._by_value = by_value

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
        keys = key_batch(batch, self._columns, self._carry, self._path, first, self._ties)
        yield from split_by_key(self._columns, self._buckets, keys, self._by_value)

    def finish_bundle(self) -> Iterator[Any]:
        self._close()
        if self._every_bucket:  # an empty mark per bucket: `select` runs for every bucket
            # (emitted here, not flattened in: a Flatten makes local runners copy every key)
            for bucket in range(self._buckets):
                yield WindowedValue((bucket, _EMPTY), MIN_TIMESTAMP, (GlobalWindow(),))
        for path in self._written:
            yield beam.pvalue.TaggedOutput(
                _PARTS, WindowedValue(path, MIN_TIMESTAMP, (GlobalWindow(),))
            )

    def teardown(self) -> None:
        if getattr(self, "_file", None) is not None:  # a failed bundle: its file is abandoned
            with contextlib.suppress(Exception):
                self._file.close()

    def _open(self, schema: pa.Schema) -> None:
        self._path = f"{self._folder}/spill-{uuid.uuid4().hex}.arrow"
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


class _SelectFn(beam.DoFn):
    """For one bucket of keys, yields `(spill file, (rows, notes))` of the rows to act on."""

    def __init__(self, select: Select, with_bucket: bool = False) -> None:
        self._select = select
        self._with_bucket = with_bucket

    def process(self, bucket: tuple[int, Iterable[pa.RecordBatch]]) -> Iterator[Any]:
        # With `every_bucket`, an empty batch (no columns) marks each bucket: skip those.
        keys = concat_batches(b for b in bucket[1] if b.num_columns)
        yield beam.pvalue.TaggedOutput(_ROWS, keys.num_rows)
        if self._with_bucket:
            chosen, summary = self._select(keys, bucket[0])
        else:
            chosen, summary = self._select(keys)
        del keys
        # mimalloc keeps freed pages for reuse: give them back, one bucket at a time, so a
        # run's peak memory is its largest bucket, not the sum of every bucket seen.
        pa.default_memory_pool().release_unused()
        for item in summary:
            yield beam.pvalue.TaggedOutput(_SUMMARY, item)
        if not chosen.num_rows:
            return
        chosen = chosen.set_column(0, PART, pc.cast(chosen.column(PART), pa.string()))
        aggregates = [(ROW, "list"), *([(NOTE, "list")] if NOTE in chosen.column_names else [])]
        grouped = chosen.group_by(PART, use_threads=False).aggregate(aggregates)
        notes = (
            grouped.column(f"{NOTE}_list").to_pylist()
            if NOTE in chosen.column_names
            else [None] * grouped.num_rows
        )
        for path, rows, note in zip(
            grouped.column(PART).to_pylist(), grouped.column(f"{ROW}_list"), notes
        ):
            yield path, (np.asarray(rows.values.to_numpy(), dtype=np.int64), note)


class _ReadBackFn(beam.DoFn):
    """Reads a spill file back and drops, rejects or keeps its chosen rows."""

    def __init__(
        self,
        step: str,
        action: str,
        reason: str | None,
        folder: str,
        check: Callable[[list[Any]], None] | None,
    ) -> None:
        self._step = step
        self._action = action
        self._reason = reason
        self._folder = folder
        self._check = check

    def setup(self) -> None:
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, path: str, chosen: Any, *gates: Any) -> Iterator[Any]:
        if self._check is not None:
            try:
                self._check([value for gate in gates for value in gate])
            except Exception:
                remove_folder(self._folder)  # the run stops here: nothing to read back
                raise
        entries = list(chosen[path])
        rows = np.concatenate([r for r, _ in entries]) if entries else np.zeros(0, np.int64)
        noted = bool(entries) and all(notes is not None for _, notes in entries)
        notes = [note for _, entry in entries for note in entry] if noted else []
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        notes = [notes[i] for i in order] if notes else []
        first = 0
        for batch in pa.ipc.open_stream(self._open(path)):
            n = batch.num_rows
            # `rows` is sorted: this batch's chosen rows are one run of it.
            low, high = np.searchsorted(rows, [first, first + n])
            if self._action == "pick":
                yield from self._pick(batch, rows[low:high] - first, notes[low:high])
                first += n
                continue
            if high > low and self._action != "keep":
                hit = np.zeros(n, dtype=bool)
                hit[rows[low:high] - first] = True
                if self._action == "drop":
                    self._dropped.inc(int(high - low))
                else:
                    messages = notes[low:high]
                    for letter in rejects_from_mask(
                        batch,
                        pa.array(hit),
                        step=self._step,
                        reason=self._reason or "",
                        messages=messages,
                    ):
                        yield beam.pvalue.TaggedOutput(ERROR, letter)
                batch = batch.filter(pa.array(~hit))
            first += n
            if batch.num_rows:
                yield batch
        pa.default_memory_pool().release_unused()  # see `_SelectFn`
        yield beam.pvalue.TaggedOutput(_DONE, path)

    def _pick(self, batch: pa.RecordBatch, rows: np.ndarray, notes: list[str]) -> Iterator[Any]:
        """Yield the picked `rows` of `batch` with their notes as column `NOTE`, and the rows
        noted `!reason:message` as dead letters; count the rest as dropped."""
        self._dropped.inc(batch.num_rows - len(rows))
        if not len(rows):
            return
        rejected = [i for i, note in enumerate(notes) if note.startswith(REJECT_NOTE)]
        if rejected:
            by_reason: dict[str, list[int]] = {}
            for i in rejected:
                by_reason.setdefault(notes[i][1:].partition(":")[0], []).append(i)
            for reason, picked in by_reason.items():
                hit = np.zeros(batch.num_rows, dtype=bool)
                hit[rows[picked]] = True
                messages = [notes[i][1:].partition(":")[2] for i in picked]  # rows sorted
                yield from (
                    beam.pvalue.TaggedOutput(ERROR, letter)
                    for letter in rejects_from_mask(
                        batch, pa.array(hit), step=self._step, reason=reason, messages=messages
                    )
                )
            keep = np.ones(len(rows), dtype=bool)
            keep[rejected] = False
            rows, notes = rows[keep], [n for n, k in zip(notes, keep) if k]
            if not len(rows):
                return
        picked = batch.take(pa.array(rows))  # sorted: the batch's order
        yield picked.append_column(NOTE, pa.array(notes, pa.string()))

    @staticmethod
    def _open(path: str) -> Any:
        if _is_local(path):
            return pa.OSFile(path, "rb")  # not mapped: its pages would count as the run's memory
        with FileSystems.open(path) as stream:
            return pa.BufferReader(stream.read())


def _remove_folder(_done: list[str], folder: str) -> None:
    """Remove the spill folder once every file was read back (a crashed run leaves it)."""
    remove_folder(folder)


def remove_folder(folder: str) -> None:
    """Remove a spill folder, local or on a Beam file system; a missing one is fine."""
    remove_tree(folder)
    parent = os.path.dirname(folder)
    if _is_local(folder) and os.path.basename(parent) == _DEFAULT_BASE:
        with contextlib.suppress(OSError):  # not empty: another transform spills there
            os.rmdir(parent)


class SpilledResult(NamedTuple):
    """What `SpillByKey` gives: rows kept, dead letters, and what `gate` made of the keys."""

    output: Any
    error: Any
    gate: Any


#: `gate(rows, summary)` makes a PCollection from the row counts and summary items of the
#: keys (a check's result); rows are read back only once it is computed (a side input), and
#: `check(values)` is called on it first: when it raises, the spill folder is removed and the
#: run fails before any row goes on.
Gate = Callable[[Any, Any], Any]


class SpillByKey(beam.PTransform):
    """Spill rows, shuffle their keys, and drop / reject / keep the rows `select` names.

    Returns a `SpilledResult`.
    """

    def __init__(
        self,
        step: str,
        columns: list[str],
        *,
        carry: list[str],
        buckets: int,
        folder: str,
        select: Select,
        action: str,
        reason: str | None = None,
        gate: Gate | None = None,
        check: Callable[[list[Any]], None] | None = None,
        every_bucket: bool = False,
        ties: bool = True,
        by_value: bool = False,
    ) -> None:
        super().__init__()
        if action not in ACTIONS:
            raise ValueError(f"`action` must be one of {', '.join(ACTIONS)}, not `{action}`")
        self._step = step
        self._columns = columns
        self._carry = carry
        self._buckets = buckets
        self._folder = folder
        self._select = select
        self._action = action
        self._reason = reason
        self._gate = gate
        self._check = check
        self._every_bucket = every_bucket
        self._ties = ties
        self._by_value = by_value  # bucket keys by `fast_row_hash`

    # No return annotation: Beam reads it as the output type hint and warns, on every pipeline,
    # that a NamedTuple of PCollections is not one.
    def expand(self, batches):
        spill = _SpillFn(
            self._folder,
            self._columns,
            self._carry,
            self._buckets,
            self._ties,
            self._every_bucket,
            self._by_value,
        )
        spilled = batches | "Spill" >> beam.ParDo(spill).with_output_types(
            tuple[int, pa.RecordBatch]
        ).with_outputs(_PARTS, main="keys")
        selected = (
            spilled.keys
            | "GroupKeys" >> beam.GroupByKey()
            | "Select"
            >> beam.ParDo(_SelectFn(self._select, self._every_bucket)).with_outputs(
                _SUMMARY, _ROWS, main="rows"
            )
        )
        gate = self._gate(selected[_ROWS], selected[_SUMMARY]) if self._gate else None
        waits = [beam.pvalue.AsList(gate)] if gate is not None else []
        read = (
            spilled[_PARTS]
            | "Distribute" >> beam.Reshuffle()
            | "ReadBack"
            >> beam.ParDo(
                _ReadBackFn(self._step, self._action, self._reason, self._folder, self._check),
                beam.pvalue.AsMultiMap(selected.rows),
                *waits,
            ).with_outputs(_DONE, ERROR, main=OUTPUT)
        )
        _ = (
            read[_DONE]
            | "AllRead" >> beam.combiners.ToList()
            | "RemoveSpill" >> beam.Map(_remove_folder, self._folder)
        )
        return SpilledResult(read[OUTPUT], read[ERROR], gate)
