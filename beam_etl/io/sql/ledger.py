"""The publish transaction every database sink runs: the run ledger, a lock per target, the
load, retried from the start on a new connection while failures are transient."""

from typing import Any

from beam_etl.io.sql.dialect import Dialect, Part
from beam_etl.io.sql.identifiers import LEDGER_TABLE
from beam_etl.io.sql.loader import SqlLoad
from beam_etl.io.sql.options import DbConfig, SinkOptions
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.retry import with_retries


class LedgerPublish:
    """Publishes staged parts to `table`, recorded in the ledger `_beam_etl_runs`: a run id
    already recorded for the target changes nothing. One publish per target at a time."""

    def __init__(
        self,
        dialect: Dialect,
        config: DbConfig,
        table: str,
        options: SinkOptions | dict[str, Any],
        early: Any = None,
    ) -> None:
        self.dialect = dialect
        self.config = config
        self.table = table
        self.options = SinkOptions.of(options)
        self.early = early  # an `early.EarlyStage`, when the bundles load while the run reads

    def __call__(
        self, parts: list[Part], *, commit: bool = True, expect: Published | None = None
    ) -> Published:
        """Publish `parts`; with `commit=False`, only try (everything rolled back); with
        `expect`, publish nothing unless the load does what the trial found."""
        return with_retries(
            lambda: self._transaction(parts, commit, expect),
            config=self.config,
            is_transient=self.dialect.is_transient,
            what=f"Publishing to `{self.table}`",
        )

    def trial(self, parts: list[Part]) -> Published | None:
        """Try the publish and roll it back: what it would write and refuse (see `Publisher`);
        None when the target cannot be tried without being changed (an SQLite file not there
        yet): the publish after the verdict then finds what it finds."""
        if not self.dialect.can_try(self.config):
            return None
        return self(parts, commit=False)

    def _transaction(self, parts: list[Part], commit: bool, expect: Published | None) -> Published:
        dialect = self.dialect
        ledger = dialect.quote(LEDGER_TABLE)
        connection = dialect.connect(self.config)
        try:
            dialect.create_ledger(connection, ledger, keep_state=self.options.keep_state)
            with connection.cursor() as cursor:
                dialect.lock(cursor, self.table)
                cursor.execute(
                    f"SELECT rows_written FROM {ledger} WHERE run_id = %s AND target = %s",
                    (self.options.run_id, self.table),
                )
                done = cursor.fetchone()
                if done is not None:  # this run was published before: change nothing
                    connection.rollback()
                    staged = sum(rows for _, rows in parts)
                    return Published(done[0], staged - done[0], [], already=True)
                load = SqlLoad(
                    dialect,
                    connection,
                    self.table,
                    self.options,
                    cursor=cursor,
                    trial=not commit,
                    expect=expect,
                    early=self.early,
                )
                # A trial the load cannot differ from is predicted, not loaded.
                result = (None if commit else load.predict(parts)) or load.run(parts)
                if dialect.transactional_ddl:  # one transaction: it ends here, whatever path
                    load.finish(result)
                return result
        finally:
            connection.close()  # without a commit, closing rolls everything back
