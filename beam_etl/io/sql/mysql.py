"""MySQL / MariaDB as a dialect of the shared loader (PyMySQL): connections in UTC and their
transient failures, the key-range reader's queries, and what the loader asks of a dialect.

DDL commits at once in MySQL: a table the sink creates or evolves stays (empty, or with its new
columns) if the publish later fails, and a trial creates a missing table as a TEMPORARY one; the
rows themselves are published in one transaction, and `replace` swaps tables with one atomic
`RENAME TABLE`.
"""

import hashlib
import re
from typing import Any, Final

import pyarrow as pa

from beam_etl.io.sql import keptstate
from beam_etl.io.sql.dialect import BaseDialect, Part
from beam_etl.io.sql.ledger import LedgerPublish
from beam_etl.io.sql.loader import SqlLoad
from beam_etl.io.sql.mysql_checks import (
    _AT_ROW,
    _ROW_ERRORS,
    _SESSION,
    _as_column,
    _ChangedError,
    _Column,
    _duplicate_message,
    _exactness,
    _is_row_error,
    _literal,
    _overflow,
    _q,
)
from beam_etl.io.sql.mysql_fast import (
    fast_append,
    insert_rows,
    load_data,
    local_infile,
    predict,
    staging_warnings,
)
from beam_etl.io.sql.mysql_read import connect, is_transient
from beam_etl.io.sql.options import DbConfig, SinkOptions
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.refusals import refusals_sql
from beam_etl.io.sql.staging import ROW_COLUMN

_LEDGER_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {ledger} (run_id varchar(190) NOT NULL, "
    "target varchar(190) NOT NULL, rows_written bigint NOT NULL, "
    "published_at datetime(6) NOT NULL, PRIMARY KEY (run_id, target)) DEFAULT CHARSET=utf8mb4"
)


class MySqlDialect(BaseDialect):
    """MySQL / MariaDB for the shared loader: DDL outside the load's transaction, `LOAD DATA
    LOCAL INFILE` (or multi-row INSERT), merges as UPDATE then INSERT (never `ON DUPLICATE
    KEY`, which matches any unique key), strict mode with warnings refused, `RENAME TABLE`."""

    name = "mysql"
    title = "MySQL"
    transactional_ddl = False
    arrow_dedupe = False
    check_savepoints = False
    timestamp_type = "datetime(6)"
    boolean_type = "boolean"
    table_options = " DEFAULT CHARSET=utf8mb4"
    origin_types = ("int", "bigint", "bigint PRIMARY KEY")
    screens = True
    now = "UTC_TIMESTAMP(6)"
    keyed_dedupe = True  # bisection reads ranges of the row number
    row_chunk = 10_000

    connect = staticmethod(connect)
    is_transient = staticmethod(is_transient)
    is_row_error = staticmethod(_is_row_error)

    def create_ledger(self, connection: Any, ledger: str, *, keep_state: bool) -> None:
        with connection.cursor() as cursor:
            cursor.execute(_LEDGER_DDL.format(ledger=ledger))
            if keep_state:
                keptstate.create(cursor, "mysql")  # DDL commits at once: before the load

    def lock(self, cursor: Any, table: str) -> None:
        lock = "beam_etl:" + hashlib.blake2b(table.encode(), digest_size=16).hexdigest()
        cursor.execute("SELECT GET_LOCK(%s, 600)", (lock,))

    def start(self, load: SqlLoad) -> None:
        load.execute(_SESSION)

    def columns(self, load: SqlLoad) -> dict[str, str] | None:
        schema, _, name = load.table.rpartition(".")
        load.execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s "
            "ORDER BY ORDINAL_POSITION",
            (schema or None, name),
        )
        found = dict(load.cursor.fetchall())
        return found or None

    def describe(self, load: SqlLoad, relation: str) -> dict[str, _Column]:
        """Return the columns of `relation` (quoted; temporary tables too) by name."""
        load.execute(f"SHOW FULL COLUMNS FROM {relation}")
        return {
            name: _Column(kind, collation, null == "NO", extra)
            for name, kind, collation, null, _key, _default, extra, *_ in load.cursor.fetchall()
        }

    def unique_keys(self, load: SqlLoad, dest: str) -> list[tuple[str, frozenset[str], list[str]]]:
        """Return the unique indexes of `dest`: name, columns as a set and in order; a
        prefix index with no columns (it matches no load)."""
        load.execute(f"SHOW INDEX FROM {dest}")
        fields = [c[0] for c in load.cursor.description]
        indexes: dict[str, list[tuple[int, str, Any]]] = {}
        for values in load.cursor.fetchall():
            entry = dict(zip(fields, values))
            if not entry["Non_unique"]:
                indexes.setdefault(entry["Key_name"], []).append(
                    (entry["Seq_in_index"], entry["Column_name"], entry["Sub_part"])
                )
        keys = []
        for index, parts in indexes.items():
            columns = [column for _, column, _ in sorted(parts)]
            prefix = any(part for *_, part in parts)
            keys.append((index, frozenset(["?"] if prefix else columns), columns))
        return keys

    def empty_target(self, load: SqlLoad) -> None:
        load.connection.begin()
        load.execute(f"DELETE FROM {load.target}")
        load.finish(Published(0, 0, []), record=False)

    def new_like(self, load: SqlLoad) -> str:
        new = _q(f"_beam_etl_new_{load.token}")
        load.execute(f"CREATE TABLE {new} LIKE {load.target}")
        return new

    def swap(self, load: SqlLoad, new: str, result: Published | None = None) -> None:
        # The swap commits at once; a crash before the ledger row leads to a re-run, which
        # is harmless.
        old = _q(f"_beam_etl_old_{load.token}")
        load.execute(f"RENAME TABLE {load.target} TO {old}, {new} TO {load.target}")
        load.record(result.written if result is not None else 0)
        load.execute(f"DROP TABLE {old}")

    def predict(self, load: SqlLoad, parts: list[Part]) -> Published | None:
        return predict(load, parts)

    def fast(self, load: SqlLoad, parts, fields, columns, existed: bool) -> Published | None:
        """`LOAD DATA` an append straight into the target; None unless every row went in."""
        if load.mode.name == "append" and self._bulk(load) and fast_append(load, parts, columns):
            return Published(sum(rows for _, rows in parts), 0, [])
        return None

    def _bulk(self, load: SqlLoad) -> bool:
        """Whether staging uses LOAD DATA (`load_method`, or the server's `local_infile`)."""
        if load.bulk is None:
            method = load.o.load_method
            load.bulk = method == "load_data" or (method == "auto" and local_infile(load))
        return load.bulk

    def temporary_table_sql(self, name: str, columns: list[str]) -> str:
        return f"CREATE TEMPORARY TABLE {name} ({', '.join(columns)}) DEFAULT CHARSET=utf8mb4"

    def stage_rows(self, load: SqlLoad, stage: str, schema: pa.Schema, batches) -> None:
        if self._bulk(load):
            load_data(load, stage, schema, batches)
            if load.cursor._result.warning_count:
                staging_warnings(load, stage)
        else:
            insert_rows(load, stage, schema, batches)

    def kept(self, flag: str | None) -> str:
        return f"NOT COALESCE(s.{_q(flag)}, 0)" if flag else "TRUE"

    def before_apply(self, load: SqlLoad, source, names, types, kept) -> list[str]:
        """Take out the staged rows MySQL would store changed without an error (see
        `_exactness`), in one query; return the staged values as they are."""
        checks = [
            (f"({c[0]}) AND {kept}", c[1])
            for n in names
            if (c := _exactness(n, load.loaded[n], types[n].type))
        ]
        if checks:
            load.execute(refusals_sql(source, _q(ROW_COLUMN), checks))
            found = dict(load.cursor.fetchall())
            if found:
                load.take_out(source, found)
        return [f"s.{_q(n)}" for n in names]

    def insert_ignore_sql(self, load: SqlLoad, insert: str, dest: str, in_range: str) -> str:
        missing = f"t.{_q(load.keys[0])} IS NULL"
        match = self._match(load, "t")
        return f"{insert} LEFT JOIN {dest} t ON {match} WHERE {missing} AND {in_range}"

    def upsert_sql(self, load: SqlLoad, insert, dest, source, names, types, in_range, kept):
        """Update the rows with the same primary key, then insert the others: `INSERT ... ON
        DUPLICATE KEY UPDATE` would match a row on any unique key and overwrite it. A row
        that collides with another row on a second unique key is refused instead."""
        keys, flag, match = load.keys, load.o.hard_delete, self._match(load, "t")
        statements = []
        if flag:
            statements.append(
                f"DELETE t FROM {dest} t JOIN {source} s ON {match} "
                f"WHERE s.{_q(flag)} AND {in_range}"
            )
        others = [n for n in names if n not in keys]
        if others:
            sets = ", ".join(f"t.{_q(n)} = s.{_q(n)}" for n in others)
            statements.append(
                f"UPDATE {dest} t JOIN {source} s ON {match} SET {sets} WHERE {in_range} AND {kept}"
            )
        new = self.insert_ignore_sql(load, insert, dest, in_range)
        return [*statements, f"{new} AND {kept}"]

    def history_options(self, load: SqlLoad, types) -> dict[str, Any]:
        return {"fresh": load.fresh}

    def begin(self, load: SqlLoad) -> None:
        load.connection.begin()

    def after_statement(self, load: SqlLoad) -> None:
        """Raise `_ChangedError` when the last statement stored a value changed (a warning
        or note of a truncated, rounded or out-of-range value): bisection then finds its row."""
        result = load.cursor._result
        if result is None or not result.warning_count:
            return
        load.execute("SHOW WARNINGS")
        for _level, code, message in load.cursor.fetchall():
            if code in _ROW_ERRORS:
                raise _ChangedError(code, message)

    def refusal_message(self, load: SqlLoad, exc: BaseException) -> str:
        message = _AT_ROW.sub("", str(exc.args[-1]))
        return message.replace(f"_beam_etl_new_{load.token}", load.table)

    def refusal_checks(self, load: SqlLoad, names, types, kept) -> list[tuple[str, str]]:
        checks = [
            (f"s.{_q(n)} IS NULL AND {kept}", _literal(f"Column '{n}' cannot be null"))
            for n in names
            if types[n].not_null
            and "auto_increment" not in types[n].extra  # NULL there picks the next number
            and not types[n].type.startswith("timestamp")  # and may mean "now" there
        ]
        return checks + [
            (f"({c[0]}) AND {kept}", c[1])
            for n in names
            if (c := _overflow(n, load.loaded[n], types[n].type))
        ]

    def _failed_checks(self, load: SqlLoad, source: str, names: list[str], kept: str) -> list[str]:
        """Return SELECTs of `(row number, message)` of staged rows a CHECK constraint of the
        target refuses (its expression false on the staged values)."""
        schema, _, name = load.table.rpartition(".")
        load.execute(
            "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
            (schema or None, name),
        )
        queries = []
        for constraint, clause in load.cursor.fetchall():
            columns = set(re.findall(r"`([^`]+)`", clause))
            if not columns <= set(names):
                continue  # a column the load leaves to its default (or not a column at all)
            values = ", ".join(f"s.{_q(c)} AS {_q(c)}" for c in columns)
            message = _literal(f"CONSTRAINT `{constraint}` failed for `{load.table}`")
            queries.append(
                f"SELECT __beam_etl_r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} "
                f"AS __beam_etl_r, {values} FROM {source} s WHERE {kept}) AS v "
                f"WHERE ({clause}) IS FALSE"
            )
        return queries

    def failed_checks(self, load: SqlLoad, source, dest, names, types, kept) -> list[str]:
        return self._failed_checks(load, source, names, kept)

    def taken_key(self, load: SqlLoad, source, dest, types, key) -> str:
        """Return a SELECT of `(row number, message)` of staged rows whose key `columns`
        (of the unique index `index`) a row of `dest` already holds, compared in the
        target columns' collations."""
        index, _, columns = key
        named = ", ".join(f"s.{_q(c)} AS k{i}" for i, c in enumerate(columns))
        match = " AND ".join(
            f"t.{_q(c)} = {_as_column(f'v.k{i}', types[c])}" for i, c in enumerate(columns)
        )
        message = _duplicate_message(index, len(columns), "v.k")
        return (
            f"SELECT v.r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} AS r, {named} "
            f"FROM {source} s) AS v WHERE EXISTS (SELECT 1 FROM {dest} t WHERE {match})"
        )

    def only_keys_refuse(self, load: SqlLoad, dest: str) -> bool:
        schema, _, name = load.table.rpartition(".")
        load.execute(
            "SELECT (SELECT COUNT(*) FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = COALESCE(%s, DATABASE()) AND EVENT_OBJECT_TABLE = %s) "
            "+ (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s)",
            (schema or None, name, schema or None, name),
        )
        return load.cursor.fetchone()[0] == 0

    def repeated_key(self, load: SqlLoad, key, types) -> tuple[list[str], str]:
        index, _, columns = key
        values = [_as_column(f"s.{_q(c)}", types[c]) for c in columns]
        return values, _duplicate_message(index, len(columns), "d.k")

    def clean_message(self, message: str) -> str:
        return _AT_ROW.sub("", message)


MYSQL: Final = MySqlDialect()


def load(connection: Any, table: str, options: SinkOptions | dict[str, Any]) -> SqlLoad:
    """Return a MySQL load on `connection`."""
    return SqlLoad(MYSQL, connection, table, options)


def publisher(config: DbConfig, table: str, options: SinkOptions | dict[str, Any]) -> LedgerPublish:
    """Return the publish of staged parts into the MySQL `table`."""
    return LedgerPublish(MYSQL, config, table, options)
