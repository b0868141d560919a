"""MySQL / MariaDB change data capture from the binlog (ROW format) through `mysql-replication`.

Each run reads the binlog from the position the last successful run confirmed up to the
position current when this run started, and emits every committed insert, update and delete
of the captured tables as change events (Arrow batches, one schema per table: the table's
columns, then `op`, `deleted`, `source_ts`, `source_name`, `source_position`, `source_table`,
`source_txid`, `source_seq`). The first run takes a consistent snapshot instead (`op = r`),
at the exact binlog position the snapshot saw. The position becomes the source's state only
after every sink has published (see `beam_etl.state`): a failed or killed run leaves it where
it was, and the next run re-delivers the same changes, which the sinks' `merge` makes
harmless (full row images: re-applying a change sets the same row).
"""

import datetime as dt
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple

import apache_beam as beam
import pyarrow as pa

from beam_etl.batches import with_origin
from beam_etl.config import first_line
from beam_etl.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.errors import ConnectorError
from beam_etl.io import _db
from beam_etl.io._changes import (
    DELETE,
    INSERT,
    READ,
    TRUNCATE,
    UPDATE,
    EventBuilder,
)
from beam_etl.io._increment import parse_lag
from beam_etl.io._publish import fault_point
from beam_etl.io._sql import check_identifier, quote_identifier
from beam_etl.io.mysqlio import _config, _MySql, connect
from beam_etl.metrics import ROWS_READ, step_counter
from beam_etl.state import current_state
from beam_etl.transforms.outputs import WithErrors

MODES: Final = ("bounded", "follow")
_REQUIRED: Final = {
    "log_bin": "1",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}
_CONVERTED: Final = frozenset({16, 11, 19, 245, 248})  # BIT, TIME, TIME2, JSON, SET
_PURGED: Final = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: the file is gone
_TRUNCATE: Final = re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?`?(?:(\w+)`?\.`?)?(\w+)`?", re.I)


class Position(NamedTuple):
    """A binlog position: the file and the byte offset of the next event."""

    file: str
    pos: int

    @classmethod
    def parse(cls, text: str) -> "Position":
        file, _, pos = text.rpartition(":")
        return cls(file, int(pos))

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    def key(self) -> tuple[int, int]:
        """Return (file number, offset): positions in commit order."""
        return int(self.file.rsplit(".", 1)[1]), self.pos

    def seq(self, offset: int = 0) -> int:
        """Return the int64 sequence number of the byte `offset` before this position."""
        number, pos = self.key()
        return (number << 32) + pos - offset


@dataclass(frozen=True)
class _Run:
    """What one run reads: a snapshot (its position written to `snapshot_file`, and kept in
    `attempts_file` until a snapshot run succeeds) or the binlog from `start` to `end`."""

    start: Position | None  # None: take the snapshot
    end: Position
    snapshot_file: str | None = None
    attempts_file: str | None = None


def show_position(cursor: Any) -> Position:
    """Return the server's current binlog position (`SHOW MASTER STATUS`, or MySQL 8.4's
    `SHOW BINARY LOG STATUS`)."""
    import pymysql

    try:
        cursor.execute("SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError:
        cursor.execute("SHOW BINARY LOG STATUS")
    found = cursor.fetchone()
    if not found:
        raise ConnectorError("The server's binlog is off: set `log_bin` to capture changes")
    return Position(found[0], int(found[1]))


def check_server(cursor: Any, server_id: int) -> None:
    """Raise ConnectorError (one line saying what to set) unless the server writes the binlog
    the capture needs: ROW format, full row images with their metadata (column names)."""
    wrong = []
    for name, wanted in _REQUIRED.items():
        cursor.execute(f"SHOW GLOBAL VARIABLES LIKE '{name}'")
        found = cursor.fetchone()
        value = "missing" if found is None else str(found[1]).upper()
        if value not in (wanted, "ON" if wanted == "1" else wanted):
            wrong.append(f"`{name}` is {value}, needs {'ON' if wanted == '1' else wanted}")
    if wrong:
        raise ConnectorError(
            "The server is not configured for binlog capture: "
            + "; ".join(wrong)
            + " (in my.cnf, or `SET GLOBAL`; `binlog_row_metadata` needs MariaDB 10.5+ or "
            "MySQL 8.0.14+)"
        )
    cursor.execute("SELECT @@server_id")
    if int(cursor.fetchone()[0]) == server_id:
        raise ConnectorError(f"`server_id` {server_id} is the server's own: choose another")


def time_text(value: dt.timedelta) -> str:
    """Return a TIME value as MySQL writes it (`-838:59:59.000000` .. `838:59:59`)."""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, fraction = divmod(micros, 1_000_000)
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    text += f".{fraction:06d}" if fraction else ""
    return f"-{text}" if value < dt.timedelta(0) else text


def plain(value: Any, column: Any = None) -> Any:
    """Return a driver or binlog value as `ReadFromMySql` reads it: SET as `a,b` in definition
    order, BIT as bytes, TIME as text, MySQL's binary JSON as JSON text."""
    if isinstance(value, set):
        members = getattr(column, "set_values", None) or sorted(value)
        return ",".join(m for m in members if m in value)
    if isinstance(value, str) and getattr(column, "type", None) == 16:  # BIT as '0101'
        return int(value, 2).to_bytes((len(value) + 7) // 8, "big")
    if isinstance(value, dt.timedelta):
        return time_text(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _kind(data_type: pa.DataType) -> str:
    if pa.types.is_boolean(data_type):
        return "bool"
    return "text" if pa.types.is_string(data_type) else ""


def _fit(value: Any, kind: str) -> Any:
    """Return `value` as its column's Arrow type takes it: TINYINT(1) 0/1 as a boolean, BIT
    bytes as text of the same code points (what `ReadFromMySql` reads, valid above 0x7f)."""
    if value is None or not kind:
        return value
    if kind == "bool":
        return bool(value)
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Events:
    """The events of one table, collected into batches of the table's columns now."""

    def __init__(self, table: str, schema: pa.Schema, step: str, before: bool) -> None:
        self.table, self.names, self.before = table, schema.names, before
        self.kinds = [_kind(f.type) for f in schema]
        self.builder = EventBuilder(schema, step=step, table=table, before=before)

    def fit(self, row: dict[str, Any]) -> list[Any]:
        """Return a row (by column name) as the list of values `add` takes."""
        return [_fit(row.get(name), kind) for name, kind in zip(self.names, self.kinds)]

    def fit_old(self, row: dict[str, Any] | None) -> list[Any] | None:
        """Return the old row as `add` takes it: None without `before`."""
        return self.fit(row) if self.before and row is not None else None

    def add(self, values: list, op: str, ts, position: str, txid, seq: int, old=None) -> None:
        self.builder.add(op, values, ts=ts, position=position, txid=txid, seq=seq, old=old)

    def __len__(self) -> int:
        return len(self.builder)

    def batch(self) -> pa.RecordBatch:
        """Return the collected events as one batch (and start over)."""
        built = self.builder.build()
        assert built is not None
        return with_origin(built, self.table, None)


class _ReadChangesFn(beam.DoFn):
    """Reads one run's snapshot or binlog range of the captured tables into change batches."""

    def __init__(self, step, config, tables, schemas, server_id, run: _Run, batch_rows, before):
        self._step, self._config, self._tables = step, config, tables
        self._schemas, self._server_id, self._run = schemas, server_id, run
        self._batch_rows, self._before = batch_rows, before

    def _events(self, table: str) -> "_Events":
        return _Events(table, self._schemas[table], self._step, self._before)

    def setup(self) -> None:
        self._rows_read = step_counter(self._step, ROWS_READ)

    def process(self, _: Any) -> Iterator[Any]:
        try:
            if self._run.start is None:
                found = self._snapshot()
            else:
                found = self._binlog(self._run.start, self._run.end)
            for item in found:
                if isinstance(item, DeadLetter):
                    self._rows_read.inc()
                    yield beam.pvalue.TaggedOutput(ERROR, item)
                else:
                    self._rows_read.inc(item.num_rows)
                    yield item
                    fault_point("during_read")
        except ConnectorError:
            raise
        except Exception as exc:
            hint = ""
            if exc.args and exc.args[0] == _PURGED:
                hint = (
                    "; the binlog files from the confirmed position were purged: reset the "
                    f"state of `{self._step}` (`python -m beam_etl.run state reset`) to take "
                    "a new snapshot"
                )
            raise ConnectorError(
                f"Capturing changes of {', '.join(f'`{t}`' for t in self._tables)} from "
                f"`{self._config.describe()}` failed: {type(exc).__name__}: "
                f"{self._config.redact(first_line(exc))}{hint}"
            ) from None

    def _snapshot(self) -> Iterator[pa.RecordBatch | DeadLetter]:
        """Yield every row of every table as `op = r`, read in one transaction whose binlog
        position is written to the run's snapshot file (the next run starts there).

        An earlier snapshot run may have published and then died before its position was
        confirmed: its rows are in the target, and rows deleted since would stay there. So
        the binlog from the earliest unconfirmed snapshot up to this one is read too; its
        events sort before the snapshot's rows (`source_seq`), so a key this snapshot has
        ends as read here, and a key it lacks ends deleted.
        """
        import pymysql

        assert self._run.snapshot_file is not None and self._run.attempts_file is not None
        connection = connect(self._config)
        try:
            with connection.cursor() as cursor:
                position = _consistent_snapshot(cursor)
            earliest = _remember_attempt(self._run.attempts_file, position)
            stamp = dt.datetime.now(dt.UTC)
            seq = position.seq()  # one snapshot, one moment: its rows share the number
            for table in self._tables:
                changes = self._events(table)
                with connection.cursor(pymysql.cursors.SSCursor) as cursor:
                    cursor.execute(f"SELECT * FROM {quote_identifier(table, 'mysql')}")
                    names = [d[0] for d in cursor.description]
                    while rows := cursor.fetchmany(self._batch_rows):
                        for row in rows:
                            values = {n: plain(v) for n, v in zip(names, row)}
                            changes.add(changes.fit(values), READ, stamp, str(position), None, seq)
                        yield changes.batch()
            connection.rollback()
        finally:
            connection.close()
        yield from self._binlog(earliest, position)
        os.makedirs(os.path.dirname(self._run.snapshot_file), exist_ok=True)
        with open(self._run.snapshot_file, "w", encoding="utf-8") as out:
            json.dump({"file": position.file, "pos": position.pos}, out)

    def _binlog(self, start: Position, end: Position) -> Iterator[pa.RecordBatch | DeadLetter]:
        """Yield the changes committed in [start, end), whole transactions only."""
        if start.key() >= end.key():
            return
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import QueryEvent, XidEvent
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        wanted = {tuple(t.split(".")): t for t in self._tables}
        stream = BinLogStreamReader(
            connection_settings={
                "host": self._config.host,
                "port": self._config.port,
                "user": self._config.user,
                "passwd": self._config.password.reveal(),
                "connect_timeout": self._config.connect_timeout,
            },
            server_id=self._server_id,
            resume_stream=True,
            log_file=start.file,
            log_pos=start.pos,
            blocking=False,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent],
            only_schemas=sorted({schema for schema, _ in wanted}),
            only_tables=sorted({table for _, table in wanted}),
            enable_logging=False,
        )
        collected = {t: self._events(t) for t in self._tables}
        pending: list[tuple[_Events, str, list, int, list | None]] = []  # the open transaction
        reached = start
        try:
            for event in stream:
                here = Position(stream.log_file, event.packet.log_pos)
                if here.key() > end.key():
                    reached = end  # `end` lies between events we do not ask for
                    break
                reached = here
                if isinstance(event, XidEvent | QueryEvent):
                    if isinstance(event, QueryEvent):
                        query = event.query.strip()
                        schema = bytes(event.schema).decode("utf-8", "replace")
                        yield from self._truncated(schema, query, here)
                        if query.upper() != "COMMIT":  # DDL commits itself: nothing pending
                            continue
                    stamp = dt.datetime.fromtimestamp(event.timestamp, dt.UTC)
                    txid = getattr(event, "xid", None)
                    for changes, op, values, seq, old in pending:
                        changes.add(values, op, stamp, str(here), txid, seq, old)
                        if len(changes) >= self._batch_rows:  # a large transaction: batches
                            yield changes.batch()
                    pending = []
                else:
                    captured = wanted.get((event.schema, event.table))
                    if captured is not None:
                        changes = collected[captured]
                        pending += [
                            (changes, op, changes.fit(row), seq, changes.fit_old(old))
                            for op, row, seq, old in _row_changes(event, here)
                        ]
                if here.key() == end.key():
                    break
            else:  # the binlog's end: events we filtered out may have reached `end`
                reached = max(reached, Position(stream.log_file, stream.log_pos), key=Position.key)
        finally:
            stream.close()
        if reached.key() < end.key():
            raise ConnectorError(
                f"The binlog ended at `{reached}` before `{end}`, the position the run started "
                "at (files purged or the server restarted meanwhile?); nothing was published"
            )
        for changes in collected.values():
            if len(changes):
                yield changes.batch()

    def _truncated(self, schema: str, query: str, here: Position) -> Iterator[DeadLetter]:
        found = _TRUNCATE.match(query)
        table = found and f"{found.group(1) or schema}.{found.group(2)}"
        if table in self._tables:
            yield DeadLetter(
                self._step,
                TRUNCATE,
                f"Table `{table}` was truncated at `{here}`; the binlog does not say which rows "
                "that removed: empty the target yourself (or re-snapshot: `state reset`)",
                source=table,
                payload={"table": table, "position": str(here)},
            )


def _row_changes(event: Any, here: Position) -> list[tuple]:
    """Return (op, row, seq, old row or None) for every row of a row event.

    Two sequence numbers per row, counted back from the event's end: an event holds more
    than two bytes per row, so numbers never reach the previous event's. An update that
    changes the primary key is a delete of the old key and an insert of the new one.
    """
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent

    columns = {c.name: c for c in event.columns if c.type in _CONVERTED or c.set_values}
    key = event.primary_key
    key = (key,) if isinstance(key, str) and key else tuple(key or ())
    base = here.seq(2 * len(event.rows))
    found = []
    for index, row in enumerate(event.rows):
        seq = base + 2 * index
        if isinstance(event, UpdateRowsEvent):
            before, after = _plain_row(row["before_values"], columns), row["after_values"]
            after = _plain_row(after, columns)
            if key and any(before.get(k) != after.get(k) for k in key):
                found += [
                    (DELETE, before, seq, before),
                    (INSERT, after, seq + 1, None),
                ]
            else:
                found.append((UPDATE, after, seq + 1, before))
        else:
            values = _plain_row(row["values"], columns)
            if isinstance(event, DeleteRowsEvent):
                found.append((DELETE, values, seq + 1, values))
            else:
                found.append((INSERT, values, seq + 1, None))
    return found


def _plain_row(values: dict[str, Any], columns: dict[str, Any]) -> dict[str, Any]:
    """Return `values` with those of `columns` (SET, BIT, TIME, JSON) made plain."""
    if not columns:
        return values
    return {**values, **{name: plain(values.get(name), c) for name, c in columns.items()}}


def _remember_attempt(path: str, position: Position) -> Position:
    """Return the earliest snapshot position recorded in `path` (this one if none), after
    recording it there before any row of this snapshot can be published."""
    earliest = position
    if os.path.exists(path):
        with open(path, encoding="utf-8") as source:
            earliest = min(Position(**json.load(source)), position, key=Position.key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.tmp", "w", encoding="utf-8") as out:
        json.dump(earliest._asdict(), out)
    os.replace(f"{path}.tmp", path)
    return earliest


def _consistent_snapshot(cursor: Any) -> Position:
    """Start a consistent-snapshot transaction; return the binlog position it sees.

    MariaDB tells the position of the snapshot (`binlog_snapshot_file/position`) without a
    lock; on MySQL a global read lock is held for the instant it takes to start it.
    """
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
    if len(cursor.fetchall()) == 2:
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
        status = {name.lower(): value for name, value in cursor.fetchall()}
        return Position(status["binlog_snapshot_file"], int(status["binlog_snapshot_position"]))
    cursor.execute("FLUSH TABLES WITH READ LOCK")
    try:
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        return show_position(cursor)
    finally:
        cursor.execute("UNLOCK TABLES")


class ReadFromMySqlChanges(beam.PTransform):
    """Read the inserts, updates and deletes of MySQL/MariaDB tables from the binlog.

    Bounded: each run reads from the position the last successful run confirmed up to the
    position current when the run started, then stops (`mode: follow` repeats such runs
    every `interval` seconds). The first run emits a consistent snapshot (`op = r`, unless
    `snapshot: false`: then it starts at the current position; a first run that published
    but died unconfirmed makes the next one also read the binlog since its snapshot, so
    rows deleted meanwhile leave the target). Transactions are whole;
    events are in commit order (`source_seq`), emitted once per run; a failed or killed run
    confirms nothing, so the next one re-delivers: write with `merge`, `primary_key` and
    `hard_delete_column: deleted`, `dedup_sort: source_seq`, and re-delivery is harmless.
    Batches hold one table each: its columns now, typed as `ReadFromMySql` reads them (for
    `d` the deleted row, else the row after the change), then the change columns (and the
    old row as a `before` struct with `before: true`). Changed
    tables: an event carries the columns named in its own binlog metadata; columns the table
    gained since are null in older events, columns it dropped are left out. A primary-key
    change is a `d` of the old key and a `c` of the new one. A `TRUNCATE` of a captured
    table goes to the dead letters (`truncate`, naming the table and position).
    Needs `binlog_format=ROW`, `binlog_row_image=FULL`, `binlog_row_metadata=FULL` and the
    REPLICATION SLAVE and REPLICATION CLIENT privileges; the state store of
    `python -m beam_etl.run`.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(
        self,
        *,
        tables: list[str] | str,
        host: str = "127.0.0.1",
        port: int = 3306,
        database: str | None = None,
        user: str = "root",
        password_env: str | None = "MYSQL_PASSWORD",
        server_id: int | None = None,
        mode: str = "bounded",
        snapshot: bool = True,
        interval: str = "5s",
        before: bool = False,
        batch_rows: int = 10_000,
        connect_timeout: float = 10.0,
    ) -> None:
        """Args:
        tables: tables to capture (`name` in `database`, or `database.name`).
        host: server host.
        port: server port.
        database: database of unqualified table names.
        user: user name (needs REPLICATION SLAVE and REPLICATION CLIENT).
        password_env: environment variable holding the password (read at construction).
        server_id: replica id to read the binlog as, unique among the server's replicas
            (default: derived from the pipeline, step and tables).
        mode: `bounded` (one run) or `follow` (runs repeated every `interval` seconds).
        snapshot: whether the first run emits the tables' rows (`op = r`).
        interval: pause between runs in `follow` mode (`5s`, `1m`).
        before: add a `before` struct column with the old row (updates and deletes).
        batch_rows: rows per output batch.
        connect_timeout: seconds to wait for a connection.
        """
        super().__init__()
        names = [tables] if isinstance(tables, str) else list(tables or [])
        if not names:
            raise ValueError("`tables` must name at least one table")
        if not database and any("." not in t for t in names):
            raise ValueError("Give `database`, or name tables as `database.table`")
        self.tables = [t if "." in t else f"{database}.{t}" for t in names]
        for table in self.tables:
            if table.count(".") != 1:
                raise ValueError(f"Invalid table `{table}`: use `name` or `database.name`")
            for part in table.split("."):
                check_identifier(part, "table name")
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {', '.join(MODES)}, not `{mode}`")
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError(f"`batch_rows` must be a positive integer, not `{batch_rows}`")
        if server_id is not None and not (isinstance(server_id, int) and 0 < server_id < 2**32):
            raise ValueError(f"`server_id` must be an integer in 1..4294967295, not `{server_id}`")
        self.config = _config(
            host, port, database or self.tables[0].split(".")[0], user, password_env,
            connect_timeout, None,
        )  # fmt: skip
        self.server_id = server_id
        try:
            self.interval = parse_lag(interval)
        except ValueError:
            raise ValueError(f"`interval` must look like 30s, 5m, 1h, not `{interval}`") from None
        self.mode, self.snapshot, self.before = mode, snapshot, before
        self.batch_rows = batch_rows

    def expand(self, pbegin):
        state = current_state()
        pipeline = state.pipeline if state is not None else ""
        server_id = self.server_id or derived_server_id(
            f"{pipeline}/{self.label}", self.config, self.tables
        )
        try:
            run, schemas = _db.with_retries(
                lambda: self._plan(server_id),
                config=self.config,
                is_transient=_MySql().is_transient,
                what="Planning the capture",
            )
        except ConnectorError as exc:
            raise ConnectorError(f"{exc} (step `{self.label}`)") from None
        read = _ReadChangesFn(
            self.label, self.config, self.tables, schemas, server_id, run, self.batch_rows,
            self.before,
        )  # fmt: skip
        out = (
            pbegin
            | "Start" >> beam.Create([None])
            | "Capture" >> beam.ParDo(read).with_outputs(ERROR, main=OUTPUT)
        )
        return WithErrors(out[OUTPUT], out[ERROR])

    def _plan(self, server_id: int) -> tuple[_Run, dict[str, pa.Schema]]:
        """Return what this run reads and the tables' schemas; propose the next position."""
        state = current_state()
        if state is None:
            raise ValueError(
                f"`{self.label}` needs the state store of `python -m beam_etl.run` to "
                "remember the binlog position between runs"
            )
        remembered = state.get(self.label) or {}
        if remembered and remembered.get("tables") != self.tables:
            raise ConnectorError(
                f"`{self.label}` captured {remembered.get('tables')} until now, not {self.tables}: "
                "reset its state (`python -m beam_etl.run state reset`) to start over"
            )
        folder = state.store.data_folder(state.pipeline, self.label)
        connection = connect(self.config)
        try:
            with connection.cursor() as cursor:
                check_server(cursor, server_id)
                end = show_position(cursor)
            schemas = {t: _MySql().describe(connection, _select(t), t) for t in self.tables}
        finally:
            connection.close()
        if "snapshot" in remembered:  # the position the first run's snapshot saw
            with open(os.path.join(folder, remembered["snapshot"]), encoding="utf-8") as source:
                found = json.load(source)
            start: Position | None = Position(found["file"], found["pos"])
        elif "position" in remembered:
            start = Position.parse(remembered["position"])
        else:
            start = None if self.snapshot else end
        snapshot_file = attempts_file = None
        if start is None:
            scratch = os.path.join(folder, f"snapshot.next-{state.run_id}")
            snapshot_file = os.path.join(scratch, "position.json")
            attempts_file = os.path.join(folder, "snapshot-attempts.json")
            state.promote(scratch, os.path.join(folder, "snapshot"))
            state.propose(self.label, {"snapshot": "snapshot/position.json", "tables": self.tables})
        else:
            state.propose(self.label, {"position": str(end), "tables": self.tables})
        return _Run(start, end, snapshot_file, attempts_file), schemas


def _select(table: str) -> str:
    return f"SELECT * FROM {quote_identifier(table, 'mysql')}"


def derived_server_id(step: str, config: _db.DbConfig, tables: list[str]) -> int:
    """Return a replica id from the step (`pipeline/step`), server and tables (above 65,535,
    below 2**31): two captures reading as one replica id would disconnect each other."""
    text = f"{step}|{config.host}|{config.port}|{','.join(tables)}"
    return 65_536 + zlib.crc32(text.encode("utf-8")) % (2**31 - 65_536)
