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

    # Connections, errors, names and types
    def connect(self, config: DbConfig) -> Any: ...
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


class NamedDialect:
    """Quoting and column types by the dialect's `name` (a base for `Dialect`s)."""

    name: str

    def quote(self, name: str) -> str:
        return quote_identifier(name, self.name)

    def sql_type(self, data_type: pa.DataType, *, key: bool = False) -> str:
        return sql_type(data_type, self.name, key=key)
