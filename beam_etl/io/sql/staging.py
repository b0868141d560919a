"""The staged parts of a database sink: reading them back, numbering and screening their rows,
the origin (file, line) of each, and the Arrow choice of the last row per key.
"""

import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import FILE_COLUMN, LINE_COLUMN, payload_of
from beam_etl.core.deadletter import DB_CONSTRAINT, DeadLetter
from beam_etl.core.publish import staged
from beam_etl.io._files import Part
from beam_etl.io.sql.values import readable_rows, unloadable

ROW_COLUMN: Final = "__beam_etl_row"  # staging row number: bisects and dedup ties use it


def staging_folder(staging_path: str | None, target: str) -> str:
    """Return a fresh local folder for the staged parts of one write to `target`."""
    base = staging_path or os.path.join(tempfile.gettempdir(), ".beam_etl-staging")
    return staged(os.path.join(base, f"{target}-{uuid.uuid4().hex[:12]}"))


def read_parts(parts: list[Part]) -> Iterator[pa.RecordBatch]:
    """Yield the staged batches of every part, in order.

    Read through a plain file, not memory-mapped: a mapped part counts in the process's
    resident memory as its pages are touched (the whole load, for a full pass), where a read
    holds one batch at a time."""
    for path, _ in parts:
        with pa.OSFile(path, "rb") as source, pa.ipc.open_stream(source) as reader:
            yield from reader


def parts_schema(parts: list[Part]) -> pa.Schema | None:
    """Return the unified schema of the staged parts, or None when nothing was staged."""
    schemas = []
    for path, _ in parts:
        with pa.OSFile(path, "rb") as source, pa.ipc.open_stream(source) as reader:
            schemas.append(reader.schema)
    return pa.unify_schemas(schemas, promote_options="permissive") if schemas else None


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Return `batch` with the columns of `schema` in its order (missing ones null)."""
    arrays = []
    for f in schema:
        if f.name in batch.schema.names:
            column = batch.column(f.name)
            arrays.append(column if column.type == f.type else pc.cast(column, f.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class StagedOrigins:
    """Stages the origin of each row (its file as a small integer code, and its line) and
    numbers the rows.

    A path per row would make staging a narrow table about half again as large.
    """

    FIELDS: Final = (
        pa.field(FILE_COLUMN, pa.int32()),
        pa.field(LINE_COLUMN, pa.int64()),
        pa.field(ROW_COLUMN, pa.int64()),
    )

    def __init__(self, dialect: str | None = None) -> None:
        self.files: list[str] = []
        self._codes: dict[str, int] = {}
        self._rows = 0
        self.dialect = dialect
        #: Rows refused before staging (`unloadable` in `dialect`), with why.
        self.screened: list[tuple[dict[str, Any], str]] = []

    def batches(self, parts: list[Part], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """Yield the staged batches conformed to `schema`, file names replaced by codes;
        rows `unloadable` in the dialect are kept back in `screened`."""
        for batch in read_parts(parts):
            if FILE_COLUMN in batch.schema.names:
                column = batch.column(FILE_COLUMN)
                if not pa.types.is_dictionary(column.type):
                    column = column.dictionary_encode()
                codes = [self._code(name) for name in column.dictionary.to_pylist()]
                encoded = pc.take(pa.array(codes, pa.int32()), column.indices)
                index = batch.schema.get_field_index(FILE_COLUMN)
                batch = batch.set_column(index, FILE_COLUMN, encoded)
            batch = conform(batch, schema)
            refused = unloadable(batch, self.dialect) if self.dialect else {}
            if refused:
                indices = sorted(refused)
                rows = readable_rows(batch.take(pa.array(indices, pa.int64())))
                self.screened += [(row, refused[i]) for i, row in zip(indices, rows)]
                kept = np.ones(batch.num_rows, dtype=bool)
                kept[indices] = False
                batch = batch.filter(pa.array(kept))
            # Row numbers from 1 in staging order (cheaper than a server-side sequence).
            numbers = pa.array(np.arange(self._rows + 1, self._rows + 1 + batch.num_rows))
            self._rows += batch.num_rows
            yield batch.set_column(len(schema) - 1, ROW_COLUMN, numbers)

    def screen(self, parts: list[Part], fields: list[pa.Field]) -> None:
        """Screen every staged row of `fields` (nothing is kept): `screened` then holds each
        row the dialect cannot store, with why."""
        for _ in self.batches(parts, pa.schema([*fields, *self.FIELDS])):
            pass

    def _code(self, name: str) -> int:
        if name not in self._codes:
            self._codes[name] = len(self.files)
            self.files.append(name)
        return self._codes[name]

    def reject(
        self, step: str, table: str, keys: list[str], row: dict[str, Any], message: str
    ) -> DeadLetter:
        """Return the `db_constraint` dead letter for a staged row the database refused."""
        code = row.get(FILE_COLUMN)
        source = self.files[code] if code is not None else table
        payload = payload_of(row)  # hidden columns (origin, row number) left out
        key = ",".join(str(row.get(k)) for k in keys) if keys else None
        return DeadLetter(step, DB_CONSTRAINT, message, source, row.get(LINE_COLUMN), key, payload)


def numbered(parts: list[Part], names: list[str]) -> Iterator[pa.RecordBatch]:
    """Yield the columns `names` of the staged parts (null where a part lacks one) with the
    row numbers `StagedOrigins` gives them when it screens nothing out."""
    schema, rows = parts_schema(parts), 0
    if schema is None:
        return
    wanted = pa.schema([schema.field(n) for n in dict.fromkeys(names)])  # each name once
    for batch in read_parts(parts):
        numbers = pa.array(np.arange(rows + 1, rows + 1 + batch.num_rows))
        rows += batch.num_rows
        yield conform(batch, wanted).append_column(ROW_COLUMN, numbers)


def own_columns(batch: pa.RecordBatch, names: list[str]) -> pa.Table:
    """Return the columns `names` of `batch` copied out: a batch read from an IPC file keeps
    its whole message body alive as long as any of its columns lives, so holding only the key
    columns of every batch would otherwise hold every column of every batch."""
    return pa.table({name: pa.concat_arrays([batch.column(name)]) for name in names})


def distinct_keys(table: pa.Table, keys: list[str]) -> int:
    """Return how many distinct non-null-free key tuples `table` holds (its keys have no
    nulls). Counted by sorting: Arrow's hash grouping takes about 85 bytes a row (250 MiB for
    3M keys), sorting about 30. Float keys are grouped (NaN equals NaN there, as in SQL)."""
    rows = table.num_rows
    if rows < 2:
        return rows
    if any(pa.types.is_floating(table.schema.field(k).type) for k in keys):
        return table.group_by(keys).aggregate([]).num_rows
    ordered = table.select(keys).take(pc.sort_indices(table, [(k, "ascending") for k in keys]))
    return int(np.count_nonzero(_key_starts(ordered, keys)))


def _key_starts(ordered: pa.Table, keys: list[str]) -> np.ndarray:
    """Return where a new key begins in `ordered` (sorted by `keys`): True at row 0 and at
    every row whose key differs from the row before (a null never equals anything)."""
    rows = ordered.num_rows
    starts = np.ones(rows, dtype=bool)
    if rows > 1:
        same = np.ones(rows - 1, dtype=bool)
        for key in keys:
            column = ordered.column(key)
            equal = pc.equal(column.slice(1), column.slice(0, rows - 1)).fill_null(False)
            same &= equal.to_numpy(zero_copy_only=False)
        starts[1:] = ~same
    return starts


def last_rows(
    batches: Iterator[pa.RecordBatch], keys: list[str], sort: str | None
) -> pa.Array | None:
    """Return the staging row numbers (`ROW_COLUMN`) to keep so that every non-null key is
    loaded once: per key the row with the largest `sort` (nulls lowest), ties and no `sort`
    to the last staged; every row with a null key is kept (the target refuses or keeps it as
    it would). None when no key repeats: keep everything.

    Arrow compares bytes, which is at least as fine as any database's equality, so a database
    dedupe run after this one still sees what it would have seen without it (less of it)."""
    names = [*keys, *([sort] if sort and sort not in keys else []), ROW_COLUMN]
    tables = [own_columns(b, names) for b in batches if b.num_rows]
    if not tables:
        return None
    table = pa.concat_tables(tables).combine_chunks()
    order = [(k, "ascending", "at_end") for k in keys]
    if sort and sort not in keys:
        order.append((sort, "descending", "at_end"))
    order.append((ROW_COLUMN, "descending", "at_end"))
    ordered = table.take(pc.sort_indices(table, sort_keys=order))
    starts = _key_starts(ordered, keys)
    if starts.all():
        return None
    return ordered.column(ROW_COLUMN).filter(pa.array(starts)).combine_chunks()
