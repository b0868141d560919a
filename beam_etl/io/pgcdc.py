"""PostgreSQL log-based change data capture: a logical replication slot with `pgoutput`.

```python
from beam_etl.io import ReadFromPostgresChanges
events = p | "Orders" >> ReadFromPostgresChanges(tables=["public.orders"], database="shop")
```
The first run creates the publication (for `tables`) and the slot, reads every table of the
publication in the snapshot the slot exported (`op = r`, consistent with the slot's start), then
the changes committed up to the position current when the run started. Later runs read the
changes from the last confirmed position up to the position current at their start, then stop
(bounded: a normal batch run). The position is confirmed to the server only after every sink
has published (see `beam_etl.io._changes`).
"""

import functools
import gc
import os
import select
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_etl.core.batching import BatchSizer
from beam_etl.core.deadletter import ERROR, OUTPUT, DeadLetter
from beam_etl.core.errors import ConnectorError
from beam_etl.core.local import runs_locally
from beam_etl.core.metrics import ROWS_READ, step_counter
from beam_etl.core.outputs import WithErrors
from beam_etl.core.publish import staged
from beam_etl.core.state import current_state
from beam_etl.io._changes import (
    DELETE,
    INSERT,
    TRUNCATE,
    UPDATE,
    ChangeWindow,
    EventBuilder,
    last_position,
    plan_window,
    snapshot_events,
)
from beam_etl.io._increment import parse_lag
from beam_etl.io._pgcolumns import tuple_columns
from beam_etl.io._pgoutput import (
    NEW_TUPLE_AT,
    UNCHANGED,
    Begin,
    Change,
    Commit,
    Relation,
    Truncate,
    _tuple,
    decode,
    lsn_int,
    lsn_text,
    plain_new_row,
)
from beam_etl.io.sql.identifiers import check_identifier, quote_identifier
from beam_etl.io.sql.options import DbConfig, make_config
from beam_etl.io.sql.postgres_copy import arrow_type
from beam_etl.io.sql.postgres_read import _Postgres, connect

MODES: Final = ("bounded", "follow")
_NUMERIC: Final = 1700
_IDLE_SECONDS: Final = 1.0


def column_type(type_oid: int, modifier: int) -> pa.DataType:
    """Return the Arrow type of a column given its type OID and modifier (as `ReadFromPostgres`
    reads it: numeric(p,s) as a decimal, unlisted types as text)."""
    precision = scale = None
    if type_oid == _NUMERIC and modifier >= 4:
        precision, scale = ((modifier - 4) >> 16) & 0xFFFF, (modifier - 4) & 0xFFFF
    return arrow_type(type_oid, precision, scale)


def replication_connect(config: DbConfig) -> Any:
    """Return a logical replication connection (session in UTC, for timestamps' text form),
    retried while the failure is transient; a failure is one line, its password masked."""
    return connect(config, replication=True)


@dataclass(frozen=True)
class _Plan:
    """What the capture of one run reads (picklable: the DoFn holds it)."""

    config: DbConfig
    step: str
    slot: str
    publication: str
    tables: tuple[str, ...]
    window: ChangeWindow  # start/end: LSN text
    snapshot: str | None  # the exported snapshot to read the tables in (first run)
    batch_rows: int
    before: bool


class _CaptureFn(beam.DoFn):
    """Read the snapshot (first run) and the slot's changes of one run, on one worker."""

    def __init__(self, plan: _Plan, spill: str | None) -> None:
        self._plan, self._spill = plan, spill

    def setup(self) -> None:
        self._read = step_counter(self._plan.step, ROWS_READ)
        self._parts = 0

    def _out(self, batch: pa.RecordBatch) -> Any:
        """Return `batch`, or where it was written (runners keep a stage's output in memory:
        one element that reads a whole run would hold all of it)."""
        if self._spill is None:
            return batch
        self._parts += 1
        path = FileSystems.join(self._spill, f"part-{self._parts:06d}.arrow")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        with FileSystems.create(path) as out:
            out.write(sink.getvalue().to_pybytes())
        return path

    def process(self, _: Any) -> Iterator[Any]:
        plan = self._plan
        seq = plan.window.first_seq
        try:
            if plan.snapshot is not None:
                for batch in self._snapshot():
                    batch = snapshot_events(
                        batch,
                        step=plan.step,
                        table=batch.schema.metadata[b"table"].decode(),
                        ts=datetime.now(UTC),
                        position=plan.window.end,
                        first_seq=seq,
                    )
                    seq += batch.num_rows
                    self._read.inc(batch.num_rows)
                    yield self._out(batch)
            start, end = lsn_int(plan.window.start), lsn_int(plan.window.end)
            if end > start:
                reader = _SlotReader(plan, start, end, seq)
                for item in reader.read():
                    self._read.inc(item.num_rows if isinstance(item, pa.RecordBatch) else 1)
                    yield (
                        self._out(item)
                        if isinstance(item, pa.RecordBatch)
                        else beam.pvalue.TaggedOutput(ERROR, item)
                    )
                seq = reader.seq
        except Exception as exc:
            import psycopg2

            if not isinstance(exc, psycopg2.Error):
                raise
            raise ConnectorError(
                f"Reading the changes of `{plan.slot}` failed: "
                f"{plan.config.redact(str(exc).strip().splitlines()[0])}"
            ) from None
        plan.window.finish(seq)

    def _snapshot(self) -> Iterator[pa.RecordBatch]:
        plan = self._plan
        connection = connect(plan.config)
        try:
            connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION SNAPSHOT %s", (plan.snapshot,))
            for table in plan.tables:
                with connection.cursor() as cursor:
                    columns = table_schema(cursor, table)
                sql = f"SELECT * FROM {quote_identifier(table, 'postgres')}"
                for batch in _Postgres().read(
                    connection, sql, [], table, BatchSizer(table, rows=plan.batch_rows)
                ):
                    batch = batch.cast(columns) if batch.schema != columns else batch
                    yield batch.replace_schema_metadata({"table": table})
            connection.commit()
        finally:
            connection.close()


def _load(path: str) -> Iterator[pa.RecordBatch]:
    """Yield the batches a capture wrote to `path`, then remove it."""
    with FileSystems.open(path) as source:
        data = source.read()
    yield from pa.ipc.open_stream(pa.py_buffer(data))
    FileSystems.delete([path])


class _SlotReader:
    """Stream the slot from `start` and turn whole transactions committed before `end` into
    event batches (and `truncate` dead letters)."""

    def __init__(self, plan: _Plan, start: int, end: int, seq: int) -> None:
        self.plan, self.start, self.end, self.seq = plan, start, end, seq
        self.relations: dict[int, Relation] = {}
        self.builders: dict[int, EventBuilder] = {}
        self.layouts: dict[int, tuple[list[str], list[str] | None]] = {}
        #: Builders taking rows undecoded (`add_raw`): their columns are the relation's.
        self.plain: dict[int, EventBuilder] = {}
        self.position = ""
        self.begin: Begin | None = None
        self._lookup: Any = None
        self._collect = True

    def read(self) -> Iterator[Any]:
        plan = self.plan
        connection = replication_connect(plan.config)
        try:
            cursor = connection.cursor()
            # Stream from a temporary copy of the slot, dropped with this session: psycopg2
            # moves the flush position it reports to the server's WAL end on a keepalive that
            # arrives before the first change (it assumes a consumer that confirms as it
            # reads), and the server would confirm the slot there, ahead of every target. The
            # slot itself moves only by `advance_slot`, after the state's commit.
            reading = f"{plan.slot[:40]}_{uuid.uuid4().hex[:16]}"
            cursor.execute(
                "SELECT pg_copy_logical_replication_slot(%s, %s, true)", (plan.slot, reading)
            )
            cursor.start_replication(
                slot_name=reading,
                decode=False,
                start_lsn=lsn_text(self.start),
                options={"proto_version": "1", "publication_names": plan.publication},
            )
            self._collect = gc.isenabled()
            # The loop makes a few small lists per change and keeps them until a batch is
            # built: the cyclic collector would walk them again and again (they hold no
            # cycles). It runs while batches go downstream, and after the loop.
            gc.disable()
            try:
                yield from self._loop(cursor)
            finally:
                if self._collect:
                    gc.enable()
            yield from self._flush(everything=True)
        finally:
            connection.close()
            if self._lookup is not None:
                self._lookup.close()

    def _loop(self, cursor: Any) -> Iterator[Any]:
        idle, received = time.monotonic(), False
        read, rows = cursor.read_message, self.plan.batch_rows
        while True:
            message = read()
            if message is None:
                if self.begin is None and cursor.wal_end >= self.end:
                    return
                if received:  # the clock read once per pause, not once per message
                    idle, received = time.monotonic(), False
                ready = select.select([cursor], [], [], _IDLE_SECONDS)[0]
                if not ready and time.monotonic() - idle > _IDLE_SECONDS:
                    cursor.send_feedback(reply=True)  # ask for a keepalive: where is the server
                    idle = time.monotonic()
                continue
            received = True
            payload = message.payload
            if plain_new_row(payload) and self.begin is not None:
                # Most changes: the row stays in its message until its batch is built.
                builder = self.plain.get(int.from_bytes(payload[1:5], "big"))
                if builder is not None:
                    begin = self.begin
                    op = INSERT if payload[0] == 73 else UPDATE
                    builder.add_raw(
                        op, payload, begin.commit_ts, self.position, begin.xid, self.seq
                    )
                    self.seq += 1
                    if len(builder) >= rows:
                        yield from self._emit(builder.build())
                    continue
            item = decode(payload)
            kind = type(item)
            if kind is Change:  # most messages: tested first
                builder = self._change(item)
                if len(builder) >= rows:  # a large transaction: several batches
                    yield from self._emit(builder.build())
            elif kind is Begin:
                if item.final_lsn >= self.end:  # committed after this run's end: next run
                    return
                self.begin, self.position = item, lsn_text(item.final_lsn)
            elif kind is Commit:
                self.begin = None
                yield from self._emit(*self._flush(everything=False))
            elif kind is Relation:
                self._relation(item)
            elif kind is Truncate:
                yield from self._emit(*self._truncate(item))

    def _relation(self, relation: Relation) -> None:
        columns = pa.schema(
            [(c.name, column_type(c.type_oid, c.type_modifier)) for c in relation.columns]
        )
        table = f"{relation.namespace}.{relation.name}"
        builder = self.builders.get(relation.oid)
        if builder is not None and self.relations.get(relation.oid) != relation:
            builder.decode_raw()  # with the columns they were sent with
        self.relations[relation.oid] = relation  # (re-sent unchanged after cache invalidations)
        if builder is None:
            self.builders[relation.oid] = EventBuilder(
                columns,
                step=self.plan.step,
                table=table,
                text=True,
                before=self.plan.before,
                raw=(tuple_columns, functools.partial(self._one, relation.oid)),
            )
        elif builder.columns != columns:  # a column added (or dropped, or retyped)
            kept = [f for f in builder.columns if f.name not in columns.names]
            builder.widen(pa.schema([*columns, *kept]))
        names = [c.name for c in relation.columns]
        built = self.builders[relation.oid].columns.names
        self.layouts[relation.oid] = (names, None if names == built else built)
        if names == built:
            self.plain[relation.oid] = self.builders[relation.oid]
        else:
            self.plain.pop(relation.oid, None)

    def _one(self, oid: int, message: bytes) -> list[Any]:
        """Return the values of the new row in an insert or update held undecoded."""
        row, _, unchanged = _tuple(message, NEW_TUPLE_AT)
        return self._unchanged(self.relations[oid], row, None) if unchanged else row

    def _change(self, change: Change) -> EventBuilder:
        begin = self.begin
        assert begin is not None
        builder = self.builders[change.relation]
        names, built = self.layouts[change.relation]
        relation = self.relations[change.relation]
        if change.kind == "D":
            op, row = DELETE, change.old or [None] * len(names)
        else:
            op, row = (INSERT if change.kind == "I" else UPDATE), change.new or []
        if op == UPDATE and change.old is not None and _key_moved(relation, change.old, row):
            # A new primary key: the old row is gone and a new one exists.
            self._add(builder, DELETE, change.old, names, built, change.old, begin)
            op = INSERT
        if change.unchanged:
            row = self._unchanged(relation, row, change.old if change.old_kind == "O" else None)
        old = change.old if change.old_kind == "O" else None
        self._add(builder, op, row, names, built, old, begin)
        return builder

    def _add(self, builder, op, row, names, built, old, begin: Begin) -> None:
        if built is not None:  # the builder's columns differ from this relation's
            row = _align(row, names, built)
            old = None if old is None else _align(old, names, built)
        builder.add(
            op,
            row,
            ts=begin.commit_ts,
            position=self.position,
            txid=begin.xid,
            seq=self.seq,
            old=old,
        )
        self.seq += 1

    def _unchanged(self, relation: Relation, row: list[Any], old: list[Any] | None) -> list[Any]:
        """Return `row` with the TOAST values an update left unchanged filled in: from the old
        row when the table logs it (REPLICA IDENTITY FULL), else read from the table by key."""
        if old is not None and not any(v is UNCHANGED for v in old):
            return [o if v is UNCHANGED else v for v, o in zip(row, old)]
        missing = [c.name for c, v in zip(relation.columns, row) if v is UNCHANGED]
        keys = [(c.name, v) for c, v in zip(relation.columns, row) if c.key]
        if self._lookup is None:
            self._lookup = connect(self.plan.config)
            self._lookup.autocommit = True
        table = quote_identifier(f"{relation.namespace}.{relation.name}", "postgres")
        where = " AND ".join(f"{quote_identifier(k, 'postgres')}::text = %s" for k, _ in keys)
        picked = ", ".join(f"{quote_identifier(m, 'postgres')}::text" for m in missing)
        with self._lookup.cursor() as cursor:
            cursor.execute(f"SELECT {picked} FROM {table} WHERE {where}", [v for _, v in keys])
            found = cursor.fetchone()
        values = dict(zip(missing, found or [None] * len(missing)))
        return [values[c.name] if v is UNCHANGED else v for c, v in zip(relation.columns, row)]

    def _truncate(self, truncate: Truncate) -> Iterator[DeadLetter]:
        begin = self.begin
        for oid in truncate.relations:
            relation = self.relations[oid]
            table = f"{relation.namespace}.{relation.name}"
            yield DeadLetter(
                self.plan.step,
                TRUNCATE,
                f"Table `{table}` was truncated at {lsn_text(begin.final_lsn) if begin else '?'}; "
                "a change log does not say which rows that removed: empty the target yourself "
                "(or re-snapshot: `state reset`)",
                source=table,
                payload={"table": table, "position": lsn_text(begin.final_lsn) if begin else None},
            )

    def _emit(self, *items: Any) -> Iterator[Any]:
        """Yield `items` with the cyclic garbage collector as it was (the loop runs without)."""
        if self._collect:
            gc.enable()
        try:
            yield from (item for item in items if item is not None)
        finally:
            gc.disable()

    def _flush(self, *, everything: bool) -> Iterator[pa.RecordBatch]:
        for builder in self.builders.values():
            if len(builder) and (everything or len(builder) >= self.plan.batch_rows):
                batch = builder.build()
                if batch is not None:
                    yield batch


def _key_moved(relation: Relation, old: list[Any], new: list[Any]) -> bool:
    return any(c.key and o != n for c, o, n in zip(relation.columns, old, new))


def _align(row: list[Any], names: list[str], columns: list[str]) -> list[Any]:
    index = dict(zip(names, row))
    return [index.get(name) for name in columns]


def table_schema(cursor: Any, table: str) -> pa.Schema:
    """Return the Arrow schema of `table` (`schema.name`) from the catalogue."""
    cursor.execute(
        "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (quote_identifier(table, "postgres"),),
    )
    return pa.schema([(name, column_type(oid, mod)) for name, oid, mod in cursor.fetchall()])


def _qualified(table: str) -> str:
    parts = table.split(".")
    if len(parts) > 2:
        raise ValueError(f"`tables` entry `{table}` must be `name` or `schema.name`")
    for part in parts:
        check_identifier(part, "tables")
    return table if len(parts) == 2 else f"public.{table}"


class ReadFromPostgresChanges(beam.PTransform):
    """Read the inserts, updates and deletes of PostgreSQL tables from a logical replication
    slot (`pgoutput`), as change events (see `beam_etl.io._changes` for their shape).

    Bounded: each run reads from the last confirmed position up to the WAL position current
    when the run started, then stops (`mode: follow` repeats runs every `interval` from the
    command line). Whole transactions only, in commit order (`source_seq`). Delivery: the
    position is confirmed to the server only after every sink has published, so a failed or
    killed run re-delivers the same changes next time (at least once; the sinks' ledgers and
    `merge` make the effect exactly once). The first run reads the tables in the snapshot the
    slot exported (`op = r`). Deletes carry the key only (other columns null) unless the table
    has `REPLICA IDENTITY FULL`; TOAST values an update left unchanged are taken from the old
    row (FULL) or read from the table by key. A new column widens the table's events (earlier
    events null there). `TRUNCATE` goes to the dead letters (`truncate`, naming the table).
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = (OUTPUT, ERROR)

    def __init__(
        self,
        *,
        tables: list[str] | None = None,
        publication: str | None = None,
        slot: str | None = None,
        dsn: str | None = None,
        dsn_env: str | None = None,
        host: str = "127.0.0.1",
        port: int = 5432,
        database: str | None = None,
        user: str = "postgres",
        password_env: str | None = "PG_PASSWORD",
        mode: str = "bounded",
        snapshot: bool = True,
        interval: str = "5s",
        before: bool = False,
        batch_rows: int = 50_000,
        connect_timeout: float = 10.0,
    ) -> None:
        """Args:
        tables: the tables to capture (`name` or `schema.name`); a publication of them is
            created (or updated) on first use. Or give `publication`.
        publication: an existing publication to capture (its tables), instead of `tables`.
        slot: the replication slot (default `beam_etl_<pipeline>_<step>`), created on first use.
        dsn: a libpq connection string or URL (its password is never printed).
        dsn_env: name of an environment variable holding the DSN, instead of `dsn`.
        host: server host, when no DSN is given.
        port: server port.
        database: database name, when no DSN is given.
        user: user name (needs the REPLICATION attribute, or superuser).
        password_env: environment variable holding the password (read at construction).
        mode: `bounded` (one run) or `follow` (the command line repeats runs every `interval`).
        snapshot: read the tables' current rows (`op = r`) on the first run.
        interval: pause between runs in follow mode (`5s`, `1m`).
        before: add a `before` struct column with the old row where the log has it.
        batch_rows: events per output batch (per table).
        connect_timeout: seconds to wait for a connection.
        """
        super().__init__()
        if (tables is None) == (publication is None):
            raise ValueError("Give exactly one of `tables` and `publication`")
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {', '.join(MODES)}, not `{mode}`")
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError(f"`batch_rows` must be a positive integer, not `{batch_rows}`")
        self.tables = tuple(_qualified(t) for t in tables) if tables else None
        if publication is not None:
            check_identifier(publication, "publication")
        if slot is not None:
            check_identifier(slot, "slot")
        self.publication, self.slot = publication, slot
        self.mode, self.snapshot, self.before = mode, snapshot, before
        self.interval = parse_lag(interval)
        self.batch_rows = batch_rows
        self.config = make_config(
            "postgres", dsn, dsn_env, host, port, database, user, password_env,
            connect_timeout, None,
        )  # fmt: skip
        self._exporter: Any = None  # the connection whose exported snapshot the run reads

    def expand(self, pbegin):
        plan = self._plan()
        spill = None
        if runs_locally(pbegin.pipeline):  # its workers see this machine's temporary folder
            # `staging`: the command line removes it after the run, whatever the outcome.
            spill = self.staging = staged(
                os.path.join(
                    tempfile.gettempdir(), "beam_etl_cdc", f"{plan.slot}-{uuid.uuid4().hex[:12]}"
                )
            )
        out = (
            pbegin
            | "Start" >> beam.Create([None])
            | "Capture" >> beam.ParDo(_CaptureFn(plan, spill)).with_outputs(ERROR, main=OUTPUT)
        )
        output = out[OUTPUT]
        if spill is not None:
            output = (
                output
                | "Spread" >> beam.Reshuffle()
                | "Load" >> beam.FlatMap(_load).with_output_types(pa.RecordBatch)
            )
        return WithErrors(output, out[ERROR])

    def _plan(self) -> _Plan:
        step = self.label
        confirmed = last_position(step)  # fails outside the launcher
        state = current_state()
        assert state is not None
        slot = self.slot or _slot_name(state.pipeline, step)
        publication = self.publication or slot
        try:
            tables = self._publication(publication)
            snapshot_name = None
            if confirmed is None:
                start, snapshot_name = self._create_slot(slot)
            else:
                start = confirmed
                self._catch_up(slot, start)
            end = self._current_lsn()
        except Exception as exc:
            import psycopg2

            if not isinstance(exc, psycopg2.Error):
                raise
            raise ConnectorError(
                f"Preparing the change capture of `{step}` ({self.config.describe()}) failed: "
                f"{self.config.redact(str(exc).strip().splitlines()[0])}"
            ) from None
        config, exporter = self.config, self._exporter

        def confirm(position: str) -> None:
            if exporter is not None:
                exporter.close()
            advance_slot(config, slot, position)

        window = plan_window(step, end, confirm)
        window = ChangeWindow(step, start, end, window.first_seq, window.seq_folder)
        return _Plan(
            self.config,
            step,
            slot,
            publication,
            tables,
            window,
            snapshot_name if self.snapshot else None,
            self.batch_rows,
            self.before,
        )

    def _sql(self, sql: str, params: Any = None) -> list[tuple]:
        connection = connect(self.config)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def _publication(self, name: str) -> tuple[str, ...]:
        """Create or update the publication of `tables`; return the tables it publishes."""
        exists = self._sql("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,))
        if self.tables is not None:
            listed = ", ".join(quote_identifier(t, "postgres") for t in self.tables)
            verb = (
                "ALTER PUBLICATION {} SET TABLE {}"
                if exists
                else "CREATE PUBLICATION {} FOR TABLE {}"
            )
            self._sql(verb.format(quote_identifier(name, "postgres"), listed))
        elif not exists:
            raise ConnectorError(
                f"Publication `{name}` does not exist (give `tables:` to create one)"
            )
        found = self._sql(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s "
            "ORDER BY 1",
            (name,),
        )
        return tuple(row[0] for row in found)

    def _create_slot(self, slot: str) -> tuple[str, str]:
        """(Re)create `slot` exporting its snapshot; return its start position and the snapshot.

        Without committed state, nothing was ever confirmed from a slot of this name: a left
        over one (a first run that failed) is dropped and made again, for a fresh snapshot."""
        self._sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (slot,),
        )
        self._exporter = replication_connect(self.config)
        cursor = self._exporter.cursor()
        cursor.create_replication_slot(slot, output_plugin="pgoutput")
        _, consistent_point, snapshot_name, _ = cursor.fetchone()
        return consistent_point, snapshot_name

    def _catch_up(self, slot: str, position: str) -> None:
        """Confirm `position` (the state's) if the slot is behind it: the last run committed
        its state but was stopped before it could tell the server."""
        found = self._sql(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        if not found:
            raise ConnectorError(
                f"Replication slot `{slot}` is gone but the state remembers position {position}: "
                "changes since were lost to this pipeline; run `python -m beam_etl.run state "
                f"reset --source {self.label}` to start over with a new snapshot"
            )
        advance_slot(self.config, slot, position)

    def _current_lsn(self) -> str:
        return self._sql("SELECT pg_current_wal_insert_lsn()::text")[0][0]


def advance_slot(config: DbConfig, slot: str, position: str) -> None:
    """Move `slot`'s confirmed position forward to `position` (never backwards)."""
    connection = connect(config)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT confirmed_flush_lsn < %s::pg_lsn FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (position, slot),
            )
            behind = cursor.fetchone()
            if behind and behind[0]:
                cursor.execute(
                    "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, position)
                )
    finally:
        connection.close()


def _slot_name(pipeline: str, step: str) -> str:
    name = "".join(c if c.isalnum() else "_" for c in f"beam_etl_{pipeline}_{step}".lower())
    return name[:63]
