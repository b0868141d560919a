"""PostgreSQL connections (psycopg2) and their transient failures, and the key-range reader's
queries: `COPY (query) TO STDOUT` in a REPEATABLE READ, READ ONLY transaction per range.
"""

import re
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa

from beam_etl.core.errors import ConnectorError
from beam_etl.io.sql import read
from beam_etl.io.sql.options import DbConfig
from beam_etl.io.sql.postgres_copy import _SESSION, _copy_out, arrow_type
from beam_etl.io.sql.retry import with_retries

_TRANSIENT_CODES: Final = frozenset({"40P01", "40001", "57P01", "57P02", "57P03"})


def connect(config: DbConfig, *, readonly: bool = False, replication: bool = False) -> Any:
    """Return a psycopg2 connection (retried while the failure is transient); with
    `replication`, a logical replication connection whose session is in UTC (for timestamps'
    text form) with exact floats."""
    import psycopg2

    options = ""
    if config.statement_timeout is not None:
        options = f"-c statement_timeout={int(config.statement_timeout * 1000)}"
    kwargs: dict[str, Any] = {"connect_timeout": max(1, round(config.connect_timeout))}
    if replication:
        from psycopg2.extras import LogicalReplicationConnection

        kwargs["connection_factory"] = LogicalReplicationConnection
        options = f"-c TimeZone=UTC -c extra_float_digits=3 {options}".strip()
    if options:
        kwargs["options"] = options

    def attempt():
        if config.dsn is not None:  # a password from `password_env` overrides the DSN's
            extra = {"password": config.password.reveal()} if config.password else {}
            return psycopg2.connect(config.dsn.reveal(), **kwargs, **extra)
        return psycopg2.connect(
            host=config.host,
            port=config.port,
            dbname=config.database,
            user=config.user,
            password=config.password.reveal() or None,
            **kwargs,
        )

    connection = with_retries(attempt, config=config, is_transient=is_transient, what="Connecting")
    if readonly:
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
    return connection


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: lost connections, deadlocks, serialization failures."""
    import psycopg2

    code = getattr(exc, "pgcode", None)
    if code in _TRANSIENT_CODES:
        return True
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if _PERMANENT.search(str(exc)):  # the server answered: waiting will not change its mind
        return False
    # Without a SQLSTATE (or class 08), an OperationalError is a refused or dropped connection.
    return isinstance(exc, psycopg2.OperationalError) and (not code or code.startswith("08"))


#: Connection failures a retry cannot mend (libpq gives them no SQLSTATE at connect time).
_PERMANENT: Final = re.compile(
    r"database \".*\" does not exist|role \".*\" does not exist|password authentication failed"
    r"|no pg_hba\.conf entry|SSL is not enabled|invalid connection option|"
    r"could not translate host name|Name or service not known",
    re.I,
)


class _Postgres(read.Dialect):
    """Reads with `COPY (query) TO STDOUT` in a REPEATABLE READ, READ ONLY transaction."""

    name = "postgres"

    def connect(self, config: DbConfig) -> Any:
        return connect(config, readonly=True)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def read(self, connection, sql, params, source, sizer) -> Iterator[pa.RecordBatch]:
        with connection.cursor() as cursor:
            cursor.execute(_SESSION)
            if params:  # COPY takes no parameters: bind them into the text
                sql = cursor.mogrify(sql, params).decode()
            schema = self._describe(cursor, sql, source)
            yield from _copy_out(
                cursor, f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", schema.names, schema.types
            )

    def describe(self, connection, sql, source) -> pa.Schema:
        with connection.cursor() as cursor:
            cursor.execute(_SESSION)
            return self._describe(cursor, sql, source)

    @staticmethod
    def _describe(cursor, sql: str, source: str) -> pa.Schema:
        cursor.execute(f"{sql} LIMIT 0")
        description = list(cursor.description)
        names = [column.name for column in description]
        if len(set(names)) != len(names):
            raise ConnectorError(f"The query of `{source}` repeats column names")
        types = [arrow_type(c.type_code, c.precision, c.scale) for c in description]
        return pa.schema(list(zip(names, types)))


READER: Final = _Postgres()
