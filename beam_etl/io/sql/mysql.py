"""MySQL / MariaDB as a dialect of the shared loader (PyMySQL): connections in UTC and their
transient failures, the key-range reader's queries, and what the loader asks of a dialect.

DDL commits at once in MySQL: a table the sink creates or evolves stays (empty, or with its new
columns) if the publish later fails, and a trial creates a missing table as a TEMPORARY one; the
rows themselves are published in one transaction, and `replace` swaps tables with one atomic
`RENAME TABLE`.
"""

import hashlib
import re
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.errors import ConnectorError
from beam_etl.io.sql import keptstate, read
from beam_etl.io.sql.dialect import NamedDialect, Part
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
from beam_etl.io.sql.options import DbConfig, SinkOptions, make_config
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.refusals import refusals_sql
from beam_etl.io.sql.retry import with_retries
from beam_etl.io.sql.staging import ROW_COLUMN

# Lock wait, deadlock, server shutting down, connection killed (MariaDB), refused, gone, lost.
_TRANSIENT: Final = frozenset({1053, 1205, 1213, 1927, 2003, 2006, 2013, 2055, 4031})
_INTEGER: Final = {1: 8, 2: 16, 9: 32, 3: 32, 8: 64, 13: 16}  # FIELD_TYPE -> bits
_CHUNK: Final = 10_000  # row numbers per IN list
_LEDGER_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {ledger} (run_id varchar(190) NOT NULL, "
    "target varchar(190) NOT NULL, rows_written bigint NOT NULL, "
    "published_at datetime(6) NOT NULL, PRIMARY KEY (run_id, target)) DEFAULT CHARSET=utf8mb4"
)


def connect(config: DbConfig) -> Any:
    """Return a PyMySQL connection (retried while the failure is transient), session in UTC."""
    import pymysql

    def attempt():
        if config.dsn is not None:
            raise ConnectorError("MySQL connections take host, port, database and user, not a DSN")
        connection = pymysql.connect(
            host=config.host,
            port=config.port,
            user=config.user,
            password=config.password.reveal(),
            database=config.database,
            connect_timeout=config.connect_timeout,
            local_infile=True,
            autocommit=True,
            charset="utf8mb4",
        )
        with connection.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            if config.statement_timeout is not None:
                cursor.execute("SELECT VERSION()")
                if "mariadb" in cursor.fetchone()[0].lower():
                    timeout = f"max_statement_time = {config.statement_timeout:f}"
                else:  # MySQL limits SELECTs only, in milliseconds
                    timeout = f"max_execution_time = {round(config.statement_timeout * 1000)}"
                cursor.execute(f"SET SESSION {timeout}")
        return connection

    return with_retries(attempt, config=config, is_transient=is_transient, what="Connecting")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: deadlocks, lock wait timeouts, lost, killed or refused
    connections.

    A connection killed while PyMySQL sends a `LOAD DATA LOCAL` file surfaces as an
    `AttributeError` raised inside PyMySQL (it writes to the socket it has just dropped):
    that is a lost connection too.
    """
    import pymysql

    if isinstance(exc, AttributeError) and "NoneType" in str(exc):
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        module = frame.tb_frame.f_globals.get("__name__", "") if frame else ""
        return module.startswith("pymysql.")
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return code in _TRANSIENT or isinstance(exc, pymysql.err.InterfaceError)


def arrow_type(field: Any) -> pa.DataType:
    """Return the Arrow type a MySQL result column (a PyMySQL field) is read as."""
    code, unsigned = field.type_code, bool(field.flags & 32)
    if code == 1 and field.length == 1:
        return pa.bool_()  # BOOLEAN is TINYINT(1)
    if code in _INTEGER:
        bits = _INTEGER[code]
        return pa.type_for_alias(f"{'u' if unsigned else ''}int{bits}")
    if code in (0, 246):
        precision = field.length - (1 if field.scale else 0) - (0 if unsigned else 1)
        make = pa.decimal128 if precision <= 38 else pa.decimal256
        return make(precision, field.scale)
    if code in (4, 5):
        return pa.float32() if code == 4 else pa.float64()
    if code == 10:
        return pa.date32()
    if code in (7, 12):
        return pa.timestamp("us")  # TIMESTAMP is read in the session zone, UTC
    if code in (249, 250, 251, 252, 253, 254) and field.charsetnr == 63:
        return pa.binary()
    return pa.string()  # text, JSON, ENUM, SET, TIME, ...


class _MySql(read.Dialect):
    """Reads with an unbuffered cursor in a REPEATABLE READ transaction WITH CONSISTENT
    SNAPSHOT."""

    name = "mysql"

    def connect(self, config: DbConfig) -> Any:
        return connect(config)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def read(self, connection, sql, params, source, batch_rows) -> Iterator[pa.RecordBatch]:
        import pymysql

        with connection.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        with connection.cursor(pymysql.cursors.SSCursor) as cursor:
            cursor.execute(sql, params or None)  # no `%` formatting without parameters
            schema = self._schema(cursor, source)
            while rows := cursor.fetchmany(batch_rows):
                columns = list(zip(*rows))
                yield pa.RecordBatch.from_arrays(
                    [_to_arrow(column, t) for column, t in zip(columns, schema.types)],
                    schema=schema,
                )
        connection.rollback()

    def describe(self, connection, sql, source) -> pa.Schema:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM ({sql}) AS d LIMIT 0")
            return self._schema(cursor, source)

    def integer_key(self, connection, table: str) -> tuple[str, int] | None:
        schema, _, name = table.rpartition(".")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.COLUMN_NAME, c.DATA_TYPE, t.TABLE_ROWS FROM information_schema.COLUMNS c "
                "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA "
                "AND t.TABLE_NAME = c.TABLE_NAME WHERE c.TABLE_SCHEMA = COALESCE(%s, DATABASE()) "
                "AND c.TABLE_NAME = %s AND c.COLUMN_KEY = 'PRI'",
                (schema or None, name),
            )
            key = cursor.fetchall()
        integers = ("tinyint", "smallint", "mediumint", "int", "bigint")
        if len(key) != 1 or key[0][1].lower() not in integers:
            return None  # no key, a composite one, or not an integer
        return key[0][0], int(key[0][2] or 0)

    @staticmethod
    def _schema(cursor, source: str) -> pa.Schema:
        fields = cursor._result.fields  # charset and flags tell binary and unsigned apart
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ConnectorError(f"The query of `{source}` repeats column names")
        return pa.schema([(f.name, arrow_type(f)) for f in fields])


def _to_arrow(values: tuple, data_type: pa.DataType) -> pa.Array:
    if pa.types.is_boolean(data_type):  # TINYINT(1) arrives as 0/1
        return pc.cast(pa.array(values, pa.int8()), data_type)
    return pa.array(values, data_type)


def config(host, port, database, user, password_env, connect_timeout, statement_timeout):
    """Return MySQL connection settings (no DSN: PyMySQL takes none)."""
    timeouts = (connect_timeout, statement_timeout)
    return make_config("mysql", None, None, host, port, database, user, password_env, *timeouts)


class MySqlDialect(NamedDialect):
    """MySQL / MariaDB for the shared loader: DDL outside the load's transaction, `LOAD DATA
    LOCAL INFILE` (or multi-row INSERT), merges as UPDATE then INSERT (never `ON DUPLICATE
    KEY`, which matches any unique key), strict mode with warnings refused, `RENAME TABLE`."""

    name = "mysql"
    title = "MySQL"
    transactional_ddl = False
    arrow_dedupe = False
    check_savepoints = False
    timestamp_type = "datetime(6)"
    table_options = " DEFAULT CHARSET=utf8mb4"
    origin_types = ("int", "bigint", "bigint PRIMARY KEY")
    now = "UTC_TIMESTAMP(6)"

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

    def needs_sql_dedupe(self, load: SqlLoad, fields: list[pa.Field]) -> bool:
        return load.mode.keep is not None  # insert_only keeps the first row per key

    def dedupe_sql(self, source, unique, keys, has_null, sort, first) -> str:
        order = f"{_q(sort)} DESC, " if sort else ""
        row = _q(ROW_COLUMN)
        return (  # keyed on the row number: bisection reads ranges of it
            f"CREATE TEMPORARY TABLE {unique} (PRIMARY KEY ({row})) AS SELECT * FROM "
            f"(SELECT s.*, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {order}{row} "
            f"{'ASC' if first else 'DESC'}) AS _beam_etl_rank FROM {source} s) AS ranked "
            f"WHERE _beam_etl_rank = 1 OR {has_null}"
        )

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

    def _match(self, load: SqlLoad) -> str:
        return " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in load.keys)

    def insert_ignore_sql(self, load: SqlLoad, insert: str, dest: str, in_range: str) -> str:
        missing = f"t.{_q(load.keys[0])} IS NULL"
        return f"{insert} LEFT JOIN {dest} t ON {self._match(load)} WHERE {missing} AND {in_range}"

    def upsert_sql(self, load: SqlLoad, insert, dest, source, names, types, in_range, kept):
        """Update the rows with the same primary key, then insert the others: `INSERT ... ON
        DUPLICATE KEY UPDATE` would match a row on any unique key and overwrite it. A row
        that collides with another row on a second unique key is refused instead."""
        keys, flag, match = load.keys, load.o.hard_delete, self._match(load)
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

    def one_by_one(self, load: SqlLoad, source: str, statements: list[str]) -> None:
        return None  # bisection down to single rows

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

    def _taken_key(
        self, load: SqlLoad, source, dest, types, index: str, _: frozenset, columns
    ) -> str:
        """Return a SELECT of `(row number, message)` of staged rows whose key `columns`
        (of the unique index `index`) a row of `dest` already holds, compared in the
        target columns' collations."""
        named = ", ".join(f"s.{_q(c)} AS k{i}" for i, c in enumerate(columns))
        match = " AND ".join(
            f"t.{_q(c)} = {_as_column(f'v.k{i}', types[c])}" for i, c in enumerate(columns)
        )
        message = _duplicate_message(index, len(columns), "v.k")
        return (
            f"SELECT v.r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} AS r, {named} "
            f"FROM {source} s) AS v WHERE EXISTS (SELECT 1 FROM {dest} t WHERE {match})"
        )

    def taken_key(self, load: SqlLoad, source, dest, types, key) -> str:
        return self._taken_key(load, source, dest, types, *key)

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

    def after_prepare(self, load: SqlLoad, source: str) -> None:
        pass  # staged rows are keyed on their number already

    def row_chunks(self, numbers: list[int]) -> Iterator[tuple[str, Any]]:
        for start in range(0, len(numbers), _CHUNK):
            chunk = numbers[start : start + _CHUNK]
            yield f"IN ({', '.join(['%s'] * len(chunk))})", chunk

    def clean_message(self, message: str) -> str:
        return _AT_ROW.sub("", message)


MYSQL: Final = MySqlDialect()
READER: Final = _MySql()


def load(connection: Any, table: str, options: SinkOptions | dict[str, Any]) -> SqlLoad:
    """Return a MySQL load on `connection`."""
    return SqlLoad(MYSQL, connection, table, options)


def publisher(config: DbConfig, table: str, options: SinkOptions | dict[str, Any]) -> LedgerPublish:
    """Return the publish of staged parts into the MySQL `table`."""
    return LedgerPublish(MYSQL, config, table, options)
