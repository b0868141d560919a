"""MySQL / MariaDB source and sink on PyMySQL: unbuffered key-range reads, `LOAD DATA LOCAL
INFILE` (or multi-row INSERT) into a temporary staging table, set-based publishing with a ledger.

pymysql decodes the protocol in Python (about 85k rows/s), so large reads should be split with
`partition_column` and read by several workers. DDL commits implicitly in MySQL: a table the
sink creates or evolves stays (empty, or with its new columns) if the publish later fails; the
rows themselves are published in one transaction, and `replace` swaps tables with one atomic
`RENAME TABLE`.
"""

import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any, ClassVar, Final, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_etl.batches import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN
from beam_etl.errors import ConnectorError
from beam_etl.io import _scd2
from beam_etl.io._files import new_run_id
from beam_etl.io.sql import keptstate, read
from beam_etl.io.sql.identifiers import LEDGER_TABLE, quote_identifier
from beam_etl.io.sql.loader import (
    apply_bisecting,
    refusals_sql,
    schema_drift,
    unique_violations_sql,
)
from beam_etl.io.sql.options import DbConfig, check_write_args, make_config
from beam_etl.io.sql.publish import Published, StageAndPublishDb, check_expected
from beam_etl.io.sql.retry import with_retries
from beam_etl.io.sql.staging import (
    ROW_COLUMN,
    StagedOrigins,
    conform,
    parts_schema,
    read_parts,
    staging_folder,
)
from beam_etl.io.sql.values import UnloadableError, in_microseconds, loadable, sql_type
from beam_etl.state import current_state
from beam_etl.transforms.outputs import WithErrors

# Lock wait, deadlock, server shutting down, connection killed (MariaDB), refused, gone, lost.
_TRANSIENT: Final = frozenset({1053, 1205, 1213, 1927, 2003, 2006, 2013, 2055, 4031})
# Values and constraints; 1262, 1263, 1265 also as warnings (notes) of a value changed.
_ROW_ERRORS: Final = frozenset(
    {1048, 1062, 1262, 1263, 1264, 1265, 1292, 1366, 1406, 1452, 3819, 4025}
)
_AT_ROW: Final = re.compile(r" at row (\d+)$")
_INTEGER: Final = {1: 8, 2: 16, 9: 32, 3: 32, 8: 64, 13: 16}  # FIELD_TYPE -> bits
_LOAD_METHODS: Final = ("auto", "load_data", "insert")


def _q(name: str) -> str:
    return quote_identifier(name, "mysql")


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


class ReadFromMySql(read.ReadFromDatabase):
    """Read a MySQL/MariaDB table or query into Arrow record batches, in parallel key ranges.

    Bounded; order is not kept. Streams the result with an unbuffered cursor (bounded memory:
    about `batch_rows` rows per worker). Each key range is read in its own REPEATABLE READ
    transaction started WITH CONSISTENT SNAPSHOT; different ranges may see different moments.
    Every row is read exactly once when `partition_column` does not change during the read.
    Types: integers (TINYINT(1) as boolean), floats, decimals, dates, DATETIME/TIMESTAMP as
    timestamps without zone (TIMESTAMP in UTC), binary strings and blobs as binary; text,
    JSON, ENUM, SET, TIME as strings. Batches carry the table (or `query`) as origin.
    """

    DIALECT = _MySql()

    def __init__(
        self,
        *,
        table: str | None = None,
        query: str | None = None,
        host: str = "127.0.0.1",
        port: int = 3306,
        database: str | None = None,
        user: str = "root",
        password_env: str | None = "MYSQL_PASSWORD",
        partition_column: str | None = None,
        num_partitions: int | None = None,
        lower_bound: int | None = None,
        upper_bound: int | None = None,
        batch_rows: int = 50_000,
        incremental: dict | None = None,
        connect_timeout: float = 10.0,
        statement_timeout: float | None = None,
    ) -> None:
        """Args:
        table: the table to read (`name` or `database.name`); or give `query`.
        query: a SELECT whose result to read (trusted SQL from the spec author).
        host: server host.
        port: server port.
        database: database name.
        user: user name.
        password_env: environment variable holding the password (read at construction).
        partition_column: integer column to split the read on.
        num_partitions: number of key ranges (parallel reads). Unset, a `table` with a
            one-column integer primary key is split on it, a range per ~250,000 rows (the
            server's estimate; at most 16); 1 reads everything in one consistent snapshot.
        lower_bound: smallest key to plan ranges from (queried when not given).
        upper_bound: largest key to plan ranges from (queried when not given).
        batch_rows: rows per output batch.
        incremental: read only what changed since the last successful run:
            `{cursor: updated_at, initial: "2024-01-01", lag: "10m", end: null,
            on_null: exclude | include | reject}` (see README, Incremental loads).
        connect_timeout: seconds to wait for a connection.
        statement_timeout: seconds a statement may run (no limit when not given).
        """
        super().__init__()
        config = _config(
            host, port, database, user, password_env, connect_timeout, statement_timeout
        )
        self._setup_read(
            config,
            table,
            query,
            partition_column,
            num_partitions,
            lower_bound,
            upper_bound,
            batch_rows,
            incremental,
        )


def _config(host, port, database, user, password_env, connect_timeout, statement_timeout):
    return make_config(
        "mysql",
        dsn=None,
        dsn_env=None,
        host=host,
        port=port,
        database=database,
        user=user,
        password_env=password_env,
        connect_timeout=connect_timeout,
        statement_timeout=statement_timeout,
    )


def _load_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return `batch` as LOAD DATA text: escaped backslashes, `\\N` for null, hex for binary."""
    arrays = []
    for column in batch.columns:
        column = _insertable(column)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            column = pa.array([None if v is None else v.hex() for v in column.to_pylist()])
        text = pc.replace_substring(pc.cast(column, pa.string()), "\\", "\\\\")
        arrays.append(pc.fill_null(text, "\\N"))
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _insertable(column: pa.Array) -> pa.Array:
    """Return `column` in a type MySQL takes: zones dropped after converting to UTC, 0/1 bools."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    column = in_microseconds(column)
    if pa.types.is_timestamp(column.type) and column.type.tz:
        column = pc.cast(column, pa.timestamp(column.type.unit))  # keeps the UTC instant
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    return column


class _Column(NamedTuple):
    """A target column as `SHOW FULL COLUMNS` tells it (temporary tables included)."""

    type: str
    collation: str | None
    not_null: bool
    extra: str


_SIZED: Final = re.compile(r"(?P<name>[a-z]+)\((?P<size>\d+)(?:,(?P<scale>\d+))?\)(?P<rest>.*)")
_INTEGERS: Final = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}
_DIGITS: Final = {8: 3, 16: 5, 32: 10, 64: 20}  # decimal digits of the widest integer
_NOTED: Final = ("varchar", "char", "decimal", "date")  # LOAD DATA notes what it changes
_CHUNK: Final = 10_000  # row numbers per IN list
_SESSION: Final = (
    "SET SESSION sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_ALL_TABLES'), "
    "max_error_count = 65535"
)


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _exactness(column: str, staged: pa.DataType, target: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL on the staging row `s`, true where MySQL would
    store its value changed, without an error even in strict mode: trailing spaces cut
    from a varchar, a decimal rounded to its scale or to a whole number, fractional seconds
    rounded, a time of day dropped by a date. None where that cannot happen. Floats into
    FLOAT keep MySQL's nearest value."""
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    sized = _SIZED.fullmatch(target)
    name = sized["name"] if sized else target.split(" ")[0].split("(")[0]
    text = pa.types.is_string(staged) or pa.types.is_large_string(staged)
    number = f"CAST({raw} AS DECIMAL(65,30))" if text else raw
    where = f"of column `{column}`"
    if sized and name in ("varchar", "char"):
        message = _literal(f"Data too long for column '{column}' ({target})")
        return f"CHAR_LENGTH({raw}) > {sized['size']}", message
    if sized and name == "decimal":
        scale = int(sized["scale"] or 0)
        if _fits(staged, int(sized["size"]), scale):
            return None
        message = f"CONCAT('value `', {raw}, '` {where} does not fit {target} without rounding')"
        return f"{number} <> ROUND({number}, {scale})", message
    if name in ("datetime", "timestamp", "time"):
        digits = int(sized["size"]) if sized else 0
        if digits >= 6 or not (text or pa.types.is_timestamp(staged) or pa.types.is_time(staged)):
            return None
        value = f"CAST({raw} AS {'TIME' if name == 'time' else 'DATETIME'}(6))" if text else raw
        message = f"CONCAT('value `', {raw}, '` {where} would be rounded to {target}')"
        return f"MOD(MICROSECOND({value}), {10 ** (6 - digits)}) <> 0", message
    inexact = pa.types.is_floating(staged) or (pa.types.is_decimal(staged) and staged.scale > 0)
    if name in _INTEGERS and (inexact or text):
        return f"{number} <> ROUND({number})", f"CONCAT('value `', {raw}, '` {where} is not whole')"
    if name == "date" and (text or pa.types.is_timestamp(staged)):
        value = f"CAST({raw} AS DATETIME(6))" if text else raw
        message = f"CONCAT('value `', {raw}, '` {where} has a time of day, which a date drops')"
        return f"{value} <> CAST({value} AS DATE)", message
    return None


def _fits(staged: pa.DataType, precision: int, scale: int) -> bool:
    """Whether every value of `staged` fits decimal(precision, scale) without rounding."""
    if pa.types.is_decimal(staged):
        return staged.scale <= scale and staged.precision - staged.scale <= precision - scale
    if pa.types.is_integer(staged):
        return _DIGITS[staged.bit_width] <= precision - scale
    return False


def _overflow(column: str, staged: pa.DataType, target: str) -> tuple[str, str] | None:
    """Return `(condition, message)` SQL, true where a value is out of the `target` type's
    range (strict mode refuses it: found set-based, it needs no bisection)."""
    if pa.types.is_dictionary(staged):
        staged = staged.value_type
    raw = f"s.{_q(column)}"
    sized = _SIZED.fullmatch(target)
    name = sized["name"] if sized else target.split(" ")[0]
    message = _literal(f"Out of range value for column '{column}' ({target})")
    numeric = pa.types.is_integer(staged) or pa.types.is_decimal(staged)
    if sized and name == "decimal" and (numeric or pa.types.is_floating(staged)):
        precision, scale = int(sized["size"]), int(sized["scale"] or 0)
        if _fits(staged, precision, scale):
            return None
        limit = "1" + "0" * (precision - scale)
        negative = f" OR {raw} < 0" if "unsigned" in target else ""
        return f"ABS(ROUND({raw}, {scale})) >= {limit}{negative}", message
    if name in _INTEGERS and (numeric or pa.types.is_floating(staged)):
        bits, unsigned = _INTEGERS[name], "unsigned" in target
        low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if pa.types.is_integer(staged):
            from_unsigned = pa.types.is_unsigned_integer(staged)
            width = staged.bit_width + (from_unsigned and not unsigned)  # and a sign bit
            if width <= bits and (from_unsigned or not unsigned):
                return None
        return f"NOT (ROUND({raw}) BETWEEN {low} AND {high})", message
    return None


_TEXT_BYTES: Final = {"tinytext": 255, "text": 65_535, "mediumtext": 16_777_215, "longtext": 0}
_BLOB_BYTES: Final = {"tinyblob": 255, "blob": 65_535, "mediumblob": 16_777_215, "longblob": 0}
_FLOAT32_TEXT: Final = 3.4e38  # a float32 nearer its limit may be read back past MySQL's FLT_MAX
_GENERATED: Final = re.compile(r"generated|virtual|stored|persistent")


def _stages_as_is(staged: pa.DataType) -> bool:
    """Whether the staging table (`sql_type` columns, fed as text) takes every value of
    this type that `unloadable` lets through unchanged (float32 values are measured too)."""
    t = staged.value_type if pa.types.is_dictionary(staged) else staged
    if pa.types.is_decimal(t):
        return t.precision <= 65 and 0 <= t.scale <= 30  # staged in numeric(p,s) as they are
    kinds = (
        pa.types.is_boolean,
        pa.types.is_integer,
        pa.types.is_float32,
        pa.types.is_float64,
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_date32,
        pa.types.is_timestamp,
    )
    return any(kind(t) for kind in kinds)


def _stores_as_is(column: str, staged: pa.DataType, target: _Column) -> tuple[str, int] | None:
    """Return how to confirm in Arrow that a `target` column stores every staged value of
    `column` unchanged and refuses none (in strict mode): `("", 0)` nothing to measure,
    `("chars", n)` no text longer than n characters, `("bytes", n)` no value longer than n
    bytes. None where it might refuse or change one (another type, charset or range): the
    checks `_exactness` and `_overflow` find nothing, and the pair is one known to be exact."""
    t = staged.value_type if pa.types.is_dictionary(staged) else staged
    kind = target.type.lower()
    sized = _SIZED.fullmatch(kind)
    name = sized["name"] if sized else kind.split(" ")[0].split("(")[0]
    checked = _exactness(column, t, kind) is None and _overflow(column, t, kind) is None
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        number = name in _INTEGERS or (name == "decimal" and "unsigned" not in kind)
        return ("", 0) if number and checked else None
    if pa.types.is_floating(t):
        return ("", 0) if kind == "double" or (kind == "float" and t.bit_width == 32) else None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not (target.collation or "").startswith("utf8mb4_"):
            return None  # another charset may refuse a character
        if sized and name in ("varchar", "char"):
            return "chars", int(sized["size"])
        return ("bytes", _TEXT_BYTES[kind]) if kind in _TEXT_BYTES else None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        if sized and name == "varbinary":
            return "bytes", int(sized["size"])
        return ("bytes", _BLOB_BYTES[kind]) if kind in _BLOB_BYTES else None
    if pa.types.is_date32(t):
        return ("", 0) if kind == "date" else None
    if pa.types.is_timestamp(t):
        return ("", 0) if kind == "datetime(6)" else None
    return None


def _within(column: pa.Array, measure: str, limit: int) -> bool:
    """Whether the staged `column` passes `measure`: `nulls` (it has none), `chars` or `bytes`
    (no value longer than `limit`; 0: no limit), `float32` (text of every value reads back
    as a float32)."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if measure == "nulls":
        return column.null_count == 0
    if measure == "float32":
        largest = pc.max(pc.abs(column)).as_py()
        return largest is None or largest < _FLOAT32_TEXT
    if not limit:
        return True
    lengths = pc.utf8_length(column) if measure == "chars" else pc.binary_length(column)
    longest = pc.max(lengths).as_py()
    return longest is None or longest <= limit


class _ChangedError(Exception):
    """MySQL changed a value instead of refusing it (a warning or note): refused all the same.

    Args are those of a PyMySQL error: the warning's code and message.
    """


class _MyLoad:
    """One publish: table management (DDL, committed at once), staging, the mode's SQL."""

    def __init__(self, connection, table: str, settings: dict[str, Any]) -> None:
        self.connection = connection
        self.cursor = connection.cursor()
        self.table = table
        self.target = _q(table)
        self.s = settings
        self.token = os.urandom(6).hex()
        self.origins = StagedOrigins("mysql")
        self.taken: list[tuple[int, dict[str, Any], str]] = []  # rows checks took out
        self.loaded: dict[str, pa.DataType] = {}  # staged columns' Arrow types

    def _execute(self, sql: str, params: Any = None) -> int:
        return self.cursor.execute(sql, params)

    def predict(self, parts: list[Any]) -> Published | None:
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
        mode, keys, flag = self.s["mode"], self.s["keys"], self.s["hard_delete"]
        schema = parts_schema(parts)
        if schema is None or mode not in ("append", "replace", "merge"):
            return None
        if (mode == "merge") != bool(keys):
            return None
        self._execute(_SESSION)
        self._execute("SELECT @@SESSION.sql_mode, DATABASE()")
        sql_mode, current = self.cursor.fetchone()
        if current is None or not re.search(r"STRICT_(TRANS|ALL)_TABLES", sql_mode or ""):
            return None
        database, name = self.table.rpartition(".")[0] or current, self.table.rpartition(".")[2]
        fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
        load = [f for f in fields if f.name != flag]
        if not all(_stages_as_is(f.type) for f in fields):
            return None
        if not set(keys) <= {f.name for f in load if pa.types.is_integer(f.type)}:
            return None
        named = {f.name: f.type for f in fields}
        if flag is not None and not pa.types.is_boolean(named.get(flag, pa.null())):
            return None  # the load's SQL takes it as a boolean
        if self.s["dedup_sort"] is not None and self.s["dedup_sort"] not in named:
            return None
        # Staging and the ledger row (in the current database) need these in every load.
        if not self._may(current, LEDGER_TABLE, {"CREATE TEMPORARY TABLES", "INSERT"}):
            return None
        needs = {"SELECT", "INSERT", *(("UPDATE", "DELETE") if mode == "merge" else ())}
        measures = [(k, "nulls", 0) for k in keys]
        measures += [
            (f.name, "float32", 0)
            for f in fields
            if pa.types.is_float32(getattr(f.type, "value_type", f.type))
        ]
        existing = self._columns()
        if existing is None:
            if not self.s["create_table"] or not self._may(database, name, {"CREATE", *needs}):
                return None
            for f in load:  # raises for a type no column holds, as the load does
                sql_type(f.type, "mysql", key=f.name in keys)
        else:
            if mode != "merge":
                return None
            if any(f.name not in existing for f in load):
                if self.s["drift"] != "discard_columns":
                    return None  # `evolve` alters the table; `freeze` fails in the trial
                fields = [f for f in fields if f.name in existing or f.name == flag]
                load = [f for f in load if f.name in existing]
                if not set(keys) <= {f.name for f in load}:
                    return None
            if not self._may(database, name, needs) or self._guarded(database, name):
                return None
            found = self._measures(keys, load)
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
                seen.append(pa.Table.from_batches([batch]).select(keys))
        if keys and seen:
            written = pa.concat_tables(seen).group_by(keys).aggregate([]).num_rows
        rejects = [
            origins.reject(self.s["step"], self.table, keys, row, message)
            for row, message in origins.screened
        ]
        if rejects and self.s["on_reject"] == "fail":
            return None  # the trial fails the run, as the load would
        staged = sum(rows for _, rows in parts)
        return Published(written, staged - written - len(rejects), rejects)

    def _measures(self, keys: list[str], load: list[pa.Field]) -> list[tuple[str, str, int]] | None:
        """Return what to measure in the staged columns (see `_within`) for the existing
        target to take every row (see `predict`); None when a row may be refused whatever
        they hold."""
        self._execute(f"SHOW FULL COLUMNS FROM {self.target}")
        target: dict[str, _Column] = {}
        defaults: dict[str, Any] = {}
        for column, kind, collation, null, _key, default, extra, *_ in self.cursor.fetchall():
            target[column] = _Column(kind, collation, null == "NO", extra)
            defaults[column] = default
        loaded = {f.name for f in load}
        for column, described in target.items():
            extra = described.extra.lower().replace("default_generated", "")
            if _GENERATED.search(extra):
                return None  # its expression may fail, and it takes no value
            unset = column not in loaded and described.not_null and defaults[column] is None
            if unset and "auto_increment" not in extra:
                return None  # strict mode refuses every insert without it
        measures = []
        for f in load:
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
        unique = self._unique_keys(self.target)
        if [(index, columns) for index, columns, _ in unique] != [("PRIMARY", frozenset(keys))]:
            return None
        return measures

    def _may(self, database: str, table: str, privileges: set[str]) -> bool:
        """Whether the user was granted `privileges` on every database, on `database` or on
        its `table` (a role's grants are not looked up: that only forgoes a prediction)."""
        self._execute("SELECT CURRENT_USER()")
        user, _, host = self.cursor.fetchone()[0].rpartition("@")
        grantee = f"'{user}'@'{host}'"
        self._execute(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s "
            "UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES "
            "WHERE GRANTEE = %s AND TABLE_SCHEMA = %s "
            "UNION SELECT PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
            "WHERE GRANTEE = %s AND TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (grantee, grantee, database, grantee, database, table),
        )
        return privileges <= {row[0].upper() for row in self.cursor.fetchall()}

    def _guarded(self, database: str, table: str) -> bool:
        """Whether anything but its keys and column types may refuse a row of the target: it
        is no plain base table (a view, system-versioned or partitioned), or it has a trigger,
        a CHECK constraint or a foreign key, or another table's foreign key references it."""
        where = {"s": database, "t": table}
        self._execute(
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
        return bool(self.cursor.fetchone()[0])

    def run(self, parts: list[Any]) -> Published:
        self._execute(_SESSION)
        schema = parts_schema(parts)
        staged = sum(rows for _, rows in parts)
        existing = self._columns()
        fields = [f for f in (schema or []) if not f.name.startswith(HIDDEN_PREFIX)]
        load = [f for f in fields if f.name != self.s["hard_delete"]]
        if schema is None:  # nothing staged: `replace` still empties the target
            if existing is not None and self.s["mode"] == "replace":
                self.connection.begin()
                self._execute(f"DELETE FROM {self.target}")
                self._end(Published(0, 0, []))
            return Published(0, 0, [])
        # MySQL commits DDL at once: a trial (`_db.prepare`) creates a missing table as a
        # TEMPORARY one and adds no column (a new nullable column refuses no row).
        trial = bool(self.s.get("trial"))
        if existing is None:
            if not self.s["create_table"]:
                raise ConnectorError(f"Table `{self.table}` does not exist (create_table: false)")
            self._create(load, temporary=trial)
        elif schema is not None:
            add, discard = schema_drift(
                pa.schema(load), list(existing), self.s["drift"], self.table
            )
            for f in add:
                column = f"{_q(f.name)} {sql_type(f.type, 'mysql')}"
                if not trial:
                    self._execute(f"ALTER TABLE {self.target} ADD COLUMN {column}")
            if trial:
                discard = [*discard, *(f.name for f in add)]
            fields = [f for f in fields if f.name not in discard]
            load = [f for f in load if f.name not in discard]
        names = [f.name for f in load]
        self.fresh = existing is None
        if self.s["mode"] in ("merge", "insert_only", "scd2") and set(self.s["keys"]) - set(names):
            raise ConnectorError(
                f"Primary key column(s) {self.s['keys']} are not all in the load for `{self.table}`"
            )
        self.load_data = self.s["load_method"] == "load_data" or (
            self.s["load_method"] == "auto" and self._local_infile()
        )
        if self.s["mode"] == "append" and self.load_data and self._fast_append(parts, load):
            return Published(staged, 0, [])
        source = self._stage(parts, fields)
        if self.s["mode"] in ("merge", "insert_only", "scd2"):  # insert_only: the first per key
            source = self._deduplicate(source, first=self.s["mode"] == "insert_only")
        new = None
        if self.s["mode"] == "replace" and existing is not None:
            new = _q(f"_beam_etl_new_{self.token}")
            self._execute(f"CREATE TABLE {new} LIKE {self.target}")
        try:
            result = self._apply(source, new or self.target, names, staged, record=new is None)
            if new is not None and trial:
                self._execute(f"DROP TABLE {new}")
            elif new is not None:  # the swap commits at once; a crash before the ledger row
                old = _q(f"_beam_etl_old_{self.token}")  # leads to a re-run, which is harmless
                self._execute(f"RENAME TABLE {self.target} TO {old}, {new} TO {self.target}")
                self._record(result.written)
                self._execute(f"DROP TABLE {old}")
        except BaseException:
            if new is not None:
                self._execute(f"DROP TABLE IF EXISTS {new}")
            raise
        return result

    def _columns(self) -> dict[str, str] | None:
        schema, _, name = self.table.rpartition(".")
        self._execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s "
            "ORDER BY ORDINAL_POSITION",
            (schema or None, name),
        )
        found = dict(self.cursor.fetchall())
        return found or None

    def _create(self, load: list[pa.Field], *, temporary: bool = False) -> None:
        keys = self.s["keys"]
        columns = [f"{_q(f.name)} {sql_type(f.type, 'mysql', key=f.name in keys)}" for f in load]
        if self.s["mode"] == "scd2":  # every version of a key, told apart by `valid_from`
            columns += _scd2.extra_columns(_q, "datetime(6)", "boolean")
            keys = [*keys, _scd2.VALID_FROM]
        if keys:
            columns.append(f"PRIMARY KEY ({', '.join(_q(k) for k in keys)})")
        create = "CREATE TEMPORARY TABLE" if temporary else "CREATE TABLE"
        self._execute(f"{create} {self.target} ({', '.join(columns)}) DEFAULT CHARSET=utf8mb4")

    def _stage(self, parts: list[Any], fields: list[pa.Field]) -> str:
        stage = _q(f"_beam_etl_stage_{self.token}")
        columns = [f"{_q(f.name)} {sql_type(f.type, 'mysql')}" for f in fields]
        columns += [f"{_q(FILE_COLUMN)} int", f"{_q(LINE_COLUMN)} bigint"]
        columns.append(f"{_q(ROW_COLUMN)} bigint PRIMARY KEY")
        self._execute(
            f"CREATE TEMPORARY TABLE {stage} ({', '.join(columns)}) DEFAULT CHARSET=utf8mb4"
        )
        schema = pa.schema([*fields, *StagedOrigins.FIELDS])
        self.loaded = {f.name: f.type for f in fields}
        batches = self.origins.batches(parts, schema)
        if self.load_data:
            self._load_data(stage, schema, batches)
            if self.cursor._result.warning_count:
                self._staging_warnings(stage)
        else:
            self._insert_rows(stage, schema, batches)
        return stage

    def _staging_warnings(self, stage: str) -> None:
        """Take out the staged rows LOAD DATA stored changed: with LOCAL it cannot refuse a
        row, it stores what it could make of a value and warns, naming the file's row (the
        staging row number). Values the checks before staging let through should not get
        here; if the warnings are more than MySQL lists, the load fails."""
        count = self.cursor._result.warning_count
        self._execute("SHOW WARNINGS")
        warnings = self.cursor.fetchall()
        found: dict[int, str] = {}
        for _level, _code, message in warnings:
            at = _AT_ROW.search(message)
            if at is None or len(warnings) < count:
                raise ConnectorError(
                    f"MySQL changed {count} value(s) loading the staging table of "
                    f"`{self.table}`, first: {message}"
                )
            found.setdefault(int(at[1]), _AT_ROW.sub("", message))
        self._take_out(stage, found)

    def _fast_append(self, parts: list[Any], load: list[pa.Field]) -> bool:
        """LOAD DATA straight into the target; False (nothing kept) unless every row went in.

        LOAD DATA LOCAL turns refused rows into warnings (it cannot stop the file transfer),
        so any warning or missing row sends the load through staging instead.
        """
        schema = pa.schema(load)
        staged = sum(rows for _, rows in parts)
        types = self._describe(self.target)
        for f in load:  # changes LOAD DATA makes without a note: the staging path checks them
            check = _exactness(f.name, f.type, types[f.name].type)
            if check and not types[f.name].type.startswith(("varchar", "char", "decimal", "date(")):
                return False
        self.connection.begin()
        batches = (conform(b, schema) for b in read_parts(parts))
        try:
            loaded = self._load_data(self.target, schema, loadable(batches, "mysql"))
        except UnloadableError:
            self.connection.rollback()
            return False
        if loaded != staged or self.cursor._result.warning_count:
            self.connection.rollback()
            return False
        self._record(staged)
        self._end(Published(staged, 0, []))
        return True

    def _end(self, result: Published) -> None:
        """Commit the open transaction, or roll it back when only trying (see `_db.prepare`)."""
        try:
            check_expected(result, self.s.get("expect"), self.table)
        except BaseException:
            self.connection.rollback()
            raise
        if self.s.get("trial"):
            self.connection.rollback()
        else:
            self.connection.commit()

    def _local_infile(self) -> bool:
        self._execute("SELECT @@local_infile")
        return bool(self.cursor.fetchone()[0])

    def _load_data(self, table: str, schema: pa.Schema, batches) -> int:
        targets, sets = [], []
        for i, f in enumerate(schema):
            if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
                targets.append(f"@b{i}")
                sets.append(f"{_q(f.name)} = UNHEX(@b{i})")
            else:
                targets.append(_q(f.name))
        with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as out:
            for batch in batches:
                pacsv.write_csv(_load_text(batch), out, pacsv.WriteOptions(include_header=False))
        try:
            return self._execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' "
                f"LINES TERMINATED BY '\\n' ({', '.join(targets)})"
                + (f" SET {', '.join(sets)}" if sets else ""),
                (out.name,),
            )
        finally:
            os.unlink(out.name)

    def _insert_rows(self, stage: str, schema: pa.Schema, batches) -> None:
        """Multi-row INSERTs (PyMySQL's executemany batches the VALUES lists)."""
        marks = ", ".join(["%s"] * len(schema))
        sql = f"INSERT INTO {stage} ({', '.join(_q(n) for n in schema.names)}) VALUES ({marks})"
        for batch in batches:
            columns = [_insertable(column).to_pylist() for column in batch.columns]
            self.cursor.executemany(sql, list(zip(*columns)))

    def _deduplicate(self, stage: str, *, first: bool = False) -> str:
        keys = ", ".join(_q(k) for k in self.s["keys"])
        order = f"{_q(self.s['dedup_sort'])} DESC, " if self.s["dedup_sort"] else ""
        row = _q(ROW_COLUMN)
        unique = _q(f"_beam_etl_dedup_{self.token}")
        has_null = " OR ".join(f"{_q(k)} IS NULL" for k in self.s["keys"])
        self._execute(
            f"SELECT EXISTS (SELECT 1 FROM {stage} WHERE NOT ({has_null}) "
            f"GROUP BY {keys} HAVING count(*) > 1)"
        )
        if not self.cursor.fetchone()[0]:  # every key once: no second copy of the load
            return stage
        self._execute(  # keyed on the row number: bisection reads ranges of it
            f"CREATE TEMPORARY TABLE {unique} (PRIMARY KEY ({row})) AS SELECT * FROM "
            f"(SELECT s.*, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {order}{row} "
            f"{'ASC' if first else 'DESC'}) AS _beam_etl_rank FROM {stage} s) AS ranked "
            f"WHERE _beam_etl_rank = 1 OR {has_null}"
        )
        return unique

    def _record(self, written: int) -> None:
        self._execute(
            f"INSERT INTO {_q(LEDGER_TABLE)} (run_id, target, rows_written, published_at) "
            "VALUES (%s, %s, %s, UTC_TIMESTAMP(6))",
            (self.s["run_id"], self.table, written),
        )
        state = current_state()
        if self.s.get("keep_state") and state is not None and not self.s.get("trial"):
            keptstate.write(self.cursor, "mysql", state.pipeline, state.run_id, state.proposals)

    def _apply(
        self, source: str, dest: str, names: list[str], staged: int, *, record: bool
    ) -> Published:
        mode, keys, flag = self.s["mode"], self.s["keys"], self.s["hard_delete"]
        row = _q(ROW_COLUMN)
        kept = f"NOT COALESCE(s.{_q(flag)}, 0)" if flag else "TRUE"
        types = self._describe(dest)
        self._take_out_changed(source, names, types, kept)
        self._execute(f"SELECT count(*), min({row}), max({row}) FROM {source}")
        candidates, low, high = self.cursor.fetchone()
        statements = self._mode_sql(source, dest, names, f"s.{row} >= %s AND s.{row} < %s", kept)

        def run_range(start: int, end: int) -> int:
            count = 0
            for sql in statements:
                count = self._execute(sql, (start, end))
                self._refuse_changes()
            return count  # the last statement's: the INSERT

        self.connection.begin()
        before = len(self.taken)
        applied, refused = 0, list[tuple[int, str]]()
        if candidates:
            applied, refused = apply_bisecting(
                self.cursor,
                run_range,
                low,
                high + 1,
                is_row_error=_is_row_error,
                message_of=lambda exc: _AT_ROW.sub("", str(exc.args[-1])).replace(
                    f"_beam_etl_new_{self.token}", self.table
                ),
                prepare=lambda: self._prepare(source, dest, names, types, kept),
            )
        self.taken += self._rows(source, [n for n, _ in refused], dict(refused))
        rejects = [
            self.origins.reject(self.s["step"], self.table, keys, r, message)
            for r, message in self.origins.screened
        ] + [
            self.origins.reject(self.s["step"], self.table, keys, r, message)
            for _, r, message in sorted(self.taken, key=lambda item: item[0])
        ]
        if rejects and self.s["on_reject"] == "fail":
            self.connection.rollback()
            first = "; ".join(f"{r.origin}: {r.message}" for r in rejects[:3])
            raise ConnectorError(
                f"MySQL refused {len(rejects)} row(s) for `{self.table}` (on_reject: fail), "
                f"nothing published: {first}"
            )
        # Rows taken out before the candidates were counted are not among them.
        counted = mode in ("insert_only", "scd2")
        written = applied if counted else candidates - len(self.taken) + before
        if record:
            self._record(written)
        result = Published(written, staged - written - len(rejects), rejects)
        self._end(result)
        return result

    def _mode_sql(
        self, source: str, dest: str, names: list[str], in_range: str, kept: str
    ) -> list[str]:
        """Return the statements that apply one range of staged rows in the write mode.

        `merge` updates the rows with the same primary key, then inserts the others: `INSERT
        ... ON DUPLICATE KEY UPDATE` would match a row on any unique key and overwrite it.
        A row that collides with another row on a second unique key is refused instead.
        """
        mode, keys, flag = self.s["mode"], self.s["keys"], self.s["hard_delete"]
        columns = ", ".join(_q(n) for n in names)
        values = ", ".join(f"s.{_q(n)}" for n in names)
        insert = f"INSERT INTO {dest} ({columns}) SELECT {values} FROM {source} s"
        match = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in keys)
        if mode == "scd2":
            return _scd2.statements(
                _q,
                dest=dest,
                source=source,
                names=names,
                values=[f"s.{_q(n)}" for n in names],
                keys=keys,
                flag=flag,
                in_range=in_range,
                at=f"TIMESTAMP '{_scd2.version_time()}'",
                fresh=self.fresh,
            )
        if mode not in ("merge", "insert_only"):
            return [f"{insert} WHERE {in_range}"]
        new = f" LEFT JOIN {dest} t ON {match} WHERE t.{_q(keys[0])} IS NULL AND {in_range}"
        if mode == "insert_only":
            return [insert + new]
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
        return [*statements, f"{insert}{new} AND {kept}"]

    def _refuse_changes(self) -> None:
        """Raise `_ChangedError` when the last statement stored a value changed (a warning or
        note of a truncated, rounded or out-of-range value): bisection then finds its row."""
        result = self.cursor._result
        if result is None or not result.warning_count:
            return
        self._execute("SHOW WARNINGS")
        for _level, code, message in self.cursor.fetchall():
            if code in _ROW_ERRORS:
                raise _ChangedError(code, message)

    def _take_out_changed(self, source: str, names: list[str], types, kept: str) -> None:
        """Take out the staged rows MySQL would store changed without an error (see
        `_exactness`), in one query, before applying."""
        checks = [
            (f"({c[0]}) AND {kept}", c[1])
            for n in names
            if (c := _exactness(n, self.loaded[n], types[n].type))
        ]
        if checks:
            self._execute(refusals_sql(source, _q(ROW_COLUMN), checks))
            found = dict(self.cursor.fetchall())
            if found:
                self._take_out(source, found)

    def _prepare(self, source, dest, names, types, kept) -> None:
        """Once a range was refused: take out, set-based, the staged rows the target is sure
        to refuse (NULL in a NOT NULL column, a value out of range, a failed CHECK, a key an
        existing row holds; then a key repeated within an appended load); staged rows are
        keyed on their number, so bisection reads ranges of the rest."""
        checks = [
            (f"s.{_q(n)} IS NULL AND {kept}", _literal(f"Column '{n}' cannot be null"))
            for n in names
            if types[n].not_null
            and "auto_increment" not in types[n].extra  # NULL there picks the next number
            and not types[n].type.startswith("timestamp")  # and may mean "now" there
        ]
        checks += [
            (f"({c[0]}) AND {kept}", c[1])
            for n in names
            if (c := _overflow(n, self.loaded[n], types[n].type))
        ]
        row = _q(ROW_COLUMN)
        queries = [refusals_sql(source, row, checks)] if checks else []
        queries += self._failed_checks(source, names, kept)
        keys = self._unique_keys(dest)
        loaded = set(names)
        if self.s["mode"] == "append":  # appended keys an existing row holds: all refused
            queries += [self._taken_key(source, dest, types, *k) for k in keys if k[1] <= loaded]
        self._take_out(source, self._refusals(queries))
        if self.s["mode"] in ("append", "replace") and self._repeats_decide(loaded, keys):
            index, _, columns = keys[0]
            values = [_as_column(f"s.{_q(c)}", types[c]) for c in columns]
            message = _duplicate_message(index, len(columns), "d.k")
            repeats = unique_violations_sql(source, row, values, message)
            self._take_out(source, self._refusals([repeats]))

    def _refusals(self, queries: list[str]) -> dict[int, str]:
        """Return the `(row number: message)` the SELECTs `queries` find (a row's first)."""
        found: dict[int, str] = {}
        for sql in queries:
            self._execute(sql)
            for number, message in self.cursor.fetchall():
                found.setdefault(number, message)
        return found

    def _repeats_decide(self, loaded: set[str], keys) -> bool:
        """Whether a key repeated within the load is sure to be refused for all but its first
        row: the target has one unique key, loaded, and nothing else (a trigger or a foreign
        key) could still refuse that first row after the checks."""
        if len(keys) != 1 or not keys[0][1] <= loaded:
            return False
        schema, _, name = self.table.rpartition(".")
        self._execute(
            "SELECT (SELECT COUNT(*) FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = COALESCE(%s, DATABASE()) AND EVENT_OBJECT_TABLE = %s) "
            "+ (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s)",
            (schema or None, name, schema or None, name),
        )
        return self.cursor.fetchone()[0] == 0

    def _unique_keys(self, dest: str) -> list[tuple[str, frozenset[str], list[str]]]:
        """Return the unique indexes of `dest`: name, columns as a set and in order; a
        prefix index with no columns (it matches no load)."""
        self._execute(f"SHOW INDEX FROM {dest}")
        fields = [c[0] for c in self.cursor.description]
        indexes: dict[str, list[tuple[int, str, Any]]] = {}
        for values in self.cursor.fetchall():
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

    def _taken_key(self, source, dest, types, index: str, _: frozenset, columns) -> str:
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

    def _failed_checks(self, source: str, names: list[str], kept: str) -> list[str]:
        """Return SELECTs of `(row number, message)` of staged rows a CHECK constraint of the
        target refuses (its expression false on the staged values)."""
        schema, _, name = self.table.rpartition(".")
        self._execute(
            "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
            (schema or None, name),
        )
        queries = []
        for constraint, clause in self.cursor.fetchall():
            columns = set(re.findall(r"`([^`]+)`", clause))
            if not columns <= set(names):
                continue  # a column the load leaves to its default (or not a column at all)
            values = ", ".join(f"s.{_q(c)} AS {_q(c)}" for c in columns)
            message = _literal(f"CONSTRAINT `{constraint}` failed for `{self.table}`")
            queries.append(
                f"SELECT __beam_etl_r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} "
                f"AS __beam_etl_r, {values} FROM {source} s WHERE {kept}) AS v "
                f"WHERE ({clause}) IS FALSE"
            )
        return queries

    def _describe(self, relation: str) -> dict[str, _Column]:
        """Return the columns of `relation` (quoted; temporary tables too) by name."""
        self._execute(f"SHOW FULL COLUMNS FROM {relation}")
        return {
            name: _Column(kind, collation, null == "NO", extra)
            for name, kind, collation, null, _key, _default, extra, *_ in self.cursor.fetchall()
        }

    def _take_out(self, source: str, found: dict[int, str]) -> None:
        """Keep the staged rows `found` refused (row number: message), and delete them."""
        if not found:
            return
        numbers = sorted(found)
        self.taken += self._rows(source, numbers, found)
        for start in range(0, len(numbers), _CHUNK):
            chunk = numbers[start : start + _CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            self._execute(f"DELETE FROM {source} WHERE {_q(ROW_COLUMN)} IN ({marks})", chunk)

    def _rows(
        self, source: str, numbers: list[int], messages: dict[int, str]
    ) -> list[tuple[int, dict[str, Any], str]]:
        """Return `(row number, staged row, message)` of the staged rows `numbers`."""
        found = []
        for start in range(0, len(numbers), _CHUNK):
            chunk = numbers[start : start + _CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            self._execute(f"SELECT * FROM {source} WHERE {_q(ROW_COLUMN)} IN ({marks})", chunk)
            names = [c[0] for c in self.cursor.description]
            for values in self.cursor.fetchall():
                row = dict(zip(names, values))
                row.pop("_beam_etl_rank", None)
                number = row[ROW_COLUMN]
                found.append((number, row, _AT_ROW.sub("", messages[number])))
        return found


def _duplicate_message(index: str, width: int, prefix: str) -> str:
    """Return SQL of MySQL's message for a repeated key, the values named `{prefix}0`..."""
    values = ", ".join(f"{prefix}{i}" for i in range(width))
    key = _literal(repr(index))
    return f"CONCAT('Duplicate entry ', QUOTE(CONCAT_WS('-', {values})), ' for key ', {key})"


def _as_column(value: str, column: _Column) -> str:
    """Return SQL of `value` in the charset and collation of `column` (text compares there)."""
    if not column.collation:
        return value
    charset = column.collation.split("_")[0]
    return f"CONVERT({value} USING {charset}) COLLATE {column.collation}"


def _is_row_error(exc: BaseException) -> bool:
    return bool(exc.args) and exc.args[0] in _ROW_ERRORS


_LEDGER_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {ledger} (run_id varchar(190) NOT NULL, "
    "target varchar(190) NOT NULL, rows_written bigint NOT NULL, "
    "published_at datetime(6) NOT NULL, PRIMARY KEY (run_id, target)) DEFAULT CHARSET=utf8mb4"
)


class _MyPublish:
    """Publishes staged parts to MySQL, recorded in the ledger; one publish per target at once."""

    def __init__(self, config: DbConfig, table: str, settings: dict[str, Any]) -> None:
        self.config = config
        self.table = table
        self.settings = settings

    def __call__(
        self, parts: list[Any], *, commit: bool = True, expect: Published | None = None
    ) -> Published:
        """Publish `parts`; with `commit=False`, only try (everything rolled back); with
        `expect`, publish nothing unless the load does what the trial found."""
        settings = {**self.settings, "trial": not commit, "expect": expect}
        return with_retries(
            lambda: self._publish(parts, settings),
            config=self.config,
            is_transient=is_transient,
            what=f"Publishing to `{self.table}`",
        )

    def _publish(self, parts: list[Any], settings: dict[str, Any]) -> Published:
        import hashlib

        ledger = _q(LEDGER_TABLE)
        run_id = self.settings["run_id"]
        lock = "beam_etl:" + hashlib.blake2b(self.table.encode(), digest_size=16).hexdigest()
        connection = connect(self.config)
        try:
            with connection.cursor() as cursor:
                cursor.execute(_LEDGER_DDL.format(ledger=ledger))
                if self.settings.get("keep_state"):
                    keptstate.create(cursor, "mysql")  # DDL commits at once: before the load
                cursor.execute("SELECT GET_LOCK(%s, 600)", (lock,))
                cursor.execute(
                    f"SELECT rows_written FROM {ledger} WHERE run_id = %s AND target = %s",
                    (run_id, self.table),
                )
                done = cursor.fetchone()
                if done is not None:  # this run was published before: change nothing
                    staged = sum(rows for _, rows in parts)
                    return Published(done[0], staged - done[0], [], already=True)
                load = _MyLoad(connection, self.table, settings)
                # A trial the load cannot differ from is predicted, not loaded (see `predict`).
                predicted = load.predict(parts) if settings["trial"] else None
                return predicted or load.run(parts)
        finally:
            connection.close()  # releases the lock and drops the temporary tables


class WriteToMySql(beam.PTransform):
    """Write record batches to a MySQL/MariaDB table, all at once, at the end of the run.

    Bundles are staged as local Arrow IPC files; after every bundle has finished one publish
    step loads them into a temporary staging table (`LOAD DATA LOCAL INFILE` where the server
    allows `local_infile`, else multi-row INSERT) and applies `mode` in one transaction:
    `append`, `replace` (a new table swapped in with one atomic `RENAME TABLE`: readers see the
    old or the new content), `merge` (the row with the same `primary_key` is updated, else
    the row inserted; the last row per key, or the one with the highest `dedup_sort`, wins;
    `hard_delete_column` true deletes), `insert_only` (keys already present, or repeated
    within the load, are skipped and counted as dropped: the first row per key is kept),
    `scd2` (history: a changed key's current version is closed and a new one inserted, with
    `valid_from`, `valid_to`, `is_current`, `row_hash`; see `beam_etl.io._scd2`).
    The run is recorded in `_beam_etl_runs`: publishing a recorded run id again changes
    nothing. A lost or killed connection is retried from the start on a new one.

    A value is stored exactly or its row is refused: the session runs in strict mode, and
    rows MySQL would store changed without an error (text cut to its column, trailing spaces
    trimmed, a decimal rounded to its scale or to a whole number, fractional seconds rounded,
    a time of day dropped by a DATE, NaN or infinity, invalid UTF-8, dates outside years 1 to
    9999, nanoseconds) are refused too. Refused rows, like rows a constraint refuses (NOT
    NULL, CHECK, foreign or unique keys: in `merge`, a row that repeats another row's second
    unique key), become `db_constraint` dead letters unless `on_reject` is `fail`. Floats
    into FLOAT columns keep MySQL's nearest value.

    MySQL keeps no time zone: timestamps with a zone (`timestamp[us, tz=...]`) are stored as
    their UTC time (in DATETIME columns; TIMESTAMP columns in the session's zone, UTC) and
    read back as timestamps without zone; timestamps without zone are stored as they are.
    A table created or evolved by a publish that then fails keeps its new shape (MySQL
    commits DDL at once), never rows.

    Returns:
        `WithErrors(output, error)`: the rows written (one element), and `DeadLetter`s.
        A spec can reference only `error`.
    """

    OUTPUTS: ClassVar[tuple[str, ...]] = ("error",)

    def __init__(
        self,
        table: str,
        *,
        mode: str = "append",
        primary_key: list[str] | str | None = None,
        hard_delete_column: str | None = None,
        dedup_sort: str | None = None,
        create_table: bool = True,
        schema_drift: str = "evolve",
        on_reject: str = "dead_letter",
        keep_state: bool = False,
        run_id: str | None = None,
        host: str = "127.0.0.1",
        port: int = 3306,
        database: str | None = None,
        user: str = "root",
        password_env: str | None = "MYSQL_PASSWORD",
        connect_timeout: float = 10.0,
        statement_timeout: float | None = None,
        load_method: str = "auto",
        staging_path: str | None = None,
    ) -> None:
        """Args:
        table: target table (`name` or `database.name`).
        mode: `append` (default), `replace`, `merge`, `insert_only` or `scd2`.
        primary_key: key column(s); needed by `merge`, `insert_only` and `scd2`, and used when
            the table is created.
        hard_delete_column: boolean column; in `merge`, rows where it is true delete their key.
        dedup_sort: in `merge`, the column whose highest value picks the surviving row
            when a key repeats within the load (default: the last row staged).
        create_table: create the table from the batches' schema when it does not exist.
        schema_drift: `evolve` (add new columns, nullable), `freeze` (fail, listing the
            new columns) or `discard_columns` (drop columns the table lacks).
        on_reject: `dead_letter` (default) or `fail` (refused rows fail the run).
        keep_state: keep the run's incremental state (cursors, files, snapshots) in the
            table `_beam_etl_state` of this database, committed in the load's transaction;
            this sink then publishes last (one such sink per pipeline).
        run_id: the run recorded in the ledger; a fresh id when not given.
        host: server host.
        port: server port.
        database: database name.
        user: user name.
        password_env: environment variable holding the password (read at construction).
        connect_timeout: seconds to wait for a connection.
        statement_timeout: seconds a statement may run (no limit when not given).
        load_method: `auto` (LOAD DATA LOCAL INFILE when the server allows it), `load_data`
            or `insert` (multi-row INSERT).
        staging_path: local folder for staged parts (default: the system temp folder; on a
            multi-host cluster, a folder every worker shares).
        """
        super().__init__()
        keys = check_write_args(
            table, mode, primary_key, hard_delete_column, dedup_sort, schema_drift, on_reject
        )
        if load_method not in _LOAD_METHODS:
            raise ValueError(
                f"Unknown load_method `{load_method}`; use one of {', '.join(_LOAD_METHODS)}"
            )
        self.config = _config(
            host, port, database, user, password_env, connect_timeout, statement_timeout
        )
        self.table = table
        self.run_id = run_id or new_run_id()
        self.settings = {
            "mode": mode,
            "keys": keys,
            "hard_delete": hard_delete_column,
            "dedup_sort": dedup_sort,
            "create_table": create_table,
            "drift": schema_drift,
            "on_reject": on_reject,
            "run_id": self.run_id,
            "load_method": load_method,
            "keep_state": bool(keep_state),
        }
        self.keep_state = bool(keep_state)
        self.staging_path = staging_path
        self.gates: tuple = ()  # set by the spec builder: quality checks that must pass first

    def state_store(self) -> keptstate.DatabaseState:
        """Return where this sink keeps the run's state (with `keep_state`)."""
        return keptstate.DatabaseState("mysql", self.config)

    def expand(self, batches):
        self.staging = folder = staging_folder(self.staging_path, self.table)
        if self.settings["mode"] == "scd2":
            batches = batches | "RowHash" >> beam.Map(
                _scd2.with_row_hash, self.settings["hard_delete"]
            )
        publish = _MyPublish(self.config, self.table, {**self.settings, "step": self.label})
        written, error = batches | StageAndPublishDb(
            folder, publish, step=self.label, gates=self.gates
        )
        return WithErrors(written, error)
