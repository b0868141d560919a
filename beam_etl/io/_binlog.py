"""The binlog side of `ReadFromMySqlChanges`, without Beam: positions, the server checks, the
consistent snapshot's position, and binlog rows turned into the values `ReadFromMySql` reads.
"""

import datetime as dt
import json
import os
import re
import zlib
from typing import Any, Final, NamedTuple

import pyarrow as pa

from beam_etl.core.errors import ConnectorError
from beam_etl.io._changes import DELETE, INSERT, UPDATE
from beam_etl.io.sql.options import DbConfig

_REQUIRED: Final = {
    "log_bin": "1",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}
_CONVERTED: Final = frozenset({16, 11, 19, 245, 248})  # BIT, TIME, TIME2, JSON, SET
_TRUNCATE: Final = re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?`?(?:(\w+)`?\.`?)?(\w+)`?", re.I)


def truncated_table(schema: str, query: str) -> str | None:
    """Return `db.table` when `query` (run in `schema`) is a TRUNCATE, else None."""
    found = _TRUNCATE.match(query)
    return f"{found.group(1) or schema}.{found.group(2)}" if found else None


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


def column_kind(data_type: pa.DataType) -> str:
    if pa.types.is_boolean(data_type):
        return "bool"
    return "text" if pa.types.is_string(data_type) else ""


def fit_value(value: Any, kind: str) -> Any:
    """Return `value` as its column's Arrow type takes it: TINYINT(1) 0/1 as a boolean, BIT
    bytes as text of the same code points (what `ReadFromMySql` reads, valid above 0x7f)."""
    if value is None or not kind:
        return value
    if kind == "bool":
        return bool(value)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def row_changes(event: Any, here: Position) -> list[tuple]:
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
            before, after = plain_row(row["before_values"], columns), row["after_values"]
            after = plain_row(after, columns)
            if key and any(before.get(k) != after.get(k) for k in key):
                found += [
                    (DELETE, before, seq, before),
                    (INSERT, after, seq + 1, None),
                ]
            else:
                found.append((UPDATE, after, seq + 1, before))
        else:
            values = plain_row(row["values"], columns)
            if isinstance(event, DeleteRowsEvent):
                found.append((DELETE, values, seq + 1, values))
            else:
                found.append((INSERT, values, seq + 1, None))
    return found


def plain_row(values: dict[str, Any], columns: dict[str, Any]) -> dict[str, Any]:
    """Return `values` with those of `columns` (SET, BIT, TIME, JSON) made plain."""
    if not columns:
        return values
    return {**values, **{name: plain(values.get(name), c) for name, c in columns.items()}}


def remember_attempt(path: str, position: Position) -> Position:
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


def consistent_snapshot(cursor: Any) -> Position:
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


def derived_server_id(step: str, config: DbConfig, tables: list[str]) -> int:
    """Return a replica id from the step (`pipeline/step`), server and tables (above 65,535,
    below 2**31): two captures reading as one replica id would disconnect each other."""
    text = f"{step}|{config.host}|{config.port}|{','.join(tables)}"
    return 65_536 + zlib.crc32(text.encode("utf-8")) % (2**31 - 65_536)
