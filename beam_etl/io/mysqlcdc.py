"""MySQL / MariaDB change data capture from the binlog (ROW format) through `mysql-replication`.

Each run reads the binlog from the position the last successful run confirmed up to the
position current when this run started, and emits every committed insert, update and delete
of the captured tables as change events (Arrow batches, one schema per table: the table's
columns, then `op`, `deleted`, `source_ts`, `source_name`, `source_position`, `source_table`,
`source_txid`, `source_seq`). The first run takes a consistent snapshot instead (`op = r`),
at the exact binlog position the snapshot saw. The position becomes the source's state only
after every sink has published (see `beam_etl.core.state`): a failed or killed run leaves it where
it was, and the next run re-delivers the same changes, which the sinks' `merge` makes
harmless (full row images: re-applying a change sets the same row).
"""

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import apache_beam as beam
import pyarrow as pa

from beam_etl.core.batches import with_origin
from beam_etl.core.config import first_line
from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.errors import ConnectorError
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.core.publish import fault_point
from beam_etl.core.state import current_state
from beam_etl.io._binlog import (
    Position,
    check_server,
    column_kind,
    consistent_snapshot,
    derived_server_id,
    fit_value,
    plain,
    remember_attempt,
    row_changes,
    show_position,
    truncated_table,
)
from beam_etl.io._changes import READ, TRUNCATE, EventBuilder
from beam_etl.io._increment import parse_lag
from beam_etl.io.sql.identifiers import check_identifier, quote_identifier
from beam_etl.io.sql.mysql_read import _MySql, connect
from beam_etl.io.sql.mysql_read import config as _config
from beam_etl.io.sql.retry import with_retries

MODES: Final = ("bounded", "follow")
_PURGED: Final = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: the file is gone


@dataclass(frozen=True)
class _Run:
    """What one run reads: a snapshot (its position written to `snapshot_file`, and kept in
    `attempts_file` until a snapshot run succeeds) or the binlog from `start` to `end`."""

    start: Position | None  # None: take the snapshot
    end: Position
    snapshot_file: str | None = None
    attempts_file: str | None = None


class _Events:
    """The events of one table, collected into batches of the table's columns now."""

    def __init__(self, table: str, schema: pa.Schema, step: str, before: bool) -> None:
        self.table, self.names, self.before = table, schema.names, before
        self.kinds = [column_kind(f.type) for f in schema]
        self.builder = EventBuilder(schema, step=step, table=table, before=before)

    def fit(self, row: dict[str, Any]) -> list[Any]:
        """Return a row (by column name) as the list of values `add` takes."""
        return [fit_value(row.get(name), kind) for name, kind in zip(self.names, self.kinds)]

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
                position = consistent_snapshot(cursor)
            earliest = remember_attempt(self._run.attempts_file, position)
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
                            for op, row, seq, old in row_changes(event, here)
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
        table = truncated_table(schema, query)
        if table in self._tables:
            yield DeadLetter(
                self._step,
                TRUNCATE,
                f"Table `{table}` was truncated at `{here}`; the binlog does not say which rows "
                "that removed: empty the target yourself (or re-snapshot: `state reset`)",
                source=table,
                payload={"table": table, "position": str(here)},
            )


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
        dsn: str | None = None,
        dsn_env: str | None = None,
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
        dsn: `mysql://user:password@host:port/database` instead of the separate keys (prefer
            `dsn_env`: a DSN holding a password belongs in the environment, not the spec).
        dsn_env: environment variable holding such a DSN.
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
        connection = _config(
            host, port, database or "-", user, password_env, connect_timeout, None, dsn, dsn_env
        )
        if connection.database != "-":  # the DSN's database, or the key's
            database = connection.database
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
        self.config = dataclasses.replace(
            connection, database=database or self.tables[0].split(".")[0]
        )
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
            run, schemas = with_retries(
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
