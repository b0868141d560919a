"""Loading while the read runs: a database sink's bundles send their rows to a staging table
on the server as they arrive, so that the publish after the run's verdict only renames (or
swaps) that table into place.

Without it the server waits for the whole read and the verdict, and the client then sends
every row in one stream while nothing else happens. With it each bundle (each worker, in
parallel) streams its batches into the staging table in a thread of its own, in a
transaction that commits with the bundle, together with an entry naming the bundle's staged
part files in the staging table's comment (`Registry`: comments are transactional in
PostgreSQL, so no other table is needed). The rows also stay staged locally as always.

When is it used: under the command line's deferred publishing (the run removes the staging
table whatever happens: `core.publish.staged_elsewhere`), on a dialect with `early_loads`, for
`append` into a table that does not exist yet, `replace`, and `merge` (without
`hard_delete_column`). At the trial and at the publish, `EarlyStage.claim` checks that every
committed part was loaded early and nothing changed since (the target still missing, or still
of the same columns and constraints); then the staging table *is* the load: the rows a retried
bundle left are deleted (by their transaction's id, their `xmin`: the staging table has no
column of its own, so the target gets exactly its own columns), the table renamed to the
target (or swapped for it), or (a merge) upserted into the target in one statement where
the usual merge's prediction says no row can be refused and no key repeats; the ledger row is
written in the same transaction. Anything else (a part whose early load failed, a row the
server refused, a schema that changed between bundles, an append into an existing table)
falls back to the usual publish from the local parts, so the result is the same either way,
only slower.
"""

import contextlib
import dataclasses
import json
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa

from beam_etl.core.batches import visible
from beam_etl.core.publish import collects_staging, pending_folder, staged_elsewhere
from beam_etl.core.threads import put_while
from beam_etl.io._ipcparts import IpcPartWriter
from beam_etl.io.sql.dialect import Dialect, Part
from beam_etl.io.sql.options import DbConfig, SinkOptions
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.staging import StagedOrigins
from beam_etl.io.sql.values import unloadable

_ENTRY: Final = frozenset({"xid", "paths", "rows", "screened", "schema"})  # a bundle entry's keys
_QUEUED: Final = 4  # batches waiting for the server, per bundle (memory stays bounded)
_LOG = logging.getLogger(__name__)
_LIVE: "set[EarlyCopy]" = set()  # open streams of this process (a failed bundle's too)


@dataclasses.dataclass
class Registry:
    """What a staging table holds: how it was made (`create`: from the load's columns, to
    become the target; `like`: like the target it replaces) and one entry per committed bundle
    (`xid`: the id of the bundle's transaction, the `xmin` of every row it loaded; `paths`: its
    staged part files; `rows`; `screened`: rows kept back; `schema`: `describe_schema` of its
    batches). Stored as JSON in the staging table's comment, written in each bundle's
    transaction."""

    kind: str
    parts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps({"kind": self.kind, "parts": self.parts})

    @classmethod
    def loads(cls, text: str | None) -> "Registry | None":
        if not text:
            return None
        try:
            found = json.loads(text)
            parts = list(found["parts"])
            if not all(isinstance(p, dict) and p.keys() >= _ENTRY for p in parts):
                return None  # another version's, or not ours: the usual publish
            return cls(found["kind"], parts)
        except (ValueError, KeyError, TypeError):
            return None  # not ours


@dataclasses.dataclass(frozen=True)
class EarlyStage:
    """The staging table of one database sink in one run (`name`, beside the target)."""

    dialect: Dialect
    config: DbConfig
    table: str
    options: SinkOptions
    name: str

    @classmethod
    def plan(
        cls, dialect: Dialect, config: DbConfig, table: str, options: SinkOptions
    ) -> "EarlyStage | None":
        """Return the early stage of a sink being built, None where it is not used."""
        if (
            not getattr(dialect, "early_loads", False)
            or options.mode not in ("append", "replace", "merge")
            or options.hard_delete
            or pending_folder() is None
            or not collects_staging()
        ):
            return None
        stage = cls(dialect, config, table, options, f"_beam_etl_early_{uuid.uuid4().hex[:12]}")
        return staged_elsewhere(stage)

    def __str__(self) -> str:
        return f"staging table {self.relation} of `{self.table}`"

    @property
    def relation(self) -> str:
        """The staging table's quoted name, in the target's schema."""
        schema = self.table.rpartition(".")[0]
        quote = self.dialect.quote
        return f"{quote(schema)}.{quote(self.name)}" if schema else quote(self.name)

    def remove(self) -> None:
        """Drop the staging table, if it exists (the run's end does, whatever happened)."""
        for copy in list(_LIVE):  # streams of this process a failed bundle left open
            if copy.stage.name == self.name:
                copy.abandon()
        config = dataclasses.replace(self.config, retries=0)
        connection = self.dialect.connect(config)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                # A stream another process left open holds the table: wait for it a while,
                # not forever (the run folder then keeps this remover for the next run).
                cursor.execute("SET lock_timeout = '20s'")
                cursor.execute(f"DROP TABLE IF EXISTS {self.relation}")
        finally:
            connection.close()

    # The publish side: the trial before the verdict, the publish after it.

    def claim(self, load: Any, parts: list[Part], fields: list[pa.Field]) -> Published | None:
        """Return what publishing `parts` does when the staging table holds every one of them
        and still fits the target (then, unless `load.trial`, make it the target); None: the
        usual publish loads the parts (the staging table is dropped in its transaction)."""
        cursor = load.cursor
        load.d.lock(cursor, self.relation)  # no bundle attempt registers itself meanwhile
        registry = Registry.loads(load.d.early_registry(cursor, self.relation))
        if registry is None:
            return None
        committed = {path for path, _ in parts}
        used = [p for p in registry.parts if set(p["paths"]) <= committed]
        orphans = [str(p["xid"]) for p in registry.parts if not set(p["paths"]) <= committed]
        covered = {path for p in used for path in p["paths"]}
        existing = load.d.columns(load)
        fits = (
            used
            and covered == committed
            and {p["schema"] for p in used} == {describe_schema(pa.schema(fields))}
            and (existing is None) == (registry.kind == "create")
            and self._same_columns(load, fields, existing, registry.kind)
        )
        result: Published | None = None
        if fits and registry.kind == "merge":
            # Merged straight from the staging table only when nothing can be refused and
            # every key comes once (the prediction of the usual merge; else it stages again).
            result = load.d.predict(load, parts)
            load.origins = StagedOrigins(load.origins.dialect)  # a usual load numbers anew
            fits = result is not None and not result.dropped
        if not fits:
            if not load.trial:
                cursor.execute(f"DROP TABLE IF EXISTS {self.relation}")
            return None
        if result is None:
            if any(p["screened"] for p in used):  # their dead letters: from the local parts
                load.origins.screen(parts, fields)
            result = Published(sum(p["rows"] for p in used), 0, load.screened())
        if not load.trial:
            if orphans:  # rows of bundle attempts whose output the runner did not keep
                cursor.execute(
                    f"DELETE FROM {self.relation} WHERE xmin = ANY(%s::text[]::xid[])", (orphans,)
                )
            if registry.kind == "merge":
                load.d.merge_early_stage(load, self.relation, [f.name for f in fields])
                cursor.execute(f"DROP TABLE {self.relation}")
                return result
            if existing is None:
                load.d.rename_early_stage(load, self.relation, self.name)
                cursor.execute(f"COMMENT ON TABLE {load.target} IS NULL")  # the registry's
            else:
                load.d.swap(load, self.relation, None)  # the target's comment goes over
        return result

    def _same_columns(self, load: Any, fields: list[pa.Field], existing, kind: str) -> bool:
        """Whether the staging table has the loaded columns (made from the same Arrow schema,
        see `describe_schema`), or exactly the target's (`like`: a replacement)."""
        stage = load.d.columns_of(load, self.relation)
        if kind == "like":
            same = list(stage.items()) == list(existing.items())
            same = same and load.d.same_shape(load, self.relation, load.target)
            return same and all(f.name in stage for f in fields)
        return list(stage) == [f.name for f in fields]


def describe_schema(schema: pa.Schema) -> str:
    """Return the column names and Arrow types of `schema`, one per line: bundles loaded
    early must all have the schema the publish unifies from the parts."""
    return "\n".join(f"{f.name}: {f.type}" for f in schema)


class EarlyCopy:
    """One bundle's stream into the staging table: batches go through a bounded queue to a
    thread that sends them (the dialect's `copy_rows`), and commit with the bundle."""

    def __init__(self, stage: EarlyStage, connection: Any, schema: pa.Schema) -> None:
        self.stage = stage
        self.connection = connection
        self.schema = schema
        self.loaded = 0
        self.screened = 0
        self.failure: BaseException | None = None
        self._stopped = False
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUED)
        self._thread = threading.Thread(target=self._send, daemon=True)

    @classmethod
    def start(cls, stage: EarlyStage, schema: pa.Schema) -> "EarlyCopy | None":
        """Open the staging table for a bundle of `schema` (the first bundle creates it) and
        start streaming into it; None when this load is not made early."""
        dialect = stage.dialect
        connection = dialect.connect(stage.config)
        try:
            opened = dialect.open_early_stage(connection, stage, schema)
        except Exception:
            connection.close()
            raise
        if not opened:
            connection.close()
            return None
        copy = cls(stage, connection, schema)
        _LIVE.add(copy)
        copy._thread.start()
        return copy

    def put(self, batch: pa.RecordBatch) -> bool:
        """Queue `batch` for the server; False once the stream has failed."""
        return put_while(self._queue, batch, self._going)

    def _going(self) -> bool:
        return self.failure is None and self._thread.is_alive()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopped:  # abandoned: end the COPY with an error, not a wait
                    raise RuntimeError("the early load was abandoned") from None
                continue
            if batch is None:
                return
            refused = unloadable(batch, self.stage.dialect.name)
            if refused:
                keep = np.ones(batch.num_rows, dtype=bool)
                keep[sorted(refused)] = False
                batch = batch.filter(pa.array(keep))
                self.screened += len(refused)
            self.loaded += batch.num_rows
            yield batch

    def _send(self) -> None:
        try:
            self.stage.dialect.copy_rows(self.connection, self.stage.relation, self._batches())
        except BaseException as exc:  # the bundle reads it at `finish`, and loads no rows early
            self.failure = exc
            with contextlib.suppress(queue.Empty):
                while True:  # let a waiting `put` return
                    self._queue.get_nowait()

    def finish(self, paths: list[str]) -> bool:
        """End the stream and commit it with the bundle's entry in the registry; False (and
        nothing kept) when it failed."""
        try:
            put_while(self._queue, None, self._going)
            self._thread.join()
            if self.failure is not None:
                _LOG.debug("Early load of %s failed: %s", self.stage, self.failure)
                self.connection.rollback()
                return False
            entry = {
                "paths": paths,
                "rows": self.loaded,
                "screened": self.screened,
                "schema": describe_schema(self.schema),
            }
            with self.connection.cursor() as cursor:
                self.stage.dialect.add_early_part(cursor, self.stage.relation, entry)
            self.connection.commit()
            return True
        finally:
            self.connection.close()
            _LIVE.discard(self)

    def abandon(self) -> None:
        """Stop streaming: nothing this bundle sent is kept (its transaction rolls back)."""
        self._stopped = True
        with contextlib.suppress(Exception):
            self.connection.cancel()
        self._thread.join()
        with contextlib.suppress(Exception):
            self.connection.close()
        _LIVE.discard(self)


class EarlyPartWriter(IpcPartWriter):
    """Stages a bundle locally as `IpcPartWriter` does and, at the same time, streams it into
    the sink's staging table on the server (see `EarlyStage`); any trouble there only stops the
    early load of this bundle."""

    def __init__(self, folder: str, early: EarlyStage) -> None:
        super().__init__(folder, keep_origin=True)
        self._early = early
        self._copy: EarlyCopy | None = None
        self._off = False

    def write(self, batch: pa.RecordBatch) -> None:
        super().write(batch)
        if self._off or batch.num_rows == 0:
            return
        rows = visible(batch)
        try:
            if self._copy is None:
                self._copy = EarlyCopy.start(self._early, rows.schema)
                if self._copy is None:
                    self._off = True
                    return
            if not rows.schema.equals(self._copy.schema) or not self._copy.put(rows):
                self._stop()
        except Exception as exc:  # the usual publish loads this bundle from its local parts
            _LOG.debug("Early load of %s not used: %s", self._early, exc)
            self._stop()

    def _stop(self) -> None:
        self._off = True
        if self._copy is not None:
            self._copy.abandon()
            self._copy = None

    def abort(self) -> None:
        """The bundle failed: stop its stream (its rows are not kept)."""
        self._stop()

    def close(self) -> list[Part]:
        try:
            parts = super().close()
        except BaseException:
            self._stop()
            raise
        if self._copy is not None and not self._off:
            try:
                self._copy.finish([path for path, _ in parts])
            except Exception as exc:
                _LOG.debug("Early load of %s not kept: %s", self._early, exc)
        self._copy = None
        return parts
