"""The one plan every database load follows, whatever the dialect.

Inside one publish (see `publish.LedgerPublish`): create the target or apply schema drift; try
the dialect's fast path (a bulk load straight into the target); else stage the rows in a
temporary table (the last row per key chosen in Arrow where the dialect does), deduplicate,
apply the mode's statements range by range with bisection to isolate refused rows, turn those
into dead letters, and finish: refuse to publish under `on_reject: fail`, write the ledger row
(and the kept state), check a deferred publish still does what its trial found, commit.
"""

import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.core.batches import FILE_COLUMN, HIDDEN_PREFIX, LINE_COLUMN
from beam_etl.core.errors import ConnectorError
from beam_etl.core.state import current_state
from beam_etl.io import _scd2
from beam_etl.io.sql import keptstate
from beam_etl.io.sql.dialect import Dialect, Part
from beam_etl.io.sql.identifiers import LEDGER_TABLE
from beam_etl.io.sql.modes import MODES, Mode
from beam_etl.io.sql.options import SinkOptions
from beam_etl.io.sql.publish import Published, check_expected
from beam_etl.io.sql.refusals import apply_bisecting, refusals_sql, unique_violations_sql
from beam_etl.io.sql.staging import ROW_COLUMN, StagedOrigins, last_rows, numbered, parts_schema


def schema_drift(
    loaded: pa.Schema, target_columns: list[str], policy: str, table: str
) -> tuple[list[pa.Field], list[str]]:
    """Return (columns to add to the target, loaded columns to discard) under `policy`.

    Columns of the target missing from the load are allowed under every policy (they get
    their default). Hidden origin columns are ignored.

    Raises:
        ConnectorError: `freeze` and the load has columns the target lacks (all are listed).
    """
    known = set(target_columns)
    new = [f for f in loaded if f.name not in known and not f.name.startswith(HIDDEN_PREFIX)]
    if not new:
        return [], []
    if policy == "evolve":
        return new, []
    if policy == "discard_columns":
        return [], [f.name for f in new]
    listed = ", ".join(f"`{f.name}` ({f.type})" for f in new)
    raise ConnectorError(
        f"Schema of `{table}` is frozen but the load has columns it lacks: {listed}; "
        "add them to the table, or use schema_drift `evolve` or `discard_columns`"
    )


def table_columns(
    dialect: Dialect, fields: list[pa.Field], keys: list[str], *, history: bool = False
) -> list[str]:
    """Return the column definitions (and primary key) of a table a load creates."""
    q = dialect.quote
    # NOT NULL on the keys: SQLite's PRIMARY KEY alone takes nulls (PostgreSQL's and
    # MySQL's imply it), which would let null keys repeat or be given made-up values.
    columns = [
        f"{q(f.name)} {dialect.sql_type(f.type, key=f.name in keys)}"
        + (" NOT NULL" if f.name in keys else "")
        for f in fields
    ]
    if history:  # every version of a key, told apart by `valid_from`
        columns += _scd2.extra_columns(q, dialect.timestamp_type, dialect.boolean_type)
        keys = [*keys, _scd2.VALID_FROM]
    if keys:
        columns.append(f"PRIMARY KEY ({', '.join(q(k) for k in keys)})")
    return columns


class SqlLoad:
    """One publish of staged parts into `table`, on an open connection.

    `trial`: only try (everything is rolled back; a dialect whose DDL commits at once creates
    a missing table as a temporary one and adds no column); `expect`: what the trial found
    (see `publish.check_expected`). Rows the database refuses become `db_constraint` dead
    letters in staging order, after the rows the Arrow screening refused.
    """

    def __init__(
        self,
        dialect: Dialect,
        connection: Any,
        table: str,
        options: SinkOptions | dict[str, Any],
        *,
        cursor: Any = None,
        trial: bool = False,
        expect: Published | None = None,
        early: Any = None,
    ) -> None:
        self.d = dialect
        self.early = early  # an `early.EarlyStage`: the rows may be on the server already
        self.connection = connection
        self.cursor = cursor if cursor is not None else connection.cursor()
        self.table = table
        self.target = dialect.quote(table)
        self.o = SinkOptions.of(options)
        if isinstance(options, dict):  # plain settings may carry the publish call's own
            trial = options.get("trial", trial)
            expect = options.get("expect", expect)
        self.mode: Mode = MODES[self.o.mode]
        self.keys = list(self.o.keys)
        self.trial = trial
        self.expect = expect
        self.token = os.urandom(6).hex()
        self.origins = StagedOrigins(dialect.name if dialect.screens else None)
        self.taken: list[tuple[int, dict[str, Any], str]] = []  # rows checks took out
        self.loaded: dict[str, pa.DataType] = {}  # staged columns' Arrow types
        self.fresh = False  # the target was created by this load
        self.bulk: bool | None = None  # the dialect's bulk load is allowed (asked once)
        self.refused_log = False  # the dialect's one-by-one log table exists

    def execute(self, sql: str, params: Any = None) -> int:
        self.cursor.execute(sql, params)
        return self.cursor.rowcount

    def predict(self, parts: list[Part]) -> Published | None:
        """Return what loading `parts` will do without loading them, when the dialect can
        tell (see its `predict`), or when the bundles loaded them early (see `early`); None:
        the trial loads."""
        if self.early is not None:
            self.d.start(self)
            claimed = self.early.claim(self, parts, self.visible_fields(parts_schema(parts)))
            if claimed is not None:
                return claimed
            self.early = None  # tried: a trial load that follows goes the usual way
        return self.d.predict(self, parts)

    def visible_fields(self, schema: pa.Schema | None) -> list[pa.Field]:
        """Return the loaded fields of a staged schema (no hidden column, no deletion flag)."""
        if schema is None:
            return []
        flag = self.o.hard_delete
        return [f for f in schema if not f.name.startswith(HIDDEN_PREFIX) and f.name != flag]

    def run(self, parts: list[Part]) -> Published:
        """Load `parts` into the target by the mode; return what was written and refused."""
        self.d.start(self)
        schema = parts_schema(parts)
        staged = sum(rows for _, rows in parts)
        if self.early is not None and schema is not None:
            claimed = self.early.claim(self, parts, self.visible_fields(schema))
            if claimed is not None:
                return claimed
        existing = self.d.columns(self)
        if schema is None:  # nothing staged: `replace` still empties the target
            if existing is not None and self.mode.replaces:
                self.d.empty_target(self)
            return Published(0, 0, [])
        fields = [f for f in schema if not f.name.startswith(HIDDEN_PREFIX)]
        load = [f for f in fields if f.name != self.o.hard_delete]
        if existing is None:
            if not self.o.create_table:
                raise ConnectorError(f"Table `{self.table}` does not exist (create_table: false)")
            self.create(load)
        else:
            fields, load = self.drift(existing, fields, load)
        names = [f.name for f in load]
        self.fresh = existing is None
        missing = [k for k in self.keys if k not in names]
        if missing and self.mode.needs_keys:
            raise ConnectorError(
                f"Primary key column(s) {missing} are not in the load for `{self.table}`"
            )
        fast = self.d.fast(self, parts, fields, load, existing is not None)
        if fast is not None:
            return fast
        return self.through_staging(parts, fields, names, staged, existing is not None)

    def create(self, load: list[pa.Field]) -> None:
        """Create the target (a temporary table in a trial whose DDL would commit)."""
        columns = table_columns(self.d, load, self.keys, history=self.mode.history)
        temporary = self.trial and not self.d.transactional_ddl
        create = "CREATE TEMPORARY TABLE" if temporary else "CREATE TABLE"
        self.execute(f"{create} {self.target} ({', '.join(columns)}){self.d.table_options}")

    def drift(
        self, existing: dict[str, str], fields: list[pa.Field], load: list[pa.Field]
    ) -> tuple[list[pa.Field], list[pa.Field]]:
        """Add the load's new columns to the target, or discard them, by the drift policy (a
        trial whose DDL would commit adds none: a new nullable column refuses no row)."""
        add, discard = schema_drift(pa.schema(load), list(existing), self.o.drift, self.table)
        keep_out = self.trial and not self.d.transactional_ddl
        for f in add:
            if not keep_out:
                column = f"{self.d.quote(f.name)} {self.d.sql_type(f.type)}"
                self.execute(f"ALTER TABLE {self.target} ADD COLUMN {column}")
        if keep_out:
            discard = [*discard, *(f.name for f in add)]
        return (
            [f for f in fields if f.name not in discard],
            [f for f in load if f.name not in discard],
        )

    def stage(self, parts: list[Part], fields: list[pa.Field]) -> str:
        """Bulk load the staged rows into a temporary table, numbered, origins coded."""
        q = self.d.quote
        stage = q(f"_beam_etl_stage_{self.token}")
        columns = [f"{q(f.name)} {self.d.sql_type(f.type)}" for f in fields]
        origin = zip((FILE_COLUMN, LINE_COLUMN, ROW_COLUMN), self.d.origin_types)
        columns += [f"{q(name)} {kind}" for name, kind in origin]
        self.execute(self.d.temporary_table_sql(stage, columns))
        schema = pa.schema([*fields, *StagedOrigins.FIELDS])
        self.loaded = {f.name: f.type for f in fields}
        batches = self.origins.batches(parts, schema)
        keys, sort = self.keys, self.o.dedup_sort
        if self.d.arrow_dedupe and self.mode.keep == "last" and keys:
            # The last row per key chosen in Arrow: a repeated key is neither sent nor
            # deduplicated by the server (a CDC run updates most rows it inserts). The key
            # columns alone tell whether any key repeats (screening only takes rows out);
            # only then are the rows screened once more, to number them as staging does.
            named = [*keys, *([sort] if sort else [])]
            keep = last_rows(numbered(parts, named), keys, sort)
            if keep is not None:
                screened = StagedOrigins(self.origins.dialect).batches(parts, schema)
                keep = last_rows(screened, keys, sort)
            if keep is not None:
                batches = (b.filter(pc.is_in(b.column(ROW_COLUMN), keep)) for b in batches)
        self.d.stage_rows(self, stage, schema, batches)
        return stage

    def deduplicate(self, stage: str, fields: list[pa.Field]) -> str:
        """Return `stage`, or a copy with one row per non-null key (the mode's `keep`), when
        the dialect deduplicates in SQL and a key repeats."""
        if not self.d.needs_sql_dedupe(self, fields):
            return stage
        q = self.d.quote
        keys = ", ".join(q(k) for k in self.keys)
        has_null = " OR ".join(f"{q(k)} IS NULL" for k in self.keys)
        self.execute(
            f"SELECT EXISTS (SELECT 1 FROM {stage} WHERE NOT ({has_null}) "
            f"GROUP BY {keys} HAVING count(*) > 1)"
        )
        if not self.cursor.fetchone()[0]:  # every key once: no second copy of the load
            return stage
        unique = q(f"_beam_etl_dedup_{self.token}")
        first = self.mode.keep == "first"
        sort = self.o.dedup_sort
        self.execute(self.d.dedupe_sql(stage, unique, keys, has_null, sort, first))
        return unique

    def through_staging(
        self, parts: list[Part], fields: list[pa.Field], names: list[str], staged: int, existed
    ) -> Published:
        """Stage, deduplicate, apply into the target (or a replacement swapped in)."""
        source = self.deduplicate(self.stage(parts, fields), fields)
        dest = self.d.new_like(self) if self.mode.replaces and existed else self.target
        replacing = dest != self.target
        try:
            result = self.apply(source, dest, names, staged)
            if not self.d.transactional_ddl:
                self.finish(result, record=not replacing)
            if replacing and self.trial and not self.d.transactional_ddl:
                self.execute(f"DROP TABLE {dest}")
            elif replacing:
                self.d.swap(self, dest, result)
        except BaseException:
            if replacing and not self.d.transactional_ddl:
                self.execute(f"DROP TABLE IF EXISTS {dest}")
            raise
        return result

    def apply(self, source: str, dest: str, names: list[str], staged: int) -> Published:
        """Apply the staged rows by the mode, bisecting ranges the database refuses."""
        types = self.d.describe(self, dest)
        kept = self.d.kept(self.o.hard_delete)
        values = self.d.before_apply(self, source, names, types, kept)
        row = self.d.quote(ROW_COLUMN)
        self.execute(f"SELECT count(*), min({row}), max({row}) FROM {source}")
        candidates, low, high = self.cursor.fetchone()
        before = len(self.taken)  # rows taken out before counting are not candidates
        in_range = f"s.{row} >= %s AND s.{row} < %s"
        statements = self.mode.statements(self, dest, source, names, values, types, in_range, kept)

        def run_range(start: int, end: int) -> int:
            count = 0
            for sql in statements:
                count = self.execute(sql, (start, end))
                self.d.after_statement(self)
            return count  # the last statement's: the INSERT

        self.d.begin(self)
        applied, refused = 0, list[tuple[int, str]]()
        if candidates:
            applied, refused = apply_bisecting(
                self.cursor,
                run_range,
                low,
                high + 1,
                is_row_error=self.d.is_row_error,
                message_of=lambda exc: self.d.refusal_message(self, exc),
                prepare=lambda: self.prepare(source, dest, names, types, kept),
                one_by_one=self.d.one_by_one(self, source, statements),
            )
        self.taken += self.rows(source, [n for n, _ in refused], dict(refused))
        rejects = self.screened() + [
            self.origins.reject(self.o.step, self.table, self.keys, r, message)
            for _, r, message in sorted(self.taken, key=lambda item: item[0])
        ]
        refused_rows = len(self.taken) - before
        written = applied if self.mode.counts_applied else candidates - refused_rows
        return Published(written, staged - written - len(rejects), rejects)

    def screened(self) -> list[Any]:
        """Return the dead letters of the rows the Arrow screening kept back."""
        return [
            self.origins.reject(self.o.step, self.table, self.keys, row, message)
            for row, message in self.origins.screened
        ]

    def prepare(self, source: str, dest: str, names: list[str], types, kept: str) -> None:
        """Once a range was refused: take out, set-based, the staged rows the target is sure
        to refuse (NULL in a NOT NULL column, a value out of range or changed on the way, a
        failed CHECK, a key an existing row holds; then a key repeated within an appended
        load), so that bisection has only the rest to search."""
        checks = self.d.refusal_checks(self, names, types, kept)
        row = self.d.quote(ROW_COLUMN)
        queries = [refusals_sql(source, row, checks)] if checks else []
        queries += self.d.failed_checks(self, source, dest, names, types, kept)
        keys = self.d.unique_keys(self, dest)
        if self.mode.refuses_taken_keys:  # appended keys an existing row holds: all refused
            queries += [
                self.d.taken_key(self, source, dest, types, k) for k in keys if k[1] <= set(names)
            ]
        self.take_out(source, self.refusals(queries))
        if self.mode.refuses_repeats and self.repeats_decide(dest, names, keys):
            values, message = self.d.repeated_key(self, keys[0], types)
            repeats = unique_violations_sql(source, row, values, message)
            self.take_out(source, self.refusals([repeats]))
        self.d.after_prepare(self, source)

    def repeats_decide(self, dest: str, names: list[str], keys) -> bool:
        """Whether a key repeated within the load is sure to be refused for all but its first
        row: `dest` has one unique key, loaded, and nothing else (a trigger, a foreign or an
        exclusion key) could still refuse that first row after the checks."""
        if len(keys) != 1 or not keys[0][1] <= set(names):
            return False
        return self.d.only_keys_refuse(self, dest)

    def refusals(self, queries: list[str]) -> dict[int, str]:
        """Return the `(row number: message)` the SELECTs `queries` find, the first message
        of a row kept. Where the dialect says so, a query whose cast fails is left out
        (bisection finds that row)."""
        found: dict[int, str] = {}
        for sql in queries:
            if not self.d.check_savepoints:
                self.execute(sql)
            else:
                self.execute("SAVEPOINT beam_etl_check")
                try:
                    self.cursor.execute(sql)
                except Exception as exc:
                    self.execute("ROLLBACK TO SAVEPOINT beam_etl_check")
                    if not self.d.is_row_error(exc):
                        raise
                    continue
            for number, message in self.cursor.fetchall():
                found.setdefault(number, message)
            if self.d.check_savepoints:
                self.execute("RELEASE SAVEPOINT beam_etl_check")
        return found

    def take_out(self, source: str, found: dict[int, str]) -> None:
        """Keep the staged rows `found` refused (row number: message), and delete them."""
        if not found:
            return
        numbers = sorted(found)
        self.taken += self.rows(source, numbers, found)
        for where, params in self.d.row_chunks(numbers):
            self.execute(f"DELETE FROM {source} WHERE {self.d.quote(ROW_COLUMN)} {where}", params)

    def rows(
        self, source: str, numbers: list[int], messages: dict[int, str]
    ) -> list[tuple[int, dict[str, Any], str]]:
        """Return `(row number, staged row, message)` of the staged rows `numbers`."""
        found = []
        for where, params in self.d.row_chunks(numbers):
            self.execute(f"SELECT * FROM {source} WHERE {self.d.quote(ROW_COLUMN)} {where}", params)
            names = [c[0] for c in self.cursor.description]
            for values in self.cursor.fetchall():
                row = dict(zip(names, values))
                row.pop("_beam_etl_rank", None)  # a dialect's dedupe column
                number = row[ROW_COLUMN]
                found.append((number, row, self.d.clean_message(messages[number])))
        return found

    def finish(self, result: Published, *, record: bool = True) -> None:
        """End the publish: fail under `on_reject: fail` when rows were refused, write the
        ledger row (and the kept state), check the trial's expectation, commit (roll back
        when only trying)."""
        if result.rejects and self.o.on_reject == "fail":
            self.connection.rollback()
            first = "; ".join(f"{r.origin}: {r.message}" for r in result.rejects[:3])
            raise ConnectorError(
                f"{self.d.title} refused {len(result.rejects)} row(s) for `{self.table}` "
                f"(on_reject: fail), nothing published: {first}"
            )
        if record:
            self.record(result.written)
        try:
            check_expected(result, self.expect, self.table)
        except BaseException:
            self.connection.rollback()
            raise
        if self.trial:
            self.connection.rollback()
        else:
            self.connection.commit()

    def record(self, written: int) -> None:
        """Write the ledger row, and the run's kept state (committed with the load)."""
        self.execute(
            f"INSERT INTO {self.d.quote(LEDGER_TABLE)} (run_id, target, rows_written, "
            f"published_at) VALUES (%s, %s, %s, {self.d.now})",
            (self.o.run_id, self.table, written),
        )
        state = current_state()
        if self.o.keep_state and state is not None and not self.trial:
            if self.d.transactional_ddl:  # else created before the publish (DDL commits)
                keptstate.create(self.cursor, self.d.name)
            keptstate.write(self.cursor, self.d.name, state.pipeline, state.run_id, state.proposals)
