"""Debezium's JSON change events, from files (a Kafka topic archived as JSON Lines, say).

Each line (or each element of a JSON array) is one Debezium event, with or without the
`{"schema": ..., "payload": ...}` envelope of Kafka Connect's JSON converter. Events become
batches in the change-event shape of `beam_etl.io._changes` (one batch per table and file):
the row after the change (`after`; for deletes `before`), `op`, `deleted`, `source_ts` (the
source's commit `ts_ms`), `source_name`, `source_position` (LSN, `binlog file:pos` or GTID),
`source_table`, `source_txid`, `source_seq` (file order, then line: files are read in name
order, so an archive whose files sort in commit order keeps it).
"""

import base64
import datetime as dt
import decimal
import json
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ROWS_DROPPED, ROWS_READ, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.io._changes import DELETE, OPS, TRUNCATE, EventBuilder
from beam_etl.io._pgoutput import lsn_text

MALFORMED_EVENT: Final = "malformed_event"
_LINE_BITS: Final = 32  # source_seq = file index << 32 | line
_EPOCH: Final = dt.date(1970, 1, 1)
_PLAIN_TYPES: Final = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float": pa.float32(),
    "float32": pa.float32(),
    "double": pa.float64(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "bytes": pa.binary(),
}


def _field_type(field: dict[str, Any]) -> tuple[pa.DataType, Any]:
    """Return the Arrow type of a Kafka Connect schema field and how to convert its values."""
    name = field.get("name") or ""
    if name == "io.debezium.time.Date":
        return pa.date32(), lambda v: _EPOCH + dt.timedelta(days=v)
    if name == "io.debezium.time.Timestamp":
        return pa.timestamp("us"), lambda v: dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=v)
    if name == "io.debezium.time.MicroTimestamp":
        return pa.timestamp("us"), lambda v: dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=v)
    if name == "io.debezium.time.ZonedTimestamp":
        return pa.timestamp("us", tz="UTC"), lambda v: dt.datetime.fromisoformat(
            v.replace("Z", "+00:00")
        )
    if name == "org.apache.kafka.connect.data.Decimal":
        scale = int((field.get("parameters") or {}).get("scale", 0))
        return pa.decimal128(38, scale), lambda v: _decimal(v, scale)
    found = _PLAIN_TYPES.get(field.get("type", ""), pa.string())
    if found == pa.binary():
        return found, base64.b64decode
    return found, None


def _decimal(value: Any, scale: int) -> decimal.Decimal:
    if isinstance(value, (int, float)):
        return decimal.Decimal(str(value))
    try:  # `decimal.handling.mode: string`, else Kafka Connect's base64 unscaled bytes
        return decimal.Decimal(value)
    except decimal.InvalidOperation:
        pass
    unscaled = int.from_bytes(base64.b64decode(value), "big", signed=True)
    return decimal.Decimal(unscaled).scaleb(-scale)


def _row_fields(schema: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """Return the fields of the envelope's `after` (or `before`) row, None without a schema."""
    if not schema:
        return None
    for field in schema.get("fields", []):
        if field.get("field") in ("after", "before") and field.get("fields"):
            return field["fields"]
    return None


def _position(source: dict[str, Any]) -> str:
    if source.get("lsn") is not None:
        return lsn_text(int(source["lsn"]))
    if source.get("gtid"):
        return str(source["gtid"])
    if source.get("file") is not None:
        return f"{source['file']}:{source.get('pos')}"
    return str(source.get("ts_ms", ""))


class _Table:
    """The events of one table in one file: their columns and the builder."""

    def __init__(self, step: str, table: str, fields: list[dict[str, Any]] | None) -> None:
        self.step, self.table = step, table
        self.converters: dict[str, Any] = {}
        self.rows: list[tuple[str, dict, dict[str, Any]]] = []
        self.columns: pa.Schema | None = None
        if fields is not None:
            typed = []
            for field in fields:
                arrow_type, convert = _field_type(field)
                typed.append(pa.field(field["field"], arrow_type))
                if convert is not None:
                    self.converters[field["field"]] = convert
            self.columns = pa.schema(typed)

    def add(self, op: str, row: dict[str, Any], meta: dict[str, Any]) -> None:
        converted = {
            k: (self.converters[k](v) if v is not None and k in self.converters else v)
            for k, v in row.items()
        }
        self.rows.append((op, converted, meta))

    def build(self) -> pa.RecordBatch | None:
        columns = self.columns
        if columns is None:  # no envelope schema: infer the types from the values
            names = list(dict.fromkeys(k for _, row, _ in self.rows for k in row))
            inferred = pa.Table.from_pylist([row for _, row, _ in self.rows]).schema
            columns = pa.schema([inferred.field(n) for n in names])
        builder = EventBuilder(columns, step=self.step, table=self.table)
        for op, row, meta in self.rows:
            builder.add(op, [row.get(name) for name in columns.names], **meta)
        return builder.build()


class _ReadEventsFn(beam.DoFn):
    def __init__(self, step: str) -> None:
        self._step = step

    def setup(self) -> None:
        self._read = step_counter(self._step, ROWS_READ)
        self._dropped = step_counter(self._step, ROWS_DROPPED)

    def process(self, item: tuple[int, str]) -> Iterator[Any]:
        index, path = item
        tables: dict[str, _Table] = {}
        for line, text in _events(path):
            self._read.inc()
            found = self._event(index, path, line, text, tables)
            if isinstance(found, DeadLetter):
                yield beam.pvalue.TaggedOutput(ERROR, found)
        for table in tables.values():
            batch = table.build()
            if batch is not None:
                yield batch

    def _event(self, index, path, line, text, tables) -> DeadLetter | None:
        try:
            event = json.loads(text)
        except ValueError as exc:
            return self._letter(MALFORMED_EVENT, f"Not JSON: {exc}", path, line, text)
        if event is None:  # a Kafka tombstone after a delete: nothing to apply
            self._dropped.inc()
            return None
        schema = event.get("schema") if isinstance(event, dict) else None
        payload = event.get("payload", event) if isinstance(event, dict) else None
        if not isinstance(payload, dict) or "op" not in payload:
            return self._letter(MALFORMED_EVENT, "No Debezium `op`", path, line, text)
        op, source = payload["op"], payload.get("source") or {}
        table = f"{source.get('schema') or source.get('db') or ''}.{source.get('table') or ''}"
        if op == "t":
            return self._letter(TRUNCATE, f"Table `{table}` was truncated", path, line, text)
        if op not in OPS:
            self._dropped.inc()  # `m` (a logical decoding message) and other non-row events
            return None
        row = payload.get("before") if op == DELETE else payload.get("after")
        if not isinstance(row, dict):
            return self._letter(MALFORMED_EVENT, f"`{op}` event without its row", path, line, text)
        if table not in tables:
            tables[table] = _Table(self._step, table, _row_fields(schema))
        ts_ms = source.get("ts_ms", payload.get("ts_ms"))
        try:
            self._add(tables[table], op, row, source, ts_ms, (index << _LINE_BITS) | line)
        except (ValueError, TypeError, ArithmeticError) as exc:
            return self._letter(MALFORMED_EVENT, f"Unreadable value: {exc}", path, line, text)
        return None

    @staticmethod
    def _add(table: "_Table", op, row, source, ts_ms, seq) -> None:
        table.add(
            op,
            row,
            {
                "ts": None if ts_ms is None else dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC),
                "position": _position(source),
                "txid": source.get("txId") if isinstance(source.get("txId"), int) else None,
                "seq": seq,
            },
        )

    def _letter(self, reason: str, message: str, path: str, line: int, text: str) -> DeadLetter:
        return DeadLetter(self._step, reason, message, source=path, line=line, payload=text)


def _events(path: str) -> Iterator[tuple[int, str]]:
    """Yield (line, text) per event of a JSON Lines file or of a JSON array."""
    with FileSystems.open(path) as source:
        data = source.read().decode("utf-8")
    if data.lstrip().startswith("["):
        for number, event in enumerate(json.loads(data), start=1):
            yield number, json.dumps(event)
        return
    for number, text in enumerate(data.splitlines(), start=1):
        if text.strip():
            yield number, text


class ReadFromDebeziumJson(beam.PTransform):
    """Read Debezium JSON change events from files into change-event batches.

    Bounded. Files (`path`: a file or a glob) are read whole, one worker per file, in name
    order for `source_seq`. Envelope types (`io.debezium.time.*`, Kafka Connect decimals,
    base64 bytes) are decoded when the `schema` is present, otherwise types are inferred from
    the values. Tombstones and logical-decoding messages are dropped and counted; truncates
    (`truncate`) and unreadable events (`malformed_event`) go to the dead-letter output.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(self, path: str) -> None:
        """Args:
        path: a file, or a glob of files (`archive/*.json`), local or on a Beam file system.
        """
        super().__init__()
        if not path:
            raise ValueError("`path` is empty")
        self.path = path

    def expand(self, pbegin):
        found = FileSystems.match([self.path])[0].metadata_list
        if not found:
            raise ConnectorError(f"No file matches `{self.path}`")
        files = sorted(meta.path for meta in found)
        out = (
            pbegin
            | "Files" >> beam.Create(list(enumerate(files)))
            | "Read" >> beam.ParDo(_ReadEventsFn(self.label)).with_outputs(ERROR, main=OUTPUT)
        )
        return WithErrors(out[OUTPUT], out[ERROR])
