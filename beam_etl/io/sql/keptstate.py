"""Incremental state kept in the target database (`keep_state: true` on a database sink).

The run's proposed state (cursor high marks, files loaded, snapshots: see `beam_etl.core.state`) is
written to `_beam_etl_state` in the **same transaction** as the sink's load and ledger row, so
that the data and the position it was read up to can never disagree, even when the run is
killed between that commit and the local state store's. That sink publishes last (after every
other sink), so the state it commits still never runs ahead of any output. When a run starts,
the state in the database wins over the local store's; `state reset` clears both.
"""

import json
from datetime import UTC, datetime
from typing import Any, Final

from beam_etl.io.sql.identifiers import quote_identifier
from beam_etl.io.sql.options import DbConfig
from beam_etl.io.sql.retry import with_retries

STATE_TABLE: Final = "_beam_etl_state"
_DDL: Final = {
    "postgres": "CREATE TABLE IF NOT EXISTS {t} (pipeline text NOT NULL, source text NOT NULL, "
    "value text NOT NULL, run_id text NOT NULL, updated_at timestamptz NOT NULL, "
    "PRIMARY KEY (pipeline, source))",
    "mysql": "CREATE TABLE IF NOT EXISTS {t} (pipeline varchar(255) NOT NULL, "
    "source varchar(255) NOT NULL, value longtext NOT NULL, run_id varchar(64) NOT NULL, "
    "updated_at datetime(6) NOT NULL, PRIMARY KEY (pipeline, source)) DEFAULT CHARSET=utf8mb4",
}
_UPSERT: Final = {
    "postgres": "INSERT INTO {t} VALUES (%s, %s, %s, %s, %s) ON CONFLICT (pipeline, source) "
    "DO UPDATE SET value = EXCLUDED.value, run_id = EXCLUDED.run_id, "
    "updated_at = EXCLUDED.updated_at",
    "mysql": "REPLACE INTO {t} VALUES (%s, %s, %s, %s, %s)",
}


def create(cursor, dialect: str) -> None:
    """Create the state table if missing (MySQL: before the load's transaction begins, as
    its DDL commits at once)."""
    cursor.execute(_DDL[dialect].format(t=quote_identifier(STATE_TABLE, dialect)))


def write(cursor, dialect: str, pipeline: str, run_id: str, values: dict[str, Any]) -> None:
    """Upsert the run's proposed state, inside the caller's open transaction."""
    now = datetime.now(UTC).replace(tzinfo=None) if dialect == "mysql" else datetime.now(UTC)
    sql = _UPSERT[dialect].format(t=quote_identifier(STATE_TABLE, dialect))
    for source, value in values.items():
        cursor.execute(sql, (pipeline, source, json.dumps(value, sort_keys=True), run_id, now))


class DatabaseState:
    """Reads and resets the state a sink keeps in its database (picklable settings only)."""

    def __init__(self, driver: Any, config: DbConfig) -> None:
        """`driver`: what connects and tells transient failures (a `dialect.Dialect`)."""
        self.driver = driver
        self.dialect: str = driver.name
        self.config = config

    def entries(self, pipeline: str) -> dict[str, dict[str, Any]]:
        """Return the kept state of `pipeline` by source, as `{"value", "run_id"}` (empty
        when there is none)."""
        table = quote_identifier(STATE_TABLE, self.dialect)
        rows = self._run(f"SELECT source, value, run_id FROM {table} WHERE pipeline = %s", pipeline)
        return {source: {"value": json.loads(value), "run_id": run} for source, value, run in rows}

    def reset(self, pipeline: str, source: str | None = None) -> int:
        """Forget the kept state of `pipeline` (or of one source); return the rows removed."""
        table = quote_identifier(STATE_TABLE, self.dialect)
        sql = f"DELETE FROM {table} WHERE pipeline = %s AND (%s IS NULL OR source = %s)"
        return self._run(sql, pipeline, source, source)

    def _run(self, sql: str, *params: Any) -> Any:
        """Run `sql` in its own transaction (the table created first); return its rows, or
        the rows it changed. A failure (a dead server, no right to create the table) is one
        `ConnectorError` line naming the database, its password masked; transient ones
        retried."""
        driver = self.driver

        def attempt() -> Any:
            connection = driver.connect(self.config)
            try:
                cursor = connection.cursor()
                create(cursor, self.dialect)
                cursor.execute(sql, params)
                found = cursor.fetchall() if cursor.description else cursor.rowcount
                connection.commit()
                return found
            finally:
                connection.close()

        return with_retries(
            attempt,
            config=self.config,
            is_transient=driver.is_transient,
            what=f"Using the run state kept in `{STATE_TABLE}`",
        )
