"""Decoding PostgreSQL's built-in logical replication output (`pgoutput`, protocol version 1).

Pure functions on the bytes of one replication message; no driver, no Beam. Tuple values are
kept in the server's text form (`None` for null, `UNCHANGED` for a TOAST value an update did
not touch); the reader parses them per column with Arrow.
"""

import struct
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

#: A TOASTed value the update left unchanged (pgoutput sends `u`, not the value).
UNCHANGED: Final = object()
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
_INT16: Final = struct.Struct(">h")
_INT32: Final = struct.Struct(">i")
_UINT32: Final = struct.Struct(">I")
_INT64: Final = struct.Struct(">q")
_BEGIN: Final = struct.Struct(">QqI")
_COMMIT: Final = struct.Struct(">bQQq")


class Begin(NamedTuple):
    final_lsn: int  # where the commit record starts: the transaction's position
    commit_ts: datetime
    xid: int


class Commit(NamedTuple):
    commit_lsn: int
    end_lsn: int
    commit_ts: datetime


class Column(NamedTuple):
    name: str
    type_oid: int
    type_modifier: int
    key: bool  # part of the replica identity


class Relation(NamedTuple):
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d default, f full, i index, n nothing
    columns: tuple[Column, ...]


class Change(NamedTuple):
    kind: str  # I, U, D
    relation: int
    new: list[Any] | None
    old: list[Any] | None
    old_kind: str | None  # K (key columns only) or O (the full old row), None when absent
    unchanged: bool = False  # some value of `new` is UNCHANGED


class Truncate(NamedTuple):
    relations: tuple[int, ...]
    cascade: bool
    restart_identity: bool


def lsn_text(lsn: int) -> str:
    """Return an LSN as PostgreSQL prints it (`0/16B3748`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    """Return the integer of an LSN printed as `0/16B3748`."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _string(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\0", at)
    return data[at:end].decode("utf-8"), end + 1


def _tuple(data: bytes, at: int) -> tuple[list[Any], int, bool]:
    """Return the values of a TupleData at `at`, where it ends, and whether one is UNCHANGED."""
    (count,) = _INT16.unpack_from(data, at)
    at += 2
    values: list[Any] = []
    append, unpack, unchanged = values.append, _INT32.unpack_from, False
    for _ in range(count):
        kind = data[at]
        at += 1
        if kind == 116:  # t
            length = unpack(data, at)[0]
            at += 4
            append(data[at : at + length].decode("utf-8"))
            at += length
        elif kind == 110:  # n
            append(None)
        elif kind == 117:  # u
            append(UNCHANGED)
            unchanged = True
        else:
            raise ValueError(f"Unknown pgoutput tuple value kind `{chr(kind)}`")
    return values, at, unchanged


def decode(data: bytes) -> Any:
    """Return the message in `data` (Begin, Commit, Relation, Change, Truncate), or None for
    the kinds a change reader does not need (Origin, Type, Message)."""
    kind = data[:1]
    if kind in (b"I", b"U", b"D"):
        return _change(kind.decode(), data)
    if kind == b"B":
        final_lsn, ts, xid = _BEGIN.unpack_from(data, 1)
        return Begin(final_lsn, _time(ts), xid)
    if kind == b"C":
        _, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(data, 1)
        return Commit(commit_lsn, end_lsn, _time(ts))
    if kind == b"R":
        return _relation(data)
    if kind == b"T":
        (count,) = _INT32.unpack_from(data, 1)
        options = data[5]
        oids = tuple(_UINT32.unpack_from(data, 6 + 4 * i)[0] for i in range(count))
        return Truncate(oids, bool(options & 1), bool(options & 2))
    return None


def _relation(data: bytes) -> Relation:
    (oid,) = _UINT32.unpack_from(data, 1)
    namespace, at = _string(data, 5)
    name, at = _string(data, at)
    identity = chr(data[at])
    (count,) = _INT16.unpack_from(data, at + 1)
    at += 3
    columns = []
    for _ in range(count):
        flags = data[at]
        column, at = _string(data, at + 1)
        type_oid, modifier = struct.unpack_from(">Ii", data, at)
        at += 8
        columns.append(Column(column, type_oid, modifier, bool(flags & 1)))
    return Relation(oid, namespace or "public", name, identity, tuple(columns))


def _change(kind: str, data: bytes) -> Change:
    (relation,) = _UINT32.unpack_from(data, 1)
    at = 5
    old = old_kind = None
    marker = data[at : at + 1]
    if marker in (b"K", b"O"):
        old_kind = marker.decode()
        old, at, _ = _tuple(data, at + 1)
        marker = data[at : at + 1]
    new, unchanged = None, False
    if marker == b"N":
        new, at, unchanged = _tuple(data, at + 1)
    return Change(kind, relation, new, old, old_kind, unchanged)


#: Where the new row's TupleData starts in an insert, or in an update that logged no old row
#: (`I`/`U`, relation oid, `N`).
NEW_TUPLE_AT: Final = 6


def plain_new_row(data: bytes) -> bool:
    """Whether `data` is an insert, or an update that logged no old row (its key unchanged):
    a message `beam_etl.io._pgcolumns.tuple_columns` decodes in bulk."""
    return (data[0] == 73 or data[0] == 85) and data[5] == 78  # I or U, then N
