"""Parquet sink on pyarrow: one folder of part files, published atomically at the end."""

import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from beam_etl.batches import visible
from beam_etl.io._files import (
    BundleWriter,
    Part,
    StageAndPublish,
    new_run_id,
    publish_folder,
    staging_dir,
)

_COMPRESSIONS = ("snappy", "gzip", "brotli", "zstd", "lz4", "none")


DEFAULT_ROW_GROUP_ROWS = 262_144


class _ParquetWriter(BundleWriter):
    """Writes a bundle's batches to part files, gathering them into row groups of
    `row_group_size` rows (small batches would otherwise make small row groups)."""

    suffix = ".parquet"

    def __init__(self, folder: str, compression: str, row_group_size: int | None) -> None:
        super().__init__(folder)
        self._compression = compression
        self._row_group_size = row_group_size or DEFAULT_ROW_GROUP_ROWS
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._path = ""
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        batch = visible(batch)
        if batch.num_rows == 0:
            return
        if self._writer is not None and not batch.schema.equals(self._writer.schema):
            self._close_current()  # a batch of another shape starts a part of its own
        if self._writer is None:
            self._path = self.new_path()
            self._writer = pq.ParquetWriter(self._path, batch.schema, compression=self._compression)
            self._rows = 0
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self._row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._writer is not None and self._pending:
            table = pa.Table.from_batches(self._pending)
            self._writer.write_table(table, row_group_size=self._row_group_size)
            self._rows += table.num_rows
        self._pending, self._pending_rows = [], 0

    def _close_current(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self.parts.append((self._path, self._rows))
            self._writer = None

    def close(self) -> list[Part]:
        self._close_current()
        return self.parts


class _MakeParquetWriter:
    def __init__(self, compression: str, row_group_size: int | None) -> None:
        self._compression = compression
        self._row_group_size = row_group_size

    def __call__(self, folder: str) -> _ParquetWriter:
        return _ParquetWriter(folder, self._compression, self._row_group_size)


class _PublishParquet:
    def __init__(self, path: str, folder: str, run_id: str) -> None:
        self._path = path
        self._folder = folder
        self._run_id = run_id

    def __call__(self, parts: list[Part]) -> int:
        return publish_folder(self._path, self._folder, parts, ".parquet", self._run_id)


class WriteToParquet(beam.PTransform):
    """Write record batches to a folder of Parquet files (`part-00000.parquet`, ...).

    The folder is replaced as a whole when the run's last bundle is done: readers see the old
    complete output or the new one, never a mix; a re-run replaces, never duplicates. Hidden
    origin columns are dropped. Batches whose schemas differ go to separate part files.
    Output: one element, the number of rows written.
    """

    def __init__(
        self,
        path: str,
        *,
        compression: str = "snappy",
        row_group_size: int | None = None,
        run_id: str | None = None,
    ) -> None:
        """Args:
        path: the output folder; replaced only if empty or written by beam_etl before.
        compression: one of snappy, gzip, brotli, zstd, lz4, none.
        row_group_size: rows per row group (262,144 when not given).
        run_id: recorded in the folder's `_SUCCESS` marker; a fresh id when not given.
        """
        super().__init__()
        if compression not in _COMPRESSIONS:
            raise ValueError(
                f"Unknown compression `{compression}`; use one of {', '.join(_COMPRESSIONS)}"
            )
        if row_group_size is not None and row_group_size <= 0:
            raise ValueError(f"`row_group_size` must be positive, not `{row_group_size}`")
        self.path = path
        self.compression = compression
        self.row_group_size = row_group_size
        self.run_id = run_id or new_run_id()

    def expand(self, batches):
        self.staging = folder = staging_dir(self.path, uuid.uuid4().hex[:12])
        return batches | StageAndPublish(
            _MakeParquetWriter(self.compression, self.row_group_size),
            folder,
            _PublishParquet(self.path, folder, self.run_id),
            step=self.label,
        )
