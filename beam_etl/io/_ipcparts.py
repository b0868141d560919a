"""Staging as Arrow IPC stream files: what sinks that load or render at publish time share.

A bundle's batches are written as they come (bounded memory), one part per distinct schema;
at publish, `parts_schema` unifies the parts' schemas and `read_parts` streams them back
conformed to it.
"""

from collections.abc import Iterator

import pyarrow as pa

from beam_etl.core.batches import conform_columns, visible
from beam_etl.io._files import Part, RollingWriter


class IpcPartWriter(RollingWriter):
    """Stages a bundle's batches as Arrow IPC stream files, one per distinct schema.

    Hidden origin columns are dropped unless `keep_origin` (a database sink keeps them, to
    name the file and line of a row the database refuses).
    """

    suffix = ".arrows"

    def __init__(self, folder: str, keep_origin: bool = False) -> None:
        super().__init__(folder)
        self._keep_origin = keep_origin
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema: pa.Schema | None = None
        self._path = ""
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if not self._keep_origin:
            batch = visible(batch)
        if batch.num_rows == 0:
            return
        if self._writer is not None and not batch.schema.equals(self._schema):
            self._close_current()
        if self._writer is None:
            self._path = self.new_path()
            self._schema = batch.schema
            self._writer = pa.ipc.new_stream(self._path, batch.schema)
            self._rows = 0
        self._writer.write_batch(batch)
        self._rows += batch.num_rows


def parts_schema(parts: list[Part]) -> pa.Schema:
    """Return one schema for all staged parts: columns in first-seen order, types promoted."""
    schemas = []
    for path, _ in parts:
        with pa.OSFile(path, "rb") as source, pa.ipc.open_stream(source) as reader:
            schemas.append(reader.schema)
    if not schemas:
        return pa.schema([])
    return pa.unify_schemas(schemas, promote_options="permissive")


def read_parts(parts: list[Part], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Yield the staged batches one at a time, conformed to `schema` (missing columns null)."""
    for path, _ in parts:
        with pa.OSFile(path, "rb") as source, pa.ipc.open_stream(source) as reader:
            for batch in reader:
                yield batch if batch.schema.equals(schema) else conform_columns(batch, schema)
