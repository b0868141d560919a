"""PostgreSQL `COPY` both ways: query results streamed into Arrow batches through a pipe and
pyarrow's CSV reader, and Arrow batches rendered (in binary form where every column has one,
else as CSV) by a thread while `COPY FROM STDIN` sends them; and the Arrow types PostgreSQL
columns are read as.
"""

import io
import itertools
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa
import pyarrow.csv as pacsv

from beam_etl.core.threads import put_while
from beam_etl.io.sql import postgres_binary
from beam_etl.io.sql.identifiers import quote_identifier
from beam_etl.io.sql.values import text_for_load

_TRANSIENT_CODES: Final = frozenset({"40P01", "40001", "57P01", "57P02", "57P03"})
_PG_TO_ARROW: Final[dict[int, pa.DataType]] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}
_BYTEA: Final = 17
_NUMERIC: Final = 1700
_SESSION: Final = "SET TIME ZONE 'UTC'; SET bytea_output = 'hex'; SET extra_float_digits = 3"


def arrow_type(type_code: int, precision: int | None, scale: int | None) -> pa.DataType:
    """Return the Arrow type a PostgreSQL column type (by OID) is read as.

    json/jsonb, uuid, text types and anything unlisted are read as their text form; a
    numeric without declared precision as text too (its scale varies by row).
    """
    if type_code in _PG_TO_ARROW:
        return _PG_TO_ARROW[type_code]
    if type_code == _BYTEA:
        return pa.binary()
    if type_code == _NUMERIC and precision and precision <= 1000 and scale is not None:
        return (
            pa.decimal128(precision, scale)
            if precision <= 38
            else pa.decimal256(min(precision, 76), scale)
        )
    return pa.string()


def _copy_out(cursor, sql: str, names: list[str], types: list[pa.DataType]):
    """Stream `COPY ... TO STDOUT` through a pipe into Arrow batches of those names and types."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        with open(write_fd, "wb", buffering=1 << 20) as out:
            try:
                cursor.copy_expert(sql, out)
            except BaseException as exc:  # handed to the reading thread below
                failure.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with io.BufferedReader(io.FileIO(read_fd, "r"), 1 << 20) as stream:
        if stream.peek(1):
            read_types = {n: (pa.string() if t == pa.binary() else t) for n, t in zip(names, types)}
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types=read_types,
                    null_values=[""],
                    true_values=["t"],
                    false_values=["f"],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                yield _decode_bytea(batch, types)
        else:
            stream.read()
    producer.join()
    if failure:
        raise failure[0]


def _decode_bytea(batch: pa.RecordBatch, types: list[pa.DataType]) -> pa.RecordBatch:
    if pa.binary() not in types:
        return batch
    arrays = [
        pa.array([None if v is None else bytes.fromhex(v[2:]) for v in column.to_pylist()], t)
        if t == pa.binary()
        else column
        for column, t in zip(batch.columns, types)
    ]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _csv(batch: pa.RecordBatch) -> bytes:
    out = io.BytesIO()
    pacsv.write_csv(text_for_load(batch), out, pacsv.WriteOptions(include_header=False))
    return out.getvalue()


class _CopyStream(io.RawIOBase):
    """A file-like view of the chunks of a `COPY` stream (CSV, or `postgres_binary.stream`),
    so that one `COPY FROM STDIN` loads them all.

    A thread renders the next chunks while the driver sends the current one (pyarrow's CSV
    writer and compute functions release the GIL), so rendering costs little beyond the COPY.
    """

    def __init__(self, chunks: Iterator[bytes | pa.Buffer]) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._data = memoryview(b"")
        self._position = 0
        self.failure: BaseException | None = None  # raised by a read: the driver only quotes it
        self._thread = threading.Thread(target=self._render, args=(chunks,), daemon=True)
        self._thread.start()

    def _render(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                if chunk:
                    self._put(chunk)
            self._put(None)
        except BaseException as exc:  # handed to the reading side
            self._put(exc)

    def _put(self, item: Any) -> None:
        put_while(self._queue, item, lambda: not self._stop.is_set())

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._position >= len(self._data):
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.failure = item
                raise item
            if item is None:
                self._queue.put(None)  # stay at the end for any further read
                return b""
            self._data, self._position = memoryview(item), 0
        end = len(self._data) if size < 0 else self._position + size
        chunk = bytes(self._data[self._position : end])  # the driver takes bytes only
        self._position += len(chunk)
        return chunk

    def close(self) -> None:
        self._stop.set()  # a COPY that failed midway reads no further: let the thread end
        self._thread.join()
        super().close()


def _copy_in(
    cursor,
    table_sql: str,
    names: list[str],
    batches: Iterator[pa.RecordBatch],
    pg_types: list[str] | None = None,
) -> None:
    """`COPY` `batches` (columns `names`) into `table_sql`: in binary form when the types of
    the columns they go into (`pg_types`, as `format_type` names them) are known and every
    column has one (see `postgres_binary`), else as CSV."""
    columns = ", ".join(quote_identifier(n, "postgres") for n in names)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    batches = itertools.chain([first], batches)
    encode = None if pg_types is None else postgres_binary.encoder(first.schema, pg_types)
    if encode is not None:
        stream, form = _CopyStream(postgres_binary.stream(batches, encode)), "binary"
    else:
        stream, form = _CopyStream(_csv(batch) for batch in batches), "csv"
    try:
        sql = f"COPY {table_sql} ({columns}) FROM STDIN WITH (FORMAT {form})"
        cursor.copy_expert(sql, stream, size=1 << 20)
    except Exception:
        if stream.failure is not None:  # psycopg2 reports it as a cancelled COPY
            raise stream.failure from None
        raise
    finally:
        stream.close()
