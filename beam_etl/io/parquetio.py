"""Parquet source and sink on pyarrow.

The sink writes one folder of part files (Hive-style partition folders if asked), with one
schema across all parts, published atomically at the end. The source reads row groups in
parallel, with column projection and row filters pushed down to pyarrow.
"""

import datetime
import functools
import json
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, Final
from urllib.parse import quote

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from beam_etl.core.batches import conform_columns, visible, with_origin
from beam_etl.core.batching import PROBE_ROWS, BatchSizer
from beam_etl.core.contract import ungated
from beam_etl.core.errors import ConnectorError, DataError
from beam_etl.core.expr import compile_expression, result_type
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.core.publish import new_run_id
from beam_etl.io import _scd2
from beam_etl.io._files import (
    SUCCESS_MARKER,
    BundleWriter,
    Part,
    RollingWriter,
    StageAndPublish,
    check_folder_target,
    discard_folder,
    match_files,
    publish_folder,
    staging_dir,
)
from beam_etl.io._local import FileSource

_COMPRESSIONS = ("snappy", "gzip", "brotli", "zstd", "lz4", "none")


DEFAULT_ROW_GROUP_ROWS = 262_144
#: A row group written without `row_group_size` closes at this much Arrow data too.
ROW_GROUP_BYTES: Final = 64 << 20
#: Folder value for a null or empty partition value (Hive's; pyarrow reads it back as null).
NULL_PARTITION: Final = "__HIVE_DEFAULT_PARTITION__"


def conform(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """Return `data` with exactly the fields of `schema`: missing ones null, others cast.

    Raises:
        pyarrow.ArrowInvalid: a value does not cast (the schemas are incompatible).
    """
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    return conform_columns(table, schema)


def unified_schema(schemas: list[pa.Schema], target: str) -> pa.Schema:
    """Return the one schema all `schemas` convert to (`null` columns take the other type).

    Raises:
        ConnectorError: two schemas give one column types that do not convert.
    """
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConnectorError(
            f"Batches written to `{target}` have incompatible types: {exc}"
        ) from exc


def partition_segment(name: str, value: Any) -> str:
    """Return the folder name `name=value`, percent-encoded so it is always one safe segment.

    Every byte but letters, digits and `_.-~` is encoded (`/`, `\\`, NUL, `=`, `%` included),
    as pyarrow's Hive partitioning decodes it; null and empty values are `NULL_PARTITION`.
    """
    if isinstance(value, (datetime.date, datetime.time)):
        text = value.isoformat()
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = "" if value is None else str(value)
    return f"{quote(name, safe='')}={quote(text, safe='') or NULL_PARTITION}"


@functools.cache
def _writer_thread() -> ThreadPoolExecutor:
    """One thread per worker process that encodes Parquet row groups in the background."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="beam_etl-parquet")


class _ParquetWriter(RollingWriter):
    """Writes a bundle's batches to part files, gathering them into row groups of
    `row_group_size` rows (small batches would otherwise make small row groups); without a
    `row_group_size`, a row group also closes at `ROW_GROUP_BYTES` of Arrow data, so that wide
    rows do not make row groups (and the memory that gathers them) of gigabytes."""

    suffix = ".parquet"

    def __init__(self, folder: str, compression: str, row_group_size: int | None) -> None:
        super().__init__(folder)
        self._compression = compression
        self._row_group_size = row_group_size or DEFAULT_ROW_GROUP_ROWS
        self._max_bytes = None if row_group_size else ROW_GROUP_BYTES
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._path = ""
        self._rows = 0
        self._background: Future | None = None

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        data = (
            pa.Table.from_batches([visible(batch)]) if isinstance(batch, pa.RecordBatch) else batch
        )
        if data.num_rows == 0:
            return
        if self._writer is not None and not data.schema.equals(self._writer.schema):
            current = self._writer.schema
            if unified_schema([current, data.schema], self.folder).equals(current):
                data = conform(data, current)  # fewer columns or null-typed ones: same part
            else:
                self._close_current()  # a batch of another shape starts a part of its own
        if self._writer is None:
            self._path = self.new_path()
            self._writer = pq.ParquetWriter(self._path, data.schema, compression=self._compression)
            self._rows = 0
        self._pending.append(data)
        self._pending_rows += data.num_rows
        self._pending_bytes += data.nbytes
        if self._pending_rows >= self._row_group_size or (
            self._max_bytes is not None and self._pending_bytes >= self._max_bytes
        ):
            self._flush()

    def _flush(self) -> None:
        if self._writer is not None and self._pending:
            table = pa.concat_tables(self._pending)
            # Encoding releases the GIL: do it on a background thread so that the bundle's
            # next batches are parsed meanwhile; at most one row group waits (bounded memory).
            self._await_write()
            self._background = _writer_thread().submit(
                self._writer.write_table, table, row_group_size=self._row_group_size
            )
            self._rows += table.num_rows
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def _await_write(self) -> None:
        if self._background is not None:
            background, self._background = self._background, None
            background.result()  # re-raises a failed write here

    def _finish_part(self) -> None:
        self._flush()
        self._await_write()


class _PartitionedWriter(BundleWriter):
    """Splits each batch by the values of the partition columns, into one `_ParquetWriter`
    per partition folder (`year=2013/month=1/`); the partition columns leave the files."""

    def __init__(
        self, folder: str, compression: str, row_group_size: int | None, partition_by: list[str]
    ) -> None:
        super().__init__(folder)
        self._settings = (compression, row_group_size)
        self._partition_by = partition_by
        self._writers: dict[str, _ParquetWriter] = {}

    def write(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([visible(batch)])
        missing = [name for name in self._partition_by if name not in table.schema.names]
        if missing:
            raise DataError(
                f"Partition column(s) {', '.join(f'`{n}`' for n in missing)} not in the input "
                f"(columns: {', '.join(table.schema.names)})"
            )
        keys = table.select(self._partition_by).group_by(self._partition_by, use_threads=False)
        written = 0
        for values in keys.aggregate([]).to_pylist():
            mask = None
            for name, value in values.items():
                column = table.column(name)
                test = pc.is_null(column) if value is None else pc.equal(column, value)
                mask = test if mask is None else pc.and_(mask, test)
            part = table.filter(mask).drop_columns(self._partition_by)
            written += part.num_rows
            folder = os.path.join(*(partition_segment(n, v) for n, v in values.items()))
            if folder not in self._writers:
                path = os.path.join(self.folder, folder)
                self._writers[folder] = _ParquetWriter(path, *self._settings)
            self._writers[folder].write(part)
        if written != table.num_rows:  # NaN keys match no group: never drop rows silently
            raise DataError(f"Partition values of {table.num_rows - written} rows are not usable")

    def close(self) -> list[Part]:
        return [part for writer in self._writers.values() for part in writer.close()]


class _MakeParquetWriter:
    def __init__(
        self, compression: str, row_group_size: int | None, partition_by: list[str] | None = None
    ) -> None:
        self._compression = compression
        self._row_group_size = row_group_size
        self._partition_by = partition_by

    def __call__(self, folder: str) -> BundleWriter:
        if self._partition_by:
            return _PartitionedWriter(
                folder, self._compression, self._row_group_size, self._partition_by
            )
        return _ParquetWriter(folder, self._compression, self._row_group_size)


def _conform_parts(parts: list[Part], target: str, compression: str, row_group_size: int) -> None:
    """Rewrite the parts whose schema differs from the unified one, so readers of the folder
    (which take one schema for all files) can read every part."""
    schemas = [pq.read_schema(path) for path, _ in parts]
    schema = unified_schema(schemas, target) if schemas else pa.schema([])
    for (path, _), own in zip(parts, schemas):
        if own.equals(schema):
            continue
        rewritten = f"{path}.conformed"
        with pq.ParquetWriter(rewritten, schema, compression=compression) as writer:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=row_group_size):
                writer.write_table(conform(batch, schema), row_group_size=row_group_size)
        os.replace(rewritten, path)


class _PublishParquet:
    def __init__(
        self,
        path: str,
        folder: str,
        run_id: str,
        compression: str = "snappy",
        row_group_size: int | None = None,
    ) -> None:
        self._path = path
        self._folder = folder
        self._run_id = run_id
        self._compression = compression
        self._row_group_size = row_group_size or DEFAULT_ROW_GROUP_ROWS

    def prepare(self, parts: list[Part]) -> None:
        check_folder_target(self._path)

    def __call__(self, parts: list[Part]) -> int:
        _conform_parts(parts, self._path, self._compression, self._row_group_size)
        return publish_folder(self._path, self._folder, parts, ".parquet", self._run_id)


class _PublishParquetHistory:
    """`mode: scd2`: add this run's version file to the history dataset (see `_scd2`)."""

    def __init__(self, path, folder, run_id, compression, keys, flag) -> None:
        self._path, self._folder, self._run_id = path, folder, run_id
        self._compression, self._keys, self._flag = compression, keys, flag

    def prepare(self, parts: list[Part]) -> None:
        check_folder_target(self._path)

    def __call__(self, parts: list[Part]) -> int:
        check_folder_target(self._path)
        schemas = [pq.read_schema(path) for path, _ in parts]
        schema = unified_schema(schemas, self._path) if schemas else None
        batches = (
            conformed
            for path, _ in parts
            for batch in pq.ParquetFile(path).iter_batches()
            for conformed in conform(batch, schema).to_batches()
        )
        rows = _scd2.publish_parquet_version(
            self._path,
            batches,
            schema,
            self._keys,
            self._flag,
            self._run_id,
            "none" if self._compression == "none" else self._compression,
        )
        marker = {"run_id": self._run_id, "rows": rows, "mode": "scd2"}
        os.makedirs(self._path, exist_ok=True)
        temporary = os.path.join(self._path, f".{SUCCESS_MARKER}.tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(marker, out)
        os.replace(temporary, os.path.join(self._path, SUCCESS_MARKER))
        discard_folder(self._folder)
        return rows


class WriteToParquet(beam.PTransform):
    """Write record batches to a folder of Parquet files (`part-00000.parquet`, ...).

    The folder is replaced as a whole when the run's last bundle is done: readers see the old
    complete output or the new one, never a mix; a re-run replaces, never duplicates. Hidden
    origin columns are dropped. Batches whose schemas differ (a column missing, or typed `null`
    where others have a type) are written with one unified schema, so the folder reads as one
    table; types that do not convert fail the run. With `partition_by`, rows go to Hive-style
    folders (`year=2013/month=1/part-00000.parquet`) whose values are percent-encoded (null
    and empty: `__HIVE_DEFAULT_PARTITION__`), and the partition columns leave the files.
    Output: one element, the number of rows written.
    """

    GATED: ClassVar[bool] = True  # takes `Gated(rows, gates)` (see `beam_etl.core.contract`)

    def __init__(
        self,
        path: str,
        *,
        compression: str = "snappy",
        row_group_size: int | None = None,
        partition_by: list[str] | None = None,
        run_id: str | None = None,
        mode: str = "replace",
        primary_key: list[str] | str | None = None,
        hard_delete_column: str | None = None,
    ) -> None:
        """Args:
        path: the output folder; replaced only if empty or written by beam_etl before.
        compression: one of snappy, gzip, brotli, zstd, lz4, none.
        row_group_size: rows per row group (262,144 when not given).
        partition_by: columns whose values name the folders rows go to, outermost first.
        run_id: recorded in the folder's `_SUCCESS` marker; a fresh id when not given.
        mode: `replace` (default: the folder holds this run's rows) or `scd2` (a history
            dataset: each run adds one version file with the rows new or changed since the
            current view and a tombstone per deleted key, stamped `valid_from`; read it with
            `beam_etl.io.parquet_history(path, at=...)`).
        primary_key: key column(s); needed by `scd2`.
        hard_delete_column: in `scd2`, the boolean column whose true rows delete their key.
        """
        super().__init__()
        if compression not in _COMPRESSIONS:
            raise ValueError(
                f"Unknown compression `{compression}`; use one of {', '.join(_COMPRESSIONS)}"
            )
        if row_group_size is not None and row_group_size <= 0:
            raise ValueError(f"`row_group_size` must be positive, not `{row_group_size}`")
        if partition_by is not None and (
            not partition_by
            or not all(isinstance(name, str) and name for name in partition_by)
            or len(set(partition_by)) != len(partition_by)
        ):
            raise ValueError(
                f"`partition_by` must be a list of distinct column names, not `{partition_by}`"
            )
        if mode not in ("replace", "scd2"):
            raise ValueError(f"Unknown mode `{mode}`; use one of replace, scd2")
        keys = [primary_key] if isinstance(primary_key, str) else list(primary_key or [])
        if mode == "scd2" and (not keys or partition_by):
            raise ValueError("mode `scd2` needs `primary_key` (and takes no `partition_by`)")
        if hard_delete_column is not None and mode != "scd2":
            raise ValueError("`hard_delete_column` applies to mode `scd2` only")
        self.mode = mode
        self.primary_key = keys
        self.hard_delete_column = hard_delete_column
        self.path = path
        self.compression = compression
        self.row_group_size = row_group_size
        self.partition_by = list(partition_by) if partition_by else None
        self.run_id = run_id or new_run_id()

    def expand(self, batches):
        batches, gates = ungated(batches)
        self.staging = folder = staging_dir(self.path, uuid.uuid4().hex[:12])
        if self.mode == "scd2":
            hashed = batches | "RowHash" >> beam.Map(_scd2.with_row_hash, self.hard_delete_column)
            return hashed | StageAndPublish(
                _MakeParquetWriter(self.compression, self.row_group_size, None),
                folder,
                _PublishParquetHistory(
                    self.path,
                    folder,
                    self.run_id,
                    self.compression,
                    self.primary_key,
                    self.hard_delete_column,
                ),
                step=self.label,
                gates=gates,
            )
        return batches | StageAndPublish(
            _MakeParquetWriter(self.compression, self.row_group_size, self.partition_by),
            folder,
            _PublishParquet(
                self.path,
                folder,
                self.run_id,
                self.compression,
                self.row_group_size,
            ),
            step=self.label,
            gates=gates,
        )


def _fragment(path: str, row_groups: list[int] | None = None) -> ds.ParquetFileFragment:
    filesystem, inner = pafs.FileSystem.from_uri(path) if "://" in path else (_LOCAL, path)
    return ds.ParquetFileFormat().make_fragment(inner, filesystem, row_groups=row_groups)


_LOCAL: Final = pafs.LocalFileSystem()


def _read_schema(path: str) -> pa.Schema:
    try:
        return _fragment(path).physical_schema
    except (OSError, pa.ArrowException) as exc:
        raise ConnectorError(f"Cannot read the Parquet footer of `{path}`: {exc}") from exc


class _Scan:
    """What every worker needs to scan any row group: schema, projection, filter text."""

    def __init__(self, schema: pa.Schema, columns: list[str] | None, where: str | None) -> None:
        self.schema = schema
        self.columns = columns
        self.where = where

    def expression(self) -> pc.Expression | None:
        return compile_expression(self.where, self.schema) if self.where else None


class _PlanRowGroupsFn(beam.DoFn):
    """Yield `(path, row group)` for each row group whose statistics may match the filter."""

    def __init__(self, scan: _Scan) -> None:
        self._scan = scan

    def setup(self) -> None:
        self._filter = self._scan.expression()

    def process(self, path: str):
        try:
            fragment = _fragment(path)
            kept = fragment.split_by_row_group(filter=self._filter, schema=self._scan.schema)
            groups = [piece.row_groups[0].id for piece in kept]
        except (OSError, pa.ArrowException) as exc:
            raise ConnectorError(f"Cannot read the Parquet footer of `{path}`: {exc}") from exc
        for group in groups:
            yield path, group


class _ReadRowGroupFn(beam.DoFn):
    def __init__(self, step: str, scan: _Scan) -> None:
        self._step = step
        self._scan = scan

    def setup(self) -> None:
        self._filter = self._scan.expression()
        self._rows_read = step_counter(self._step, ROWS_READ)
        self._sizer: BatchSizer | None = None

    def process(self, unit: tuple[str, int]):
        path, group = unit
        try:  # batch by batch: a row group is never held whole
            fragment = _fragment(path, [group])
            if self._sizer is None:
                self._sizer = BatchSizer(self._step, schema=self._scan.schema)
            if not self._sizer.measured:  # the footer's sizes are encoded ones: measure rows
                probe = fragment.to_batches(
                    schema=self._scan.schema, columns=self._scan.columns, batch_size=PROBE_ROWS
                )
                for first in probe:
                    self._sizer.observe(first)
                    break
            for batch in fragment.to_batches(
                schema=self._scan.schema,
                columns=self._scan.columns,
                filter=self._filter,
                batch_size=self._sizer.rows(),
            ):
                self._sizer.observe(batch)
                if batch.num_rows:
                    self._rows_read.inc(batch.num_rows)
                    yield with_origin(batch, path, None)
        except (OSError, pa.ArrowException) as exc:
            raise ConnectorError(f"Cannot read row group {group} of `{path}`: {exc}") from exc


class ReadFromParquet(FileSource, beam.PTransform):
    """Read Parquet files into Arrow record batches, one row group per unit of work.

    Bounded. Files are matched and their footers read at construction: the output schema is
    the union of the files' schemas (a column missing from a file is null there; a column
    typed `null` in one file takes the others' type). Row groups are planned, shuffled and read
    in parallel; column projection and the row filter are pushed down to pyarrow, which skips
    row groups whose statistics rule the filter out. Rows the filter excludes are never read
    (not counted). Order is kept within a row group only. Batches carry the file as origin and
    a null line (Parquet has no lines). Nothing is rejected: a file that cannot be read (bad
    footer, empty) fails with a `ConnectorError` naming it.
    Output: a PCollection of batches.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = ("output",)

    def __init__(
        self,
        path: str | list[str],
        *,
        columns: list[str] | None = None,
        filter: str | None = None,
        incremental: bool | str = False,
    ) -> None:
        """Args:
        path: a file, a glob pattern (`out/*.parquet`, `out/*/*.parquet`) or a list of them.
        columns: the columns to read, in this order (all when not given).
        filter: a boolean expression (as in `FilterRows`); only rows where it is true are
            read. It may use columns not in `columns`.
        incremental: load only files no earlier successful run loaded (true: by path,
            size and modification time; `hash`: by content); see README.
        """
        super().__init__()
        self.incremental = incremental
        self.path = path
        self._files = [name for name, _ in match_files(path)]
        schema = unified_schema([_read_schema(name) for name in self._files], str(path))
        if columns is not None:
            unknown = [name for name in columns if name not in schema.names]
            if unknown or not columns:
                raise ValueError(
                    f"`columns` {', '.join(f'`{n}`' for n in unknown) or 'is empty'}: the files "
                    f"have {', '.join(schema.names)}"
                )
        if filter is not None and not pa.types.is_boolean(result_type(filter, schema)):
            raise ValueError(f"`filter` must be a boolean expression, not `{filter}`")
        self._scan = _Scan(schema, list(columns) if columns else None, filter)

    @property
    def schema(self) -> pa.Schema:
        """The schema of the output batches (without the hidden origin columns)."""
        names = self._scan.columns or self._scan.schema.names
        return pa.schema([self._scan.schema.field(name) for name in names])

    def _local_stages(self) -> list[beam.DoFn]:
        return [_PlanRowGroupsFn(self._scan), _ReadRowGroupFn(self.label, self._scan)]

    def expand(self, pbegin):
        return self._read_files(
            pbegin,
            [("PlanRowGroups", _PlanRowGroupsFn(self._scan))],
            ("ReadRowGroups", _ReadRowGroupFn(self.label, self._scan)),
        )


def parquet_history(path: str, at: datetime.datetime | None = None) -> pa.Table | None:
    """Return the rows of the `scd2` history dataset `path` as they were at `at` (default:
    now): per key the version valid then, deleted keys left out, with `valid_from`,
    `valid_to` and `is_current`. None when the folder holds no version yet."""
    return _scd2.history_view(path, at)
