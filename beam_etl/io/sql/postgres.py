"""PostgreSQL as a dialect of the shared loader (psycopg2): connections and their transient
failures, the key-range reader's queries, and what the loader asks of a dialect.

Writes publish in one transaction: DDL, `COPY` into a temporary staging table, one set-based
statement per mode, the ledger row, commit.
"""

import contextlib
import hashlib
import itertools
from collections.abc import Iterator
from typing import Any, Final

import pyarrow as pa

from beam_etl.core.errors import ConnectorError
from beam_etl.io.sql.dialect import BaseDialect, Part
from beam_etl.io.sql.early import EarlyStage, Registry
from beam_etl.io.sql.identifiers import quote_identifier
from beam_etl.io.sql.ledger import LedgerPublish
from beam_etl.io.sql.loader import SqlLoad, table_columns
from beam_etl.io.sql.options import DbConfig, SinkOptions
from beam_etl.io.sql.postgres_checks import (
    _REFUSE_DDL,
    _Column,
    _duplicate_message,
    _exact_key,
    _exactness,
    _is_row_error,
    _literal,
    _message,
    _overflow,
    _q,
    _value_sql,
)
from beam_etl.io.sql.postgres_copy import _copy_in
from beam_etl.io.sql.postgres_fast import (
    fast_append,
    fast_merge_into_new,
    name_target,
    one_by_one,
    predict,
)
from beam_etl.io.sql.postgres_read import connect, is_transient
from beam_etl.io.sql.publish import Published
from beam_etl.io.sql.staging import ROW_COLUMN

_LEDGER_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {ledger} (run_id text NOT NULL, target text NOT NULL, "
    "rows_written bigint NOT NULL, published_at timestamptz NOT NULL, "
    "PRIMARY KEY (run_id, target))"
)


#: Bundles one staging table takes: its registry (a comment) is rewritten by each, so a runner
#: that makes thousands of tiny bundles loads the usual way instead (a part not loaded early
#: sends the whole load through the publish from local parts).
MAX_EARLY_PARTS: Final = 256


_DESCRIBE: Final = (
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
    "CASE WHEN b.typnamespace = 'pg_catalog'::regnamespace "
    "THEN 'pg_catalog.' || quote_ident(b.typname) ELSE format_type(b.oid, NULL) END, "
    "a.attnotnull FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
    "JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
    "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
    "ORDER BY a.attnum"
)


def _describe(cursor, relation: str) -> dict[str, _Column]:
    """Return the columns of `relation` by name, in table order: type, type to cast to,
    NOT NULL (empty: no table)."""
    cursor.execute(_DESCRIBE, (relation,))
    return {name: _Column(*rest) for name, *rest in cursor.fetchall()}


def _stores_exactly(field: pa.Field, column: _Column) -> bool:
    """Whether every value of `field` is stored unchanged in `column` or refused (never
    rounded or cut without an error: those the usual publish refuses row by row)."""
    return _exactness(field.name, field.type, column.type, column.base) is None


def _object_name(cursor, schema: str, table: str, label: str) -> str:
    """Return the name PostgreSQL gives a `table`'s index with `label` (`pkey`): the table's
    name cut to fit 63 bytes, then `_label`, numbered (`_pkey1` ...) while the name is taken
    in the schema (its `ChooseRelationName`)."""
    for attempt in range(1000):
        suffix = f"_{label}{attempt or ''}"
        head = table.encode()[: 63 - len(suffix.encode())].decode("utf-8", "ignore")
        name = head + suffix
        cursor.execute("SELECT to_regclass(%s) IS NULL", (_q_in(schema, name),))
        if cursor.fetchone()[0]:
            return name
    raise ConnectorError(f"No free name for an index of `{table}`")


def _heap(cursor, relation: str) -> bool:
    """Whether `relation` is stored in PostgreSQL's own heap, where each row's `xmin` is the
    transaction that wrote it (another access method, or a server that only speaks the
    protocol, may differ: such loads are not made early)."""
    cursor.execute(
        "SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
        "WHERE c.oid = to_regclass(%s)",
        (relation,),
    )
    found = cursor.fetchone()
    return found is not None and found[0] == "heap"


def _comment(cursor, relation: str) -> str | None:
    """Return the comment of table `relation` (None: none, or no such table)."""
    cursor.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (relation,))
    return cursor.fetchone()[0]


class PostgresDialect(BaseDialect):
    """PostgreSQL for the shared loader: DDL inside the publish's one transaction, `COPY` in
    and out, `ON CONFLICT` upserts, a replacement swapped in by rename (indexes renamed
    back), refused ranges applied row by row in one server-side loop."""

    name = "postgres"
    title = "PostgreSQL"
    transactional_ddl = True
    arrow_dedupe = True
    check_savepoints = True
    timestamp_type = "timestamp(6)"
    boolean_type = "boolean"
    origin_types = ("integer", "bigint", "bigint")
    screens = True
    now = "now()"
    early_loads = True

    connect = staticmethod(connect)
    is_transient = staticmethod(is_transient)
    is_row_error = staticmethod(_is_row_error)

    def create_ledger(self, connection: Any, ledger: str, *, keep_state: bool) -> None:
        import psycopg2  # an optional dependency, imported where it is needed

        connection.autocommit = True
        with connection.cursor() as cursor:
            # A concurrent publish may create it between the existence check and the insert.
            errors = psycopg2.errors
            with contextlib.suppress(errors.UniqueViolation, errors.DuplicateTable):
                cursor.execute(_LEDGER_DDL.format(ledger=ledger))
        connection.autocommit = False

    def lock(self, cursor: Any, table: str) -> None:
        digest = hashlib.blake2b(table.encode(), digest_size=8).digest()
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest, "big", signed=True),)
        )

    def start(self, load: SqlLoad) -> None:
        # Timestamps without zone are UTC, and a zoned one assigned to a column without zone
        # keeps its UTC time, whatever the server's or the DSN's TimeZone.
        load.execute("SET LOCAL TIME ZONE 'UTC'")

    # Loading while the run reads (see `early`)

    def open_early_stage(self, connection, stage: EarlyStage, schema: pa.Schema) -> bool:
        """Open (for the first bundle: create) the staging table of `stage` for a bundle of
        `schema`: made from the load's columns when the target is missing (`create`), like the
        target when it replaces it (`like`); False when the load is not made early."""
        options = stage.options
        names = [f.name for f in schema]
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
            self.lock(cursor, stage.relation)  # one bundle creates it, the others wait
            registry = Registry.loads(self.early_registry(cursor, stage.relation))
            if registry is None:
                target = _describe(cursor, _q(stage.table))
                if not target and options.create_table:
                    columns = table_columns(self, list(schema), list(options.keys))
                    cursor.execute(f"CREATE TABLE {stage.relation} ({', '.join(columns)})")
                    registry = Registry("create")
                elif target and options.mode == "merge" and set(names) <= set(target):
                    # Logged: an unlogged table comes back empty after a server crash, while
                    # its registry (a comment) would still name the bundles it held.
                    columns = table_columns(self, list(schema), [])  # keys repeat here
                    cursor.execute(f"CREATE TABLE {stage.relation} ({', '.join(columns)})")
                    registry = Registry("merge")
                elif (
                    target
                    and options.mode == "replace"
                    and set(names) <= set(target)
                    and all(_stores_exactly(f, target[f.name]) for f in schema)
                ):
                    like = f"(LIKE {_q(stage.table)} INCLUDING ALL)"
                    cursor.execute(f"CREATE TABLE {stage.relation} {like}")
                    registry = Registry("like")
                else:
                    connection.rollback()
                    return False
                if not _heap(cursor, stage.relation):  # bundles are told apart by `xmin`
                    connection.rollback()
                    return False
                cursor.execute(f"COMMENT ON TABLE {stage.relation} IS %s", (registry.dumps(),))
            elif len(registry.parts) >= MAX_EARLY_PARTS:
                connection.rollback()
                return False
            stage_columns = _describe(cursor, stage.relation)
        connection.commit()
        return set(names) <= set(stage_columns)

    def early_registry(self, cursor, relation: str) -> str | None:
        """Return the comment of the staging table `relation` (None: no such table)."""
        return _comment(cursor, relation)

    def add_early_part(self, cursor, relation: str, entry: dict[str, Any]) -> None:
        """Add a committed bundle's `entry` to the registry of `relation`, in its transaction."""
        self.lock(cursor, relation)
        registry = Registry.loads(self.early_registry(cursor, relation))
        if registry is None:
            raise ConnectorError(f"The staging table {relation} has lost its registry")
        if len(registry.parts) >= MAX_EARLY_PARTS:  # runners with many tiny bundles
            raise ConnectorError(f"The staging table {relation} holds enough bundles")
        cursor.execute("SELECT txid_current() % 4294967296")  # the rows' `xmin`, as an xid
        registry.parts.append({"xid": int(cursor.fetchone()[0]), **entry})
        cursor.execute(f"COMMENT ON TABLE {relation} IS %s", (registry.dumps(),))

    def copy_rows(self, connection, relation: str, batches: Iterator[pa.RecordBatch]) -> None:
        """`COPY` `batches` into `relation` (binary where every column has a binary form)."""
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return
        with connection.cursor() as cursor:
            types = _describe(cursor, relation)
            names = first.schema.names
            rest = itertools.chain([first], batches)
            _copy_in(cursor, relation, names, rest, [types[n].type for n in names])

    def merge_early_stage(self, load: SqlLoad, relation: str, names: list[str]) -> None:
        """Upsert every row of the staging table `relation` into the target by its keys (the
        caller made sure no key repeats and no row can be refused)."""
        keys = load.keys
        columns = ", ".join(_q(n) for n in names)
        target = self.describe(load, load.target)
        values = ", ".join(_value_sql(n, target[n], None) for n in names)  # as assigned
        others = [n for n in names if n not in keys]
        action = (
            "UPDATE SET " + ", ".join(f"{_q(n)} = EXCLUDED.{_q(n)}" for n in others)
            if others
            else "NOTHING"
        )
        load.execute(
            f"INSERT INTO {load.target} ({columns}) SELECT {values} FROM {relation} s "
            f"ON CONFLICT ({', '.join(_q(k) for k in keys)}) DO {action}"
        )

    def same_shape(self, load: SqlLoad, relation: str, target: str) -> bool:
        """Whether `relation` (made LIKE `target` earlier in the run) still has the target's
        constraints and indexes (someone may have changed the target meanwhile)."""
        load.cursor.execute(
            "SELECT conrelid = to_regclass(%s), contype, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE conrelid IN (to_regclass(%s), to_regclass(%s)) "
            "AND contype <> 'f'",
            (relation, relation, target),
        )
        found = load.cursor.fetchall()
        mine = sorted((kind, text) for is_stage, kind, text in found if is_stage)
        theirs = sorted((kind, text) for is_stage, kind, text in found if not is_stage)
        load.cursor.execute(
            "SELECT a.attrelid = to_regclass(%s), a.attname, a.attnotnull, a.attidentity, "
            "a.attgenerated, a.attcollation, pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d "
            "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid IN (to_regclass(%s), to_regclass(%s)) AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum",
            (relation, relation, target),
        )
        columns = load.cursor.fetchall()
        mine_columns = [row[1:] for row in columns if row[0]]
        their_columns = [row[1:] for row in columns if not row[0]]
        return (
            mine == theirs
            and mine_columns == their_columns
            and set(self._indexes(load, relation)) == set(self._indexes(load, target))
        )

    def rename_early_stage(self, load: SqlLoad, relation: str, name: str) -> None:
        """Make the staging table `relation` (named `name`) the new target; its indexes are
        named as the target's own would be."""
        target = load.table.rpartition(".")[2]
        schema = load.table.rpartition(".")[0]
        load.execute(f"ALTER TABLE {relation} RENAME TO {_q(target)}")
        load.cursor.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(%s)",
            (load.target,),
        )
        for (index,) in load.cursor.fetchall():
            if index.startswith(f"{name}_"):
                wanted = _object_name(load.cursor, schema, target, index[len(name) + 1 :])
                load.execute(f"ALTER INDEX {_q_in(schema, index)} RENAME TO {_q(wanted)}")

    def describe(self, load: SqlLoad, relation: str) -> dict[str, _Column]:
        """Return the columns of `relation` by name: type, type to cast to, NOT NULL."""
        return _describe(load.cursor, relation)

    def unique_keys(self, load, dest: str) -> list[tuple[str, frozenset[str], list[str]]]:
        """Return the unique indexes of `dest`: name, columns as a set and in order; an
        index on expressions, or a partial one, with no columns (it matches no load)."""
        load.cursor.execute(
            "SELECT c.relname, array_agg(a.attname ORDER BY k.n), "
            "i.indpred IS NULL AND i.indexprs IS NULL FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) "
            "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique GROUP BY c.relname, i.indpred, "
            "i.indexprs",
            (dest,),
        )
        return [
            (name, frozenset(columns if plain else ["?"]), columns)
            for name, columns, plain in load.cursor.fetchall()
        ]

    def empty_target(self, load: SqlLoad) -> None:
        self.swap(load, self.new_like(load), None)

    def new_like(self, load) -> str:
        schema = load.table.rpartition(".")[0]
        new = _q_in(schema, f"_beam_etl_new_{load.token}")
        load.execute(f"CREATE TABLE {new} (LIKE {load.target} INCLUDING ALL)")
        return new

    def swap(self, load: SqlLoad, new: str, result: Published | None = None) -> None:
        """Make `new` the target: readers see the old table until commit, then the new one.

        Indexes (and their constraints) get the old table's names back; the table keeps its
        comment.
        """
        schema, _dot, name = load.table.rpartition(".")
        old = f"_beam_etl_old_{load.token}"
        names = self._indexes(load, load.target)
        renames = [(self._indexes(load, new).get(d), n) for d, n in names.items()]
        comment = _comment(load.cursor, load.target)
        load.execute(f"ALTER TABLE {load.target} RENAME TO {_q(old)}")
        load.execute(f"ALTER TABLE {new} RENAME TO {_q(name)}")
        load.cursor.execute(f"COMMENT ON TABLE {load.target} IS %s", (comment,))  # kept
        self._keep_sequences(load, _q_in(schema, old))
        load.execute(f"DROP TABLE {_q_in(schema, old)}")
        for current, wanted in renames:
            if current and current != wanted:
                load.execute(f"ALTER INDEX {_q_in(schema, current)} RENAME TO {_q(wanted)}")

    def _keep_sequences(self, load, old: str) -> None:
        """Hand the old table's `serial` sequences to the new one (their defaults use them)."""
        load.cursor.execute(
            "SELECT d.objid::regclass::text, a.attname FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE d.refobjid = to_regclass(%s) AND d.deptype = 'a'",
            (old,),
        )
        for sequence, column in load.cursor.fetchall():  # regclass text comes quoted
            load.execute(f"ALTER SEQUENCE {sequence} OWNED BY {load.target}.{_q(column)}")

    def _indexes(self, load, relation: str) -> dict[str, str]:
        """Return index name by definition (without index and table names)."""
        load.cursor.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s)",
            (relation,),
        )
        return {
            f"{d.startswith('CREATE UNIQUE')}:{d.split(' USING ', 1)[-1]}": n
            for n, d in load.cursor.fetchall()
        }

    def predict(self, load: SqlLoad, parts: list[Part]) -> Published | None:
        return predict(load, parts)

    def fast(self, load: SqlLoad, parts, fields, columns, existed: bool) -> Published | None:
        """`COPY` straight into the target: an append, a replacement (or the table this
        transaction created), a merge into a new table; None when a row is refused."""
        staged = sum(rows for _, rows in parts)
        mode = load.mode.name
        if mode == "append" and fast_append(load, parts, columns, load.target):
            return Published(staged, 0, [])
        if mode == "merge" and not existed:
            written = fast_merge_into_new(load, parts, fields, columns)
            if written is not None:
                return Published(written, staged - written, [])
        if mode == "replace":
            # COPY straight into the replacement (or the table this transaction created) and
            # swap it in; a refused row rolls the COPY back and the staging path finds it.
            dest = self.new_like(load) if existed else load.target
            if fast_append(load, parts, columns, dest):
                if existed:
                    self.swap(load, dest, None)
                return Published(staged, 0, [])
            if existed:
                load.execute(f"DROP TABLE {dest}")
        return None

    def temporary_table_sql(self, name: str, columns: list[str]) -> str:
        return f"CREATE TEMP TABLE {name} ({', '.join(columns)}) ON COMMIT DROP"

    def stage_rows(self, load: SqlLoad, stage: str, schema: pa.Schema, batches) -> None:
        types = self.describe(load, stage)
        _copy_in(load.cursor, stage, schema.names, batches, [types[n].type for n in schema.names])

    def needs_sql_dedupe(self, load: SqlLoad, fields: list[pa.Field]) -> bool:
        # Staged once per key already (in Arrow); a key type the server may compare
        # differently from Arrow (float, time with a finer unit) is deduplicated again.
        keys = load.keys
        return load.mode.keep == "last" and not all(
            _exact_key(f.type) for f in fields if f.name in keys
        )

    def dedupe_sql(self, source, unique, keys, has_null, sort, first) -> str:
        order = f"{_q(sort)} DESC NULLS LAST, " if sort else ""
        last = "ASC" if first else "DESC"
        return (
            f"CREATE TEMP TABLE {unique} ON COMMIT DROP AS "
            f"(SELECT DISTINCT ON ({keys}) * FROM {source} WHERE NOT ({has_null}) "
            f"ORDER BY {keys}, {order}{_q(ROW_COLUMN)} {last}) "
            f"UNION ALL (SELECT * FROM {source} WHERE {has_null})"
        )

    def kept(self, flag: str | None) -> str:
        return f"s.{_q(flag)} IS NOT TRUE" if flag else "TRUE"

    def before_apply(self, load: SqlLoad, source, names, types, kept) -> list[str]:
        """Return the staged values as the target's columns take them, refused (by a
        function created here) where assigning would change them."""
        checks = {n: _exactness(n, load.loaded[n], *types[n][:2]) for n in names}
        if any(checks.values()):
            load.execute(_REFUSE_DDL)
        return [_value_sql(n, types[n], checks[n]) for n in names]

    def insert_ignore_sql(self, load: SqlLoad, insert: str, dest: str, in_range: str) -> str:
        keys = ", ".join(_q(k) for k in load.keys)
        return f"{insert} WHERE {in_range} ON CONFLICT ({keys}) DO NOTHING"

    def upsert_sql(self, load: SqlLoad, insert, dest, source, names, types, in_range, kept):
        keys, flag = load.keys, load.o.hard_delete
        insert = f"{insert} WHERE {in_range}"
        others = [n for n in names if n not in keys]
        conflict = f" ON CONFLICT ({', '.join(_q(k) for k in keys)}) DO "
        conflict += (
            "UPDATE SET " + ", ".join(f"{_q(n)} = EXCLUDED.{_q(n)}" for n in others)
            if others
            else "NOTHING"
        )
        if not flag:
            return [insert + conflict]
        match = " AND ".join(f"t.{_q(k)} = CAST(s.{_q(k)} AS {types[k].base})" for k in keys)
        delete = (
            f"DELETE FROM {dest} t USING {source} s "
            f"WHERE {match} AND s.{_q(flag)} IS TRUE AND {in_range}"
        )
        return [delete, insert + f" AND s.{_q(flag)} IS NOT TRUE" + conflict]

    def history_options(self, load: SqlLoad, types) -> dict[str, Any]:
        return {"key_cast": lambda k: f"CAST(s.{_q(k)} AS {types[k].base})"}

    def refusal_message(self, load: SqlLoad, exc: BaseException) -> str:
        return name_target(load, _message(exc))

    def one_by_one(self, load: SqlLoad, source: str, statements: list[str]):
        return lambda start, end: one_by_one(load, source, statements, start, end)

    def refusal_checks(self, load: SqlLoad, names, types, kept) -> list[tuple[str, str]]:
        relation = load.table.rpartition(".")[2]
        checks = [
            (
                f"s.{_q(n)} IS NULL AND {kept}",
                _literal(
                    f'null value in column "{n}" of relation "{relation}" violates not-null '
                    "constraint"
                ),
            )
            for n in names
            if types[n].not_null
        ]
        for check in (_overflow, _exactness):
            checks += [c for n in names if (c := check(n, load.loaded[n], *types[n][:2]))]
        return checks

    def failed_checks(self, load, source, dest, names, types, kept) -> list[str]:
        """Return SELECTs of `(row number, message)` of staged rows a CHECK constraint of
        `dest` refuses (its expression false on the values as the column would hold them)."""
        load.cursor.execute(
            "SELECT c.conname, pg_get_expr(c.conbin, c.conrelid), array_agg(a.attname) "
            "FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
            "AND a.attnum = ANY(c.conkey) WHERE c.conrelid = to_regclass(%s) "
            "AND c.contype = 'c' GROUP BY c.conname, c.conbin, c.conrelid",
            (dest,),
        )
        relation = load.table.rpartition(".")[2]
        queries = []
        for name, expression, columns in load.cursor.fetchall():
            if not set(columns) <= set(names):
                continue  # a column the load leaves to its default
            values = ", ".join(f"CAST(s.{_q(c)} AS {types[c].base}) AS {_q(c)}" for c in columns)
            shown = name_target(load, name).replace("'", "''")
            message = f'\'new row for relation "{relation}" violates check constraint "{shown}"\''
            queries.append(
                f"SELECT __beam_etl_r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} "
                f"AS __beam_etl_r, {values} FROM {source} s WHERE {kept}) AS v "
                f"WHERE ({expression}) IS FALSE"
            )
        return queries

    def taken_key(self, load: SqlLoad, source, dest, types, key) -> str:
        """Return a SELECT of `(row number, message)` of staged rows whose key `columns`
        (of the unique index `index`) a row of `dest` already holds."""
        index, _, columns = key
        named = ", ".join(
            f"CAST(s.{_q(c)} AS {types[c].base}) AS k{i}" for i, c in enumerate(columns)
        )
        match = " AND ".join(f"t.{_q(c)} = v.k{i}" for i, c in enumerate(columns))
        message = _duplicate_message(name_target(load, index), columns, "v.k")
        return (
            f"SELECT v.r, {message} FROM (SELECT s.{_q(ROW_COLUMN)} AS r, {named} "
            f"FROM {source} s) AS v WHERE EXISTS (SELECT 1 FROM {dest} t WHERE {match})"
        )

    def only_keys_refuse(self, load: SqlLoad, dest: str) -> bool:
        load.cursor.execute(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
            "AND NOT tgisinternal) + (SELECT count(*) FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype IN ('f', 'x'))",
            (dest, dest),
        )
        return load.cursor.fetchone()[0] == 0

    def repeated_key(self, load: SqlLoad, key, types) -> tuple[list[str], str]:
        index, _, columns = key
        values = [f"CAST(s.{_q(c)} AS {types[c].base})" for c in columns]
        return values, _duplicate_message(name_target(load, index), columns, "d.k")

    def after_prepare(self, load: SqlLoad, source: str) -> None:
        # Index the row numbers for the bisection of the rest.
        load.execute(f"CREATE INDEX ON {source} ({_q(ROW_COLUMN)})")
        load.execute(f"ANALYZE {source}")

    def row_chunks(self, numbers: list[int]) -> Iterator[tuple[str, Any]]:
        yield "= ANY(%s)", (numbers,)


def _q_in(schema: str, name: str) -> str:
    return quote_identifier(f"{schema}.{name}" if schema else name, "postgres")


POSTGRES: Final = PostgresDialect()


def load(cursor: Any, table: str, options: SinkOptions | dict[str, Any]) -> SqlLoad:
    """Return a PostgreSQL load on `cursor` (inside its connection's open transaction)."""
    return SqlLoad(POSTGRES, cursor.connection, table, options, cursor=cursor)


def publisher(config: DbConfig, table: str, options: SinkOptions | dict[str, Any]) -> LedgerPublish:
    """Return the publish of staged parts into the PostgreSQL `table`."""
    return LedgerPublish(POSTGRES, config, table, options)
