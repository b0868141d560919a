"""What a SQL database must provide for the shared loader (`loader.SqlLoad`) and publisher.

A dialect is a small picklable object without state; methods that work on a load in progress
take that `SqlLoad` (its cursor, target, options, staged origins) as their first argument.
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from beam_etl.io.sql.identifiers import quote_identifier
from beam_etl.io.sql.options import DbConfig
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.staging import ROW_COLUMN
from beam_etl.io.sql.values import sql_type

if TYPE_CHECKING:  # for annotations only: the loader imports this module
    from beam_etl.io.sql.loader import SqlLoad

Part = tuple[str, int]
UniqueKey = tuple[str, frozenset[str], list[str]]  # index name, its columns as a set, in order


class Dialect(Protocol):
    """The differences between databases the loader cannot paper over."""

    name: str  # `postgres`, `mysql`: picks quoting, types and screening (`values.unloadable`)
    title: str  # in messages: `PostgreSQL`, `MySQL`
    transactional_ddl: bool  # DDL joins the publish's transaction (else it commits at once)
    arrow_dedupe: bool  # staging keeps only the last row per key (chosen in Arrow)
    check_savepoints: bool  # a set-based check that fails is skipped, not raised
    timestamp_type: str  # the column type of `scd2`'s validity columns
    boolean_type: str  # and of its `is_current`
    table_options: str  # appended to CREATE TABLE
    origin_types: tuple[str, str, str]  # staging columns: file code, line, row number
    screens: bool  # rows it cannot store exactly are refused in Arrow (`values.unloadable`)
    now: str  # SQL of the current UTC time, for the ledger
    early_loads: bool  # bundles load into a staging table while the run reads (`early`)

    # Connections, errors, names and types
    def connect(self, config: DbConfig) -> Any: ...
    def can_try(self, config: DbConfig) -> bool: ...
    def is_transient(self, exc: BaseException) -> bool: ...
    def is_row_error(self, exc: BaseException) -> bool: ...
    def quote(self, name: str) -> str: ...
    def sql_type(self, data_type: pa.DataType, *, key: bool = False) -> str: ...

    # The ledger and the publish's lock
    def create_ledger(self, connection: Any, ledger: str, *, keep_state: bool) -> None: ...
    def lock(self, cursor: Any, table: str) -> None: ...

    # The target
    def start(self, load: "SqlLoad") -> None: ...
    def columns(self, load: "SqlLoad") -> dict[str, str] | None: ...
    def describe(self, load: "SqlLoad", relation: str) -> dict[str, Any]: ...
    def unique_keys(self, load: "SqlLoad", dest: str) -> list[UniqueKey]: ...
    def empty_target(self, load: "SqlLoad") -> None: ...
    def new_like(self, load: "SqlLoad") -> str: ...
    def swap(self, load: "SqlLoad", new: str, result: Published | None = None) -> None: ...

    # Loading while the run reads (`early`; only where `early_loads`)
    def columns_of(self, load: "SqlLoad", relation: str) -> dict[str, str]: ...
    def open_early_stage(self, connection: Any, stage: Any, schema: pa.Schema) -> bool: ...
    def early_registry(self, cursor: Any, relation: str) -> str | None: ...
    def add_early_part(self, cursor: Any, relation: str, entry: dict[str, Any]) -> None: ...
    def copy_rows(
        self, connection: Any, relation: str, batches: Iterator[pa.RecordBatch]
    ) -> None: ...
    def rename_early_stage(self, load: "SqlLoad", relation: str, name: str) -> None: ...
    def same_shape(self, load: "SqlLoad", relation: str, target: str) -> bool: ...
    def merge_early_stage(self, load: "SqlLoad", relation: str, names: list[str]) -> None: ...

    # Loading: speed paths, staging, deduplication
    def predict(self, load: "SqlLoad", parts: list[Part]) -> Published | None: ...
    def fast(
        self,
        load: "SqlLoad",
        parts: list[Part],
        fields: list[pa.Field],
        columns: list[pa.Field],
        existed: bool,
    ) -> Published | None: ...
    def temporary_table_sql(self, name: str, columns: list[str]) -> str: ...
    def stage_rows(
        self, load: "SqlLoad", stage: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> None: ...
    def needs_sql_dedupe(self, load: "SqlLoad", fields: list[pa.Field]) -> bool: ...
    def dedupe_sql(
        self, source: str, unique: str, keys: str, has_null: str, sort: str | None, first: bool
    ) -> str: ...

    # Applying: values, mode SQL, refusals
    def kept(self, flag: str | None) -> str: ...
    def before_apply(
        self, load: "SqlLoad", source: str, names: list[str], types: dict[str, Any], kept: str
    ) -> list[str]: ...
    def insert_ignore_sql(self, load: "SqlLoad", insert: str, dest: str, in_range: str) -> str: ...
    def upsert_sql(
        self,
        load: "SqlLoad",
        insert: str,
        dest: str,
        source: str,
        names: list[str],
        types: dict[str, Any],
        in_range: str,
        kept: str,
    ) -> list[str]: ...
    def history_options(self, load: "SqlLoad", types: dict[str, Any]) -> dict[str, Any]: ...
    def begin(self, load: "SqlLoad") -> None: ...
    def after_statement(self, load: "SqlLoad") -> None: ...
    def refusal_message(self, load: "SqlLoad", exc: BaseException) -> str: ...
    def one_by_one(
        self, load: "SqlLoad", source: str, statements: list[str]
    ) -> Callable[[int, int], tuple[int, list[tuple[int, str]]]] | None: ...
    def refusal_checks(
        self, load: "SqlLoad", names: list[str], types: dict[str, Any], kept: str
    ) -> list[tuple[str, str]]: ...
    def failed_checks(
        self,
        load: "SqlLoad",
        source: str,
        dest: str,
        names: list[str],
        types: dict[str, Any],
        kept: str,
    ) -> list[str]: ...
    def taken_key(
        self, load: "SqlLoad", source: str, dest: str, types: dict[str, Any], key: UniqueKey
    ) -> str: ...
    def only_keys_refuse(self, load: "SqlLoad", dest: str) -> bool: ...
    def repeated_key(
        self, load: "SqlLoad", key: UniqueKey, types: dict[str, Any]
    ) -> tuple[list[str], str]: ...
    def after_prepare(self, load: "SqlLoad", source: str) -> None: ...
    def row_chunks(self, numbers: list[int]) -> Iterator[tuple[str, Any]]: ...
    def clean_message(self, message: str) -> str: ...


class BaseDialect:
    """Standard SQL for every `Dialect` member a database may do the plain way: a base class.

    Quoting and column types by the dialect's `name`; no session set-up, no bulk fast path,
    refused rows found by bisection; staging in a `CREATE TEMPORARY TABLE`, deduplication by
    `ROW_NUMBER()`, insert-ignore as `NOT EXISTS`, a merge as DELETE then INSERT of the
    staged keys' rows, `replace` into a new table of the load's columns renamed over the old.
    A dialect overrides only what its database does differently.
    """

    name: str
    table_options = ""  # appended to CREATE TABLE
    row_chunk = 500  # row numbers per IN list of `row_chunks`
    keyed_dedupe = False  # the deduplicated staging table is keyed on the row number
    early_loads = False  # no loading while the run reads (see `early`): publish from parts

    def can_try(self, config: DbConfig) -> bool:
        """Whether a trial load (before the verdict) may connect: it may change nothing."""
        return True

    def quote(self, name: str) -> str:
        return quote_identifier(name, self.name)

    def sql_type(self, data_type: pa.DataType, *, key: bool = False) -> str:
        return sql_type(data_type, self.name, key=key)

    def start(self, load: "SqlLoad") -> None:
        pass

    def describe(self, load: "SqlLoad", relation: str) -> dict[str, Any]:
        raise NotImplementedError  # every dialect reads its own catalog

    def columns(self, load: "SqlLoad") -> dict[str, str] | None:
        found = self.columns_of(load, load.target)
        return found or None  # no columns: no table

    def columns_of(self, load: "SqlLoad", relation: str) -> dict[str, str]:
        """Return the column types of `relation` by name, in table order (empty: no table)."""
        return {name: column.type for name, column in self.describe(load, relation).items()}

    # Loading while the run reads: only a dialect with `early_loads` is asked.

    def open_early_stage(self, connection: Any, stage: Any, schema: pa.Schema) -> bool:
        raise NotImplementedError

    def early_registry(self, cursor: Any, relation: str) -> str | None:
        raise NotImplementedError

    def add_early_part(self, cursor: Any, relation: str, entry: dict[str, Any]) -> None:
        raise NotImplementedError

    def copy_rows(self, connection: Any, relation: str, batches: Iterator[pa.RecordBatch]) -> None:
        raise NotImplementedError

    def rename_early_stage(self, load: "SqlLoad", relation: str, name: str) -> None:
        raise NotImplementedError

    def same_shape(self, load: "SqlLoad", relation: str, target: str) -> bool:
        raise NotImplementedError

    def merge_early_stage(self, load: "SqlLoad", relation: str, names: list[str]) -> None:
        raise NotImplementedError

    def empty_target(self, load: "SqlLoad") -> None:
        load.execute(f"DELETE FROM {load.target}")

    def new_like(self, load: "SqlLoad") -> str:
        """Create the replacement: a table of the load's columns."""
        new = self.quote(f"_beam_etl_new_{load.token}")
        columns = ", ".join(f"{self.quote(n)} {self.sql_type(t)}" for n, t in load.loaded.items())
        load.execute(f"CREATE TABLE {new} ({columns}){self.table_options}")
        return new

    def swap(self, load: "SqlLoad", new: str, result: Published | None = None) -> None:
        load.execute(f"DROP TABLE {load.target}")
        load.execute(f"ALTER TABLE {new} RENAME TO {self.quote(load.table)}")

    def predict(self, load: "SqlLoad", parts: list[Part]) -> Published | None:
        return None  # the trial loads

    def fast(self, load: "SqlLoad", parts, fields, columns, existed: bool) -> Published | None:
        return None  # no bulk path to take: staging is the load

    def temporary_table_sql(self, name: str, columns: list[str]) -> str:
        return f"CREATE TEMPORARY TABLE {name} ({', '.join(columns)})"

    def needs_sql_dedupe(self, load: "SqlLoad", fields: list[pa.Field]) -> bool:
        return load.mode.keep is not None  # insert_only keeps the first row per key

    def dedupe_sql(self, source, unique, keys, has_null, sort, first) -> str:
        order = f"{self.quote(sort)} DESC, " if sort else ""
        row = self.quote(ROW_COLUMN)
        keyed = f" (PRIMARY KEY ({row}))" if self.keyed_dedupe else ""
        return (
            f"CREATE TEMPORARY TABLE {unique}{keyed} AS SELECT * FROM (SELECT s.*, "
            f"ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {order}{row} "
            f"{'ASC' if first else 'DESC'}) "
            f"AS _beam_etl_rank FROM {source} s) AS ranked WHERE _beam_etl_rank = 1 OR {has_null}"
        )

    def kept(self, flag: str | None) -> str:
        return f"(s.{self.quote(flag)} IS NULL OR NOT s.{self.quote(flag)})" if flag else "1 = 1"

    def before_apply(self, load: "SqlLoad", source, names, types, kept) -> list[str]:
        return [f"s.{self.quote(n)}" for n in names]  # the staged values as they are

    def _match(self, load: "SqlLoad", target: str) -> str:
        q = self.quote
        return " AND ".join(f"{target}.{q(k)} = s.{q(k)}" for k in load.keys)

    def insert_ignore_sql(self, load: "SqlLoad", insert: str, dest: str, in_range: str) -> str:
        taken = f"SELECT 1 FROM {dest} t WHERE {self._match(load, 't')}"
        return f"{insert} WHERE {in_range} AND NOT EXISTS ({taken})"

    def upsert_sql(self, load: "SqlLoad", insert, dest, source, names, types, in_range, kept):
        """The staged keys' rows are replaced (or deleted) as a whole."""
        matched = f"SELECT 1 FROM {source} s WHERE {self._match(load, dest)} AND {in_range}"
        return [
            f"DELETE FROM {dest} WHERE EXISTS ({matched})",
            f"{insert} WHERE {in_range} AND {kept}",
        ]

    def history_options(self, load: "SqlLoad", types) -> dict[str, Any]:
        return {}

    def begin(self, load: "SqlLoad") -> None:
        pass  # the publish is one transaction already

    def after_statement(self, load: "SqlLoad") -> None:
        pass  # a value the database cannot store is refused, never stored changed

    def refusal_message(self, load: "SqlLoad", exc: BaseException) -> str:
        return str(exc).replace(f"_beam_etl_new_{load.token}", load.table)

    def one_by_one(self, load: "SqlLoad", source: str, statements: list[str]) -> None:
        return None  # bisection down to single rows

    def constraint_message(self, constraint: str, table: str, columns: list[str]) -> str:
        """Return the message of a row a constraint refuses, as an SQL literal (by default in
        SQLite's words: `UNIQUE constraint failed: t.a, t.b`)."""
        shown = ", ".join(f"{table}.{c}" for c in columns)
        return "'" + f"{constraint} constraint failed: {shown}".replace("'", "''") + "'"

    def refusal_checks(self, load: "SqlLoad", names, types, kept) -> list[tuple[str, str]]:
        return [
            (
                f"s.{self.quote(n)} IS NULL AND {kept}",
                self.constraint_message("NOT NULL", load.table, [n]),
            )
            for n in names
            if types[n].not_null
        ]

    def taken_key(self, load: "SqlLoad", source, dest, types, key: UniqueKey) -> str:
        _, _, columns = key
        q = self.quote
        named = ", ".join(f"s.{q(c)} AS k{i}" for i, c in enumerate(columns))
        match = " AND ".join(f"t.{q(c)} = v.k{i}" for i, c in enumerate(columns))
        message = self.constraint_message("UNIQUE", load.table, columns)
        return (
            f"SELECT v.r, {message} FROM (SELECT s.{q(ROW_COLUMN)} AS r, {named} "
            f"FROM {source} s) AS v WHERE EXISTS (SELECT 1 FROM {dest} t WHERE {match})"
        )

    def repeated_key(self, load: "SqlLoad", key: UniqueKey, types) -> tuple[list[str], str]:
        _, _, columns = key
        message = self.constraint_message("UNIQUE", load.table, columns)
        return [f"s.{self.quote(c)}" for c in columns], message

    def failed_checks(self, load: "SqlLoad", source, dest, names, types, kept) -> list[str]:
        return []  # CHECK constraints are left to bisection

    def only_keys_refuse(self, load: "SqlLoad", dest: str) -> bool:
        return False  # triggers and foreign keys are not looked up: bisection decides

    def after_prepare(self, load: "SqlLoad", source: str) -> None:
        pass

    def row_chunks(self, numbers: list[int]) -> Iterator[tuple[str, Any]]:
        for start in range(0, len(numbers), self.row_chunk):
            chunk = numbers[start : start + self.row_chunk]
            yield f"IN ({', '.join(['%s'] * len(chunk))})", chunk

    def clean_message(self, message: str) -> str:
        return message
