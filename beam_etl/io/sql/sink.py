"""The write half every database connector shares: stage the bundles, publish once through the
ledger transaction of its dialect, and return the rows written with the refused rows."""

import dataclasses
import functools
from typing import Any, ClassVar

import apache_beam as beam

from beam_etl.core.contract import ungated
from beam_etl.core.outputs import WithErrors
from beam_etl.core.publish import DATABASE
from beam_etl.io import _scd2
from beam_etl.io._files import StageAndPublish
from beam_etl.io._ipcparts import IpcPartWriter
from beam_etl.io.sql import keptstate
from beam_etl.io.sql.dialect import Dialect
from beam_etl.io.sql.early import EarlyPartWriter, EarlyStage
from beam_etl.io.sql.ledger import LedgerPublish
from beam_etl.io.sql.options import DbConfig, SinkOptions
from beam_etl.io.sql.staging import staging_folder


class WriteToDatabase(beam.PTransform):
    """Base of `WriteToPostgres`, `WriteToMySql` and `WriteToSqlite`: a subclass names its
    `DIALECT` and calls `_setup_write` from its constructor (whose signature is the spec's
    keys)."""

    OUTPUTS: tuple[str, ...] = ("error",)  # refused rows; a subclass may set it per instance
    GATED: ClassVar[bool] = True  # takes `Gated(rows, gates)` (see `beam_etl.core.contract`)
    DIALECT: ClassVar[Dialect]

    def _setup_write(
        self, table: str, config: DbConfig, options: SinkOptions, staging_path: str | None
    ) -> None:
        self.config = config
        self.table = table
        self.options = options
        self.run_id = options.run_id
        self.keep_state = options.keep_state
        self.staging_path = staging_path

    @property
    def mode(self) -> str:
        """The write mode (`append`, `replace`, `merge`, `insert_only`, `scd2`): replay reads
        it to refuse sinks that would replace their whole target."""
        return self.options.mode

    @property
    def settings(self) -> dict[str, Any]:
        """The sink's options as a plain dict (field name: value)."""
        return self.options.settings()

    def state_store(self) -> keptstate.DatabaseState:
        """Return where this sink keeps the run's state (with `keep_state`)."""
        return keptstate.DatabaseState(self.DIALECT, self.config)

    def _staging_folder(self) -> str:
        """Return a fresh local folder for this write's staged parts."""
        return staging_folder(self.staging_path, self.table)

    def expand(self, batches):
        batches, gates = ungated(batches)
        self.staging = folder = self._staging_folder()
        if self.options.mode == "scd2":
            batches = batches | "RowHash" >> beam.Map(_scd2.with_row_hash, self.options.hard_delete)
        options = dataclasses.replace(self.options, step=self.label)
        early = EarlyStage.plan(self.DIALECT, self.config, self.table, options)
        publish = LedgerPublish(self.DIALECT, self.config, self.table, options, early)
        writer = (
            functools.partial(IpcPartWriter, keep_origin=True)
            if early is None
            else functools.partial(EarlyPartWriter, early=early)
        )
        written, error = batches | StageAndPublish(
            writer,
            folder,
            publish,
            step=self.label,
            gates=gates,
            order=DATABASE,
            errors=True,
        )
        return WithErrors(written, error)
