"""MySQL's speed paths: a trial predicted without loading, `LOAD DATA LOCAL INFILE` straight into
the target while every row goes in, and the staging bulk load (LOAD DATA, or multi-row INSERT)
whose warnings name the rows MySQL stored changed.
"""

import os
import re
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv

from beam_etl.core.batches import HIDDEN_PREFIX
from beam_etl.core.errors import ConnectorError
from beam_etl.io.sql.identifiers import LEDGER_TABLE
from beam_etl.io.sql.mysql_checks import (
    _AT_ROW,
    _GENERATED,
    _INTEGERS,
    _SESSION,
    _Column,
    _exactness,
    _insertable,
    _load_text,
    _q,
    _stages_as_is,
    _stores_as_is,
    _within,
)
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.staging import (
    StagedOrigins,
    conform,
    distinct_keys,
    own_columns,
    parts_schema,
    read_parts,
)
from beam_etl.io.sql.values import UnloadableError, loadable, sql_type

if TYPE_CHECKING:  # annotations only: the loader does not import dialects
    from beam_etl.io.sql.loader import SqlLoad


def predict(load: "SqlLoad", parts: list[Any]) -> Published | None:
    """Return what loading `parts` will do without loading them, when MySQL cannot refuse
    a row the Arrow screening (`unloadable`) lets through; None otherwise (the trial then
    loads). Predicted: `append` or `replace` into a table the load creates (no keys), and
    `merge` into a table it creates or one only a primary key on the merge keys guards:
    a base table, not partitioned, without trigger, CHECK constraint, foreign key (either
    way), generated column or other unique key, whose unloaded NOT NULL columns have a
    default. Every value must stage and store unchanged (`_stages_as_is`, `_stores_as_is`:
    text and binary measured here), NOT NULL columns get no null, the session is strict,
    the user was granted what the load needs, every merge key is an integer (text keys
    compare in a collation Arrow cannot count in) and none is null. A merge writes each
    staged key once (the last row per key), counting the deleted ones as the load does."""
    mode, keys, flag = load.o.mode, load.keys, load.o.hard_delete
    schema = parts_schema(parts)
    if schema is None or mode not in ("append", "replace", "merge"):
        return None
    if (mode == "merge") != bool(keys):
        return None
    load.execute(_SESSION)
    load.execute("SELECT @@SESSION.sql_mode, DATABASE()")
    sql_mode, current = load.cursor.fetchone()
    if current is None or not re.search(r"STRICT_(TRANS|ALL)_TABLES", sql_mode or ""):
        return None
    database, name = load.table.rpartition(".")[0] or current, load.table.rpartition(".")[2]
    fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
    columns = [f for f in fields if f.name != flag]
    if not all(_stages_as_is(f.type) for f in fields):
        return None
    if not set(keys) <= {f.name for f in columns if pa.types.is_integer(f.type)}:
        return None
    named = {f.name: f.type for f in fields}
    if flag is not None and not pa.types.is_boolean(named.get(flag, pa.null())):
        return None  # the load's SQL takes it as a boolean
    if load.o.dedup_sort is not None and load.o.dedup_sort not in named:
        return None
    # Staging and the ledger row (in the current database) need these in every load.
    if not _may(load, current, LEDGER_TABLE, {"CREATE TEMPORARY TABLES", "INSERT"}):
        return None
    needs = {"SELECT", "INSERT", *(("UPDATE", "DELETE") if mode == "merge" else ())}
    measures = [(k, "nulls", 0) for k in keys]
    measures += [
        (f.name, "float32", 0)
        for f in fields
        if pa.types.is_float32(getattr(f.type, "value_type", f.type))
    ]
    existing = load.d.columns(load)
    if existing is None:
        if not load.o.create_table or not _may(load, database, name, {"CREATE", *needs}):
            return None
        for f in columns:  # raises for a type no column holds, as the load does
            sql_type(f.type, "mysql", key=f.name in keys)
    else:
        if mode != "merge":
            return None
        if any(f.name not in existing for f in columns):
            if load.o.drift != "discard_columns":
                return None  # `evolve` alters the table; `freeze` fails in the trial
            fields = [f for f in fields if f.name in existing or f.name == flag]
            columns = [f for f in columns if f.name in existing]
            if not set(keys) <= {f.name for f in columns}:
                return None
        if not _may(load, database, name, needs) or _guarded(load, database, name):
            return None
        found = _measures(load, keys, columns)
        if found is None:
            return None
        measures += found
    origins = StagedOrigins("mysql")
    written, seen = 0, []
    for batch in origins.batches(parts, pa.schema([*fields, *StagedOrigins.FIELDS])):
        if not all(_within(batch.column(c), m, limit) for c, m, limit in measures):
            return None
        written += batch.num_rows
        if keys:
            seen.append(own_columns(batch, keys))
    if keys and seen:
        written = distinct_keys(pa.concat_tables(seen), keys)
    rejects = [
        origins.reject(load.o.step, load.table, keys, row, message)
        for row, message in origins.screened
    ]
    if rejects and load.o.on_reject == "fail":
        return None  # the trial fails the run, as the load would
    staged = sum(rows for _, rows in parts)
    return Published(written, staged - written - len(rejects), rejects)


def _measures(
    load: "SqlLoad", keys: list[str], columns: list[pa.Field]
) -> list[tuple[str, str, int]] | None:
    """Return what to measure in the staged columns (see `_within`) for the existing
    target to take every row (see `predict`); None when a row may be refused whatever
    they hold."""
    load.execute(f"SHOW FULL COLUMNS FROM {load.target}")
    target: dict[str, _Column] = {}
    defaults: dict[str, Any] = {}
    for column, kind, collation, null, _key, default, extra, *_ in load.cursor.fetchall():
        target[column] = _Column(kind, collation, null == "NO", extra)
        defaults[column] = default
    loaded = {f.name for f in columns}
    for column, described in target.items():
        extra = described.extra.lower().replace("default_generated", "")
        if _GENERATED.search(extra):
            return None  # its expression may fail, and it takes no value
        unset = column not in loaded and described.not_null and defaults[column] is None
        if unset and "auto_increment" not in extra:
            return None  # strict mode refuses every insert without it
    measures = []
    for f in columns:
        how = _stores_as_is(f.name, f.type, target[f.name])
        if how is None:
            return None
        kind = target[f.name].type.lower()
        if f.name in keys and kind.split(" ")[0].split("(")[0] not in _INTEGERS:
            return None  # staged keys and target keys must compare as Arrow does
        if how[0]:
            measures.append((f.name, how[0], how[1]))
        if target[f.name].not_null and f.name not in keys:
            measures.append((f.name, "nulls", 0))
    unique = load.d.unique_keys(load, load.target)
    if [(index, columns) for index, columns, _ in unique] != [("PRIMARY", frozenset(keys))]:
        return None
    return measures


def _may(load: "SqlLoad", database: str, table: str, privileges: set[str]) -> bool:
    """Whether the user was granted `privileges` on every database, on `database` or on
    its `table` (a role's grants are not looked up: that only forgoes a prediction)."""
    load.execute("SELECT CURRENT_USER()")
    user, _, host = load.cursor.fetchone()[0].rpartition("@")
    grantee = f"'{user}'@'{host}'"
    load.execute(
        "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s "
        "UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES "
        "WHERE GRANTEE = %s AND TABLE_SCHEMA = %s "
        "UNION SELECT PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
        "WHERE GRANTEE = %s AND TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (grantee, grantee, database, grantee, database, table),
    )
    return privileges <= {row[0].upper() for row in load.cursor.fetchall()}


def _guarded(load: "SqlLoad", database: str, table: str) -> bool:
    """Whether anything but its keys and column types may refuse a row of the target: it
    is no plain base table (a view, system-versioned or partitioned), or it has a trigger,
    a CHECK constraint or a foreign key, or another table's foreign key references it."""
    where = {"s": database, "t": table}
    load.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM information_schema.TABLES WHERE "
        "TABLE_SCHEMA = %(s)s AND TABLE_NAME = %(t)s AND TABLE_TYPE = 'BASE TABLE' "
        "AND COALESCE(CREATE_OPTIONS, '') NOT LIKE '%%partitioned%%') "
        "OR EXISTS (SELECT 1 FROM information_schema.TRIGGERS "
        "WHERE EVENT_OBJECT_SCHEMA = %(s)s AND EVENT_OBJECT_TABLE = %(t)s) "
        "OR EXISTS (SELECT 1 FROM information_schema.TABLE_CONSTRAINTS WHERE "
        "TABLE_SCHEMA = %(s)s AND TABLE_NAME = %(t)s "
        "AND CONSTRAINT_TYPE IN ('CHECK', 'FOREIGN KEY')) "
        "OR EXISTS (SELECT 1 FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
        "(CONSTRAINT_SCHEMA = %(s)s AND TABLE_NAME = %(t)s) "
        "OR (UNIQUE_CONSTRAINT_SCHEMA = %(s)s AND REFERENCED_TABLE_NAME = %(t)s))",
        where,
    )
    return bool(load.cursor.fetchone()[0])


def fast_append(load: "SqlLoad", parts: list[Any], columns: list[pa.Field]) -> bool:
    """LOAD DATA straight into the target; False (nothing kept) unless every row went in.

    LOAD DATA LOCAL turns refused rows into warnings (it cannot stop the file transfer),
    so any warning or missing row sends the load through staging instead.
    """
    schema = pa.schema(columns)
    staged = sum(rows for _, rows in parts)
    types = load.d.describe(load, load.target)
    for f in columns:  # changes LOAD DATA makes without a note: the staging path checks them
        check = _exactness(f.name, f.type, types[f.name].type)
        if check and not types[f.name].type.startswith(("varchar", "char", "decimal", "date(")):
            return False
    # Screened before anything is sent: the rows stream into LOAD DATA as they are rendered,
    # and a refusal found midway would leave those before it (kept, in a MyISAM table).
    try:
        for _ in loadable((conform(b, schema) for b in read_parts(parts)), "mysql"):
            pass
    except UnloadableError:
        return False
    load.connection.begin()
    loaded = load_data(load, load.target, schema, (conform(b, schema) for b in read_parts(parts)))
    if loaded != staged or load.cursor._result.warning_count:
        load.connection.rollback()
        return False
    load.finish(Published(staged, 0, []))
    return True


def local_infile(load: "SqlLoad") -> bool:
    load.execute("SELECT @@local_infile")
    return bool(load.cursor.fetchone()[0])


def load_data(load: "SqlLoad", table: str, schema: pa.Schema, batches) -> int:
    targets, sets = [], []
    for i, f in enumerate(schema):
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            targets.append(f"@b{i}")
            sets.append(f"{_q(f.name)} = UNHEX(@b{i})")
        else:
            targets.append(_q(f.name))
    with _CsvPipe(batches) as pipe:
        loaded = load.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' "
            f"LINES TERMINATED BY '\\n' ({', '.join(targets)})"
            + (f" SET {', '.join(sets)}" if sets else ""),
            (pipe.path,),
        )
    return loaded


class _CsvPipe(threading.Thread):
    """The rows of `batches` as LOAD DATA text, rendered in a thread into a named pipe while
    the statement reads it: the server loads while the client renders (a file written whole
    first made the server wait for the rendering, ~1 s for 3M rows). Leaving the `with`
    raises what the rendering raised (the statement then loaded only the rows before it)."""

    def __init__(self, batches) -> None:
        super().__init__(daemon=True)
        self._batches = batches
        self._folder = tempfile.mkdtemp(prefix="beam_etl_load_")
        self.path = os.path.join(self._folder, "rows.csv")
        try:
            os.mkfifo(self.path, 0o600)
        except OSError:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self._failure: BaseException | None = None
        self._stopped = False

    def __enter__(self) -> "_CsvPipe":
        self.start()
        return self

    def run(self) -> None:
        try:
            with open(self.path, "wb") as out:  # waits for the statement to open it
                for batch in self._batches:
                    if self._stopped:
                        return
                    text = _load_text(batch)
                    pacsv.write_csv(text, out, pacsv.WriteOptions(include_header=False))
        except BaseException as exc:  # raised where the statement ran
            if not self._stopped:
                self._failure = exc

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.join()  # the statement read to the end: the rendering has ended
        self._stopped = True
        while self.is_alive():  # the statement failed before or while reading: unblock it
            reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self.join(0.05)
            os.close(reader)  # a write now fails: no reader
        shutil.rmtree(self._folder, ignore_errors=True)
        if kind is None and self._failure is not None:
            raise self._failure


def insert_rows(load: "SqlLoad", stage: str, schema: pa.Schema, batches) -> None:
    """Multi-row INSERTs (PyMySQL's executemany batches the VALUES lists)."""
    marks = ", ".join(["%s"] * len(schema))
    sql = f"INSERT INTO {stage} ({', '.join(_q(n) for n in schema.names)}) VALUES ({marks})"
    for batch in batches:
        columns = [_insertable(column).to_pylist() for column in batch.columns]
        load.cursor.executemany(sql, list(zip(*columns)))


def staging_warnings(load: "SqlLoad", stage: str) -> None:
    """Take out the staged rows LOAD DATA stored changed: with LOCAL it cannot refuse a
    row, it stores what it could make of a value and warns, naming the file's row (the
    staging row number). Values the checks before staging let through should not get
    here; if the warnings are more than MySQL lists, the load fails."""
    count = load.cursor._result.warning_count
    load.execute("SHOW WARNINGS")
    warnings = load.cursor.fetchall()
    found: dict[int, str] = {}
    for _level, _code, message in warnings:
        at = _AT_ROW.search(message)
        if at is None or len(warnings) < count:
            raise ConnectorError(
                f"MySQL changed {count} value(s) loading the staging table of "
                f"`{load.table}`, first: {message}"
            )
        found.setdefault(int(at[1]), _AT_ROW.sub("", message))
    load.take_out(stage, found)
